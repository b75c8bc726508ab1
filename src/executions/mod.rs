//! Interfaces, their executions and the log lines of each execution (the
//! SecuTix model): every exchange herald has with the outside belongs to an
//! execution of an interface, so a technician can find it by where it
//! happened and when.
//!
//! Real-time traffic goes into *daily* executions: one per interface and
//! local day (`general.timezone`), created on first use and closed by the
//! midnight roll, a durable job, with status `ok` or `ko`.

mod calls;
pub mod export;
mod log;
mod routes;
mod steps;
pub mod xlsx;

pub use self::calls::ApiCalls;
pub use self::log::*;
pub use self::routes::{acknowledge_as, note, routes};
use std::sync::Arc;

use crate::app::App;
use crate::feature::Feature;
use crate::jobs::Runner;
use crate::store::{Grows, StoreError};

/// The feature: interfaces, executions and their lines, and the midnight roll.
pub const FEATURE: Feature = Feature {
    tables: TABLES,
    jobs: &[Runner::of::<RollDaily>()],
    routes,
    state: Some(|_| Arc::new(ApiCalls::default())),
    start: Some(|app| {
        steps::watch(app);
        calls::summarize(app);
        Box::pin(plan_roll(app))
    }),
    ..Feature::named("executions")
};

/// Makes sure the midnight roll is planned (at start).
async fn plan_roll(app: &Arc<App>) -> Result<(), StoreError> {
    let now = app.clock.now();
    let tz = app.settings().general.timezone.clone();
    app.store
        .write(Grows::No, move |txn| schedule_roll(txn, now, &tz))
        .await
}
