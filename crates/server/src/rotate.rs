//! Key rotation (`strongroom keys rotate`): re-seal under a new personal-data key everything
//! the old one protects — customers' contacts, accounts' e-mail addresses (with their blind
//! index) and TOTP seeds, devices' names and IP addresses, and API clients' signing keys.
//! Each record is one audited write; a record already sealed under the new key is left, so
//! an interrupted rotation is finished by running it again with the same two keys.

use strongroom_core::Env;
use strongroom_crypto::seal::KeyEncryptionKey;
use strongroom_store::{Store, WriteCtx};

/// What a rotation re-sealed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub contacts: usize,
    pub accounts: usize,
    pub devices: usize,
    pub tokens: usize,
    /// Records already under the new key.
    pub unchanged: usize,
}

pub async fn rotate(
    store: &dyn Store,
    old: &dyn KeyEncryptionKey,
    new: &dyn KeyEncryptionKey,
    env: &dyn Env,
) -> Result<Rotation, String> {
    let ctx = || WriteCtx { actor: "cli:keys-rotate".into(), now: env.now(), request_id: None };
    let mut out = Rotation::default();
    let e = |e: strongroom_store::StoreError| e.to_string();
    for (customer, sealed) in store.customer_contacts().await.map_err(e)? {
        if strongroom_crypto::seal::sealed_by(&sealed).map_err(|e| e.to_string())? == new.id() {
            out.unchanged += 1;
            continue;
        }
        let c = crate::contact::open_contact(old, customer, &sealed)?;
        let resealed = crate::contact::seal_contact(new, customer, &c, env)?;
        store.set_customer_contact(&ctx(), customer, resealed).await.map_err(e)?;
        out.contacts += 1;
    }
    for kind in ["account", "device"] {
        for r in store.all_auth_records(kind).await.map_err(e)? {
            match crate::accounts::reseal_record(&r, old, new, env)? {
                Some(w) => {
                    let subject = format!("{}/{}", r.kind, r.id);
                    store.write_auth(&ctx(), "keys.rotated", &subject, vec![w]).await.map_err(e)?;
                    if kind == "account" {
                        out.accounts += 1;
                    } else {
                        out.devices += 1;
                    }
                }
                None => out.unchanged += 1,
            }
        }
    }
    for t in store.list_tokens().await.map_err(e)? {
        let Some(mut r) = t.restrictions.clone() else { continue };
        let Some(sealed) = r.signing_key.clone() else { continue };
        let aad = format!("token/{}/signing-key", t.id);
        let bytes = hex::decode(&sealed).map_err(|_| format!("{aad}: not hex"))?;
        if strongroom_crypto::seal::sealed_by(&bytes).map_err(|e| e.to_string())? == new.id() {
            out.unchanged += 1;
            continue;
        }
        let resealed = strongroom_crypto::seal::rewrap(old, new, &bytes, aad.as_bytes(), env)
            .map_err(|e| format!("{aad}: {e}"))?;
        r.signing_key = Some(hex::encode(resealed));
        store.set_token_restrictions(&ctx(), &t.id, Some(r)).await.map_err(e)?;
        out.tokens += 1;
    }
    Ok(out)
}
