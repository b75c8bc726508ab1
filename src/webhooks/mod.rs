//! Webhooks: each matching event as a signed JSON POST, in order per
//! webhook, through outages of either side.
//!
//! Publishing an event puts a row `(webhook, seq)` into `WH_QUEUE` for every
//! webhook it matches, in the same commit. Each webhook with work has one
//! delivery job (`wh:<id>`): it posts the head of its queue and the events
//! behind it in order, and commits the outcome with the next step. A failure
//! holds back that webhook's later events only; other webhooks have their own
//! jobs, and the dispatcher bounds how many run at once per receiver host.
//!
//! After `webhooks.disable_after` of failures without a success (or a `410
//! Gone`), the webhook is deactivated: its creator is notified with a
//! single-purpose reactivation link, an internal event is published, and
//! its events stay queued (the buffer) for `webhooks.buffer_for`.
//!
//! `rules` holds the pure delivery rules, `deliver` the delivery job,
//! `routes` the API; `record` owns the tables (`WEBHOOKS`, `WH_QUEUE`,
//! `WH_ATTEMPTS`) and the resource's life: create, fan-out, activation,
//! the buffer's end, delete.

mod deliver;
mod record;
mod routes;
mod rules;

pub use self::record::*;
pub use self::routes::routes;

use crate::feature::Feature;
use crate::jobs::Runner;

/// The feature: webhooks, their deliveries, deactivation and buffer.
pub const FEATURE: Feature = Feature {
    tables: TABLES,
    jobs: &[Runner::of::<Deliver>(), Runner::of::<BufferEnd>()],
    routes,
    subscriber: Some(fan_out),
    ..Feature::named("webhooks")
};
