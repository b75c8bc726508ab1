//! Change notifications (Collmex "API-Benachrichtigungen"): a published
//! event plans an HTTP GET ping to the URL a system registered for that
//! event, and the system then fetches what changed with a change query.
//!
//! `plans` owns the tables (`NOTIFICATIONS`, the index by event name
//! `NOTIF_BY_EVENT`, the count of idle ones per name `NOTIF_IDLE`, the
//! feeds' `CHANGE_CURSORS`) and applies `rules` to them; `ping` runs the
//! ping job, `routes` the API, `records` reads and writes Collmex's files.

mod ping;
mod plans;
pub mod records;
mod routes;
pub mod rules;

pub use self::plans::*;
pub use self::routes::routes;

use crate::feature::Feature;
use crate::jobs::Runner;

/// The feature: change notifications, their pings and the change feed.
pub const FEATURE: Feature = Feature {
    tables: TABLES,
    jobs: &[Runner::of::<Ping>()],
    routes,
    subscriber: Some(plan),
    ..Feature::named("notifications")
};
