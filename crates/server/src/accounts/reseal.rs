//! Re-sealing account records under a new personal-data key (`strongroom keys rotate`).

use super::*;

/// A field re-sealed (hex) and its plaintext.
pub(super) type Resealed = (String, zeroize::Zeroizing<Vec<u8>>);

/// `sealed_hex` re-sealed under `new` (`None` when it already is).
pub(super) fn reseal_hex(
    old: &dyn KeyEncryptionKey,
    new: &dyn KeyEncryptionKey,
    sealed_hex: &str,
    aad: &str,
    env: &dyn strongroom_core::Env,
) -> Result<Option<Resealed>, String> {
    let bytes = hex::decode(sealed_hex).map_err(|_| format!("{aad}: not hex"))?;
    if strongroom_crypto::seal::sealed_by(&bytes).map_err(|e| format!("{aad}: {e}"))? == new.id() {
        return Ok(None);
    }
    let plain = open(old, &bytes, aad.as_bytes()).map_err(|e| format!("{aad}: {e}"))?;
    let resealed = seal(new, &plain, aad.as_bytes(), env).map_err(|e| format!("{aad}: {e}"))?;
    Ok(Some((hex::encode(resealed), plain)))
}

/// The write that re-seals an account-security record's sealed fields under `new` (and
/// recomputes its blind index), or `None` when there is nothing to do.
pub(crate) fn reseal_record(
    r: &AuthRecord,
    old: &dyn KeyEncryptionKey,
    new: &dyn KeyEncryptionKey,
    env: &dyn strongroom_core::Env,
) -> Result<Option<AuthWrite>, String> {
    let bad = |e: serde_json::Error| format!("{}/{}: {e}", r.kind, r.id);
    match r.kind.as_str() {
        "account" => {
            let mut a: Account = serde_json::from_value(r.body.clone()).map_err(bad)?;
            let mut changed = false;
            let mut lookup = r.lookup.clone();
            if let Some((sealed, email)) =
                reseal_hex(old, new, &a.email, &format!("account/{}/email", r.id), env)?
            {
                a.email = sealed;
                lookup = Some(new.blind_index("email", &email).map_err(|e| e.to_string())?);
                changed = true;
            }
            if let Some(mut t) = a.totp.clone() {
                if let Some((sealed, _)) =
                    reseal_hex(old, new, &t.seed, &format!("account/{}/totp", r.id), env)?
                {
                    t.seed = sealed;
                    a.totp = Some(t);
                    changed = true;
                }
            }
            if !changed {
                return Ok(None);
            }
            let mut w = AuthWrite::update(r, serde_json::to_value(&a).map_err(bad)?);
            w.lookup = lookup;
            Ok(Some(w))
        }
        "device" => {
            let mut d: Device = serde_json::from_value(r.body.clone()).map_err(bad)?;
            let name = reseal_hex(old, new, &d.name, &format!("device/{}/name", r.id), env)?;
            let ip = reseal_hex(old, new, &d.ip, &format!("device/{}", r.id), env)?;
            if name.is_none() && ip.is_none() {
                return Ok(None);
            }
            if let Some((s, _)) = name {
                d.name = s;
            }
            if let Some((s, _)) = ip {
                d.ip = s;
            }
            Ok(Some(AuthWrite::update(r, serde_json::to_value(&d).map_err(bad)?)))
        }
        _ => Ok(None),
    }
}
