//! The systemd journal: every execution log line is also a journal entry,
//! with fields a log shipper (Fluent Bit, Vector, systemd-journal-upload)
//! selects on. A fleet then collects what a technician reads on the status
//! page without scraping herald.
//!
//! Entries use journald's native protocol: one datagram an entry on its
//! socket, `NAME=value` lines (a value with a newline goes length-prefixed).
//! tracing-journald speaks it too, but only to the fixed socket and only
//! for tracing events; these lines are records of the store, sent once
//! their commit succeeded, so a line that never made it into an execution
//! never reaches the journal either.
//!
//! The store's writer must never wait on journald: it hands each commit's
//! entries to a thread of their own over a queue bounded in bytes, and
//! when the journal does not keep up (or takes nothing for a second),
//! lines are dropped, counted, and said once a minute. The execution keeps
//! every line regardless.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::clock;
use crate::config::JournalLevel;
use crate::executions::{Execution, Level, LogLine};
use crate::store::Txn;

/// Where systemd's journal takes native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";
/// Names another socket than [`SOCKET`] (a test's, or a container's
/// relay); setting it also turns the entries on outside systemd.
pub const SOCKET_VAR: &str = "HERALD_JOURNAL_SOCKET";
/// The largest `MESSAGE` sent, in bytes; the rest of a longer one is
/// left to the execution, which keeps the line whole.
const MAX_MESSAGE: usize = 16 << 10;
/// Bytes of entries that may wait for the sending thread; a commit's
/// entries that would pass it are dropped. It bounds the memory a slow
/// journald can take: a busy commit's 512 lines are about 150 KiB, and
/// 1 MiB is a tenth of a second of lines at 30,000 deliveries a second.
const QUEUED_BYTES: usize = 1 << 20;
/// How long one entry may wait for journald to take it.
const STUCK: Duration = Duration::from_secs(1);
/// How often at most a failure to send is said in herald's own log.
const SAY_EVERY: Duration = Duration::from_secs(60);

struct Sink {
    /// The lowest level sent.
    min: Level,
    /// `general.name`: which gateway, when a fleet's journals meet.
    gateway: String,
    queue: Sender<Vec<Vec<u8>>>,
    /// Bytes in `queue` now.
    queued: AtomicUsize,
    dropped: AtomicU64,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// The socket entries go to: [`SOCKET_VAR`]'s, else journald's own when
/// systemd captures our output (`JOURNAL_STREAM`); none otherwise, so a
/// daemon run by hand or by the tests does not fill the desktop's journal.
pub fn socket_from_env() -> Option<PathBuf> {
    match std::env::var_os(SOCKET_VAR) {
        Some(path) if !path.is_empty() => Some(path.into()),
        _ => std::env::var_os("JOURNAL_STREAM").map(|_| SOCKET.into()),
    }
}

/// Sends the execution log lines of `level` and above to `socket` from
/// now on, for the life of the process (`general.journal` is read at
/// start). Returns false if they were already going somewhere.
pub fn start(socket: PathBuf, level: JournalLevel, gateway: &str) -> std::io::Result<bool> {
    let min = match level {
        JournalLevel::Off => return Ok(false),
        JournalLevel::Info => Level::Info,
        JournalLevel::Warn => Level::Warn,
        JournalLevel::Error => Level::Error,
    };
    let (queue, entries) = mpsc::channel();
    let sink = Sink {
        min,
        gateway: gateway.to_string(),
        queue,
        queued: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
    };
    if SINK.set(sink).is_err() {
        return Ok(false);
    }
    let out = UnixDatagram::unbound()?;
    out.set_write_timeout(Some(STUCK))?;
    std::thread::Builder::new()
        .name("journald".into())
        .spawn(move || send(out, socket, entries))?;
    Ok(true)
}

/// Makes `line` (number `n` of `exe`) a journal entry once `txn` commits.
pub fn record(txn: &Txn, exe: &Execution, n: u32, line: &LogLine) {
    let Some(sink) = SINK.get() else { return };
    if (line.level as u8) < (sink.min as u8) {
        return;
    }
    let entry = entry(exe, n, line, &sink.gateway);
    txn.on_commit(Entries::send, |e| e.0.push(entry));
}

/// The entries of one commit.
#[derive(Default)]
struct Entries(Vec<Vec<u8>>);

impl Entries {
    fn send(self) {
        let Some(sink) = SINK.get() else { return };
        let n = self.0.len() as u64;
        let bytes = size(&self.0);
        if sink.admit(bytes) {
            if sink.queue.send(self.0).is_ok() {
                return;
            }
            sink.queued.fetch_sub(bytes, Ordering::Relaxed);
        }
        sink.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

impl Sink {
    /// Counts `bytes` more in the queue, unless that passes [`QUEUED_BYTES`].
    fn admit(&self, bytes: usize) -> bool {
        if self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > QUEUED_BYTES {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// What a commit's entries take in the queue.
fn size(entries: &[Vec<u8>]) -> usize {
    entries.iter().map(Vec::len).sum()
}

/// The native-protocol datagram of one line.
fn entry(exe: &Execution, n: u32, line: &LogLine, gateway: &str) -> Vec<u8> {
    let mut message = line.message.clone();
    if let Some(detail) = line.detail.as_deref().filter(|d| !d.is_empty()) {
        message.push('\n');
        message.push_str(detail);
    }
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" [cut: the execution has the whole line]");
    }
    let mut buf = Vec::with_capacity(message.len() + 256);
    field(&mut buf, "MESSAGE", message.as_bytes());
    field(&mut buf, "PRIORITY", priority(line.level).as_bytes());
    field(&mut buf, "SYSLOG_IDENTIFIER", b"herald");
    field(&mut buf, "HERALD_GATEWAY", gateway.as_bytes());
    field(&mut buf, "HERALD_INTERFACE", exe.interface.as_bytes());
    field(&mut buf, "HERALD_EXECUTION", exe.id.as_bytes());
    if let Some(schedule) = &exe.schedule {
        field(&mut buf, "HERALD_SCHEDULE", schedule.as_bytes());
    }
    field(&mut buf, "HERALD_LEVEL", line.level.as_str().as_bytes());
    if let Some(category) = line.category {
        field(&mut buf, "HERALD_CATEGORY", category.as_str().as_bytes());
    }
    field(&mut buf, "HERALD_LINE", n.to_string().as_bytes());
    let at = clock::fmt(clock::from_ms(line.at));
    field(&mut buf, "HERALD_TIME", at.as_bytes());
    buf
}

/// syslog's severities, as journald filters them (`journalctl -p warning`).
fn priority(level: Level) -> &'static str {
    match level {
        Level::Error => "3",
        Level::Warn => "4",
        Level::Info => "6",
    }
}

/// One field: `NAME=value\n`, or, for a value with a newline in it,
/// `NAME\n`, its length as 64-bit little endian, the value and `\n`.
fn field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// The sending thread: entries in commit order, each one datagram. A
/// journald that is away (restarting, or not there) loses what is sent
/// meanwhile; that is said once a minute, never retried.
fn send(out: UnixDatagram, socket: PathBuf, entries: Receiver<Vec<Vec<u8>>>) {
    let sink = SINK.get().expect("started before its thread");
    let mut failed = 0u64;
    let mut said: Option<Instant> = None;
    let mut last_error = String::new();
    for batch in entries {
        sink.queued.fetch_sub(size(&batch), Ordering::Relaxed);
        for (i, entry) in batch.iter().enumerate() {
            if let Err(e) = out.send_to(entry, &socket) {
                last_error = e.to_string();
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    // journald takes nothing: the rest of this commit's
                    // lines go too, rather than one a STUCK each.
                    failed += (batch.len() - i) as u64;
                    break;
                }
                failed += 1;
            }
        }
        if said.is_some_and(|t| t.elapsed() < SAY_EVERY) {
            continue;
        }
        let dropped = sink.dropped.swap(0, Ordering::Relaxed);
        if failed > 0 {
            tracing::warn!(
                "{failed} execution log lines could not be sent to the journal at {} ({last_error}); \
                 the executions keep them",
                socket.display()
            );
        }
        if dropped > 0 {
            tracing::warn!(
                "{dropped} execution log lines were not sent to the journal: it did not keep up \
                 (general.journal = \"warn\" sends fewer); the executions keep them"
            );
        }
        if failed > 0 || dropped > 0 {
            said = Some(Instant::now());
            failed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::Category;
    use crate::executions::{Kind, Status};

    /// Reads a datagram back as journald does.
    fn parse(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let end = b.iter().position(|&c| c == b'=' || c == b'\n').unwrap();
            let name = String::from_utf8(b[..end].to_vec()).unwrap();
            if b[end] == b'=' {
                let nl = b.iter().position(|&c| c == b'\n').unwrap();
                out.push((name, b[end + 1..nl].to_vec()));
                b = &b[nl + 1..];
            } else {
                let len = u64::from_le_bytes(b[end + 1..end + 9].try_into().unwrap()) as usize;
                out.push((name, b[end + 9..end + 9 + len].to_vec()));
                assert_eq!(b[end + 9 + len], b'\n');
                b = &b[end + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn the_queue_takes_entries_up_to_its_bound_in_bytes() {
        let (queue, _entries) = mpsc::channel();
        let sink = Sink {
            min: Level::Info,
            gateway: String::new(),
            queue,
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        };
        assert!(sink.admit(QUEUED_BYTES - 100));
        assert!(!sink.admit(101), "past the bound");
        assert!(sink.admit(100), "a refusal leaves the count as it was");
        assert!(!sink.admit(1));
        sink.queued.fetch_sub(QUEUED_BYTES, Ordering::Relaxed);
        assert!(sink.admit(1), "room again once the thread took them");
    }

    #[test]
    fn a_line_is_an_entry_with_its_fields_and_a_multiline_message_keeps_its_lines() {
        let exe = Execution {
            id: "exe_01".into(),
            interface: "crm".into(),
            schedule: Some("nightly".into()),
            kind: Kind::Scheduled,
            status: Status::Running,
            started_at: 0,
            ended_at: None,
            errors: 1,
            successes: 0,
            lines: 4,
            day: None,
            acknowledged: None,
        };
        let line = LogLine {
            at: 1_700_000_000_123,
            level: Level::Error,
            category: Some(Category::External),
            message: "call failed: 503".into(),
            detail: Some("What to do: re-run\nanswer: busy".into()),
        };
        let fields = parse(&entry(&exe, 3, &line, "gw-7"));
        let get = |n: &str| {
            let v = fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            String::from_utf8(v.unwrap_or_else(|| panic!("{n} missing"))).unwrap()
        };
        assert_eq!(get("MESSAGE"), "call failed: 503\nWhat to do: re-run\nanswer: busy");
        assert_eq!(get("PRIORITY"), "3");
        assert_eq!(get("HERALD_INTERFACE"), "crm");
        assert_eq!(get("HERALD_EXECUTION"), "exe_01");
        assert_eq!(get("HERALD_SCHEDULE"), "nightly");
        assert_eq!(get("HERALD_LEVEL"), "error");
        assert_eq!(get("HERALD_CATEGORY"), "external");
        assert_eq!(get("HERALD_LINE"), "3");
        assert_eq!(get("HERALD_GATEWAY"), "gw-7");
        assert_eq!(get("HERALD_TIME"), "2023-11-14T22:13:20.123Z");

        let long = LogLine {
            level: Level::Info,
            category: None,
            message: "é".repeat(MAX_MESSAGE),
            detail: None,
            ..line
        };
        let fields = parse(&entry(&exe, 4, &long, "gw-7"));
        let message = &fields.iter().find(|(k, _)| k == "MESSAGE").unwrap().1;
        assert!(message.len() < MAX_MESSAGE + 64 && std::str::from_utf8(message).is_ok());
        assert!(fields.iter().all(|(k, _)| k != "HERALD_CATEGORY"));
        assert_eq!(fields.iter().find(|(k, _)| k == "PRIORITY").unwrap().1, b"6");
    }
}
