//! Key-encryption keys in a hardware security module, through PKCS#11 (`cryptoki`).
//!
//! A [`Pkcs11Kek`] holds no key material: it names two keys inside a token, an AES-256 key
//! that wraps and unwraps data keys with AES-GCM (`CKM_AES_GCM`), and an HMAC key that makes
//! blind indexes (`CKM_SHA256_HMAC`). Both are created inside the token as sensitive and
//! not extractable ([`Pkcs11Kek::create`]), so a stolen disk, database or process memory
//! holds only wrapped keys. The sealing format is the software provider's: a wrapped data
//! key is a 12-byte nonce, then the ciphertext and its 16-byte tag, under the associated data
//! [`strongroom_crypto::seal::context`] builds; only who does the AES differs.
//!
//! A node or server configured with a token that is not there does not start
//! ([`HsmError::TokenMissing`]): falling back to a key on disk would defeat the point.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use strongroom_core::Env;
use strongroom_crypto::seal::{self, KeyEncryptionKey, SealError, NONCE_LEN};
use strongroom_crypto::SecretString;
use zeroize::Zeroizing;

/// Where the key-encryption key lives: `[kek.pkcs11]` in a node's or the server's
/// configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The label of the keys in the token (the HMAC key is `LABEL/index`).
    pub key: String,
    /// The environment variable that holds the user PIN (never the PIN itself in a file).
    pub pin_env: String,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("key", &self.key)
            .field("pin_env", &self.pin_env)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {module}: {detail}")]
    Module { module: PathBuf, detail: String },
    #[error("no token labelled {token:?} is present (tokens seen: {seen:?}): refusing to start without the key-encryption key")]
    TokenMissing { token: String, seen: Vec<String> },
    #[error("the PIN for token {token:?} is not in ${env}")]
    NoPin { token: String, env: String },
    #[error("token {token:?} refused the login: {detail}")]
    Login { token: String, detail: String },
    #[error("token {token:?} holds no {what} key labelled {label:?} (create it with `strongroom keys hsm-init`)")]
    KeyMissing { token: String, label: String, what: &'static str },
    #[error("token {token:?} already holds a key labelled {label:?}")]
    KeyExists { token: String, label: String },
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
}

fn p11(e: cryptoki::error::Error) -> HsmError {
    HsmError::Pkcs11(e.to_string())
}

/// A key-encryption key inside a PKCS#11 token.
pub struct Pkcs11Kek {
    id: String,
    token: String,
    session: Mutex<Session>,
    aes: ObjectHandle,
    hmac: ObjectHandle,
    // Kept last: the library stays loaded while the session is in use.
    _ctx: Pkcs11,
}

impl std::fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Kek").field("id", &self.id).field("token", &self.token).finish()
    }
}

/// The module loaded and initialized once per process (PKCS#11 allows one `C_Initialize`
/// per application; every key and session shares it).
fn context(module: &std::path::Path) -> Result<Pkcs11, HsmError> {
    use cryptoki::error::{Error, RvError};
    static LOADED: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let bad = |detail: String| HsmError::Module { module: module.to_path_buf(), detail };
    let mut loaded = LOADED
        .get_or_init(|| Mutex::new(BTreeMap::new()))
        .lock()
        .map_err(|_| bad("the module table is poisoned".into()))?;
    if let Some(ctx) = loaded.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| bad(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    loaded.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// A logged-in read-write session on the token labelled `cfg.token`. The login holds for
/// the whole process while any session is open (PKCS#11 logs in per application, not per
/// session): a second login is `already logged in`, which is the same access.
fn login(cfg: &Pkcs11Config, pin: &SecretString) -> Result<(Pkcs11, Session), HsmError> {
    use cryptoki::error::{Error, RvError};
    let ctx = context(&cfg.module)?;
    let mut seen = Vec::new();
    let mut found = None;
    for slot in ctx.get_slots_with_token().map_err(p11)? {
        let info = ctx.get_token_info(slot).map_err(p11)?;
        let label = info.label().trim_end().to_owned();
        if label == cfg.token {
            found = Some(slot);
            break;
        }
        seen.push(label);
    }
    let slot = found.ok_or_else(|| HsmError::TokenMissing { token: cfg.token.clone(), seen })?;
    let session = ctx.open_rw_session(slot).map_err(p11)?;
    let pin = AuthPin::from(pin.expose_secret().to_owned());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(HsmError::Login { token: cfg.token.clone(), detail: e.to_string() }),
    }
    Ok((ctx, session))
}

fn find(session: &Session, class: KeyType, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    Ok(session.find_objects(&template).map_err(p11)?.into_iter().next())
}

fn index_label(key: &str) -> String {
    format!("{key}/index")
}

impl Pkcs11Kek {
    /// The PIN from the environment variable the configuration names.
    pub fn pin(cfg: &Pkcs11Config) -> Result<SecretString, HsmError> {
        std::env::var(&cfg.pin_env)
            .ok()
            .filter(|p| !p.is_empty())
            .map(SecretString::new)
            .ok_or_else(|| HsmError::NoPin { token: cfg.token.clone(), env: cfg.pin_env.clone() })
    }

    /// Open the key named by `cfg` (PIN from its environment variable).
    pub fn open(cfg: &Pkcs11Config) -> Result<Self, HsmError> {
        Self::open_with_pin(cfg, &Self::pin(cfg)?)
    }

    pub fn open_with_pin(cfg: &Pkcs11Config, pin: &SecretString) -> Result<Self, HsmError> {
        let (ctx, session) = login(cfg, pin)?;
        let missing =
            |what| HsmError::KeyMissing { token: cfg.token.clone(), label: cfg.key.clone(), what };
        let aes = find(&session, KeyType::AES, &cfg.key)?.ok_or_else(|| missing("AES"))?;
        let hmac = find(&session, KeyType::GENERIC_SECRET, &index_label(&cfg.key))?
            .ok_or_else(|| missing("HMAC"))?;
        let serial = ctx
            .get_slots_with_token()
            .ok()
            .and_then(|slots| {
                slots.into_iter().find_map(|s| {
                    let info = ctx.get_token_info(s).ok()?;
                    (info.label().trim_end() == cfg.token)
                        .then(|| info.serial_number().trim_end().to_owned())
                })
            })
            .unwrap_or_default();
        // Public and stable: which token and which key, never anything of the key itself.
        let digest = Sha256::digest(
            format!("strongroom/kek-id/pkcs11\0{}\0{serial}\0{}", cfg.token, cfg.key).as_bytes(),
        );
        let id = format!("p11-{}", hex::encode(digest.get(..8).unwrap_or_default()));
        Ok(Pkcs11Kek {
            id,
            token: cfg.token.clone(),
            session: Mutex::new(session),
            aes,
            hmac,
            _ctx: ctx,
        })
    }

    /// Create the AES-256 wrapping key and the HMAC key inside the token: token objects,
    /// sensitive, never extractable. Refused if a key with the label exists.
    pub fn create(cfg: &Pkcs11Config, pin: &SecretString) -> Result<Self, HsmError> {
        {
            let (_ctx, session) = login(cfg, pin)?;
            let label = &cfg.key;
            if find(&session, KeyType::AES, label)?.is_some()
                || find(&session, KeyType::GENERIC_SECRET, &index_label(label))?.is_some()
            {
                return Err(HsmError::KeyExists { token: cfg.token.clone(), label: label.clone() });
            }
            let common = |label: String| {
                vec![
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(label.into_bytes()),
                ]
            };
            let mut aes = common(label.clone());
            aes.extend([Attribute::Encrypt(true), Attribute::Decrypt(true)]);
            session.generate_key(&Mechanism::AesKeyGen, &aes).map_err(p11)?;
            let mut mac = common(index_label(label));
            mac.push(Attribute::Sign(true));
            session.generate_key(&Mechanism::GenericSecretKeyGen, &mac).map_err(p11)?;
        }
        Self::open_with_pin(cfg, pin)
    }

    fn session(&self) -> Result<std::sync::MutexGuard<'_, Session>, SealError> {
        self.session.lock().map_err(|_| SealError::Key("the token session is poisoned".into()))
    }
}

impl KeyEncryptionKey for Pkcs11Kek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, dek: &[u8; 32], aad: &[u8], env: &dyn Env) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        env.fill_random(&mut nonce);
        let aad = seal::context(b"strongroom/dek/v1\0", &self.id, aad);
        let mut iv = nonce;
        let params =
            GcmParams::new(&mut iv, &aad, 128.into()).map_err(|e| SealError::Key(e.to_string()))?;
        let ct = self
            .session()?
            .encrypt(&Mechanism::AesGcm(params), self.aes, dek)
            .map_err(|e| SealError::Key(format!("token {}: {e}", self.token)))?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(out)
    }

    fn unwrap_dek(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let (nonce, ct) = wrapped.split_at_checked(NONCE_LEN).ok_or(SealError::Malformed)?;
        let mut iv: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let aad = seal::context(b"strongroom/dek/v1\0", &self.id, aad);
        let params =
            GcmParams::new(&mut iv, &aad, 128.into()).map_err(|e| SealError::Key(e.to_string()))?;
        // The token reports a failed tag check as an error: the data or context is not ours.
        let dek = Zeroizing::new(
            self.session()?
                .decrypt(&Mechanism::AesGcm(params), self.aes, ct)
                .map_err(|_| SealError::Authentication)?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        if dek.len() != 32 {
            return Err(SealError::Malformed);
        }
        out.copy_from_slice(&dek);
        Ok(out)
    }

    fn blind_index(&self, purpose: &str, value: &[u8]) -> Result<String, SealError> {
        // One HMAC in the token over the purpose (length-prefixed) and the value.
        let mut data = b"strongroom/blind-index/v1\0".to_vec();
        data.extend_from_slice(&(purpose.len() as u64).to_be_bytes());
        data.extend_from_slice(purpose.as_bytes());
        data.extend_from_slice(value);
        let mac = self
            .session()?
            .sign(&Mechanism::Sha256Hmac, self.hmac, &data)
            .map_err(|e| SealError::Key(format!("token {}: {e}", self.token)))?;
        Ok(hex::encode(mac))
    }
}

/// Whether the wrapping key named by `cfg` could leave the token: readable value, marked
/// extractable, or not sensitive (an operator's check, and the tests').
pub fn key_is_extractable(cfg: &Pkcs11Config, pin: &SecretString) -> Result<bool, HsmError> {
    use cryptoki::object::AttributeType;
    let (_ctx, session) = login(cfg, pin)?;
    let key = find(&session, KeyType::AES, &cfg.key)?.ok_or_else(|| HsmError::KeyMissing {
        token: cfg.token.clone(),
        label: cfg.key.clone(),
        what: "AES",
    })?;
    let flags = session
        .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
        .map_err(p11)?;
    let marked = flags
        .iter()
        .any(|a| matches!(a, Attribute::Extractable(true) | Attribute::Sensitive(false)));
    // A sensitive value is refused by the token (an error, or left out of the answer).
    let readable = session
        .get_attributes(key, &[AttributeType::Value])
        .is_ok_and(|v| v.iter().any(|a| matches!(a, Attribute::Value(_))));
    Ok(marked || readable)
}

/// SoftHSM2 tokens for tests and rehearsals (`softhsm2-util`, Debian's `softhsm2`): a
/// configuration file and token folder of their own, so nothing touches the machine's.
pub mod softhsm {
    use std::path::{Path, PathBuf};

    /// Where Debian puts the module; `STRONGROOM_SOFTHSM_MODULE` overrides it.
    pub fn module() -> Option<PathBuf> {
        let path = std::env::var_os("STRONGROOM_SOFTHSM_MODULE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        path.exists().then_some(path)
    }

    /// A fresh token labelled `label` with user PIN `pin` under `dir`. Returns the
    /// configuration file to name in `SOFTHSM2_CONF` for every process that uses it.
    pub fn init_token(dir: &Path, label: &str, pin: &str) -> std::io::Result<PathBuf> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )?;
        let out = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin"])
            .arg(format!("so-{pin}"))
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "softhsm2-util --init-token: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(conf)
    }
}
