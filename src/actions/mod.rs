//! External API actions (Enate "Trigger External API"): herald calls an
//! external system and waits for its answer on a callback URL, retrying
//! calls that fail and ending each action in a state a person can act on.
//!
//! - `rules`: the state machine, pure.
//! - `record`: the stored action and its API view.
//! - `call`: the outbound call's body and what its answers mean.
//! - `run`: the call and timeout jobs, and the commit that applies an input
//!   with its jobs, mail and log line.
//! - `routes`: create, list, get, retry, and the callback.
//! - `handle`: what a person does: resolve, assign, acknowledge.
//! - `stored`: creating, finding and listing actions, the attempts that
//!   SIGHUP changes, and the retention sweep.
//!
//! The callback token must go out again with every retry, yet the action
//! keeps only its hash: the token rides in the action's call job, which
//! lives exactly while the action is `pending` or `retrying` (and survives
//! a restart with it). Once the call is accepted the job is gone, and with
//! it herald's only copy of the token.

pub mod call;
pub mod handle;
pub mod record;
mod routes;
pub mod rules;
pub mod run;
mod stored;

pub use self::record::Action;
pub use self::routes::{retry_now, routes};
pub use self::run::Calls;
pub use self::stored::*;
use std::sync::Arc;

use crate::app::App;
use crate::config::{Config, InterfaceKind};
use crate::feature::Feature;
use crate::jobs::Runner;

/// The feature: external API actions; its state is the [`Calls`] being made.
pub const FEATURE: Feature = Feature {
    tables: TABLES,
    jobs: &[Runner::of::<CallJob>(), Runner::of::<TimeoutJob>()],
    routes,
    state: Some(|_| Arc::new(Calls::default())),
    start: Some(|app| Box::pin(apply_attempts(app))),
    reload: Some(reload),
    ..Feature::named("actions")
};

/// At start, every action interface's `attempts` applies to its stored
/// actions, as a SIGHUP applies a changed one: a config changed while herald
/// was stopped reaches them too.
async fn apply_attempts(app: &Arc<App>) -> Result<(), crate::store::StoreError> {
    let all: Vec<(String, u32)> = app
        .settings()
        .interfaces
        .iter()
        .filter(|i| i.kind == InterfaceKind::Action)
        .map(|i| (i.name.clone(), i.attempts))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    run::attempts_changed(app, all).await
}

/// A changed `attempts` of an action interface applies to its actions.
fn reload(app: &Arc<App>, old: &Arc<Config>, new: &Arc<Config>) {
    let changed: Vec<(String, u32)> = new
        .interfaces
        .iter()
        .filter(|i| i.kind == InterfaceKind::Action)
        .filter(|i| run::interface(old, &i.name).is_none_or(|o| o.attempts != i.attempts))
        .map(|i| (i.name.clone(), i.attempts))
        .collect();
    if changed.is_empty() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = run::attempts_changed(&app, changed).await {
            tracing::error!(error = %e, "cannot apply the changed attempts to the actions; send SIGHUP again");
        }
    });
}
