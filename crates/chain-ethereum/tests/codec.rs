#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.
#![allow(clippy::disallowed_methods)]
//! The Ethereum codec against the shared conformance suite, and the decoder against every
//! transaction a compromised orchestrator might slip past a signer.

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address as EthAddress, Bytes, TxKind, U256};
use alloy_sol_types::SolCall;
use k256::ecdsa::SigningKey;
use strongroom_chain::conformance::{codec_suite, CodecFixture};
use strongroom_chain::{check_movement, ChainError, TxCodec};
use strongroom_chain_ethereum::{EthCodec, EthParams, IERC20};
use strongroom_core::{Intent, IntentAsset, Timestamp, WalletId};
use strongroom_units::{Address, Amount, AssetSymbol, ChainId};

const DEST: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const TOKEN: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
const OTHER: &str = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
const OTHER_TOKEN: &str = "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb";

fn chain() -> ChainId {
    ChainId::parse("eip155:31337").unwrap()
}
fn addr(s: &str) -> Address {
    Address::parse(&chain(), s).unwrap()
}

fn intent(contract: Option<&str>, amount: u128) -> Intent {
    Intent {
        chain: chain(),
        asset: IntentAsset {
            symbol: AssetSymbol::parse(if contract.is_some() { "USDT" } else { "ETH" }).unwrap(),
            decimals: if contract.is_some() { 6 } else { 18 },
            contract: contract.map(addr),
        },
        source_wallet: WalletId::parse("hot-eth-1").unwrap(),
        destination: addr(DEST),
        amount: Amount::from_base_units(amount).unwrap(),
        fee_cap: Amount::from_base_units(21_000 * 100_000_000_000 * 4).unwrap(),
        expires_at: Timestamp::from_unix_ms(10_000),
        request_id: uuid::Uuid::from_u128(42),
    }
}

fn params() -> EthParams {
    EthParams {
        nonce: 7,
        gas_limit: 60_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
    }
}

fn signer(seed: u8) -> impl Fn(&[u8; 32]) -> Vec<u8> {
    let key = SigningKey::from_slice(&[seed; 32]).unwrap();
    move |digest: &[u8; 32]| {
        let (sig, _) = key.sign_prehash_recoverable(digest).unwrap();
        let sig = sig.normalize_s().unwrap_or(sig);
        sig.to_bytes().to_vec()
    }
}

fn public_key(seed: u8) -> Vec<u8> {
    SigningKey::from_slice(&[seed; 32])
        .unwrap()
        .verifying_key()
        .to_encoded_point(true)
        .as_bytes()
        .to_vec()
}

/// The conformance fixture: `intents` signed by key 1, key 2 as the foreign signer.
fn fixture<'a>(
    intents: Vec<Intent>,
    sign: &'a dyn Fn(&[u8; 32]) -> Vec<u8>,
    sign_other: &'a dyn Fn(&[u8; 32]) -> Vec<u8>,
) -> CodecFixture<'a, EthParams> {
    CodecFixture {
        intents,
        params: params(),
        over_cap: EthParams { gas_limit: 21_000 * 100_000, ..params() },
        other_address: addr(OTHER),
        other_contract: addr(OTHER_TOKEN),
        other_chain: ChainId::parse("eip155:1").unwrap(),
        public_key: public_key(1),
        sign,
        sign_other,
    }
}

#[test]
fn passes_the_chain_conformance_suite() {
    let codec = EthCodec::new(chain()).unwrap();
    let (sign, sign_other) = (signer(1), signer(2));
    let intents = vec![intent(None, 10u128.pow(17)), intent(Some(TOKEN), 2_500_000)];
    if let Err(failed) = codec_suite(&codec, &fixture(intents, &sign, &sign_other)) {
        panic!("conformance failures:\n  {}", failed.join("\n  "));
    }
}

/// An unsigned transaction made directly, as an attacker would.
fn raw(tx: &TxEip1559) -> Vec<u8> {
    let mut out = Vec::new();
    tx.encode_for_signing(&mut out);
    out
}

fn base(to: &str, value: u128, input: Vec<u8>) -> TxEip1559 {
    TxEip1559 {
        chain_id: 31337,
        nonce: 7,
        gas_limit: 60_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to.parse().unwrap()),
        value: U256::from(value),
        access_list: Default::default(),
        input: Bytes::from(input),
    }
}

fn transfer(to: &str, amount: u128) -> Vec<u8> {
    IERC20::transferCall { to: to.parse().unwrap(), amount: U256::from(amount) }.abi_encode()
}

#[test]
fn the_decoder_refuses_what_the_intent_does_not_name() {
    let codec = EthCodec::new(chain()).unwrap();
    let eth = intent(None, 1_000);
    let usdt = intent(Some(TOKEN), 1_000);
    let verdict = |tx: &TxEip1559, intent: &Intent| -> Result<(), ChainError> {
        check_movement(&codec.decode(&raw(tx))?, intent)
    };
    // The honest transactions pass.
    verdict(&base(DEST, 1_000, vec![]), &eth).unwrap();
    verdict(&base(TOKEN, 0, transfer(DEST, 1_000)), &usdt).unwrap();

    // Native: another destination, another value, extra call data.
    assert!(matches!(
        verdict(&base(OTHER, 1_000, vec![]), &eth),
        Err(ChainError::Mismatch { field: "destination", .. })
    ));
    assert!(matches!(
        verdict(&base(DEST, 1_001, vec![]), &eth),
        Err(ChainError::Mismatch { field: "amount", .. })
    ));
    assert!(matches!(
        verdict(&base(DEST, 1_000, vec![0xde, 0xad]), &eth),
        Err(ChainError::Decode(_))
    ));

    // Token: transfer to someone else, of another amount, on another contract; approve()
    // instead of transfer(); a value riding along; trailing calldata.
    assert!(matches!(
        verdict(&base(TOKEN, 0, transfer(OTHER, 1_000)), &usdt),
        Err(ChainError::Mismatch { field: "destination", .. })
    ));
    assert!(matches!(
        verdict(&base(TOKEN, 0, transfer(DEST, 999)), &usdt),
        Err(ChainError::Mismatch { field: "amount", .. })
    ));
    assert!(matches!(
        verdict(&base(OTHER_TOKEN, 0, transfer(DEST, 1_000)), &usdt),
        Err(ChainError::Mismatch { field: "asset", .. })
    ));
    let mut approve = transfer(DEST, 1_000);
    approve[..4].copy_from_slice(&[0x09, 0x5e, 0xa7, 0xb3]);
    assert!(matches!(verdict(&base(TOKEN, 0, approve), &usdt), Err(ChainError::Decode(_))));
    assert!(matches!(
        verdict(&base(TOKEN, 1, transfer(DEST, 1_000)), &usdt),
        Err(ChainError::Decode(_))
    ));
    let mut long = transfer(DEST, 1_000);
    long.push(0);
    assert!(matches!(verdict(&base(TOKEN, 0, long), &usdt), Err(ChainError::Decode(_))));
    // A dirty upper half in the address word decodes to the same address in lax decoders.
    let mut dirty = transfer(DEST, 1_000);
    dirty[4] = 1;
    assert!(verdict(&base(TOKEN, 0, dirty), &usdt).is_err());

    // Another chain id, contract creation, an access list, fees above the cap, a priority
    // fee above the max fee.
    assert!(matches!(
        verdict(&TxEip1559 { chain_id: 1, ..base(DEST, 1_000, vec![]) }, &eth),
        Err(ChainError::Mismatch { field: "chain id", .. })
    ));
    assert!(matches!(
        verdict(&TxEip1559 { to: TxKind::Create, ..base(DEST, 1_000, vec![]) }, &eth),
        Err(ChainError::Decode(_))
    ));
    let list = alloy_eips::eip2930::AccessList(vec![alloy_eips::eip2930::AccessListItem {
        address: EthAddress::ZERO,
        storage_keys: vec![],
    }]);
    assert!(matches!(
        verdict(&TxEip1559 { access_list: list, ..base(DEST, 1_000, vec![]) }, &eth),
        Err(ChainError::Decode(_))
    ));
    assert!(matches!(
        verdict(
            &TxEip1559 {
                gas_limit: 10_000_000,
                max_fee_per_gas: 10u128.pow(12),
                ..base(DEST, 1_000, vec![])
            },
            &eth
        ),
        Err(ChainError::FeeAboveCap { .. })
    ));
    assert!(matches!(
        verdict(
            &TxEip1559 { max_priority_fee_per_gas: 3_000_000_000, ..base(DEST, 1_000, vec![]) },
            &eth
        ),
        Err(ChainError::Decode(_))
    ));

    // Other transaction types and non-canonical RLP.
    let mut legacy = raw(&base(DEST, 1_000, vec![]));
    legacy[0] = 0x01;
    assert!(codec.decode(&legacy).is_err());
    let mut padded = raw(&base(DEST, 1_000, vec![]));
    // Re-encode the nonce (7, a single byte) with a needless length prefix.
    // Layout: 0x02, 0xc0 + len (a short list), 0x82 0x7a 0x69 (chain id 31337), 0x07 (nonce).
    assert_eq!(&padded[..6], &[0x02, padded[1], 0x82, 0x7a, 0x69, 0x07]);
    assert!((0xc0..0xf7).contains(&padded[1]));
    padded.splice(5..=5, [0x81, 0x07]);
    padded[1] += 1;
    assert!(codec.decode(&padded).is_err(), "non-canonical RLP is refused");
}

#[test]
fn a_signed_transaction_reads_back_to_its_sender_and_movement() {
    let codec = EthCodec::new(chain()).unwrap();
    let i = intent(Some(TOKEN), 5);
    let unsigned = codec.build(&i, &params()).unwrap();
    let digest = codec.digests(&unsigned).unwrap()[0];
    let signed = codec.attach(&unsigned, &public_key(9), &[signer(9)(&digest)]).unwrap();
    let (parsed, sender, txid) = codec.parse_signed(&signed.raw).unwrap();
    assert_eq!(sender, codec.address_of(&public_key(9)).unwrap());
    assert_eq!(txid, signed.txid);
    assert_eq!(parsed.params, params());
    check_movement(&parsed.movement, &i).unwrap();

    // A high-s signature (valid ECDSA, refused by Ethereum since EIP-2) is refused.
    let sig = signer(9)(&digest);
    use k256::elliptic_curve::PrimeField;
    let s = k256::Scalar::from_repr(<[u8; 32]>::try_from(&sig[32..]).unwrap().into()).unwrap();
    let mut high = sig[..32].to_vec();
    high.extend_from_slice(&(-s).to_bytes());
    assert!(matches!(
        codec.attach(&unsigned, &public_key(9), &[high]),
        Err(ChainError::Signature(_))
    ));
}

/// The suite must catch a decoder that forgets a field: here, one that reports no fee.
#[test]
fn a_decoder_that_hides_the_fee_fails_the_suite() {
    struct HidesFee(EthCodec);
    impl TxCodec for HidesFee {
        type Params = EthParams;
        fn chain(&self) -> &ChainId {
            self.0.chain()
        }
        fn build(&self, i: &Intent, p: &EthParams) -> Result<Vec<u8>, ChainError> {
            self.0.build(i, p)
        }
        fn decode(&self, tx: &[u8]) -> Result<strongroom_chain::Movement, ChainError> {
            Ok(strongroom_chain::Movement { max_fee: Amount::ZERO, ..self.0.decode(tx)? })
        }
        fn digests(&self, tx: &[u8]) -> Result<Vec<[u8; 32]>, ChainError> {
            self.0.digests(tx)
        }
        fn attach(
            &self,
            tx: &[u8],
            pk: &[u8],
            s: &[Vec<u8>],
        ) -> Result<strongroom_chain::SignedTx, ChainError> {
            self.0.attach(tx, pk, s)
        }
        fn address_of(&self, pk: &[u8]) -> Result<Address, ChainError> {
            self.0.address_of(pk)
        }
    }
    let (sign, sign_other) = (signer(1), signer(2));
    let fixture = fixture(vec![intent(None, 1_000)], &sign, &sign_other);
    let failed = codec_suite(&HidesFee(EthCodec::new(chain()).unwrap()), &fixture).unwrap_err();
    assert_eq!(failed, vec!["intent 0: a different fee cap is refused".to_string()]);
}
