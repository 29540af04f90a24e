//! Prometheus metrics, served at `/metrics` in the text exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssetLabels {
    pub asset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub withdrawals_requested: Family<AssetLabels, Counter>,
    pub deposits_credited: Family<AssetLabels, Counter>,
    pub errors: Family<CodeLabels, Counter>,
    /// The cold share of holdings per asset, in basis points, and the configured minimum.
    pub cold_ratio_bps: Family<AssetLabels, Gauge>,
    pub cold_ratio_min_bps: Family<AssetLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strongroom");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let withdrawals_requested = Family::<AssetLabels, Counter>::default();
        let deposits_credited = Family::<AssetLabels, Counter>::default();
        let errors = Family::<CodeLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        registry.register(
            "withdrawals_requested",
            "Withdrawals accepted and reserved",
            withdrawals_requested.clone(),
        );
        registry.register(
            "deposits_credited",
            "Deposits credited to customers",
            deposits_credited.clone(),
        );
        registry.register("api_errors", "Error responses by stable code", errors.clone());
        let cold_ratio_bps = Family::<AssetLabels, Gauge>::default();
        let cold_ratio_min_bps = Family::<AssetLabels, Gauge>::default();
        registry.register(
            "cold_ratio_bps",
            "Share of holdings in cold wallets, basis points (treasury pass)",
            cold_ratio_bps.clone(),
        );
        registry.register(
            "cold_ratio_min_bps",
            "Configured minimum cold share, basis points",
            cold_ratio_min_bps.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            withdrawals_requested,
            deposits_credited,
            errors,
            cold_ratio_bps,
            cold_ratio_min_bps,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
