//! One-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238) with HMAC-SHA-1, SHA-256 or
//! SHA-512, constant-time verification within a window of time steps, and the `otpauth://`
//! URI authenticator apps read (secret in RFC 4648 base32). The caller remembers the last
//! step accepted for a user and passes it in, so a code is never accepted twice.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

fn mac(alg: Algorithm, key: &[u8], msg: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        match <M as hmac::digest::KeyInit>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
    match alg {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, msg),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, msg),
    }
}

/// HOTP: the `digits`-digit code for `counter` (RFC 4226 §5.3, dynamic truncation).
pub fn hotp(alg: Algorithm, key: &[u8], counter: u64, digits: u32) -> String {
    let h = mac(alg, key, &counter.to_be_bytes());
    let offset = usize::from(h.last().copied().unwrap_or(0) & 0x0f);
    let word = h.get(offset..offset + 4).map_or(0, |b| {
        u32::from_be_bytes([
            b.first().copied().unwrap_or(0) & 0x7f,
            b.get(1).copied().unwrap_or(0),
            b.get(2).copied().unwrap_or(0),
            b.get(3).copied().unwrap_or(0),
        ])
    });
    let modulus = 10u64.pow(digits.clamp(6, 9));
    format!("{:0width$}", u64::from(word) % modulus, width = digits.clamp(6, 9) as usize)
}

/// TOTP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totp {
    pub algorithm: Algorithm,
    pub digits: u32,
    /// Seconds per step.
    pub step: u64,
}

impl Default for Totp {
    /// What authenticator apps expect: SHA-1, 6 digits, 30 s.
    fn default() -> Self {
        Totp { algorithm: Algorithm::Sha1, digits: 6, step: 30 }
    }
}

impl Totp {
    /// The time step for `unix_secs`.
    pub fn counter(&self, unix_secs: u64) -> u64 {
        unix_secs / self.step.max(1)
    }

    pub fn code(&self, key: &[u8], unix_secs: u64) -> String {
        hotp(self.algorithm, key, self.counter(unix_secs), self.digits)
    }

    /// The step whose code `code` is, within `window` steps either side of now and after
    /// `last_used` (a step already used is refused). Compares in constant time.
    pub fn verify(
        &self,
        key: &[u8],
        code: &str,
        unix_secs: u64,
        window: u64,
        last_used: Option<u64>,
    ) -> Option<u64> {
        let now = self.counter(unix_secs);
        let mut found = None;
        for step in now.saturating_sub(window)..=now.saturating_add(window) {
            let expected = hotp(self.algorithm, key, step, self.digits);
            let same: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
            if same && last_used.is_none_or(|u| step > u) {
                found = Some(step);
            }
        }
        found
    }

    /// `otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=…&digits=…&period=…`.
    pub fn uri(&self, issuer: &str, account: &str, key: &[u8]) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
            enc(issuer),
            enc(account),
            base32(key),
            enc(issuer),
            self.algorithm.name(),
            self.digits,
            self.step
        )
    }
}

/// RFC 4648 base32, without padding (as `otpauth` URIs carry it).
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in data {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let i = ((buffer >> bits) & 31) as usize;
            out.push(ALPHABET.get(i).map_or('A', |c| *c as char));
        }
    }
    if bits > 0 {
        let i = ((buffer << (5 - bits)) & 31) as usize;
        out.push(ALPHABET.get(i).map_or('A', |c| *c as char));
    }
    out
}

/// Decode RFC 4648 base32 (padding, spaces and case ignored, as people type secrets);
/// `None` for any other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())?;
        buffer = ((buffer << 5) | v as u32) & 0xFFFF;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4226_appendix_d_hotp_values() {
        let key = b"12345678901234567890";
        let want = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, w) in want.iter().enumerate() {
            assert_eq!(hotp(Algorithm::Sha1, key, counter as u64, 6), *w, "counter {counter}");
        }
    }

    #[test]
    fn rfc6238_appendix_b_totp_values() {
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, a, b, c) in table {
            for (alg, key, want) in [
                (Algorithm::Sha1, &sha1, a),
                (Algorithm::Sha256, &sha256, b),
                (Algorithm::Sha512, &sha512, c),
            ] {
                let totp = Totp { algorithm: alg, digits: 8, step: 30 };
                assert_eq!(totp.code(key, t), want, "{alg:?} at {t}");
            }
        }
    }

    #[test]
    fn verification_takes_a_window_and_never_the_same_step_twice() {
        let key = b"12345678901234567890";
        let t = Totp::default();
        let now = 1_111_111_111;
        let code = t.code(key, now);
        let step = t.verify(key, &code, now, 1, None).unwrap();
        assert_eq!(t.verify(key, &code, now, 1, Some(step)), None, "replayed");
        let late = t.code(key, now - 30);
        assert_eq!(t.verify(key, &late, now, 1, None), Some(step - 1));
        assert_eq!(t.verify(key, &t.code(key, now - 90), now, 1, None), None, "too old");
        assert_eq!(t.verify(key, "000000x", now, 1, None), None);
    }

    #[test]
    fn base32_and_the_uri_apps_read() {
        // RFC 4648 §10 vectors (without padding).
        for (plain, want) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(plain.as_bytes()), want);
            assert_eq!(base32_decode(want).unwrap(), plain.as_bytes());
            assert_eq!(
                base32_decode(&format!("{}==", want.to_lowercase())).unwrap(),
                plain.as_bytes()
            );
        }
        assert_eq!(base32_decode("MZXW6!"), None);
        let uri = Totp::default().uri("Strongroom", "ana@example.com", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/Strongroom:ana%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Strongroom&algorithm=SHA1&digits=6&period=30"
        );
    }
}
