//! [`Metrics`]: what `GET /metrics` reports, in the Prometheus text format
//! (`prometheus-client`), named as text-embeddings-inference names them (`te_…`; counters get
//! the format's `_total` suffix).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The route a request came in on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// A failed request: its route and why (`validation`, `payload`, `overloaded`, `timeout`,
/// `cancelled`, `backend`, `store`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub route: String,
    pub err: String,
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabel, Counter>,
    pub successes: Family<RouteLabel, Counter>,
    pub failures: Family<FailureLabel, Counter>,
    /// Requests given up before their answer: the client went away, or they timed out.
    pub cancelled_requests: Counter,
    /// Texts dropped from the queue because their request was gone.
    pub cancelled_texts: Counter,
    pub engine_errors: Counter,
    /// Texts waiting or running.
    pub queue_size: Gauge,
    /// Texts and tokens per decode.
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub batch_inference: Histogram,
    /// Tokens per input.
    pub input_length: Histogram,
    /// Per request, in seconds: all of it, tokenising, waiting in the queue (its slowest
    /// text), decoding (its slowest text).
    pub request_duration: Histogram,
    pub tokenization_duration: Histogram,
    pub queue_duration: Histogram,
    pub inference_duration: Histogram,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

fn counts() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            successes: Family::default(),
            failures: Family::default(),
            cancelled_requests: Counter::default(),
            cancelled_texts: Counter::default(),
            engine_errors: Counter::default(),
            queue_size: Gauge::default(),
            batch_size: counts(),
            batch_tokens: counts(),
            batch_inference: seconds(),
            input_length: counts(),
            request_duration: seconds(),
            tokenization_duration: seconds(),
            queue_duration: seconds(),
            inference_duration: seconds(),
        };
        let mut registry = Registry::default();
        register_requests(&mut registry, &m);
        register_batches(&mut registry, &m);
        m.registry = registry;
        m
    }

    /// Counts a request on `route`.
    pub fn request(&self, route: &str) {
        self.requests.get_or_create(&route_label(route)).inc();
    }

    pub fn success(&self, route: &str) {
        self.successes.get_or_create(&route_label(route)).inc();
    }

    pub fn failure(&self, route: &str, err: &str) {
        let label = FailureLabel {
            route: route.into(),
            err: err.into(),
        };
        self.failures.get_or_create(&label).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The per-request counters.
fn register_requests(r: &mut Registry, m: &Metrics) {
    r.register("te_request_count", "Requests received", m.requests.clone());
    r.register(
        "te_request_success",
        "Requests answered with 200",
        m.successes.clone(),
    );
    r.register(
        "te_request_failure",
        "Requests refused or failed, by reason",
        m.failures.clone(),
    );
    r.register(
        "te_request_cancelled",
        "Requests given up before their answer (client gone, or timed out)",
        m.cancelled_requests.clone(),
    );
    r.register(
        "te_request_cancelled_texts",
        "Texts dropped from the queue because their client went away or timed out",
        m.cancelled_texts.clone(),
    );
    r.register(
        "te_engine_error",
        "Decodes the engine could not take",
        m.engine_errors.clone(),
    );
}

/// The queue, decode and duration metrics.
fn register_batches(r: &mut Registry, m: &Metrics) {
    r.register(
        "te_queue_size",
        "Texts waiting or running",
        m.queue_size.clone(),
    );
    r.register(
        "te_batch_next_size",
        "Texts per decode",
        m.batch_size.clone(),
    );
    r.register(
        "te_batch_next_tokens",
        "Tokens per decode",
        m.batch_tokens.clone(),
    );
    r.register(
        "te_batch_inference_duration",
        "Seconds per decode",
        m.batch_inference.clone(),
    );
    r.register(
        "te_request_input_length",
        "Tokens per input",
        m.input_length.clone(),
    );
    r.register(
        "te_request_duration",
        "Seconds per request",
        m.request_duration.clone(),
    );
    r.register(
        "te_request_tokenization_duration",
        "Seconds tokenising a request",
        m.tokenization_duration.clone(),
    );
    r.register(
        "te_request_queue_duration",
        "Seconds a request's texts waited for a decode",
        m.queue_duration.clone(),
    );
    r.register(
        "te_request_inference_duration",
        "Seconds of decode a request waited on",
        m.inference_duration.clone(),
    );
}

fn route_label(route: &str) -> RouteLabel {
    RouteLabel {
        route: route.into(),
    }
}
