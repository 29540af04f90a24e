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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    pub lease: String,
    pub holder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChainLabels {
    pub chain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
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
    // Read from the database at each scrape (the same on every instance).
    pub withdrawals_unfinished: Family<StateLabels, Gauge>,
    pub withdrawals_oldest_seconds: Family<StateLabels, Gauge>,
    pub review_queue: Gauge,
    pub outbox_backlog: Gauge,
    pub outbox_oldest_seconds: Gauge,
    pub outbox_dead_letters: Gauge,
    pub leader_leases: Family<LeaseLabels, Gauge>,
    // Set by the runtime's probes at each scrape.
    pub chain_head_lag_blocks: Family<ChainLabels, Gauge>,
    pub signer_node_up: Family<NodeLabels, Gauge>,
    pub presignatures: Family<NodeLabels, Gauge>,
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
        let withdrawals_unfinished = Family::<StateLabels, Gauge>::default();
        let withdrawals_oldest_seconds = Family::<StateLabels, Gauge>::default();
        let review_queue = Gauge::default();
        let outbox_backlog = Gauge::default();
        let outbox_oldest_seconds = Gauge::default();
        let outbox_dead_letters = Gauge::default();
        let leader_leases = Family::<LeaseLabels, Gauge>::default();
        let chain_head_lag_blocks = Family::<ChainLabels, Gauge>::default();
        let signer_node_up = Family::<NodeLabels, Gauge>::default();
        let presignatures = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "withdrawals_unfinished",
            "Withdrawals in each unfinished state",
            withdrawals_unfinished.clone(),
        );
        registry.register(
            "withdrawals_oldest_seconds",
            "Age of the oldest withdrawal in each unfinished state",
            withdrawals_oldest_seconds.clone(),
        );
        registry.register(
            "risk_review_queue",
            "Withdrawals waiting for an analyst",
            review_queue.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Alerts and notices not delivered yet",
            outbox_backlog.clone(),
        );
        registry.register(
            "outbox_oldest_seconds",
            "Age of the oldest undelivered alert or notice",
            outbox_oldest_seconds.clone(),
        );
        registry.register(
            "outbox_dead_letters",
            "Deliveries that ran out of attempts and wait for an operator (GET /v1/events/dead-letters)",
            outbox_dead_letters.clone(),
        );
        registry.register(
            "leader_lease",
            "Singleton jobs' leases: 1 while the holder's lease is live",
            leader_leases.clone(),
        );
        registry.register(
            "chain_head_lag_blocks",
            "Blocks between the node's head and the deposit watcher's cursor",
            chain_head_lag_blocks.clone(),
        );
        registry.register(
            "signer_node_up",
            "Signer nodes answering status (1) or not (0)",
            signer_node_up.clone(),
        );
        registry.register(
            "presignatures",
            "Presignatures ready on each signer node",
            presignatures.clone(),
        );
        Metrics {
            registry,
            withdrawals_unfinished,
            withdrawals_oldest_seconds,
            review_queue,
            outbox_backlog,
            outbox_oldest_seconds,
            outbox_dead_letters,
            leader_leases,
            chain_head_lag_blocks,
            signer_node_up,
            presignatures,
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
