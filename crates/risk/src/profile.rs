//! What the engine remembers of each customer, in a few KiB whatever their history: the last
//! withdrawals (time, asset, amount to 0.3%), the last amounts per asset, and keyed 64-bit
//! digests of the destinations, devices, IP addresses and countries seen, the last place and
//! security change, a HyperLogLog of devices ever seen, and the ids of the last events taken
//! in (so an event read twice is learned once). The features of an event are computed from
//! the profile as it was before the event.
//!
//! A profile is plain data with a compact encoding ([`Profile::encode`], at most
//! [`MAX_ENCODED`] bytes), so it can live outside the process: the runtime keeps it in the
//! database and caches only active customers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::geo::{distance_km, GeoTable, Place};

/// How much of each kind a profile keeps (the oldest goes first).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Withdrawals in any asset, for velocity and 24-hour totals.
    pub recent: usize,
    pub withdrawals_per_asset: usize,
    pub assets: usize,
    pub destinations: usize,
    pub devices: usize,
    pub ips: usize,
    pub countries: usize,
    /// Ids of the last events taken in.
    pub applied: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            recent: 64,
            withdrawals_per_asset: 32,
            assets: 8,
            destinations: 128,
            devices: 32,
            ips: 32,
            countries: 16,
            applied: 32,
        }
    }
}

/// The most bytes [`Profile::encode`] writes with the default [`Bounds`] (a test fills every
/// list and checks it).
pub const MAX_ENCODED: usize = 4096;

/// The encoding's version (the first byte).
const ENCODING: u8 = 1;

/// A withdrawal as the risk engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalEvent {
    pub customer: String,
    pub at_ms: i64,
    pub asset: String,
    /// Base units.
    pub amount: u128,
    pub destination: String,
    pub device: Option<String>,
    pub ip: Option<String>,
}

/// Anything else that changes what is usual for a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    Login { device: Option<String>, ip: Option<String> },
    SecurityChange,
}

/// The features of a withdrawal, in [`FEATURES`] order.
pub const FEATURES: [&str; 14] = [
    "amount_vs_median",
    "no_history",
    "count_1h",
    "count_24h",
    "new_destination",
    "new_device",
    "new_ip",
    "hours_since_security_change",
    "devices_seen",
    "sum_24h_vs_median",
    "amount_percentile",
    "travel_kmh",
    "new_country",
    "distinct_devices",
];

/// HyperLogLog registers (64: about 13% standard error, 64 bytes whatever the count).
const HLL: usize = 64;

fn hash64(s: &str) -> u64 {
    // FNV-1a, then the SplitMix64 finaliser to spread the bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// The first 8 bytes of SHA-256 over a domain tag and the value: what a profile keeps
/// instead of an address, device or IP. A customer's destination sets hold at most 128
/// digests, so passing a new address off as a known one means finding a second preimage of
/// a 64-bit digest (about 2^57 tries against a full set), not a cheap hash collision.
pub fn digest(domain: &str, value: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    out
}

/// A HyperLogLog sketch of distinct values (Flajolet et al. 2007).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distinct([u8; HLL]);

impl Default for Distinct {
    fn default() -> Self {
        Distinct([0; HLL])
    }
}

impl Serialize for Distinct {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Distinct {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::de::Deserialize::deserialize(d)?;
        let regs: [u8; HLL] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a HyperLogLog has 64 registers"))?;
        Ok(Distinct(regs))
    }
}

impl Distinct {
    pub fn add(&mut self, v: &str) {
        let h = hash64(v);
        let index = (h >> 58) as usize; // the top 6 bits choose the register
        let rank = ((h << 6) | (1 << 5)).leading_zeros() as u8 + 1;
        if let Some(r) = self.0.get_mut(index) {
            *r = (*r).max(rank);
        }
    }

    pub fn estimate(&self) -> f64 {
        let m = HLL as f64;
        let sum: f64 = self.0.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
        let raw = 0.709 * m * m / sum;
        let zeros = self.0.iter().filter(|r| **r == 0).count();
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

/// An amount as a profile keeps it: `1 + round(256 · log2 amount)` (0 for nothing), i.e. to
/// within 0.14% either way. Profiles use amounts only in ratios, ranks and 24-hour totals
/// against the usual amount, which are features, never money: the ledger keeps money.
pub fn log_amount(amount: u128) -> u16 {
    if amount == 0 {
        return 0;
    }
    let l = (amount as f64).log2() * 256.0;
    (l.round() as u32).saturating_add(1).min(u32::from(u16::MAX)) as u16
}

/// The amount a [`log_amount`] stands for (as a feature value).
pub fn amount_of(l: u16) -> f64 {
    if l == 0 {
        0.0
    } else {
        2f64.powf(f64::from(l - 1) / 256.0)
    }
}

/// Seconds since 1970 in 32 bits (until 2106); times before 1970 are 0.
fn seconds(at_ms: i64) -> u32 {
    u32::try_from((at_ms / 1000).max(0)).unwrap_or(u32::MAX)
}

/// One recent withdrawal: when, in which asset (a digest), how much ([`log_amount`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Recent {
    at_s: u32,
    asset: [u8; 4],
    amount: u16,
}

/// The last amounts in one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AssetHistory {
    asset: [u8; 4],
    amounts: Vec<u16>,
}

/// The last place the customer was seen and when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct LastPlace {
    lat: f32,
    lon: f32,
    at_s: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    recent: Vec<Recent>,
    assets: Vec<AssetHistory>,
    destinations: Vec<[u8; 8]>,
    devices: Vec<[u8; 8]>,
    ips: Vec<[u8; 8]>,
    countries: Vec<[u8; 4]>,
    security_change_s: Option<u32>,
    last_place: Option<LastPlace>,
    devices_ever: Distinct,
    applied: Vec<[u8; 8]>,
}

/// Why stored bytes are not a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("a profile encoding of version {0} (this build reads version {ENCODING})")]
    Version(u8),
    #[error("an empty profile encoding")]
    Empty,
    #[error("a malformed profile: {0}")]
    Malformed(String),
    #[error("a profile with {what} entries beyond its bound")]
    Unbounded { what: &'static str },
}

fn asset_tag(asset: &str) -> [u8; 4] {
    let d = digest("asset", asset);
    [d[0], d[1], d[2], d[3]]
}

/// Move `item` to the newest end of `list` (adding it if new), keeping at most `bound`.
fn remember<T: PartialEq + Copy>(list: &mut Vec<T>, item: T, bound: usize) {
    if let Some(at) = list.iter().position(|x| *x == item) {
        list.remove(at);
    }
    push_bounded(list, item, bound);
}

/// Append `item`, dropping the oldest first so the list never grows past `bound` (nor its
/// allocation past the first power of two at or above it).
fn push_bounded<T>(list: &mut Vec<T>, item: T, bound: usize) {
    if list.len() >= bound.max(1) {
        let extra = list.len() + 1 - bound.max(1);
        list.drain(..extra);
    }
    list.push(item);
}

impl Profile {
    /// The features of `ev` against what was usual before it.
    pub fn features(&self, ev: &WithdrawalEvent, geo: Option<&GeoTable>) -> Vec<f64> {
        let here = geo.zip(ev.ip.as_deref()).and_then(|(g, ip)| g.locate(ip));
        let (travel, new_country) = match here {
            Some(p) => {
                let speed = self.last_place.map_or(0.0, |before| {
                    let then = i64::from(before.at_s) * 1000;
                    let hours =
                        (ev.at_ms.saturating_sub(then) as f64 / 3_600_000.0).max(1.0 / 60.0);
                    let from = Place {
                        lat: f64::from(before.lat),
                        lon: f64::from(before.lon),
                        country: String::new(),
                    };
                    (distance_km(&from, p) / hours).min(20_000.0)
                });
                let c = digest("country", &p.country);
                let tag = [c[0], c[1], c[2], c[3]];
                let new = !self.countries.is_empty() && !self.countries.contains(&tag);
                (speed, f64::from(u8::from(new)))
            }
            None => (0.0, 0.0),
        };
        let mut f = self.base_features(ev);
        f.extend([travel, new_country, self.devices_ever.estimate()]);
        f
    }

    fn base_features(&self, ev: &WithdrawalEvent) -> Vec<f64> {
        let tag = asset_tag(&ev.asset);
        let mut amounts: Vec<u16> = self
            .assets
            .iter()
            .find(|a| a.asset == tag)
            .map(|a| a.amounts.clone())
            .unwrap_or_default();
        amounts.sort_unstable();
        let this = log_amount(ev.amount);
        let median = amounts.get(amounts.len() / 2).copied().map_or(0.0, amount_of);
        // A ratio of two amounts: a feature, not money.
        let ratio = if median == 0.0 { 0.0 } else { ev.amount as f64 / median };
        let now_s = i64::from(seconds(ev.at_ms));
        let within = |s: i64| {
            self.recent
                .iter()
                .filter(|r| i64::from(r.at_s) > now_s - s && i64::from(r.at_s) <= now_s)
                .count() as f64
        };
        // What left in the last 24 h in this asset, with this one, against the usual amount.
        let sum_24h: f64 = self
            .recent
            .iter()
            .filter(|r| {
                r.asset == tag && i64::from(r.at_s) > now_s - 86_400 && i64::from(r.at_s) <= now_s
            })
            .map(|r| amount_of(r.amount))
            .sum::<f64>()
            + ev.amount as f64;
        let sum_ratio = if median == 0.0 { 0.0 } else { sum_24h / median };
        // Where the amount falls in the customer's own history (0: below all, 1: above all).
        let percentile = if amounts.is_empty() {
            0.0
        } else {
            amounts.partition_point(|a| *a < this) as f64 / amounts.len() as f64
        };
        let hours = self
            .security_change_s
            .map_or(720.0, |t| ((now_s - i64::from(t)) as f64 / 3_600.0).clamp(0.0, 720.0));
        let known = |list: &[[u8; 8]], domain: &str, item: Option<&str>| {
            item.is_some_and(|i| list.contains(&digest(domain, i)))
        };
        vec![
            ratio,
            f64::from(u8::from(amounts.is_empty())),
            within(3_600),
            within(86_400),
            f64::from(u8::from(!known(&self.destinations, "destination", Some(&ev.destination)))),
            f64::from(u8::from(!known(&self.devices, "device", ev.device.as_deref()))),
            f64::from(u8::from(!known(&self.ips, "ip", ev.ip.as_deref()))),
            hours,
            self.devices.len() as f64,
            sum_ratio,
            percentile,
        ]
    }

    /// Whether the event `id` was taken in already (among the last [`Bounds::applied`]).
    pub fn has_applied(&self, id: &str) -> bool {
        self.applied.contains(&digest("event", id))
    }

    /// Note that the event `id` was taken in; `false` if it was already.
    pub fn mark_applied(&mut self, id: &str, b: &Bounds) -> bool {
        let d = digest("event", id);
        if self.applied.contains(&d) {
            return false;
        }
        push_bounded(&mut self.applied, d, b.applied);
        true
    }

    /// Remember `ev` as part of what is usual.
    pub fn record_withdrawal(&mut self, ev: &WithdrawalEvent, b: &Bounds, geo: Option<&GeoTable>) {
        let tag = asset_tag(&ev.asset);
        let amount = log_amount(ev.amount);
        push_bounded(
            &mut self.recent,
            Recent { at_s: seconds(ev.at_ms), asset: tag, amount },
            b.recent,
        );
        match self.assets.iter().position(|a| a.asset == tag) {
            Some(i) => {
                // The asset last withdrawn moves to the newest end; the stalest goes first.
                let mut h = self.assets.remove(i);
                push_bounded(&mut h.amounts, amount, b.withdrawals_per_asset);
                self.assets.push(h);
            }
            None => {
                push_bounded(
                    &mut self.assets,
                    AssetHistory { asset: tag, amounts: vec![amount] },
                    b.assets,
                );
            }
        }
        remember(&mut self.destinations, digest("destination", &ev.destination), b.destinations);
        self.record_activity(
            &Activity::Login { device: ev.device.clone(), ip: ev.ip.clone() },
            ev.at_ms,
            b,
            geo,
        );
    }

    pub fn record_activity(
        &mut self,
        a: &Activity,
        at_ms: i64,
        b: &Bounds,
        geo: Option<&GeoTable>,
    ) {
        match a {
            Activity::Login { device, ip } => {
                if let Some(d) = device {
                    remember(&mut self.devices, digest("device", d), b.devices);
                    self.devices_ever.add(d);
                }
                if let Some(i) = ip {
                    remember(&mut self.ips, digest("ip", i), b.ips);
                    if let Some(p) = geo.and_then(|g| g.locate(i)) {
                        let c = digest("country", &p.country);
                        remember(&mut self.countries, [c[0], c[1], c[2], c[3]], b.countries);
                        self.last_place = Some(LastPlace {
                            lat: p.lat as f32,
                            lon: p.lon as f32,
                            at_s: seconds(at_ms),
                        });
                    }
                }
            }
            Activity::SecurityChange => self.security_change_s = Some(seconds(at_ms)),
        }
    }

    /// The profile's bytes: a version byte, then the fields (postcard).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING];
        // Plain data of known types: encoding cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// A profile from [`Profile::encode`]'s bytes; refused if any list is over `b`.
    pub fn decode(bytes: &[u8], b: &Bounds) -> Result<Profile, ProfileError> {
        let (version, rest) = bytes.split_first().ok_or(ProfileError::Empty)?;
        if *version != ENCODING {
            return Err(ProfileError::Version(*version));
        }
        let p: Profile =
            postcard::from_bytes(rest).map_err(|e| ProfileError::Malformed(e.to_string()))?;
        let over = |what, n: usize, bound: usize| {
            if n > bound {
                Err(ProfileError::Unbounded { what })
            } else {
                Ok(())
            }
        };
        over("recent withdrawal", p.recent.len(), b.recent)?;
        over("asset", p.assets.len(), b.assets)?;
        for a in &p.assets {
            over("amount", a.amounts.len(), b.withdrawals_per_asset)?;
        }
        over("destination", p.destinations.len(), b.destinations)?;
        over("device", p.devices.len(), b.devices)?;
        over("IP address", p.ips.len(), b.ips)?;
        over("country", p.countries.len(), b.countries)?;
        over("applied event", p.applied.len(), b.applied)?;
        Ok(p)
    }

    /// Bytes the profile takes in memory (its lists' capacity included).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Profile>()
            + self.recent.capacity() * std::mem::size_of::<Recent>()
            + self
                .assets
                .iter()
                .map(|a| std::mem::size_of::<AssetHistory>() + a.amounts.capacity() * 2)
                .sum::<usize>()
            + (self.destinations.capacity()
                + self.devices.capacity()
                + self.ips.capacity()
                + self.applied.capacity())
                * 8
            + self.countries.capacity() * 4
    }

    /// Bytes a profile can take in memory at most with `b` (lists at their bounds, each
    /// allocated at most twice its length).
    pub fn max_bytes(b: &Bounds) -> usize {
        std::mem::size_of::<Profile>()
            + 2 * (b.recent * std::mem::size_of::<Recent>()
                + b.assets * (std::mem::size_of::<AssetHistory>() + b.withdrawals_per_asset * 2)
                + (b.destinations + b.devices + b.ips + b.applied) * 8
                + b.countries * 4)
    }
}
