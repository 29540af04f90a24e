//! Where an IP address is: a table of IPv4 ranges with coordinates and a country, loaded
//! from a CSV file (`start_ip,end_ip,lat,lon,country`), and the great-circle distance that
//! makes "impossible travel" (two places too far apart for the time between them).

use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub lat: f64,
    pub lon: f64,
    pub country: String,
}

#[derive(Debug, Clone, Default)]
pub struct GeoTable {
    /// Sorted by start, not overlapping.
    ranges: Vec<(u32, u32, Place)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("geo table line {line}: {reason}")]
pub struct GeoError {
    pub line: usize,
    pub reason: String,
}

impl GeoTable {
    pub fn from_csv(text: &str) -> Result<GeoTable, GeoError> {
        let mut ranges = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || (n == 0 && line.starts_with("start")) {
                continue;
            }
            let err = |reason: &str| GeoError { line: n + 1, reason: reason.to_owned() };
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let [start, end, lat, lon, country] = f.as_slice() else {
                return Err(err("expected start_ip,end_ip,lat,lon,country"));
            };
            let ip = |s: &str| {
                s.parse::<Ipv4Addr>().map(u32::from).map_err(|_| err("not an IPv4 address"))
            };
            let (start, end) = (ip(start)?, ip(end)?);
            if end < start {
                return Err(err("the range ends before it starts"));
            }
            let num = |s: &str| {
                s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| err("bad coordinate"))
            };
            let (lat, lon) = (num(lat)?, num(lon)?);
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(err("coordinates out of range"));
            }
            ranges.push((start, end, Place { lat, lon, country: (*country).to_owned() }));
        }
        ranges.sort_by_key(|r| r.0);
        if ranges.windows(2).any(|w| matches!(w, [a, b] if b.0 <= a.1)) {
            return Err(GeoError { line: 0, reason: "ranges overlap".into() });
        }
        Ok(GeoTable { ranges })
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn locate(&self, ip: &str) -> Option<&Place> {
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let i = self.ranges.partition_point(|r| r.0 <= ip);
        let (start, end, place) = self.ranges.get(i.checked_sub(1)?)?;
        (*start <= ip && ip <= *end).then_some(place)
    }
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km(a: &Place, b: &Place) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}
