//! Ethereum transactions as a signer node or the engine reads them: unsigned EIP-1559
//! transactions (`EthCodec::parse`, what a signing request carries) and signed ones
//! (`EthCodec::parse_signed`, what the engine stores and broadcasts).

use strongroom_chain::{check_movement, ChainError, TxCodec};
use strongroom_chain_ethereum::safe::keccak;
use strongroom_chain_ethereum::ParsedTx;
use strongroom_core::{Intent, IntentAsset, Timestamp, WalletId};
use strongroom_units::AssetSymbol;
use uuid::Uuid;

use crate::fixtures::{fixtures, Fixtures};
use crate::{broken, ensure, Verdict};

/// Both decoders on the same bytes, on anvil's chain.
///
/// Properties: what `parse` accepts is exactly what `build` makes from the intent it
/// describes (same bytes), and that intent passes `check_movement`; a signed transaction's
/// id is the Keccak-256 of its bytes, and its unsigned part parses to the same movement.
pub fn eth_tx(data: &[u8]) -> Verdict {
    let fx = fixtures();
    let unsigned = match fx.eth.parse(data) {
        Ok(p) => {
            check_unsigned(fx, data, &p);
            Verdict::Accepted
        }
        Err(e) => verdict_of(&e),
    };
    let signed = match fx.eth.parse_signed(data) {
        Ok((p, _sender, txid)) => {
            let want = format!("0x{}", hex::encode(keccak(data)));
            ensure(txid == want, || {
                format!("txid {txid} is not the Keccak-256 of the bytes, {want}")
            });
            ensure(p.movement.chain == fx.eth_chain, || {
                "a signed transaction of another chain".into()
            });
            Verdict::Accepted
        }
        Err(e) => verdict_of(&e),
    };
    unsigned.max(signed)
}

/// A decode error is malformed input; anything else is a typed refusal of a readable one.
fn verdict_of(e: &ChainError) -> Verdict {
    match e {
        ChainError::Decode(_) => Verdict::Malformed,
        _ => Verdict::Refused,
    }
}

fn check_unsigned(fx: &Fixtures, data: &[u8], p: &ParsedTx) {
    let m = &p.movement;
    let (symbol, decimals) = if m.contract.is_some() { ("TOKEN", 6) } else { ("ETH", 18) };
    let (Ok(symbol), Ok(source_wallet)) =
        (AssetSymbol::parse(symbol), WalletId::parse("hot-eth-1"))
    else {
        broken(format_args!("fixed symbol or wallet id refused"))
    };
    let intent = Intent {
        chain: m.chain.clone(),
        asset: IntentAsset { symbol, decimals, contract: m.contract.clone() },
        source_wallet,
        destination: m.destination.clone(),
        amount: m.amount,
        fee_cap: m.max_fee,
        expires_at: Timestamp::from_unix_ms(i64::MAX),
        request_id: Uuid::nil(),
    };
    match fx.eth.build(&intent, &p.params) {
        Ok(rebuilt) => ensure(rebuilt == data, || {
            format!(
                "parse accepted bytes build would not make: {} rebuilt as {}",
                hex::encode(data),
                hex::encode(&rebuilt)
            )
        }),
        Err(e) => broken(format_args!("the movement parse found cannot be built: {e} ({m:?})")),
    }
    if let Err(e) = check_movement(m, &intent) {
        broken(format_args!("a movement does not match the intent made from it: {e}"));
    }
    match fx.eth.decode(data) {
        Ok(again) => ensure(&again == m, || "decode and parse disagree".into()),
        Err(e) => broken(format_args!("decode refuses what parse accepts: {e}")),
    }
    match fx.eth.digests(data) {
        Ok(d) => ensure(d.len() == 1, || format!("{} digests for one transaction", d.len())),
        Err(e) => broken(format_args!("no digest for an accepted transaction: {e}")),
    }
}
