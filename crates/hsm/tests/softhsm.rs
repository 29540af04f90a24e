//! The PKCS#11 key-encryption key against a real token (SoftHSM2). Skipped with a note when
//! SoftHSM2 is not installed, unless `STRONGROOM_REQUIRE_SOFTHSM=1` (scripts/test sets it
//! after `scripts/install-softhsm-for-tests`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // Test code.

use strongroom_core::SystemEnv;
use strongroom_crypto::seal::{self, KeyEncryptionKey, SealError, SoftwareKek};
use strongroom_crypto::SecretString;
use strongroom_hsm::{softhsm, HsmError, Pkcs11Config, Pkcs11Kek};

#[allow(clippy::print_stderr)] // Says why the test does nothing.
fn module_or_skip() -> Option<std::path::PathBuf> {
    let m = softhsm::module();
    if m.is_none() {
        assert!(
            std::env::var("STRONGROOM_REQUIRE_SOFTHSM").is_err(),
            "SoftHSM2 is required (scripts/install-softhsm-for-tests)"
        );
        eprintln!("SoftHSM2 is not installed: skipping the PKCS#11 tests");
    }
    m
}

/// One test: SoftHSM2 reads its configuration once per process.
#[test]
fn a_key_in_the_token_seals_opens_and_indexes_and_never_leaves_it() {
    let Some(module) = module_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let conf = softhsm::init_token(dir.path(), "strongroom-test", "4321").unwrap();
    // Set before this process loads the module (it reads the file once).
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let cfg = Pkcs11Config {
        module,
        token: "strongroom-test".into(),
        key: "node-1-kek".into(),
        pin_env: "STRONGROOM_TEST_HSM_PIN".into(),
    };
    let pin = SecretString::new("4321".into());
    let env = SystemEnv::new();

    // No key yet: a clear refusal, never a key made on the fly.
    assert!(matches!(Pkcs11Kek::open_with_pin(&cfg, &pin), Err(HsmError::KeyMissing { .. })));
    let kek = Pkcs11Kek::create(&cfg, &pin).unwrap();
    assert!(kek.id().starts_with("p11-"), "{}", kek.id());
    let again = Pkcs11Kek::create(&cfg, &pin);
    assert!(matches!(again, Err(HsmError::KeyExists { .. })), "{again:?}");
    assert!(!format!("{kek:?}").contains("4321"), "the PIN is never printed");

    // Sealed under the token's key, opened by a new session on it (a restart).
    let sealed = seal::seal(&kek, b"a share", b"node=1/key/hot-btc-1", &env).unwrap();
    drop(kek);
    let kek = Pkcs11Kek::open_with_pin(&cfg, &pin).unwrap();
    assert_eq!(seal::open(&kek, &sealed, b"node=1/key/hot-btc-1").unwrap().as_slice(), b"a share");
    // Another slot's context, a flipped byte, or a software key with another id: refused.
    assert!(matches!(
        seal::open(&kek, &sealed, b"node=1/key/hot-eth-1"),
        Err(SealError::Authentication)
    ));
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(seal::open(&kek, &flipped, b"node=1/key/hot-btc-1").is_err());
    let soft = SoftwareKek::generate(&env);
    assert!(matches!(
        seal::open(&soft, &sealed, b"node=1/key/hot-btc-1"),
        Err(SealError::WrongKek { .. })
    ));

    // Blind indexes: stable, per purpose and value, keyed inside the token.
    let a = kek.blind_index("email", b"ann@example.com").unwrap();
    assert_eq!(a, kek.blind_index("email", b"ann@example.com").unwrap());
    assert_ne!(a, kek.blind_index("email", b"bob@example.com").unwrap());
    assert_ne!(a, kek.blind_index("phone", b"ann@example.com").unwrap());
    assert_eq!(a.len(), 64);

    // A wrong PIN (once no session of this process is logged in), a token that is not
    // there, a module that is not there.
    drop(kek);
    let wrong = SecretString::new("0000".into());
    let refused = Pkcs11Kek::open_with_pin(&cfg, &wrong);
    assert!(matches!(refused, Err(HsmError::Login { .. })), "{refused:?}");
    let gone = Pkcs11Config { token: "not-plugged-in".into(), ..cfg.clone() };
    match Pkcs11Kek::open_with_pin(&gone, &pin) {
        Err(HsmError::TokenMissing { token, seen }) => {
            assert_eq!(token, "not-plugged-in");
            assert!(seen.contains(&"strongroom-test".to_string()), "{seen:?}");
        }
        other => panic!("expected TokenMissing, got {other:?}"),
    }
    let no_module = Pkcs11Config { module: dir.path().join("nope.so"), ..cfg.clone() };
    assert!(matches!(Pkcs11Kek::open_with_pin(&no_module, &pin), Err(HsmError::Module { .. })));
    // The PIN comes from the environment variable named, and only from there.
    assert!(matches!(Pkcs11Kek::pin(&cfg), Err(HsmError::NoPin { .. })));

    // The key cannot be read out of the token.
    assert!(!strongroom_hsm::key_is_extractable(&cfg, &pin).unwrap());
}
