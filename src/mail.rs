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
//! The rules (when to send, what to do after an attempt) are pure functions
//! at the top of this module; the rest reads the store, talks SMTP and
//! writes the outcome with the job's next step in one transaction.

use std::time::Duration;

use jiff::Timestamp;
use lettre::AsyncTransport;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::config::{Alerts, MailPolicy, Security, Smtp};
use crate::executions::{self, Category, Level, LogLine};
use crate::jobs::{self, Job};
use crate::store::{self, MAIL_OPEN, MAILS, StoreError, Txn};

/// Entries listed in one mail; beyond, the mail gives a count of the rest.
pub const MAX_ENTRIES: usize = 100;
/// The execution-log interface of the outbox.
pub const INTERFACE: &str = "mail";

// ---- the rules ----------------------------------------------------------------

/// When a gathering mail is sent: `debounce` after its last entry, but no
/// later than `max_delay` after its first.
pub fn due(first_at: Timestamp, last_at: Timestamp, alerts: &Alerts) -> Timestamp {
    clock::add(last_at, alerts.debounce).min(clock::add(first_at, alerts.max_delay))
}

/// What follows a failed attempt.
#[derive(Debug, PartialEq)]
pub enum AfterFailure {
    RetryAt(Timestamp),
    /// `mail_retention` has passed since the mail was created.
    GiveUp,
}

/// `attempts` counts the attempts made, including the one that just failed.
pub fn after_failure(created: Timestamp, attempts: u32, now: Timestamp, policy: &MailPolicy) -> AfterFailure {
    let deadline = clock::add(created, policy.retention);
    if now >= deadline {
        return AfterFailure::GiveUp;
    }
    let step = (attempts.max(1) as usize - 1).min(policy.retry_schedule.len().saturating_sub(1));
    let wait = policy
        .retry_schedule
        .get(step)
        .copied()
        .unwrap_or(Duration::from_secs(60));
    AfterFailure::RetryAt(clock::add(now, wait).min(deadline))
}

// ---- the records ----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum State {
    Queued,
    Sent,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sent => "sent",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [State::Queued, State::Sent, State::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    /// Failed calls to herald's API made with this account's credentials.
    ApiFailures { account: String },
    /// Notices from herald itself (a webhook deactivated, an action closed, ...).
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: i64,
    /// One line: what happened.
    pub title: String,
    /// The particulars, several lines.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mail {
    pub id: String,
    pub to: String,
    pub kind: Kind,
    /// The first [`MAX_ENTRIES`] entries.
    pub entries: Vec<Entry>,
    /// All entries gathered, listed or not.
    pub total: u32,
    pub created_at: i64,
    pub last_entry_at: i64,
    pub send_after: i64,
    pub state: State,
    /// Still taking entries (its sending has not begun).
    pub open: bool,
    pub attempts: u32,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
}

impl Mail {
    pub fn subject(&self, gateway: &str) -> String {
        let n = self.total;
        match &self.kind {
            Kind::ApiFailures { account } => {
                let calls = if n == 1 {
                    "1 API call".to_string()
                } else {
                    format!("{n} API calls")
                };
                format!("[herald {gateway}] {calls} failed for account {account}")
            }
            Kind::System if n == 1 => format!("[herald {gateway}] {}", self.entries[0].title),
            Kind::System => format!("[herald {gateway}] {n} notifications"),
        }
    }

    pub fn body(&self, gateway: &str, public_url: &str) -> String {
        let mut out = String::new();
        let first = clock::rfc3339(self.created_at);
        let last = clock::rfc3339(self.last_entry_at);
        match &self.kind {
            Kind::ApiFailures { account } => {
                out.push_str(&format!(
                    "{} made to herald on gateway {gateway} with the credentials of account \"{account}\" \
                     failed between {first} and {last}.\nEach one is listed below, as it was received.\n\n",
                    if self.total == 1 {
                        "One call".to_string()
                    } else {
                        format!("{} calls", self.total)
                    },
                ));
            }
            Kind::System => out.push_str(&format!("herald on gateway {gateway} reports:\n\n")),
        }
        for (i, e) in self.entries.iter().enumerate() {
            out.push_str(&format!("{}. {}  {}\n", i + 1, clock::rfc3339(e.at), e.title));
            for line in e.detail.lines() {
                out.push_str(&format!("   {line}\n"));
            }
            out.push('\n');
        }
        let unlisted = self.total as usize - self.entries.len();
        if unlisted > 0 {
            out.push_str(&format!("... and {unlisted} more not listed here.\n\n"));
        }
        if matches!(self.kind, Kind::ApiFailures { .. }) {
            out.push_str(&format!(
                "Every failed call is also in the execution log of interface \"api\":\n{public_url}/v1/executions?interface=api\n"
            ));
        }
        out
    }
}

fn open_key(kind: &Kind, to: &str) -> String {
    match kind {
        Kind::ApiFailures { account } => format!("api\0{account}\0{to}"),
        Kind::System => format!("sys\0{to}"),
    }
}

fn job_name(id: &str) -> String {
    format!("mail:{id}")
}

/// Adds `entry` to the open mail of (`kind`, `to`), opening one when there
/// is none, and moves its sending to the debounced due time.
pub fn gather(
    txn: &mut Txn,
    now: Timestamp,
    alerts: &Alerts,
    kind: Kind,
    to: &str,
    entry: Entry,
) -> Result<String, StoreError> {
    let key = open_key(&kind, to);
    let open_id = txn.open(MAIL_OPEN)?.get(key.as_str())?.map(|v| v.value().to_string());
    let existing = match &open_id {
        Some(id) => store::get::<&str, Mail>(&txn.open(MAILS)?, "mail", id.as_str())?.filter(|m| m.open),
        None => None,
    };
    let now_ms = clock::to_ms(now);
    let mut mail = match existing {
        Some(m) => m,
        None => {
            let ulid = ulid::Ulid::from_parts(now_ms.max(0) as u64, rand::random());
            let mail = Mail {
                id: format!("mail_{ulid}"),
                to: to.to_string(),
                kind,
                entries: Vec::new(),
                total: 0,
                created_at: now_ms,
                last_entry_at: now_ms,
                send_after: now_ms,
                state: State::Queued,
                open: true,
                attempts: 0,
                sent_at: None,
                last_error: None,
            };
            txn.open(MAIL_OPEN)?.insert(key.as_str(), mail.id.as_str())?;
            mail
        }
    };
    if mail.entries.len() < MAX_ENTRIES {
        mail.entries.push(entry);
    }
    mail.total += 1;
    mail.last_entry_at = now_ms;
    let send_after = due(clock::from_ms(mail.created_at), now, alerts);
    mail.send_after = clock::to_ms(send_after);
    txn.open(MAILS)?
        .insert(mail.id.as_str(), store::encode(&mail).as_slice())?;
    jobs::schedule_named(
        txn,
        &job_name(&mail.id),
        send_after,
        Job::SendMail { id: mail.id.clone() },
    )?;
    Ok(mail.id)
}

/// Whom a system notification goes to.
pub enum Recipient<'a> {
    /// An account's e-mail address (no mail when it has none).
    Email(&'a str),
    /// `alerts.system_recipients`.
    System,
}

/// Notifies through the outbox, debounced per recipient like the error mails.
/// Returns the ids of the mails the notice joined (none without a recipient).
pub fn notify(
    txn: &mut Txn,
    now: Timestamp,
    alerts: &Alerts,
    to: Recipient<'_>,
    title: &str,
    detail: &str,
) -> Result<Vec<String>, StoreError> {
    let recipients: Vec<String> = match to {
        Recipient::Email(e) => vec![e.to_string()],
        Recipient::System => alerts.system_recipients.clone(),
    };
    let entry = Entry {
        at: clock::to_ms(now),
        title: title.to_string(),
        detail: detail.to_string(),
    };
    recipients
        .iter()
        .map(|r| gather(txn, now, alerts, Kind::System, r, entry.clone()))
        .collect()
}

// ---- sending ------------------------------------------------------------------

/// Why an attempt failed, and the log category that tells whom to call.
#[derive(Debug)]
pub struct SendError {
    pub category: Category,
    pub message: String,
}

async fn send_smtp(smtp: &Smtp, from: &str, mail: &Mail, subject: String, body: String) -> Result<(), SendError> {
    let config_error = |message: String| SendError {
        category: Category::Configuration,
        message,
    };
    let message = lettre::Message::builder()
        .from(
            from.parse()
                .map_err(|e| config_error(format!("smtp.from {from:?}: {e}")))?,
        )
        .to(mail.to.parse().map_err(|e| SendError {
            category: Category::Mapping,
            message: format!("recipient {:?}: {e}", mail.to),
        })?)
        .subject(subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| SendError {
            category: Category::Technical,
            message: format!("building the message: {e}"),
        })?;
    type Transport = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;
    let builder = match smtp.security {
        Security::None => Transport::builder_dangerous(&smtp.host),
        Security::Starttls => {
            Transport::starttls_relay(&smtp.host).map_err(|e| config_error(format!("smtp.host: {e}")))?
        }
        Security::Tls => Transport::relay(&smtp.host).map_err(|e| config_error(format!("smtp.host: {e}")))?,
    };
    let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            password.0.clone(),
        ));
    }
    let transport = builder.build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| classify(&e, smtp))
}

fn classify(e: &lettre::transport::smtp::Error, smtp: &Smtp) -> SendError {
    let code = e.status().map(|c| c.to_string());
    let server = format!("{}:{}", smtp.host, smtp.port);
    // 530/534/535: authentication required or refused; TLS trouble is set-up too.
    let category = match code.as_deref() {
        Some("530" | "534" | "535" | "538") => Category::Configuration,
        _ if e.is_tls() => Category::Configuration,
        Some(c) if c.starts_with('5') => Category::Configuration,
        _ => Category::External,
    };
    let what = match category {
        Category::Configuration if code.as_deref().is_some_and(|c| c.starts_with("53")) => {
            "authentication failed; check smtp.username and the password"
        }
        Category::Configuration => "the mail server refused the mail",
        _ if e.is_timeout() => "the mail server did not answer in time",
        _ => "could not reach or talk to the mail server",
    };
    SendError {
        category,
        message: format!("{what} ({server}): {e}"),
    }
}

/// The job: closes the mail to new entries, sends it, and commits the
/// outcome with the job's next step.
pub async fn run_send(app: &crate::App, id: String) -> Result<(), StoreError> {
    let name = job_name(&id);
    let mail = {
        let id = id.clone();
        let name = name.clone();
        app.store
            .write(store::Grows::No, move |txn| {
                let Some(mut mail) = store::get::<&str, Mail>(&txn.open(MAILS)?, "mail", id.as_str())? else {
                    jobs::cancel_named(txn, &name)?;
                    return Ok(None);
                };
                if mail.state != State::Queued {
                    jobs::cancel_named(txn, &name)?;
                    return Ok(None);
                }
                if mail.open {
                    mail.open = false;
                    let key = open_key(&mail.kind, &mail.to);
                    let mut open = txn.open(MAIL_OPEN)?;
                    if open.get(key.as_str())?.is_some_and(|v| v.value() == mail.id) {
                        open.remove(key.as_str())?;
                    }
                    drop(open);
                    txn.open(MAILS)?
                        .insert(mail.id.as_str(), store::encode(&mail).as_slice())?;
                }
                Ok(Some(mail))
            })
            .await?
    };
    let Some(mail) = mail else { return Ok(()) };

    let settings = app.settings();
    let subject = mail.subject(&settings.general.name);
    let outcome = match &settings.smtp {
        None => Err(SendError {
            category: Category::Configuration,
            message: "no [smtp] is configured, so mails stay queued; add an [smtp] table to the config and reload"
                .into(),
        }),
        Some(smtp) => {
            let body = mail.body(&settings.general.name, &settings.server.public_url);
            send_smtp(smtp, &smtp.from, &mail, subject.clone(), body).await
        }
    };
    let now = app.clock.now();
    let policy = settings.mail.clone();
    let tz = settings.general.timezone.clone();
    app.store
        .write(store::Grows::No, move |txn| {
            record_attempt(txn, &name, mail, &subject, outcome, now, &policy, &tz)
        })
        .await
}

#[allow(clippy::too_many_arguments)]
fn record_attempt(
    txn: &mut Txn,
    job: &str,
    mut mail: Mail,
    subject: &str,
    outcome: Result<(), SendError>,
    now: Timestamp,
    policy: &MailPolicy,
    tz: &jiff::tz::TimeZone,
) -> Result<(), StoreError> {
    mail.attempts += 1;
    let attempt = mail.attempts;
    let line = match outcome {
        Ok(()) => {
            mail.state = State::Sent;
            mail.sent_at = Some(clock::to_ms(now));
            mail.last_error = None;
            jobs::cancel_named(txn, job)?;
            executions::count_success(txn, now, tz, INTERFACE, INTERFACE, 1)?;
            LogLine {
                at: clock::to_ms(now),
                level: Level::Info,
                category: None,
                message: format!("sent {} to {}: {subject}", mail.id, mail.to),
                detail: Some(format!("attempt {attempt}, {} entries", mail.total)),
            }
        }
        Err(e) => {
            mail.last_error = Some(e.message.clone());
            let next = after_failure(clock::from_ms(mail.created_at), attempt, now, policy);
            let (what, level) = match next {
                AfterFailure::RetryAt(at) => {
                    mail.send_after = clock::to_ms(at);
                    jobs::schedule_named(txn, job, at, Job::SendMail { id: mail.id.clone() })?;
                    (format!("stays queued, next try at {at}"), Level::Error)
                }
                AfterFailure::GiveUp => {
                    mail.state = State::Failed;
                    jobs::cancel_named(txn, job)?;
                    (
                        "failed: mail_retention is over, no more tries".to_string(),
                        Level::Error,
                    )
                }
            };
            LogLine {
                at: clock::to_ms(now),
                level,
                category: Some(e.category),
                message: format!("{} to {} (attempt {attempt}) {what}: {}", mail.id, mail.to, e.message),
                detail: Some(format!("subject: {subject}")),
            }
        }
    };
    txn.open(MAILS)?
        .insert(mail.id.as_str(), store::encode(&mail).as_slice())?;
    executions::log_daily(txn, now, tz, INTERFACE, INTERFACE, line)?;
    Ok(())
}

// ---- reads ----------------------------------------------------------------------

pub struct Filter<'a> {
    pub state: Option<State>,
    pub after: Option<&'a str>,
    pub limit: usize,
}

/// Mails newest first, and the cursor of the next page.
pub fn list(r: &ReadTransaction, f: &Filter<'_>) -> Result<(Vec<Mail>, Option<String>), StoreError> {
    store::page_newest(r, MAILS, "mail", f.after, f.limit, |m: &Mail| {
        f.state.is_none_or(|s| s == m.state)
    })
}

/// Deletes sent and failed mails older than `cutoff`.
pub fn sweep(txn: &mut Txn, cutoff: Timestamp, budget: usize) -> Result<bool, StoreError> {
    let cutoff = clock::to_ms(cutoff);
    let old: Vec<String> = {
        let table = txn.open(MAILS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let mail: Mail = store::decode("mail", v.value())?;
            if mail.created_at >= cutoff || out.len() == budget {
                break;
            }
            if mail.state != State::Queued {
                out.push(k.value().to_string());
            }
        }
        out
    };
    let mut table = txn.open(MAILS)?;
    for id in &old {
        table.remove(id.as_str())?;
    }
    Ok(old.len() == budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts() -> Alerts {
        Alerts {
            debounce: Duration::from_secs(60),
            max_delay: Duration::from_secs(900),
            system_recipients: vec![],
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn each_entry_pushes_the_sending_back_up_to_max_delay() {
        let first = t("2026-11-22T10:00:00Z");
        assert_eq!(due(first, first, &alerts()), t("2026-11-22T10:01:00Z"));
        assert_eq!(
            due(first, t("2026-11-22T10:00:50Z"), &alerts()),
            t("2026-11-22T10:01:50Z")
        );
        // A storm: the cap holds.
        assert_eq!(
            due(first, t("2026-11-22T10:14:30Z"), &alerts()),
            t("2026-11-22T10:15:00Z")
        );
        assert_eq!(
            due(first, t("2026-11-22T11:00:00Z"), &alerts()),
            t("2026-11-22T10:15:00Z")
        );
    }

    #[test]
    fn retries_follow_the_schedule_and_stop_after_retention() {
        let policy = MailPolicy {
            retry_schedule: vec![
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(3600),
            ],
            retention: Duration::from_secs(7 * 86400),
        };
        let created = t("2026-11-22T10:00:00Z");
        let now = t("2026-11-22T10:01:00Z");
        assert_eq!(
            after_failure(created, 1, now, &policy),
            AfterFailure::RetryAt(t("2026-11-22T10:01:30Z"))
        );
        assert_eq!(
            after_failure(created, 2, now, &policy),
            AfterFailure::RetryAt(t("2026-11-22T10:02:00Z"))
        );
        // The last step repeats.
        assert_eq!(
            after_failure(created, 9, now, &policy),
            AfterFailure::RetryAt(t("2026-11-22T11:01:00Z"))
        );
        // Never past the retention, and then no more.
        let late = t("2026-11-29T09:30:00Z");
        assert_eq!(
            after_failure(created, 50, late, &policy),
            AfterFailure::RetryAt(t("2026-11-29T10:00:00Z"))
        );
        assert_eq!(
            after_failure(created, 51, t("2026-11-29T10:00:00Z"), &policy),
            AfterFailure::GiveUp
        );
    }

    #[tokio::test]
    async fn notices_gather_per_recipient_like_error_mails() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = store::open_for_test(dir.path()).unwrap();
        let mut alerts = alerts();
        alerts.system_recipients = vec!["noc@example.com".into(), "ops@example.com".into()];
        let now = t("2026-11-22T10:00:00Z");
        let later = t("2026-11-22T10:00:30Z");
        let a = alerts.clone();
        let ids = store
            .write(store::Grows::No, move |txn| {
                let first = notify(
                    txn,
                    now,
                    &a,
                    Recipient::Email("erp@example.com"),
                    "Webhook wh_1 deactivated",
                    "d1",
                )?;
                let second = notify(
                    txn,
                    later,
                    &a,
                    Recipient::Email("erp@example.com"),
                    "Webhook wh_2 deactivated",
                    "d2",
                )?;
                let system = notify(txn, later, &a, Recipient::System, "Disk almost full", "d3")?;
                Ok((first, second, system))
            })
            .await
            .unwrap();
        assert_eq!(ids.0, ids.1, "the second notice joins the open mail");
        assert_eq!(ids.2.len(), 2, "one mail per system recipient");
        let (all, _) = store
            .read(|r| {
                list(
                    r,
                    &Filter {
                        state: None,
                        after: None,
                        limit: 10,
                    },
                )
            })
            .unwrap();
        let erp = all.iter().find(|m| m.to == "erp@example.com").unwrap();
        assert_eq!(erp.total, 2);
        assert_eq!(erp.send_after, clock::to_ms(t("2026-11-22T10:01:30Z")));
        assert_eq!(erp.subject("gw"), "[herald gw] 2 notifications");
        let noc = all.iter().find(|m| m.to == "noc@example.com").unwrap();
        assert_eq!(noc.subject("gw"), "[herald gw] Disk almost full");
        let jobs = jobs::count_all(&store).unwrap();
        assert_eq!(jobs, 3, "one send job per mail");
    }

    #[test]
    fn a_mail_lists_the_first_hundred_and_counts_the_rest() {
        let entry = |i: i64| Entry {
            at: i * 1000,
            title: format!("call {i}"),
            detail: "why".into(),
        };
        let mail = Mail {
            id: "mail_x".into(),
            to: "ops@example.com".into(),
            kind: Kind::ApiFailures { account: "erp".into() },
            entries: (0..100).map(entry).collect(),
            total: 130,
            created_at: 0,
            last_entry_at: 129_000,
            send_after: 0,
            state: State::Queued,
            open: false,
            attempts: 0,
            sent_at: None,
            last_error: None,
        };
        assert_eq!(
            mail.subject("gw-7"),
            "[herald gw-7] 130 API calls failed for account erp"
        );
        let body = mail.body("gw-7", "http://127.0.0.1:8470");
        assert!(body.contains("100. "));
        assert!(!body.contains("101. "));
        assert!(body.contains("... and 30 more not listed here."));
    }
}
