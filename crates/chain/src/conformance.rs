//! The tests every chain adapter must pass. An adapter's own test calls [`codec_suite`] with a
//! fixture of real intents and a real key; the suite returns every failed expectation by
//! name, so one run shows all that is wrong.

use strongroom_core::Intent;
use strongroom_units::{Address, Amount, ChainId};

use crate::{check_movement, ChainError, TxCodec};

/// What [`codec_suite`] needs from the adapter's test.
pub struct CodecFixture<'a, P> {
    /// Intents the adapter must carry out; include a native and a token transfer where the
    /// chain has tokens.
    pub intents: Vec<Intent>,
    /// Parameters that keep every intent under its fee cap.
    pub params: P,
    /// Parameters whose maximum fee is above every intent's fee cap.
    pub over_cap: P,
    /// An address on the chain that is none of the intents' destinations.
    pub other_address: Address,
    /// A token contract on the chain that none of the intents names.
    pub other_contract: Address,
    /// Another chain of the same family.
    pub other_chain: ChainId,
    /// The signing key's public half (SEC1) and a signer for it.
    pub public_key: Vec<u8>,
    pub sign: &'a dyn Fn(&[u8; 32]) -> Vec<u8>,
    /// A signer with a different key.
    pub sign_other: &'a dyn Fn(&[u8; 32]) -> Vec<u8>,
}

impl<P> std::fmt::Debug for CodecFixture<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecFixture").field("intents", &self.intents.len()).finish()
    }
}

/// Run every codec expectation; `Err` lists the ones that failed.
pub fn codec_suite<C: TxCodec>(
    codec: &C,
    f: &CodecFixture<'_, C::Params>,
) -> Result<(), Vec<String>> {
    let mut failed = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            failed.push(what);
        }
    };
    expect(!f.intents.is_empty(), "fixture has intents".into());
    for (n, intent) in f.intents.iter().enumerate() {
        let tx = match codec.build(intent, &f.params) {
            Ok(tx) => tx,
            Err(e) => {
                expect(false, format!("intent {n}: build failed: {e}"));
                continue;
            }
        };
        expect(
            codec.build(intent, &f.params).ok().as_ref() == Some(&tx),
            format!("intent {n}: build is deterministic"),
        );

        // Decode gives back exactly the intent's movement.
        match codec.decode(&tx) {
            Ok(m) => {
                expect(check_movement(&m, intent).is_ok(), format!("intent {n}: round trip"));
                expect(&m.chain == codec.chain(), format!("intent {n}: decoded chain"));
            }
            Err(e) => expect(false, format!("intent {n}: decode of own build failed: {e}")),
        }

        // Each field of the intent, changed, no longer matches the transaction.
        for (field, other) in mutations(intent, f) {
            let refused = codec.decode(&tx).map(|m| check_movement(&m, &other).is_err());
            expect(refused == Ok(true), format!("intent {n}: a different {field} is refused"));
        }
        let mut foreign = intent.clone();
        foreign.chain = f.other_chain.clone();
        expect(
            codec.build(&foreign, &f.params).is_err(),
            format!("intent {n}: build for another chain is refused"),
        );
        let mut zero = intent.clone();
        zero.amount = Amount::ZERO;
        expect(
            matches!(codec.build(&zero, &f.params), Err(ChainError::Build(_))),
            format!("intent {n}: a zero amount is refused"),
        );
        expect(
            matches!(codec.build(intent, &f.over_cap), Err(ChainError::FeeAboveCap { .. })),
            format!("intent {n}: fees above the cap are refused"),
        );

        // Malformed bytes: every truncation and a trailing byte.
        expect(codec.decode(&[]).is_err(), "empty input is refused".into());
        let truncations_refused =
            (1..tx.len()).all(|k| codec.decode(tx.get(..k).unwrap_or_default()).is_err());
        expect(truncations_refused, format!("intent {n}: every truncation is refused"));
        let mut long = tx.clone();
        long.push(0);
        expect(codec.decode(&long).is_err(), format!("intent {n}: a trailing byte is refused"));

        // Signatures: the right key's are attached; another key's are refused.
        let digests = match codec.digests(&tx) {
            Ok(d) => d,
            Err(e) => {
                expect(false, format!("intent {n}: digests failed: {e}"));
                continue;
            }
        };
        expect(
            codec.digests(&tx).ok() == Some(digests.clone()),
            format!("intent {n}: digests are deterministic"),
        );
        let good: Vec<Vec<u8>> = digests.iter().map(|d| (f.sign)(d)).collect();
        let bad: Vec<Vec<u8>> = digests.iter().map(|d| (f.sign_other)(d)).collect();
        match codec.attach(&tx, &f.public_key, &good) {
            Ok(signed) => {
                expect(
                    !signed.raw.is_empty() && !signed.txid.is_empty(),
                    format!("intent {n}: signed tx"),
                );
                let again = codec.attach(&tx, &f.public_key, &good);
                expect(
                    again.as_ref() == Ok(&signed),
                    format!("intent {n}: attach is deterministic"),
                );
            }
            Err(e) => expect(false, format!("intent {n}: attach failed: {e}")),
        }
        expect(
            matches!(codec.attach(&tx, &f.public_key, &bad), Err(ChainError::Signature(_))),
            format!("intent {n}: another key's signature is refused"),
        );
        expect(
            codec.attach(&tx, &f.public_key, &[]).is_err(),
            format!("intent {n}: missing signatures are refused"),
        );
    }
    expect(codec.address_of(&f.public_key).is_ok(), "address_of the key".into());
    expect(codec.address_of(&[2; 3]).is_err(), "address_of garbage is refused".into());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

/// The intent with one field changed at a time.
fn mutations<P>(intent: &Intent, f: &CodecFixture<'_, P>) -> Vec<(&'static str, Intent)> {
    let mut out = Vec::new();
    let mut m = intent.clone();
    m.amount = Amount::from_base_units(intent.amount.base_units().saturating_add(1))
        .unwrap_or(intent.amount);
    out.push(("amount", m));
    let mut m = intent.clone();
    m.destination = f.other_address.clone();
    out.push(("destination", m));
    let mut m = intent.clone();
    m.asset.contract = match intent.asset.contract {
        Some(_) => None,
        None => Some(f.other_contract.clone()),
    };
    out.push(("asset", m));
    let mut m = intent.clone();
    m.chain = f.other_chain.clone();
    out.push(("chain", m));
    let mut m = intent.clone();
    m.fee_cap = Amount::from_base_units(1).unwrap_or(Amount::ZERO);
    out.push(("fee cap", m));
    out
}
