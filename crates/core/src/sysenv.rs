//! The real clock and random source. Only binaries construct this; library crates take an
//! `Env` and so can be run against a fixed one in tests.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{Env, Timestamp};

#[derive(Debug)]
pub struct SystemEnv {
    start: Instant,
}

#[allow(clippy::disallowed_methods)] // This is the one place that reads the real clock.
impl SystemEnv {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        SystemEnv { start: Instant::now() }
    }
}

#[allow(clippy::disallowed_methods)]
impl Env for SystemEnv {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp::from_unix_ms(i64::try_from(ms).unwrap_or(i64::MAX))
    }
    fn monotonic(&self) -> std::time::Duration {
        self.start.elapsed()
    }
    fn fill_random(&self, buf: &mut [u8]) {
        // A failing OS random source must stop the process: continuing would mint
        // predictable ids and tokens.
        if getrandom::getrandom(buf).is_err() {
            std::process::abort();
        }
    }
}
