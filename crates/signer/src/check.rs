//! What a node checks before it joins a signing session. The node decodes the transaction
//! itself, derives the bytes to sign from it (never taking a digest on trust), and runs
//! every [`PreSignCheck`] on the decoded transaction and the approved intent. One "no"
//! and the node refuses, saying why; the session ends for everyone.
//!
//! Implemented now: the transaction must do exactly what the intent says (chain, asset,
//! destination, amount, fee cap, expiry). Approvals, whitelists, velocity limits and
//! freezes plug in as further checks.

use sha3::{Digest, Keccak256};
use strongroom_core::{Intent, Timestamp};

use crate::wire::{KeyInfo, Scheme, SignRequest, TxFormat};

/// A decoded EIP-1559 transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eip1559 {
    pub chain_id: u64,
    pub nonce: u64,
    pub max_priority_fee_per_gas: u128,
    pub max_fee_per_gas: u128,
    pub gas_limit: u64,
    pub to: [u8; 20],
    pub value: u128,
    pub data: Vec<u8>,
}

/// The transaction as the node understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Eip1559(Eip1559),
    Raw(Vec<u8>),
}

/// What the node will sign: a 32-byte digest (ECDSA) or a message (FROST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToSign {
    pub decoded: Decoded,
    pub bytes: Vec<u8>,
}

/// Everything a check may look at.
#[derive(Debug)]
pub struct CheckContext<'a> {
    pub node: u16,
    pub key: &'a KeyInfo,
    pub intent: &'a Intent,
    pub request: &'a SignRequest,
    pub tx: &'a Decoded,
    pub now: Timestamp,
}

/// One of a node's own reasons to refuse.
pub trait PreSignCheck: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), String>;
}

/// Decode the request's transaction and work out the bytes this scheme signs.
pub fn decode(scheme: Scheme, req: &SignRequest, allow_raw: bool) -> Result<ToSign, String> {
    let tx = hex::decode(&req.tx).map_err(|e| format!("transaction is not hex: {e}"))?;
    match req.format {
        TxFormat::Eip1559 => {
            if scheme != Scheme::Ecdsa {
                return Err("an Ethereum transaction needs an ECDSA key".into());
            }
            let decoded = decode_eip1559(&tx)?;
            let digest = Keccak256::digest(&tx).to_vec();
            Ok(ToSign { decoded: Decoded::Eip1559(decoded), bytes: digest })
        }
        TxFormat::RawMessage => {
            if !allow_raw {
                return Err(
                    "raw messages are not accepted by this node (allow_raw_messages is off)".into(),
                );
            }
            let bytes = match scheme {
                Scheme::Ecdsa => sha2::Sha256::digest(&tx).to_vec(),
                Scheme::FrostTaproot | Scheme::FrostEd25519 => tx.clone(),
            };
            Ok(ToSign { decoded: Decoded::Raw(tx), bytes })
        }
    }
}

/// The transaction must do what the intent says, and nothing else.
#[derive(Debug, Default)]
pub struct TxMatchesIntent;

impl PreSignCheck for TxMatchesIntent {
    fn name(&self) -> &'static str {
        "tx-matches-intent"
    }

    fn check(&self, ctx: &CheckContext<'_>) -> Result<(), String> {
        let intent = ctx.intent;
        if intent.expires_at <= ctx.now {
            return Err(format!(
                "intent expired at {} ms (now {} ms)",
                intent.expires_at.unix_ms(),
                ctx.now.unix_ms()
            ));
        }
        match ctx.tx {
            Decoded::Raw(_) => Ok(()),
            Decoded::Eip1559(tx) => {
                let chain = intent.chain.eip155_id().ok_or("intent is not for an EVM chain")?;
                if tx.chain_id != chain {
                    return Err(format!(
                        "transaction chain id {} but intent chain {chain}",
                        tx.chain_id
                    ));
                }
                let dest = parse_eth(intent.destination.as_str())?;
                let amount = intent.amount.base_units();
                match &intent.asset.contract {
                    None => {
                        if tx.to != dest {
                            return Err(format!(
                                "transaction pays 0x{} but intent pays {}",
                                hex::encode(tx.to),
                                intent.destination.as_str()
                            ));
                        }
                        if tx.value != amount {
                            return Err(format!(
                                "transaction value {} but intent amount {amount}",
                                tx.value
                            ));
                        }
                        if !tx.data.is_empty() {
                            return Err("a native transfer must carry no call data".into());
                        }
                    }
                    Some(contract) => {
                        if tx.to != parse_eth(contract.as_str())? || tx.value != 0 {
                            return Err("token transfer must call the intent's token contract with no value".into());
                        }
                        let mut want = vec![0xa9, 0x05, 0x9c, 0xbb];
                        want.extend_from_slice(&[0u8; 12]);
                        want.extend_from_slice(&dest);
                        want.extend_from_slice(&[0u8; 16]);
                        want.extend_from_slice(&amount.to_be_bytes());
                        if tx.data != want {
                            return Err(
                                "call data is not transfer(intent destination, intent amount)"
                                    .into(),
                            );
                        }
                    }
                }
                let fee = u128::from(tx.gas_limit)
                    .checked_mul(tx.max_fee_per_gas)
                    .ok_or("fee overflows")?;
                if fee > intent.fee_cap.base_units() {
                    return Err(format!(
                        "maximum fee {fee} exceeds the intent's fee cap {}",
                        intent.fee_cap.base_units()
                    ));
                }
                if tx.max_priority_fee_per_gas > tx.max_fee_per_gas {
                    return Err("priority fee above max fee".into());
                }
                Ok(())
            }
        }
    }
}

fn parse_eth(s: &str) -> Result<[u8; 20], String> {
    let h = s.strip_prefix("0x").ok_or("address without 0x")?;
    let b = hex::decode(h).map_err(|e| e.to_string())?;
    <[u8; 20]>::try_from(b.as_slice()).map_err(|_| "address is not 20 bytes".to_string())
}

// --- RLP -----------------------------------------------------------------------------

enum Item<'a> {
    Bytes(&'a [u8]),
    List(&'a [u8]),
}

/// One RLP item from the front of `b`, and the rest. Canonical encodings only.
fn item(b: &[u8]) -> Result<(Item<'_>, &[u8]), String> {
    let (&p, rest) = b.split_first().ok_or("RLP: unexpected end")?;
    fn take(rest: &[u8], n: usize) -> Result<(&[u8], &[u8]), String> {
        if rest.len() < n {
            return Err("RLP: item runs past the end".into());
        }
        Ok(rest.split_at(n))
    }
    fn long_len(rest: &[u8], n: usize) -> Result<(usize, &[u8]), String> {
        let (lb, rest) = take(rest, n)?;
        if lb.first() == Some(&0) {
            return Err("RLP: length with leading zero".into());
        }
        let len = lb.iter().try_fold(0usize, |acc, x| {
            acc.checked_mul(256).and_then(|a| a.checked_add(usize::from(*x)))
        });
        let len = len.ok_or("RLP: length overflow")?;
        if len < 56 {
            return Err("RLP: long form for a short item".into());
        }
        Ok((len, rest))
    }
    match p {
        0x00..=0x7f => Ok((Item::Bytes(b.get(..1).unwrap_or_default()), rest)),
        0x80..=0xb7 => {
            let (v, rest) = take(rest, usize::from(p - 0x80))?;
            if v.len() == 1 && v.first().is_some_and(|x| *x < 0x80) {
                return Err("RLP: single byte not encoded as itself".into());
            }
            Ok((Item::Bytes(v), rest))
        }
        0xb8..=0xbf => {
            let (len, rest) = long_len(rest, usize::from(p - 0xb7))?;
            let (v, rest) = take(rest, len)?;
            Ok((Item::Bytes(v), rest))
        }
        0xc0..=0xf7 => {
            let (v, rest) = take(rest, usize::from(p - 0xc0))?;
            Ok((Item::List(v), rest))
        }
        0xf8..=0xff => {
            let (len, rest) = long_len(rest, usize::from(p - 0xf7))?;
            let (v, rest) = take(rest, len)?;
            Ok((Item::List(v), rest))
        }
    }
}

fn uint(i: Item<'_>, max_bytes: usize, what: &str) -> Result<u128, String> {
    let Item::Bytes(b) = i else { return Err(format!("{what}: expected an integer")) };
    if b.len() > max_bytes {
        return Err(format!("{what}: too large"));
    }
    if b.first() == Some(&0) {
        return Err(format!("{what}: leading zero"));
    }
    Ok(b.iter().fold(0u128, |acc, x| (acc << 8) | u128::from(*x)))
}

/// Decode `0x02 || rlp([chain_id, nonce, max_priority_fee, max_fee, gas, to, value, data,
/// access_list])`. Contract creation (empty `to`) and access lists are refused.
pub fn decode_eip1559(tx: &[u8]) -> Result<Eip1559, String> {
    let (&kind, body) = tx.split_first().ok_or("empty transaction")?;
    if kind != 0x02 {
        return Err(format!("transaction type {kind:#x} is not EIP-1559 (0x02)"));
    }
    let (list, rest) = item(body)?;
    if !rest.is_empty() {
        return Err("bytes after the transaction".into());
    }
    let Item::List(mut fields) = list else { return Err("transaction is not an RLP list".into()) };
    let mut next = || -> Result<Item<'_>, String> {
        let (i, r) = item(fields)?;
        fields = r;
        Ok(i)
    };
    let chain_id = u64::try_from(uint(next()?, 8, "chain id")?).map_err(|e| e.to_string())?;
    let nonce = u64::try_from(uint(next()?, 8, "nonce")?).map_err(|e| e.to_string())?;
    let max_priority_fee_per_gas = uint(next()?, 16, "max priority fee")?;
    let max_fee_per_gas = uint(next()?, 16, "max fee")?;
    let gas_limit = u64::try_from(uint(next()?, 8, "gas limit")?).map_err(|e| e.to_string())?;
    let Item::Bytes(to) = next()? else { return Err("to: expected bytes".into()) };
    let to = <[u8; 20]>::try_from(to)
        .map_err(|_| "to: must be a 20-byte address (no contract creation)")?;
    let value = uint(next()?, 16, "value")?;
    let Item::Bytes(data) = next()? else { return Err("data: expected bytes".into()) };
    let data = data.to_vec();
    let Item::List(access) = next()? else { return Err("access list: expected a list".into()) };
    if !access.is_empty() {
        return Err("access lists are not accepted".into());
    }
    if !fields.is_empty() {
        return Err("an unsigned EIP-1559 transaction has exactly 9 fields".into());
    }
    Ok(Eip1559 {
        chain_id,
        nonce,
        max_priority_fee_per_gas,
        max_fee_per_gas,
        gas_limit,
        to,
        value,
        data,
    })
}

/// Encode an unsigned EIP-1559 transaction (used by the CLI and tests to build requests).
pub fn encode_eip1559(tx: &Eip1559) -> Vec<u8> {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        if b.len() == 1 && b.first().is_some_and(|x| *x < 0x80) {
            out.extend_from_slice(b);
        } else {
            header(out, 0x80, b.len());
            out.extend_from_slice(b);
        }
    }
    fn header(out: &mut Vec<u8>, base: u8, len: usize) {
        if len < 56 {
            out.push(base + len as u8);
        } else {
            let lb: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|x| *x == 0).collect();
            out.push(base + 55 + lb.len() as u8);
            out.extend_from_slice(&lb);
        }
    }
    fn uint(out: &mut Vec<u8>, v: u128) {
        let b: Vec<u8> = v.to_be_bytes().into_iter().skip_while(|x| *x == 0).collect();
        bytes(out, &b);
    }
    let mut body = Vec::new();
    uint(&mut body, u128::from(tx.chain_id));
    uint(&mut body, u128::from(tx.nonce));
    uint(&mut body, tx.max_priority_fee_per_gas);
    uint(&mut body, tx.max_fee_per_gas);
    uint(&mut body, u128::from(tx.gas_limit));
    bytes(&mut body, &tx.to);
    uint(&mut body, tx.value);
    bytes(&mut body, &tx.data);
    body.push(0xc0);
    let mut out = vec![0x02];
    header(&mut out, 0xc0, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx() -> Eip1559 {
        Eip1559 {
            chain_id: 1,
            nonce: 9,
            max_priority_fee_per_gas: 2_000_000_000,
            max_fee_per_gas: 100_000_000_000,
            gas_limit: 21_000,
            to: [0x35; 20],
            value: 1_000_000_000_000_000_000,
            data: vec![],
        }
    }

    #[test]
    fn eip1559_round_trips_and_matches_a_hand_encoding() {
        let t = tx();
        let enc = encode_eip1559(&t);
        assert_eq!(decode_eip1559(&enc).unwrap(), t);
        // 0x02 || rlp([1, 9, 2 gwei, 100 gwei, 21000, 0x35…, 1 ether, "", []]), by hand.
        let mut body =
            vec![0x01, 0x09, 0x84, 0x77, 0x35, 0x94, 0x00, 0x85, 0x17, 0x48, 0x76, 0xe8, 0x00];
        body.extend([0x82, 0x52, 0x08, 0x94]);
        body.extend([0x35; 20]);
        body.extend([0x88, 0x0d, 0xe0, 0xb6, 0xb3, 0xa7, 0x64, 0x00, 0x00, 0x80, 0xc0]);
        let mut want = vec![0x02, 0xc0 + body.len() as u8];
        want.extend(body);
        assert_eq!(enc, want);
        // Long data uses the long-string form and still round-trips.
        let long = Eip1559 { data: vec![7; 100], ..tx() };
        assert_eq!(decode_eip1559(&encode_eip1559(&long)).unwrap(), long);
    }

    #[test]
    fn malformed_and_non_canonical_transactions_are_refused() {
        let good = encode_eip1559(&tx());
        assert!(decode_eip1559(&[]).is_err());
        let mut legacy = good.clone();
        legacy[0] = 0x01;
        assert!(decode_eip1559(&legacy).unwrap_err().contains("not EIP-1559"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_eip1559(&trailing).is_err());
        assert!(decode_eip1559(&good[..good.len() - 1]).is_err(), "truncated");
        // Contract creation (empty `to`) and a non-empty access list.
        let mut create = encode_eip1559(&tx());
        let at = create.windows(3).position(|w| w == [0x94, 0x35, 0x35]).unwrap();
        create.splice(at..at + 21, [0x80]);
        create[1] -= 20;
        assert!(decode_eip1559(&create).unwrap_err().contains("contract creation"));
        // A one-byte value below 0x80 written as a string is not canonical.
        assert!(item(&[0x81, 0x05]).is_err());
        // A long-form length for a short item is not canonical.
        assert!(item(&[0xb8, 0x01, 0xff]).is_err());
    }

    fn intent(contract: Option<&str>) -> Intent {
        use strongroom_units::{Address, Amount, AssetSymbol, ChainId};
        let chain = ChainId::parse("eip155:1").unwrap();
        Intent {
            destination: Address::parse(&chain, "0x3535353535353535353535353535353535353535")
                .unwrap(),
            asset: strongroom_core::IntentAsset {
                symbol: AssetSymbol::parse(if contract.is_some() { "USDC" } else { "ETH" })
                    .unwrap(),
                decimals: 18,
                contract: contract.map(|c| Address::parse(&chain, c).unwrap()),
            },
            chain,
            source_wallet: strongroom_core::WalletId::parse("hot-eth-1").unwrap(),
            amount: Amount::from_base_units(1_000_000_000_000_000_000).unwrap(),
            fee_cap: Amount::from_base_units(21_000 * 100_000_000_000).unwrap(),
            expires_at: Timestamp::from_unix_ms(1_000),
            request_id: uuid::Uuid::from_u128(1),
        }
    }

    fn run(intent: &Intent, tx: Eip1559, now: i64) -> Result<(), String> {
        let key = KeyInfo {
            key_id: "hot-eth-1".into(),
            scheme: Scheme::Ecdsa,
            threshold: 2,
            parties: vec![1, 2, 3],
            public_key: String::new(),
            chain_code: None,
        };
        let request = SignRequest {
            intent: hex::encode(intent.encode().unwrap()),
            format: TxFormat::Eip1559,
            tx: hex::encode(encode_eip1559(&tx)),
            path: vec![],
        };
        let decoded = decode(Scheme::Ecdsa, &request, false)?;
        TxMatchesIntent.check(&CheckContext {
            node: 1,
            key: &key,
            intent,
            request: &request,
            tx: &decoded.decoded,
            now: Timestamp::from_unix_ms(now),
        })
    }

    #[test]
    fn the_transaction_must_do_exactly_what_the_intent_says() {
        let i = intent(None);
        assert_eq!(run(&i, tx(), 0), Ok(()));
        assert!(run(&i, tx(), 1_000).unwrap_err().contains("expired"));
        assert!(run(&i, Eip1559 { chain_id: 5, ..tx() }, 0).unwrap_err().contains("chain"));
        assert!(run(&i, Eip1559 { to: [0x36; 20], ..tx() }, 0).unwrap_err().contains("pays"));
        assert!(run(&i, Eip1559 { value: 1, ..tx() }, 0).unwrap_err().contains("value"));
        assert!(run(&i, Eip1559 { data: vec![1], ..tx() }, 0).unwrap_err().contains("call data"));
        let greedy = Eip1559 { gas_limit: 21_001, ..tx() };
        assert!(run(&i, greedy, 0).unwrap_err().contains("fee cap"));
        // A token transfer: transfer(destination, amount) on the intent's contract, no value.
        let usdc = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
        let t = intent(Some(usdc));
        let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
        data.extend([0u8; 12]);
        data.extend([0x35; 20]);
        data.extend([0u8; 16]);
        data.extend(1_000_000_000_000_000_000u128.to_be_bytes());
        let contract: [u8; 20] = hex::decode(&usdc[2..]).unwrap().try_into().unwrap();
        let call = Eip1559 { to: contract, value: 0, data: data.clone(), ..tx() };
        assert_eq!(run(&t, call.clone(), 0), Ok(()));
        let mut other = data;
        other[35] ^= 1;
        assert!(run(&t, Eip1559 { data: other, ..call.clone() }, 0).is_err());
        assert!(run(&t, Eip1559 { value: 1, ..call }, 0).is_err());
        // Raw messages only where allowed.
        let raw = SignRequest {
            format: TxFormat::RawMessage,
            tx: "00".into(),
            intent: String::new(),
            path: vec![],
        };
        assert!(decode(Scheme::Ecdsa, &raw, false).unwrap_err().contains("allow_raw_messages"));
        assert_eq!(decode(Scheme::FrostTaproot, &raw, true).unwrap().bytes, vec![0]);
    }
}
