//! What the engine remembers of each customer, bounded: the last withdrawals per asset,
//! destinations, devices and IP addresses seen, and the last security change. The features
//! of an event are computed from the profile as it was before the event.

use std::collections::{HashMap, VecDeque};

/// How much of each kind a profile keeps (the oldest goes first).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub withdrawals_per_asset: usize,
    pub assets: usize,
    pub destinations: usize,
    pub devices: usize,
    pub ips: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { withdrawals_per_asset: 50, assets: 16, destinations: 256, devices: 32, ips: 32 }
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
pub const FEATURES: [&str; 9] = [
    "amount_vs_median",
    "no_history",
    "count_1h",
    "count_24h",
    "new_destination",
    "new_device",
    "new_ip",
    "hours_since_security_change",
    "devices_seen",
];

#[derive(Debug, Clone, Default)]
pub struct Profile {
    withdrawals: HashMap<String, VecDeque<(i64, u128)>>,
    destinations: VecDeque<String>,
    devices: VecDeque<String>,
    ips: VecDeque<String>,
    security_change_ms: Option<i64>,
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
    pub fn features(&self, ev: &WithdrawalEvent) -> Vec<f64> {
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
        ]
    }

    /// Remember `ev` as part of what is usual.
    pub fn record_withdrawal(&mut self, ev: &WithdrawalEvent, b: &Bounds) {
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
        );
    }

    pub fn record_activity(&mut self, a: &Activity, at_ms: i64, b: &Bounds) {
        match a {
            Activity::Login { device, ip } => {
                if let Some(d) = device {
                    remember(&mut self.devices, d, b.devices);
                }
                if let Some(i) = ip {
                    remember(&mut self.ips, i, b.ips);
                }
            }
            Activity::SecurityChange => self.security_change_ms = Some(at_ms),
        }
    }

    /// Bytes at most, with `b` and identifiers up to `id_len` bytes.
    pub fn max_bytes(b: &Bounds, id_len: usize) -> usize {
        let string = std::mem::size_of::<String>() + id_len;
        b.assets * (string + b.withdrawals_per_asset * std::mem::size_of::<(i64, u128)>())
            + (b.destinations + b.devices + b.ips) * string
            + std::mem::size_of::<Profile>()
    }
}
