//! Wall-clock steps, as people see them: each step herald's clock notices
//! is a `warn` line (category `technical`) in the daily execution of the
//! `herald` interface, a log line and a count in `/metrics`; the midnight
//! roll, the one timer planned by the calendar, is planned again; and
//! herald time is saved at once. Reading the clock is what notices a
//! step, so the clock is read every few seconds even when nothing else does.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::log::{Level, LogLine, log_daily, schedule_roll};
use crate::app::App;
use crate::category::Category;
use crate::clock::{self, Step};
use crate::store::Grows;
use crate::timekeeping;

/// How often the clock is read when nothing else reads it.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// The interface whose daily execution takes herald's own lines.
const INTERFACE: &str = "herald";

pub(super) fn watch(app: &Arc<App>) {
    let mut steps = app.clock.steps();
    let app: Weak<App> = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut save_at = Instant::now() + timekeeping::SAVE_EVERY;
        loop {
            tokio::select! {
                changed = steps.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
            let Some(app) = app.upgrade() else { return };
            let _ = app.clock.now();
            let seen = app.clock.take_steps();
            for step in &seen {
                tell(&app, *step).await;
            }
            if !seen.is_empty() || Instant::now() >= save_at {
                if let Err(e) = timekeeping::save(&app.store, &app.clock).await {
                    tracing::warn!(error = %e, "herald time is not saved yet");
                }
                save_at = Instant::now() + timekeeping::SAVE_EVERY;
            }
        }
    });
}

/// What a step says, to people.
fn describe(step: Step) -> String {
    let by = Duration::from_millis(step.by.unsigned_abs());
    let by = humantime::format_duration(Duration::from_secs(by.as_secs().max(1)));
    format!(
        "the system clock was stepped {} by {by} (now {}): herald counts real time, so no due time, \
         buffer, retention or deactivation moved with it",
        if step.by > 0 { "forward" } else { "back" },
        clock::rfc3339(step.at),
    )
}

async fn tell(app: &App, step: Step) {
    let message = describe(step);
    tracing::warn!(by_ms = step.by, "{message}");
    app.metrics.clock_steps.inc();
    let now = app.clock.now();
    let tz = app.settings().general.timezone.clone();
    let line = LogLine {
        at: clock::to_ms(now),
        level: Level::Warn,
        category: Some(Category::Technical),
        message: format!("Clock step: {message}"),
        detail: None,
    };
    let written = app
        .store
        .write(Grows::No, move |txn| {
            log_daily(txn, now, &tz, INTERFACE, "system", line)?;
            // The next local midnight, by the wall clock as it reads now.
            schedule_roll(txn, now, &tz)
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "the clock step was not written to the daily execution");
    }
}
