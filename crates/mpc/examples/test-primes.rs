//! Generate Paillier safe primes for the test fixtures (TEST ONLY: committed primes are
//! public, so no real key may use them). Usage:
//! `cargo run -p strongroom-mpc --example test-primes -- 5 > crates/mpc/tests/fixtures/test-primes.json`
#![allow(clippy::print_stdout, clippy::expect_used, clippy::disallowed_methods)]

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(|| {
                let mut rng = rand_core::OsRng;
                strongroom_mpc::ecdsa::generate_primes(&mut rng)
            })
        })
        .collect();
    let primes: Vec<_> = handles.into_iter().map(|h| h.join().expect("prime thread")).collect();
    println!("{}", serde_json::to_string_pretty(&primes).expect("json"));
}
