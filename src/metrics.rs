//! Prometheus metrics: one registry, the handles the rest of the daemon
//! updates, and the two text formats `/metrics` serves (OpenMetrics, and
//! Prometheus 0.0.4 for a scraper or `promtool` that asks for it).
//!
//! Counters are updated where things happen; the gauges that describe the
//! store (events pending per webhook, the oldest of them, mails queued) are
//! set by `/metrics` itself from a read, just before encoding.

use std::sync::atomic::AtomicU64;

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
    pub checkpoints: Counter,
    pub clock_steps: Counter,
    pub journal_syncs: Counter,
    pub commit_seconds: Histogram,
    pub commit_batch: Histogram,
    pub jobs_due: Gauge,
    pub jobs_run: Family<Labels, Counter>,
    pub store_bytes: Gauge,
    /// 1 while new work is refused for lack of space.
    pub storage_full: Gauge,
    /// 1 for the reason new work is refused, if it is (`max_size`,
    /// `disk_full`, `recovering`): what the alert rules watch.
    pub store_refusing: Family<Labels, Gauge>,
    deliveries: Family<Labels, Counter>,
    /// Set at each scrape: events each webhook has yet to deliver.
    pub webhook_pending: Family<Labels, Gauge>,
    /// Set at each scrape: how long the oldest of them has waited.
    pub webhook_oldest_pending: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Set at each scrape: mails in the outbox not sent yet.
    pub mails_queued: Gauge,
    /// Set at each scrape: the worklist's items by kind.
    pub worklist: Family<Labels, Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let events_ingested = Counter::default();
        registry.register("events_ingested", "Events durably stored", events_ingested.clone());
        let commits = Counter::default();
        registry.register(
            "store_commits",
            "Group commits (each journaled, synced when a write of it waits for that)",
            commits.clone(),
        );
        let journal_syncs = Counter::default();
        registry.register(
            "store_journal_syncs",
            "fdatasync calls of the journal (each about one page written)",
            journal_syncs.clone(),
        );
        let checkpoints = Counter::default();
        registry.register(
            "store_checkpoints",
            "Durable database commits that start the journal again",
            checkpoints.clone(),
        );
        let clock_steps = Counter::default();
        registry.register(
            "clock_steps",
            "Steps of the wall clock seen (by more than 2 s beyond real time, either way)",
            clock_steps.clone(),
        );
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
        registry.register(
            "jobs_run",
            "Jobs run by kind and outcome (ok, failed: the work failed and is retried, error, stuck)",
            jobs_run.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_size_bytes",
            "Bytes the store's files (database and journal) take on the disk",
            store_bytes.clone(),
        );
        let storage_full = Gauge::default();
        registry.register(
            "storage_full",
            "1 while new work is refused with 507 storage_full",
            storage_full.clone(),
        );
        let store_refusing = Family::<Labels, Gauge>::default();
        registry.register(
            "store_refusing",
            "1 while new work is refused, by reason: max_size, disk_full (507), recovering (503, an I/O error)",
            store_refusing.clone(),
        );
        for reason in ["max_size", "disk_full", "recovering"] {
            store_refusing
                .get_or_create(&vec![("reason", reason.to_string())])
                .set(0);
        }
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Delivery attempts by webhook and outcome (success, failure)",
            deliveries.clone(),
        );
        let webhook_pending = Family::<Labels, Gauge>::default();
        registry.register(
            "webhook_pending_events",
            "Events a webhook has yet to deliver (buffered ones while deactivated)",
            webhook_pending.clone(),
        );
        let webhook_oldest_pending = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "webhook_oldest_pending_seconds",
            "Age of the oldest event a webhook has yet to deliver",
            webhook_oldest_pending.clone(),
        );
        let mails_queued = Gauge::default();
        registry.register("mails_queued", "Mails in the outbox not sent yet", mails_queued.clone());
        let worklist = Family::<Labels, Gauge>::default();
        registry.register(
            "worklist_items",
            "Open problems that need a person, by kind (what the status page lists under Needs attention)",
            worklist.clone(),
        );
        Metrics {
            registry,
            requests,
            events_ingested,
            commits,
            checkpoints,
            clock_steps,
            journal_syncs,
            commit_seconds,
            commit_batch,
            jobs_due,
            jobs_run,
            store_bytes,
            storage_full,
            store_refusing,
            deliveries,
            webhook_pending,
            webhook_oldest_pending,
            mails_queued,
            worklist,
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

    /// Counts the attempts of one delivery run.
    pub fn deliveries(&self, webhook: &str, successes: u64, failures: u64) {
        for (outcome, n) in [("success", successes), ("failure", failures)] {
            if n > 0 {
                let labels = vec![("webhook", webhook.to_string()), ("outcome", outcome.to_string())];
                self.deliveries.get_or_create(&labels).inc_by(n);
            }
        }
    }

    /// OpenMetrics 1.0 text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The Prometheus text format 0.0.4, for scrapers and tools that ask for
    /// it: OpenMetrics without `# EOF` and `# UNIT`, and counters described
    /// under the name their samples carry (`…_total`).
    pub fn encode_004(&self) -> String {
        to_004(&self.encode())
    }
}

fn to_004(open_metrics: &str) -> String {
    let counters: Vec<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(described.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_004_text_names_counters_by_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        m.request("GET /", 200);
        m.deliveries("wh_1", 3, 1);
        let text = m.encode_004();
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(text.contains("# TYPE herald_http_requests_total counter\n"), "{text}");
        assert!(text.contains("# HELP herald_http_requests_total "), "{text}");
        assert!(
            text.contains("herald_webhook_deliveries_total{webhook=\"wh_1\",outcome=\"failure\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE herald_store_commit_seconds histogram\n"),
            "{text}"
        );
        assert!(m.encode().ends_with("# EOF\n"));
    }
}
