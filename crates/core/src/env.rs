//! Time and randomness, passed in.
//!
//! Library crates never read the wall clock or the OS random source themselves (clippy
//! enforces it): they take an [`Env`]. Binaries give them the real one; tests and simulations
//! give them a fixed or seeded one, which makes runs reproducible.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_ms(ms: i64) -> Self {
        Timestamp(ms)
    }
    pub const fn unix_ms(self) -> i64 {
        self.0
    }
    /// `self + ms`, saturating at the ends of the range.
    pub fn plus_ms(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The outside world's clock and entropy.
pub trait Env: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
    /// A monotonic clock from an arbitrary origin, for measuring durations.
    fn monotonic(&self) -> std::time::Duration;
    /// Fill `buf` with cryptographically secure random bytes.
    fn fill_random(&self, buf: &mut [u8]);
}

/// A fresh random (version 4) UUID drawn from `env`.
pub fn new_id(env: &dyn Env) -> Uuid {
    let mut bytes = [0u8; 16];
    env.fill_random(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A deterministic [`Env`] for tests and simulations: time is set by hand and randomness
/// comes from a SHA-256 counter stream over a seed. It is not a source of secrets.
#[derive(Debug)]
pub struct FixedEnv {
    now: std::sync::atomic::AtomicI64,
    counter: std::sync::atomic::AtomicU64,
    seed: u64,
}

impl FixedEnv {
    pub fn new(now: Timestamp, seed: u64) -> Self {
        FixedEnv {
            now: std::sync::atomic::AtomicI64::new(now.unix_ms()),
            counter: std::sync::atomic::AtomicU64::new(0),
            seed,
        }
    }
    pub fn set_now(&self, now: Timestamp) {
        self.now.store(now.unix_ms(), std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance_ms(&self, ms: i64) {
        self.now.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Env for FixedEnv {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(std::sync::atomic::Ordering::SeqCst))
    }
    fn monotonic(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.now().unix_ms()).unwrap_or(0))
    }
    fn fill_random(&self, buf: &mut [u8]) {
        use sha2::{Digest, Sha256};
        for chunk in buf.chunks_mut(32) {
            let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut h = Sha256::new();
            h.update(self.seed.to_be_bytes());
            h.update(n.to_be_bytes());
            let block = h.finalize();
            for (dst, src) in chunk.iter_mut().zip(block.iter()) {
                *dst = *src;
            }
        }
    }
}

/// `rand_core` 0.6 randomness drawn from an [`Env`].
pub struct EnvRng<'a>(pub &'a dyn Env);

impl std::fmt::Debug for EnvRng<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvRng")
    }
}

impl rand_core::RngCore for EnvRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill_random(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill_random(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_random(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill_random(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for EnvRng<'_> {}
