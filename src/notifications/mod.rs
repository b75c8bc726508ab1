//! Change notifications (Collmex "API-Benachrichtigungen"): a published
//! event plans an HTTP GET ping to the URL a system registered for that
//! event, and the system then fetches what changed with a change query.
//!
//! In progress (issue 11): `rules` holds the state machine; the store, the
//! ping job, the routes, the import and export follow.

pub mod records;
pub mod rules;
