//! The outbox: the `MAILS` and `MAIL_OPEN` tables, gathering entries into
//! debounced mails, and what the rest of herald asks of it (`notify`).

use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};

use super::rules::due;
use crate::clock;
use crate::config::Alerts;
use crate::jobs::{self};
use crate::store::{self, StoreError, Txn};

store::tables! {
    /// mail id (time-ordered) -> `mail::Mail`: the outbox.
    MAILS: redb::TableDefinition<&str, &[u8]> = ("mails", 10);
    /// gathering key (kind, account, address) -> id of the mail still taking entries.
    MAIL_OPEN: redb::TableDefinition<&str, &str> = ("mail_open", 11);
}

/// Entries listed in one mail; beyond, the mail gives a count of the rest.
pub const MAX_ENTRIES: usize = 100;
/// The execution-log interface of the outbox.
pub const INTERFACE: &str = "mail";

/// The job that sends (or retries) one mail of the outbox.
#[derive(Debug, Serialize, Deserialize)]
pub struct SendMail {
    pub id: String,
}

// ---- the records ----------------------------------------------------------------

/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum State {
    Queued = 0,
    Sent = 1,
    Failed = 2,
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

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Failed calls to herald's API made with this account's credentials.
    ApiFailures { account: String },
    /// Notices from herald itself (a webhook deactivated, an action closed, ...).
    System,
}

/// The stored tags of [`Kind`]: never change or reuse one.
const KIND_API_FAILURES: u32 = 0;
const KIND_SYSTEM: u32 = 1;

// Stored as its tag (a postcard varint) and the variant's fields, by hand
// so that the tag is written here and not taken from the variant's place.
impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Kind::ApiFailures { account } => {
                s.serialize_newtype_variant("Kind", KIND_API_FAILURES, "ApiFailures", account)
            }
            Kind::System => s.serialize_unit_variant("Kind", KIND_SYSTEM, "System"),
        }
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        use serde::de::{Error, VariantAccess};

        struct Tagged;
        impl<'de> serde::de::Visitor<'de> for Tagged {
            type Value = Kind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mail kind")
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Kind, A::Error> {
                let (tag, variant) = data.variant::<u32>()?;
                match tag {
                    KIND_API_FAILURES => Ok(Kind::ApiFailures {
                        account: variant.newtype_variant()?,
                    }),
                    KIND_SYSTEM => variant.unit_variant().map(|()| Kind::System),
                    other => Err(A::Error::custom(format!("unknown mail kind {other}"))),
                }
            }
        }
        d.deserialize_enum("Kind", &["ApiFailures", "System"], Tagged)
    }
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

pub(super) fn open_key(kind: &Kind, to: &str) -> String {
    match kind {
        Kind::ApiFailures { account } => format!("api\0{account}\0{to}"),
        Kind::System => format!("sys\0{to}"),
    }
}

pub(super) fn job_name(id: &str) -> String {
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
    jobs::schedule_named(txn, &job_name(&mail.id), send_after, &SendMail { id: mail.id.clone() })?;
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
    if recipients.is_empty() {
        tracing::warn!(
            "nobody was told \"{title}\": the account concerned has no e-mail address and \
             alerts.system_recipients is empty; set one of them"
        );
    }
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

/// Mails not sent yet.
pub fn count_queued(r: &ReadTransaction) -> Result<u64, StoreError> {
    let mut n = 0;
    for row in r.open_table(MAILS)?.iter()? {
        let mail: Mail = store::decode("mail", row?.1.value())?;
        n += u64::from(mail.state == State::Queued);
    }
    Ok(n)
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
    use super::super::rules::tests::{alerts, t};
    use super::*;

    #[tokio::test]
    async fn notices_gather_per_recipient_like_error_mails() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = crate::test_store(dir.path()).unwrap();
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
