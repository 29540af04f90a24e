//! Intents: the canonical version-1 encoding (signer requests carry it in hex) and the JSON
//! form (signing bundles, the API's views).

use strongroom_core::intent::hash_encoded;
use strongroom_core::Intent;

use crate::{broken, ensure, json_round_trip, Verdict};

/// `Intent::decode` on the bytes, and `serde_json` on them as an intent's JSON.
///
/// Properties: a decoded intent encodes back to exactly the input (one byte string per
/// intent) with the same hash, and survives JSON; an intent read from JSON that encodes
/// decodes back to itself (no intent has an encoding the decoder refuses).
pub fn intent(data: &[u8]) -> Verdict {
    let mut verdict = Verdict::Malformed;
    if let Ok(i) = Intent::decode(data) {
        match i.encode() {
            Ok(again) => ensure(again == data, || {
                format!(
                    "decode/encode is not the identity: {} became {}",
                    hex::encode(data),
                    hex::encode(&again)
                )
            }),
            Err(e) => broken(format_args!("a decoded intent does not encode: {e}")),
        }
        match i.hash() {
            Ok(h) => ensure(h == hash_encoded(data), || "the hash is not the encoding's".into()),
            Err(e) => broken(format_args!("a decoded intent has no hash: {e}")),
        }
        json_round_trip("a decoded intent", &i);
        verdict = Verdict::Accepted;
    }
    if let Ok(i) = serde_json::from_slice::<Intent>(data) {
        json_round_trip("an intent read from JSON", &i);
        verdict = verdict.max(match i.encode() {
            Ok(bytes) => match Intent::decode(&bytes) {
                Ok(back) => {
                    ensure(back == i, || format!("{i:?} decodes back as {back:?}"));
                    Verdict::Accepted
                }
                Err(e) => broken(format_args!(
                    "an intent from JSON encodes to bytes the decoder refuses ({e}): {i:?}"
                )),
            },
            // Refused with a typed error: an intent that cannot be encoded cannot be hashed,
            // approved or signed either.
            Err(_) => Verdict::Refused,
        });
    }
    verdict
}
