//! `GET /metrics`: the server's counters and histograms in the OpenMetrics text format
//! (which Prometheus scrapes), written by `prometheus-client`.
//!
//! Route labels are a fixed set (`/predict`, `/health`, `/metrics`, `other`) so a client
//! sending random paths cannot grow the label space without bound.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s: a cached tiny model answers in well under a millisecond, a large
    // batch on a big model in seconds
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

type LatencyFamily = Family<Route, Histogram, fn() -> Histogram>;

/// Everything /metrics reports; shared by the HTTP layer and the batcher.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    errors: Family<Route, Counter>,
    latency: LatencyFamily,
    batch_samples: Histogram,
    batch_requests: Histogram,
    samples: Counter,
    connections_rejected: Counter,
    in_flight: Gauge,
}

/// The route label of a request path.
pub(crate) fn route_label(path: &str) -> &'static str {
    match path {
        "/predict" => "/predict",
        "/health" => "/health",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("quadra");
        let requests = Family::<RouteStatus, Counter>::default();
        let errors = Family::<Route, Counter>::default();
        let latency = LatencyFamily::new_with_constructor(latency_histogram);
        // samples per model call: powers of two up to 1024
        let batch_samples = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let batch_requests = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let samples = Counter::default();
        let connections_rejected = Counter::default();
        let in_flight = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "http_errors",
            "HTTP requests answered with a 4xx or 5xx status, by route",
            errors.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from the request's headers to its answer, by route",
            latency.clone(),
        );
        registry.register(
            "batch_samples",
            "Samples in one model call (dynamic batching merges requests)",
            batch_samples.clone(),
        );
        registry.register(
            "batch_requests",
            "Requests merged into one model call",
            batch_requests.clone(),
        );
        registry.register("predicted_samples", "Samples predicted", samples.clone());
        registry.register(
            "connections_rejected",
            "Connections answered 503 because the connection limit was reached",
            connections_rejected.clone(),
        );
        registry.register(
            "predict_in_flight",
            "POST /predict requests being served now",
            in_flight.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            latency,
            batch_samples,
            batch_requests,
            samples,
            connections_rejected,
            in_flight,
        }
    }

    pub(crate) fn request(&self, route: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
        if status >= 400 {
            self.errors.get_or_create(&Route { route }).inc();
        }
        self.latency
            .get_or_create(&Route { route })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn batch(&self, samples: usize, requests: usize) {
        self.batch_samples.observe(samples as f64);
        self.batch_requests.observe(requests as f64);
        self.samples.inc_by(samples as u64);
    }

    pub(crate) fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    pub(crate) fn encode(&self) -> String {
        let mut s = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}
