//! The mail outbox: admin error mails and system notifications.
//!
//! Every mail is a record in `MAILS` before anything is sent, and its
//! sending is a durable job, so a mail survives restarts and SMTP outages.
//! Mails *gather*: the first entry for a recipient opens a mail due
//! `alerts.debounce` later; each further entry joins it and pushes the
//! sending back to `debounce` after itself, but never later than
//! `alerts.max_delay` after the first, so a constant storm still yields one
//! mail per `max_delay`. Once its job starts, a mail is closed and new
//! entries open the next one.
//!
//! `outbox` owns the records (`MAILS`, `MAIL_OPEN`) and gathering;
//! `rules` says when a mail goes out and what follows a failure, `send`
//! talks SMTP, `failed_calls` turns a failed API call into an entry of
//! its account's error mail, and `storage_alert` tells the system
//! recipients when the store is full.

mod failed_calls;
mod outbox;
mod routes;
mod rules;
mod send;
mod storage_alert;

pub use self::failed_calls::FailedCalls;
pub use self::outbox::*;
pub use self::routes::routes;

use crate::feature::Feature;
use crate::jobs::Runner;

/// The feature: the outbox, the debounced error mails, and the record of
/// failed API calls.
pub const FEATURE: Feature = Feature {
    tables: TABLES,
    jobs: &[Runner::of::<SendMail>()],
    routes,
    start: Some(|app| {
        storage_alert::watch(app);
        Box::pin(async { Ok(()) })
    }),
    failed_calls: Some(|app| {
        let failed = FailedCalls::start(app);
        Box::new(move |app, call, e| failed.record(app, call, e))
    }),
    ..Feature::named("mail")
};
