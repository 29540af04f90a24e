#![no_main]
//! `strongroom_fuzz::sign_request`: see crates/fuzz for what it decodes and which properties it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = strongroom_fuzz::sign_request(data);
});
