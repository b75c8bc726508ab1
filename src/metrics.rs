//! Prometheus metrics: one registry, the handles the rest of the daemon
//! updates, and the text encoding `/metrics` serves.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    pub events_ingested: Counter,
    pub commits: Counter,
    pub commit_seconds: Histogram,
    pub commit_batch: Histogram,
    pub jobs_due: Gauge,
    pub jobs_run: Family<Labels, Counter>,
    pub store_bytes: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let events_ingested = Counter::default();
        registry.register("events_ingested", "Events durably stored", events_ingested.clone());
        let commits = Counter::default();
        registry.register("store_commits", "Durable commits (each one fsync)", commits.clone());
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_commit_seconds",
            "Time of one durable commit",
            commit_seconds.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_commit_batch_size",
            "Writes carried by one commit",
            commit_batch.clone(),
        );
        let jobs_due = Gauge::default();
        registry.register("jobs_due", "Durable jobs whose due time has come", jobs_due.clone());
        let jobs_run = Family::<Labels, Counter>::default();
        registry.register("jobs_run", "Jobs run by kind and outcome", jobs_run.clone());
        let store_bytes = Gauge::default();
        registry.register("store_size_bytes", "Size of the database file", store_bytes.clone());
        Metrics {
            registry,
            requests,
            events_ingested,
            commits,
            commit_seconds,
            commit_batch,
            jobs_due,
            jobs_run,
            store_bytes,
        }
    }

    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&vec![("route", route.to_string()), ("status", status.to_string())])
            .inc();
    }

    pub fn job(&self, kind: &'static str, outcome: &'static str) {
        self.jobs_run
            .get_or_create(&vec![("kind", kind.to_string()), ("outcome", outcome.to_string())])
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
