//! Events: what local programs hand to herald. `stored` owns the
//! `EVENTS` and `IDEMPOTENCY` tables: durable publishing with idempotency
//! keys, paging by sequence number, and deleting what retention lets go.
//!
//! Publishing tells the features that act on new events (webhooks queue
//! them) through one seam, the [`Publisher`] and its [`Subscriber`]s, in the
//! same commit that stores them; this module knows none of them.

mod parse;
mod routes;
mod stored;

pub use self::parse::{FieldError, MAX_DEPTH, NewEvent, depth, parse, parse_item, valid_name};
pub use self::routes::{page_json, routes};
pub use self::stored::*;
use std::sync::Arc;

use crate::feature::Feature;

/// The feature: publishing and reading events; its state is the
/// [`Publisher`], told of the subscribers every descriptor names.
pub const FEATURE: Feature = Feature {
    tables: TABLES,
    routes,
    state: Some(|all| Arc::new(Publisher::new(all.subscribers()))),
    ..Feature::named("events")
};
