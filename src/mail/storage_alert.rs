//! Tells `alerts.system_recipients` when the store refuses new work for
//! lack of room: once per full episode (from the first refusal until there
//! is room again), with what to do. The 507 answers reach only the callers,
//! and the error mails leave them out: without this nobody would hear of it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::outbox::{Recipient, notify};
use crate::app::App;
use crate::store::{Grows, Health};

/// How long a notification that could not be stored waits to be tried again.
const RETRY: Duration = Duration::from_secs(10);

/// Watches the store's health for as long as the store is open.
pub(super) fn watch(app: &Arc<App>) {
    let mut changes = app.store.health_changes();
    let app: Weak<App> = Arc::downgrade(app);
    tokio::spawn(async move {
        // Whether this episode was told.
        let mut told = false;
        loop {
            let health = *changes.borrow_and_update();
            if !health.is_full() {
                told = false;
            } else if !told {
                let Some(app) = app.upgrade() else { return };
                told = tell(&app, health).await;
            }
            let retry = health.is_full() && !told;
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RETRY), if retry => {}
            }
        }
    });
}

/// Stores the notification; whether it is stored.
async fn tell(app: &App, health: Health) -> bool {
    let settings = app.settings();
    let store = &app.store;
    let detail = health.advice(store.on_disk(), store.room_left(), settings.storage.max_size);
    let title = match health {
        Health::DiskFull => "Storage full: the disk is full, new events are refused",
        _ => "Storage full: storage.max_size reached, new events are refused",
    };
    let now = app.clock.now();
    // One small record per episode, while writes that add data are
    // refused: it runs as an update does, on the room kept for those.
    let stored = app
        .store
        .write(Grows::No, move |txn| {
            notify(txn, now, &settings.alerts, Recipient::System, title, &detail)
        })
        .await;
    match stored {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "the storage-full notification is not stored yet; trying again");
            false
        }
    }
}
