//! Scheduled interfaces (SecuTix): each `[[schedules]]` entry runs its
//! `pull` or `push` interface every `every`, as a durable job; each run is
//! an execution of kind `scheduled` with its log lines.
//!
//! - `rules`: planning (fixed rate, no catch-up), pull answers, keys.
//! - `run`: a run (planned or "run now"), pull and push, the anomaly job.
//! - `routes`: `GET /v1/schedules`, `POST /v1/schedules/{name}/run`.
//! - `plan`: what is stored per schedule, and keeping it in step with
//!   the config at start and on SIGHUP.
//!
//! The next planned run is stored (with its job), so a restart neither
//! skips nor doubles a run. A run's start moves the plan to the next slot
//! in the same commit that opens its execution; a crash during a run
//! leaves that execution `running`, and the next start closes it `ko` and
//! runs again at once (runs are idempotent: pulled items carry keys, pushed
//! batches resend with the same keys).

mod plan;
mod routes;
pub mod rules;
pub mod run;

pub use self::plan::*;
pub use self::routes::routes;
pub use self::run::Runs;
use std::sync::Arc;

use crate::feature::Feature;
use crate::jobs::Runner;

/// The feature: pull and push runs on schedules; its state is the [`Runs`] going.
pub const FEATURE: Feature = Feature {
    tables: TABLES,
    jobs: &[Runner::of::<RunJob>(), Runner::of::<AnomalyJob>()],
    routes,
    state: Some(|_| Arc::new(Runs::default())),
    start: Some(|app| Box::pin(apply_config(app, true))),
    reload: Some(|app, _, _| {
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = apply_config(&app, false).await {
                tracing::error!(error = %e, "cannot apply the changed schedules; send SIGHUP again");
            }
        });
    }),
    ..Feature::named("schedules")
};
