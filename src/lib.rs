//! herald: a small daemon for on-premise gateways. Local programs hand it
//! events; it tells external systems about them and keeps a readable record
//! of every exchange.
//!
//! # Layout
//!
//! The base, which knows no feature:
//! - [`config`]: the TOML file, its defaults and validation.
//! - [`clock`]: business time, real or driven by tests.
//! - [`store`]: the redb database, every table, and the group-commit writer.
//! - [`jobs`]: the durable timer queue and its dispatcher ("everything is a
//!   durable timer").
//! - [`auth`]: accounts, tokens, roles and the failed-login limiter.
//! - [`http`]: the server, the router with authentication and role checks,
//!   the JSON errors, and the outbound client.
//! - [`net`]: the transport under HTTP: TLS set-up and handshakes,
//!   connecting to an origin, deadlines on slow peers.
//! - [`html`], [`metrics`], [`redact`]: the page layout, the Prometheus
//!   registry, and hiding secrets in what people see.
//!
//! The features, each a folder that owns its tables, its pure rules
//! (`rules.rs`), its jobs and its routes (`routes.rs`):
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
//! and a feature calls another's functions, never its tables. This root
//! wires them: the publishing seam's subscribers, the route tables, and
//! which feature runs each kind of job. `main.rs` parses the command line,
//! loads the config, sets up tracing and signals, binds the socket and
//! calls [`run`].

pub mod actions;
pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod events;
pub mod executions;
pub mod html;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod notifications;
pub mod ops;
pub mod redact;
pub mod retention;
pub mod schedules;
pub mod store;
pub mod ui;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::{Account, Auth};
use crate::clock::Clock;
use crate::config::Config;
use crate::events::{Publisher, Subscriber};
use crate::jobs::{Job, JobKey};
use crate::metrics::Metrics;
use crate::store::{Grows, Store, StoreError};

/// How long requests still running when the server stops may take.
const SERVER_GRACE: Duration = Duration::from_secs(2);

/// What acts on each published event, in the publishing commit.
const SUBSCRIBERS: &[Subscriber] = &[webhooks::fan_out, notifications::plan];

/// The API: every route, from the features that own them.
fn router(app: Arc<App>) -> http::Router {
    let routes = [
        ops::routes(),
        ui::routes(),
        events::routes(),
        executions::routes(),
        mail::routes(),
        webhooks::routes(),
        notifications::routes(),
        actions::routes(),
        schedules::routes(),
    ];
    let failed = mail::FailedCalls::start(app.clone());
    http::Router {
        app,
        routes: routes.into_iter().flatten().collect(),
        on_failure: Box::new(move |app, call, e| failed.record(app, call, e)),
    }
}

/// Every table of herald, checked for duplicate ids.
pub fn tables() -> store::Tables {
    let all = [
        jobs::TABLES,
        events::TABLES,
        executions::TABLES,
        mail::TABLES,
        webhooks::TABLES,
        notifications::TABLES,
        actions::TABLES,
        schedules::TABLES,
    ];
    store::Tables::new(all.into_iter().flatten()).expect("table ids are unique")
}

/// What every request handler and job handler shares.
pub struct App {
    pub store: Store,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    /// The pooled outbound client (webhook deliveries).
    pub http: http::client::HttpClient,
    /// Publishes events and tells their subscribers.
    pub publisher: Publisher,
    /// The actions whose outbound call is being made right now.
    pub actions: actions::Calls,
    /// The schedules with a run going.
    pub runs: schedules::Runs,
    /// The settings in force; replaced whole when SIGHUP reloads the file.
    settings: RwLock<Arc<Config>>,
    /// Set once the store is open and the workers run (`/readyz`).
    pub ready: AtomicBool,
    /// Set when shutdown begins: new work is refused with 503.
    pub draining: AtomicBool,
    /// The generated admin, when no accounts are configured.
    bootstrap: Option<Account>,
}

impl App {
    pub fn settings(&self) -> Arc<Config> {
        self.settings.read().unwrap().clone()
    }

    /// Applies a reloaded config: accounts and other reloadable settings.
    /// Settings that need a restart are named in the log and left alone.
    /// A changed `attempts` of an action interface applies to its actions.
    fn reload(self: &Arc<Self>, new: Config) {
        let old = self.settings();
        let mut needs_restart = Vec::new();
        if new.server.listen != old.server.listen {
            needs_restart.push("server.listen");
        }
        if new.server.tls != old.server.tls {
            needs_restart.push("server.tls_cert/tls_key");
        }
        if new.storage.dir != old.storage.dir || new.storage.max_size != old.storage.max_size {
            needs_restart.push("storage.dir/max_size");
        }
        if new.storage.cache_size != old.storage.cache_size {
            needs_restart.push("storage.cache_size");
        }
        if new.server.body_timeout != old.server.body_timeout
            || new.server.max_connections != old.server.max_connections
        {
            needs_restart.push("server.body_timeout/max_connections");
        }
        if new.webhooks.ca_file != old.webhooks.ca_file || new.webhooks.max_per_host != old.webhooks.max_per_host {
            needs_restart.push("webhooks.ca_file/max_per_host");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(settings = ?needs_restart, "changed settings take effect at the next restart");
        }
        self.auth.replace(accounts_of(&new, self.bootstrap.as_ref()));
        let mut keep = new;
        keep.server.listen = old.server.listen;
        keep.server.tls = old.server.tls.clone();
        keep.server.body_timeout = old.server.body_timeout;
        keep.server.max_connections = old.server.max_connections;
        keep.storage.dir = old.storage.dir.clone();
        keep.storage.max_size = old.storage.max_size;
        keep.storage.cache_size = old.storage.cache_size;
        keep.webhooks.ca_file = old.webhooks.ca_file.clone();
        keep.webhooks.max_per_host = old.webhooks.max_per_host;
        let attempts: Vec<(String, u32)> = keep
            .interfaces
            .iter()
            .filter(|i| i.kind == config::InterfaceKind::Action)
            .filter(|i| actions::run::interface(&old, &i.name).is_none_or(|o| o.attempts != i.attempts))
            .map(|i| (i.name.clone(), i.attempts))
            .collect();
        *self.settings.write().unwrap() = Arc::new(keep);
        tracing::info!(accounts = self.auth.accounts().len(), "configuration reloaded");
        let app = self.clone();
        tokio::spawn(async move {
            if let Err(e) = schedules::apply_config(&app, false).await {
                tracing::error!(error = %e, "cannot apply the changed schedules; send SIGHUP again");
            }
            if !attempts.is_empty()
                && let Err(e) = actions::attempts_changed(&app, attempts).await
            {
                tracing::error!(error = %e, "cannot apply the changed attempts to the actions; send SIGHUP again");
            }
        });
    }
}

fn accounts_of(config: &Config, bootstrap: Option<&Account>) -> Vec<Account> {
    if config.accounts.is_empty() {
        bootstrap.into_iter().cloned().collect()
    } else {
        config.accounts.iter().map(Account::from).collect()
    }
}

/// Runs the daemon on an already-bound listener until `shutdown` resolves,
/// then drains within `server.drain_timeout`. Each message on `reload`
/// re-reads the config file (SIGHUP).
pub async fn run(
    config: Config,
    tls: Option<TlsAcceptor>,
    listener: TcpListener,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let jobs_changed = Arc::new(Notify::new());
    let storage = config.storage.clone();
    let (store, writer) = {
        let (metrics, jobs_changed) = (metrics.clone(), jobs_changed.clone());
        // Opening may repair a database left by a crash: keep it off the runtime threads.
        tokio::task::spawn_blocking(move || {
            Store::open(
                &storage.dir,
                storage.cache_size,
                storage.max_size,
                tables(),
                metrics,
                jobs_changed,
            )
        })
        .await??
    };
    tracing::info!(path = %store.path().display(), "store open");

    let bootstrap = if config.accounts.is_empty() {
        Some(
            auth::bootstrap_admin(&store, &config.storage.dir)
                .await
                .context("creating the admin token")?,
        )
    } else {
        None
    };
    let drain = config.server.drain_timeout;
    let settings_at_start = config.server.clone();
    let per_target = config.webhooks.max_per_host;
    let http = http::client::HttpClient::new(config.webhooks.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
    let app = Arc::new(App {
        http,
        publisher: Publisher::new(SUBSCRIBERS),
        actions: actions::Calls::default(),
        runs: schedules::Runs::default(),
        store: store.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        auth: Auth::new(accounts_of(&config, bootstrap.as_ref())),
        settings: RwLock::new(Arc::new(config)),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        bootstrap,
    });

    schedule_housekeeping(&app)
        .await
        .context("scheduling the midnight roll and the retention sweep")?;
    schedules::apply_config(&app, true)
        .await
        .context("planning the schedules' runs")?;

    let (engine_stop, server_stop) = (CancellationToken::new(), CancellationToken::new());
    let dispatcher = jobs::Dispatcher {
        store: store.clone(),
        clock: clock.clone(),
        metrics,
        wake: jobs_changed,
        handler: Arc::new(Engine { app: app.clone() }),
        per_target,
    };
    let engine = tokio::spawn(dispatcher.run(engine_stop.clone(), drain));
    let api = Arc::new(router(app.clone()));
    // The server's own drain is short: it stops only after the engine has
    // drained, and requests during the drain are answered 503 at once.
    let gate = net::Gate::new(
        listener,
        settings_at_start.max_connections,
        settings_at_start.body_timeout,
    );
    let server = tokio::spawn(http::serve(api, gate, tls, server_stop.clone(), SERVER_GRACE));

    app.ready.store(true, Ordering::Relaxed);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("herald is ready");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reload.recv() => reload_config(&app),
        }
    }

    tracing::info!(drain = ?drain, "shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // While the engine drains, the server goes on accepting and answers
    // `503 shutting_down` with Retry-After, so that a local client can tell
    // "stopping" from "dead".
    app.draining.store(true, Ordering::Relaxed);
    engine_stop.cancel();
    let engine_done = tokio::time::timeout(drain + Duration::from_millis(500), engine).await;
    server_stop.cancel();
    let server_done = tokio::time::timeout(SERVER_GRACE + Duration::from_millis(500), server).await;
    if engine_done.is_err() || server_done.is_err() {
        tracing::warn!("work still running after the drain timeout; it will run again after the restart");
    }
    drop(app);
    drop(store);
    tokio::task::spawn_blocking(move || writer.close(Duration::from_secs(5))).await?;
    tracing::info!("stopped");
    Ok(())
}

fn reload_config(app: &Arc<App>) {
    let Some(path) = app.settings().source.clone() else {
        tracing::info!("SIGHUP: running on built-in defaults, nothing to reload");
        return;
    };
    match Config::load(&path) {
        Ok(new) => app.reload(new),
        Err(e) => tracing::error!(path = %path.display(), "SIGHUP: {e}; keeping the previous configuration"),
    }
}

async fn schedule_housekeeping(app: &Arc<App>) -> Result<(), StoreError> {
    let now = app.clock.now();
    let settings = app.settings();
    let tz = settings.general.timezone.clone();
    let retention = settings.storage.retention;
    app.store
        .write(Grows::No, move |txn| {
            executions::schedule_roll(txn, now, &tz)?;
            retention::schedule(txn, now, retention)
        })
        .await
}

/// Runs each kind of job with the feature that owns it.
struct Engine {
    app: Arc<App>,
}

impl jobs::Handler for Engine {
    fn run(&self, key: JobKey, job: Job) -> Pin<Box<dyn Future<Output = Result<jobs::Ran, StoreError>> + Send + '_>> {
        let app = &self.app;
        Box::pin(async move {
            match job {
                Job::RollDaily => executions::run_job(app, key, job).await,
                Job::Sweep => retention::run_job(app, key, job).await,
                Job::SendMail { .. } => mail::run_job(app, key, job).await,
                Job::Deliver { .. } | Job::WebhookBufferEnd { .. } => webhooks::run_job(app, key, job).await,
                Job::Ping { .. } => notifications::run_job(app, key, job).await,
                Job::ActionCall { .. } | Job::ActionTimeout { .. } => actions::run_job(app, key, job).await,
                Job::ScheduleRun { .. } | Job::RunAnomaly { .. } => schedules::run_job(app, key, job).await,
            }
        })
    }
}
