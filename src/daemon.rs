//! The daemon's life: open the store, make the app from the base services
//! and the features' descriptors, start the engine and the server, reload
//! on SIGHUP, and drain on shutdown. It names no feature: what it runs comes
//! from [`Features`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::app::{App, Base};
use crate::clock::Clock;
use crate::config::Config;
use crate::feature::Features;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::{auth, http, jobs, net, outbound};

/// How long requests still running when the server stops may take.
const SERVER_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon on an already-bound listener until `shutdown` resolves,
/// then drains within `server.drain_timeout`. Each message on `reload`
/// re-reads the config file (SIGHUP).
pub async fn run(
    features: Features,
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
    let tables = features.tables().map_err(anyhow::Error::msg)?;
    let (store, writer) = {
        let (metrics, jobs_changed) = (metrics.clone(), jobs_changed.clone());
        // Opening may repair a database left by a crash: keep it off the runtime threads.
        tokio::task::spawn_blocking(move || {
            Store::open(
                &storage.dir,
                storage.cache_size,
                storage.max_size,
                tables,
                metrics,
                jobs_changed,
            )
        })
        .await??
    };
    tracing::info!(path = %store.path().display(), "store open");
    // Before anything reads the clock: herald time goes on from the last run.
    crate::timekeeping::restore(&store, &clock).context("reading the saved clock")?;

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
    let http = outbound::client::HttpClient::new(config.webhooks.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
    let base = Base {
        store: store.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        http,
        config,
        bootstrap,
    };
    let app = Arc::new(App::new(base, features.states()));
    if let Err((feature, e)) = features.start(&app).await {
        return Err(anyhow::Error::new(e).context(format!("starting {feature}")));
    }

    let (engine_stop, server_stop) = (CancellationToken::new(), CancellationToken::new());
    let dispatcher = jobs::Dispatcher {
        store: store.clone(),
        clock: clock.clone(),
        metrics,
        wake: jobs_changed,
        handler: Arc::new(jobs::Engine {
            app: app.clone(),
            runners: features.runners().map_err(anyhow::Error::msg)?,
        }),
        per_target,
    };
    let engine = tokio::spawn(dispatcher.run(engine_stop.clone(), drain));
    let api = Arc::new(http::Router {
        app: app.clone(),
        routes: features.routes(),
        on_failure: features.failed_calls(&app),
    });
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
            Some(()) = reload.recv() => reload_config(&app, &features),
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
    if let Err(e) = crate::timekeeping::save(&store, &clock).await {
        tracing::warn!(error = %e, "herald time was not saved at the stop");
    }
    drop(app);
    drop(store);
    tokio::task::spawn_blocking(move || writer.close(Duration::from_secs(5))).await?;
    tracing::info!("stopped");
    Ok(())
}

fn reload_config(app: &Arc<App>, features: &Features) {
    let Some(path) = app.settings().source.clone() else {
        tracing::info!("SIGHUP: running on built-in defaults, nothing to reload");
        return;
    };
    match Config::load(&path) {
        Ok(new) => {
            let (old, new) = app.reload(new);
            features.reload(app, &old, &new);
        }
        Err(e) => tracing::error!(path = %path.display(), "SIGHUP: {e}; keeping the previous configuration"),
    }
}
