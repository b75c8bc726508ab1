//! herald: a small daemon for on-premise gateways. Local programs hand it
//! events; it tells external systems about them and keeps a readable record
//! of every exchange.
//!
//! # Layout
//!
//! The base, which knows no feature:
//! - [`app`]: the context every handler shares (store, clock, metrics,
//!   accounts, outbound client, settings) and the features' states by type.
//! - [`feature`]: the descriptor each feature exports, and the registry
//!   the daemon takes its tables, jobs, routes and hooks from.
//! - [`daemon`]: start, reload and drain.
//! - [`publish`]: the publishing seam between events and its subscribers.
//! - [`config`]: the TOML file, its defaults and validation.
//! - [`clock`]: business time, real or driven by tests, through wall-clock
//!   steps; [`timekeeping`] keeps it across restarts.
//! - [`store`]: the redb database, the journal (its invariants are stated
//!   at the top of the module), tables with stable ids, the group-commit
//!   writer.
//! - [`jobs`]: the durable timer queue and its dispatcher ("everything is a
//!   durable timer").
//! - [`auth`]: accounts, tokens, roles and the failed-login limiter.
//! - [`http`]: the server, the router with authentication and role checks,
//!   the JSON errors, the request and the answers' shapes.
//! - [`outbound`]: calls herald makes: the pooled client, what an answer
//!   means (with `Retry-After`), signing per Standard Webhooks.
//! - [`category`]: the categories of error lines.
//! - [`net`]: the transport under HTTP: TLS set-up and handshakes,
//!   connecting to an origin, deadlines on slow peers.
//! - [`html`], [`metrics`], [`redact`]: the page layout, the Prometheus
//!   registry, and hiding secrets in what people see.
//!
//! The features, each a folder that owns its tables, its pure rules
//! (`rules.rs`), its kinds of job and its routes (`routes.rs`), and exports
//! one descriptor (`FEATURE`) that says all the daemon needs of it:
//! - [`events`]: validation, durable publishing to its subscribers, paging.
//! - [`executions`]: interfaces, executions and their log lines; the
//!   midnight roll of daily executions.
//! - [`mail`]: the durable outbox, debounced admin error mails (a failed API
//!   call) and system notifications, sent over SMTP.
//! - [`webhooks`]: signed deliveries in order, retries, deactivation, the
//!   buffer and its replay.
//! - [`notifications`]: change notifications: delayed GET pings, the
//!   unacknowledged counter, the change query, Collmex record import.
//! - [`actions`]: external API actions: the outbound call, its retries
//!   "attempt N of M", the callback, the timeout to a queue.
//! - [`schedules`]: pull and push interfaces run every `every`, run now,
//!   the anomaly of a run over an hour.
//!
//! And what spans them: [`retention`] (the sweep), [`ops`] (health,
//! readiness, metrics, status), [`ui`] (the technician's pages and their
//! buttons), [`console`] (the same on the command line, a client of the API).
//!
//! Dependencies point one way: features use the base, never the reverse,
//! and a feature calls another's functions, never its tables; no file
//! imports another that imports it back. Stored ids and bytes are pinned
//! by the golden tests (`src/golden.rs`). This root
//! only lists the features' descriptors ([`FEATURES`]). `main.rs` parses
//! the command line, loads the config, sets up tracing and signals, binds
//! the socket and calls [`run`].

pub mod actions;
pub mod app;
pub mod auth;
pub mod category;
pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod events;
pub mod executions;
pub mod feature;
#[cfg(test)]
mod golden;
pub mod html;
pub mod http;
pub mod jobs;
pub mod journald;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod notifications;
pub mod ops;
pub mod outbound;
pub mod publish;
pub mod redact;
pub mod retention;
pub mod schedules;
pub mod store;
pub mod timekeeping;
pub mod ui;
pub mod webhooks;
pub mod worklist;

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::clock::Clock;
use crate::config::Config;
use crate::feature::{Feature, Features};

/// Every feature, in the order their routes are matched and their
/// subscribers are told of new events.
pub const FEATURES: &[&Feature] = &[
    &ops::FEATURE,
    &ui::FEATURE,
    &events::FEATURE,
    &executions::FEATURE,
    &mail::FEATURE,
    &webhooks::FEATURE,
    &notifications::FEATURE,
    &actions::FEATURE,
    &schedules::FEATURE,
    &retention::FEATURE,
    &worklist::FEATURE,
];

/// Runs the daemon with every feature; see [`daemon::run`].
pub async fn run(
    config: Config,
    tls: Option<TlsAcceptor>,
    listener: TcpListener,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
    reload: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let features = Features::new(FEATURES).map_err(anyhow::Error::msg)?;
    daemon::run(features, config, tls, listener, clock, shutdown, reload).await
}

/// Every table of herald, for the unit tests' stores.
#[cfg(test)]
pub(crate) fn tables() -> store::Tables {
    Features::new(FEATURES).unwrap().tables().unwrap()
}

/// A store in `dir` with small limits and every table of herald, for the
/// unit tests of every module.
#[cfg(test)]
pub(crate) fn test_store(dir: &std::path::Path) -> Result<(store::Store, store::WriterGuard), store::OpenError> {
    store::open_with_tables(dir, tables())
}
