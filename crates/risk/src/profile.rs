//! What the engine remembers of each customer, bounded: the last withdrawals per asset,
//! destinations, devices and IP addresses seen, and the last security change. The features
//! of an event are computed from the profile as it was before the event.

use std::collections::{HashMap, VecDeque};

use crate::geo::{distance_km, GeoTable, Place};

/// How much of each kind a profile keeps (the oldest goes first).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub withdrawals_per_asset: usize,
    pub assets: usize,
    pub destinations: usize,
    pub devices: usize,
    pub ips: usize,
    pub countries: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            withdrawals_per_asset: 50,
            assets: 16,
            destinations: 256,
            devices: 32,
            ips: 32,
            countries: 16,
        }
    }
}

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

/// A HyperLogLog sketch of distinct values (Flajolet et al. 2007).
#[derive(Debug, Clone)]
pub struct Distinct([u8; HLL]);

impl Default for Distinct {
    fn default() -> Self {
        Distinct([0; HLL])
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

#[derive(Debug, Clone, Default)]
pub struct Profile {
    withdrawals: HashMap<String, VecDeque<(i64, u128)>>,
    destinations: VecDeque<String>,
    devices: VecDeque<String>,
    ips: VecDeque<String>,
    security_change_ms: Option<i64>,
    /// Where and when the customer was last seen.
    last_place: Option<(Place, i64)>,
    countries: VecDeque<String>,
    devices_ever: Distinct,
}

fn remember(list: &mut VecDeque<String>, item: &str, bound: usize) {
    if let Some(at) = list.iter().position(|x| x == item) {
        list.remove(at);
    }
    list.push_back(item.to_owned());
    while list.len() > bound {
        list.pop_front();
    }
}

fn known(list: &VecDeque<String>, item: Option<&str>) -> bool {
    item.is_some_and(|i| list.iter().any(|x| x == i))
}

impl Profile {
    /// The features of `ev` against what was usual before it.
    pub fn features(&self, ev: &WithdrawalEvent, geo: Option<&GeoTable>) -> Vec<f64> {
        let here = geo.zip(ev.ip.as_deref()).and_then(|(g, ip)| g.locate(ip));
        let (travel, new_country) = match here {
            Some(p) => {
                let speed = self.last_place.as_ref().map_or(0.0, |(before, at)| {
                    let hours = (ev.at_ms.saturating_sub(*at) as f64 / 3_600_000.0).max(1.0 / 60.0);
                    (distance_km(before, p) / hours).min(20_000.0)
                });
                let new = !self.countries.is_empty() && !self.countries.contains(&p.country);
                (speed, f64::from(u8::from(new)))
            }
            None => (0.0, 0.0),
        };
        let mut f = self.base_features(ev);
        f.extend([travel, new_country, self.devices_ever.estimate()]);
        f
    }

    fn base_features(&self, ev: &WithdrawalEvent) -> Vec<f64> {
        let history = self.withdrawals.get(&ev.asset);
        let mut amounts: Vec<u128> =
            history.map(|h| h.iter().map(|(_, a)| *a).collect()).unwrap_or_default();
        amounts.sort_unstable();
        let median = amounts.get(amounts.len() / 2).copied().unwrap_or(0);
        // A ratio of two amounts: a feature, not money.
        let ratio = if median == 0 { 0.0 } else { ev.amount as f64 / median as f64 };
        let within = |ms: i64| {
            self.withdrawals
                .values()
                .flatten()
                .filter(|(at, _)| *at > ev.at_ms.saturating_sub(ms) && *at <= ev.at_ms)
                .count() as f64
        };
        // What left in the last 24 h in this asset, with this one, against the usual amount.
        let sum_24h = history
            .map(|h| {
                h.iter()
                    .filter(|(at, _)| *at > ev.at_ms.saturating_sub(86_400_000) && *at <= ev.at_ms)
                    .fold(ev.amount, |acc, (_, a)| acc.saturating_add(*a))
            })
            .unwrap_or(ev.amount);
        let sum_ratio = if median == 0 { 0.0 } else { sum_24h as f64 / median as f64 };
        // Where the amount falls in the customer's own history (0: below all, 1: above all).
        let percentile = if amounts.is_empty() {
            0.0
        } else {
            amounts.partition_point(|a| *a < ev.amount) as f64 / amounts.len() as f64
        };
        let hours = self.security_change_ms.map_or(720.0, |t| {
            ((ev.at_ms.saturating_sub(t)) as f64 / 3_600_000.0).clamp(0.0, 720.0)
        });
        vec![
            ratio,
            f64::from(u8::from(amounts.is_empty())),
            within(3_600_000),
            within(86_400_000),
            f64::from(u8::from(!known(&self.destinations, Some(&ev.destination)))),
            f64::from(u8::from(!known(&self.devices, ev.device.as_deref()))),
            f64::from(u8::from(!known(&self.ips, ev.ip.as_deref()))),
            hours,
            self.devices.len() as f64,
            sum_ratio,
            percentile,
        ]
    }

    /// Remember `ev` as part of what is usual.
    pub fn record_withdrawal(&mut self, ev: &WithdrawalEvent, b: &Bounds, geo: Option<&GeoTable>) {
        if !self.withdrawals.contains_key(&ev.asset) && self.withdrawals.len() >= b.assets {
            return;
        }
        let h = self.withdrawals.entry(ev.asset.clone()).or_default();
        h.push_back((ev.at_ms, ev.amount));
        while h.len() > b.withdrawals_per_asset {
            h.pop_front();
        }
        remember(&mut self.destinations, &ev.destination, b.destinations);
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
                    remember(&mut self.devices, d, b.devices);
                    self.devices_ever.add(d);
                }
                if let Some(i) = ip {
                    remember(&mut self.ips, i, b.ips);
                    if let Some(p) = geo.and_then(|g| g.locate(i)) {
                        remember(&mut self.countries, &p.country, b.countries);
                        self.last_place = Some((p.clone(), at_ms));
                    }
                }
            }
            Activity::SecurityChange => self.security_change_ms = Some(at_ms),
        }
    }

    /// Bytes at most, with `b` and identifiers up to `id_len` bytes.
    pub fn max_bytes(b: &Bounds, id_len: usize) -> usize {
        let string = std::mem::size_of::<String>() + id_len;
        b.assets * (string + b.withdrawals_per_asset * std::mem::size_of::<(i64, u128)>())
            + (b.destinations + b.devices + b.ips + b.countries) * string
            + std::mem::size_of::<Profile>()
    }
}
