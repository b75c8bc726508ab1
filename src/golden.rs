//! Golden tests: the meaning of every stored byte, pinned.
//!
//! herald's data dir must open with every later release, and a release
//! must never read old bytes as something else. What names stored things
//! is explicit in the code: a table's id, a job kind's id, an enum
//! variant's tag. These tests hold them, and the bytes of each stored
//! record, to known values. When one fails: do not change the expected
//! value. Give a new table, job kind or variant a new id or tag (never
//! reuse one), add new record fields at the end with a conversion, and
//! raise `store::SCHEMA_VERSION` when the meaning of stored files changes.

use serde::Serialize;

use crate::feature::Features;
use crate::jobs::{self, JobKind};
use crate::{FEATURES, actions, events, executions, mail, notifications, retention, schedules, webhooks};

const WHAT_TO_DO: &str = "stored bytes changed meaning: never change or reuse a stored id or tag; \
     give the new thing a new one (see src/golden.rs)";

fn hex<T: Serialize>(v: &T) -> String {
    hex::encode(crate::store::encode(v))
}

#[test]
fn the_schema_is_the_one_the_fixtures_expect() {
    // Raising it: say what changed in `store::SCHEMA_VERSION`'s list, and
    // keep a fixture of the release that wrote the old one (tests/it/upgrade.rs).
    assert_eq!(crate::store::SCHEMA_VERSION, 2, "{WHAT_TO_DO}");
}

#[test]
fn every_table_keeps_its_id() {
    let tables = Features::new(FEATURES).unwrap().tables().unwrap();
    let expected = [
        (0, "meta"),
        (1, "meta_blobs"),
        (2, "events"),
        (3, "idempotency"),
        (4, "jobs"),
        (5, "job_names"),
        (6, "interfaces"),
        (7, "executions"),
        (8, "daily"),
        (9, "logs"),
        (10, "mails"),
        (11, "mail_open"),
        (12, "webhooks"),
        (13, "wh_queue"),
        (14, "wh_attempts"),
        (15, "notifications"),
        (16, "notif_by_event"),
        (17, "notif_idle"),
        (18, "change_cursors"),
        (19, "actions"),
        (20, "action_keys"),
        (21, "schedules"),
    ];
    assert_eq!(tables.ids(), expected, "{WHAT_TO_DO}");
}

#[test]
fn every_job_kind_keeps_its_id_and_its_bytes() {
    let runners = Features::new(FEATURES).unwrap().runners().unwrap();
    let expected = [
        (0, "roll_daily"),
        (1, "sweep"),
        (2, "send_mail"),
        (3, "deliver"),
        (4, "webhook_buffer_end"),
        (5, "notification_ping"),
        (6, "action_call"),
        (7, "action_timeout"),
        (8, "schedule_run"),
        (9, "run_anomaly"),
    ];
    assert_eq!(runners.ids(), expected, "{WHAT_TO_DO}");
    // A stored job: its name (if any), its kind's id, its fields. These are
    // the bytes the first release wrote for the same jobs.
    fn record<J: JobKind>(name: Option<&str>, job: J) -> String {
        hex::encode(jobs::stored_bytes(name, &job))
    }
    let s = String::from;
    let all = [
        (record(None, executions::RollDaily), "0000"),
        (
            record(Some("events.sweep"), retention::Sweep),
            "010c6576656e74732e737765657001",
        ),
        (record(None, mail::SendMail { id: s("mail_1") }), "0002066d61696c5f31"),
        (
            record(
                None,
                webhooks::Deliver {
                    webhook: s("wh_1"),
                    host: s("127.0.0.1:80"),
                },
            ),
            "00030477685f310c3132372e302e302e313a3830",
        ),
        (
            record(None, webhooks::BufferEnd { webhook: s("wh_1") }),
            "00040477685f31",
        ),
        (
            record(
                None,
                notifications::Ping {
                    system: s("erp"),
                    event: s("door.opened"),
                    host: s("h:1"),
                },
            ),
            "0005036572700b646f6f722e6f70656e656403683a31",
        ),
        (
            record(
                None,
                actions::CallJob {
                    id: s("act_1"),
                    token: s("tok"),
                    host: s("h:2"),
                },
            ),
            "0006056163745f3103746f6b03683a32",
        ),
        (record(None, actions::TimeoutJob { id: s("act_1") }), "0007056163745f31"),
        (
            record(
                None,
                schedules::RunJob {
                    schedule: s("s"),
                    host: s("h:3"),
                },
            ),
            "0008017303683a33",
        ),
        (
            record(None, schedules::AnomalyJob { execution: s("exe_1") }),
            "0009056578655f31",
        ),
    ];
    for (got, want) in all {
        assert_eq!(got, want, "{WHAT_TO_DO}");
    }
}

#[test]
fn every_stored_state_keeps_its_tag() {
    use actions::rules::{Closed, State as ActionState, TodoReason};
    use executions::{Category, Kind as ExecutionKind, Level, Status};
    use mail::{Kind as MailKind, State as MailState};
    use webhooks::State as WebhookState;

    let tags = |all: Vec<String>| all.join(" ");
    let actions = [
        ActionState::Pending,
        ActionState::Retrying,
        ActionState::Waiting,
        ActionState::Completed,
        ActionState::Todo,
        ActionState::Closed,
    ];
    assert_eq!(
        tags(actions.iter().map(hex).collect()),
        "00 01 02 03 04 05",
        "{WHAT_TO_DO}"
    );
    let closed = [Closed::AttemptsUsed, Closed::AttemptsLowered, Closed::Refused];
    assert_eq!(tags(closed.iter().map(hex).collect()), "00 01 02", "{WHAT_TO_DO}");
    let todo = [TodoReason::UpdatedByIntegration, TodoReason::Timeout];
    assert_eq!(tags(todo.iter().map(hex).collect()), "00 01", "{WHAT_TO_DO}");
    let mails = [MailState::Queued, MailState::Sent, MailState::Failed];
    assert_eq!(tags(mails.iter().map(hex).collect()), "00 01 02", "{WHAT_TO_DO}");
    let kinds = [MailKind::ApiFailures { account: "erp".into() }, MailKind::System];
    assert_eq!(tags(kinds.iter().map(hex).collect()), "0003657270 01", "{WHAT_TO_DO}");
    for kind in kinds {
        let back: MailKind = crate::store::decode("mail kind", &crate::store::encode(&kind)).unwrap();
        assert_eq!(back, kind, "read back as written");
    }
    let back: Vec<ActionState> = crate::store::decode("states", &crate::store::encode(&actions.to_vec())).unwrap();
    assert_eq!(back, actions, "read back as written");
    assert!(
        crate::store::decode::<MailKind>("mail kind", &[2]).is_err(),
        "an unknown tag is an error, not another kind"
    );
    let kinds = [ExecutionKind::Scheduled, ExecutionKind::Daily];
    assert_eq!(tags(kinds.iter().map(hex).collect()), "00 01", "{WHAT_TO_DO}");
    let status = [Status::Running, Status::Ok, Status::Ko];
    assert_eq!(tags(status.iter().map(hex).collect()), "00 01 02", "{WHAT_TO_DO}");
    let levels = [Level::Info, Level::Warn, Level::Error];
    assert_eq!(tags(levels.iter().map(hex).collect()), "00 01 02", "{WHAT_TO_DO}");
    let categories = [
        Category::External,
        Category::Configuration,
        Category::Mapping,
        Category::Technical,
        Category::Cascade,
    ];
    assert_eq!(
        tags(categories.iter().map(hex).collect()),
        "00 01 02 03 04",
        "{WHAT_TO_DO}"
    );
    let webhooks = [WebhookState::Active, WebhookState::Disabled];
    assert_eq!(tags(webhooks.iter().map(hex).collect()), "00 01", "{WHAT_TO_DO}");
}

/// Each stored record, every field set, and its bytes.
#[test]
fn every_stored_record_keeps_its_bytes() {
    let s = String::from;
    let event = events::StoredEvent {
        id: s("evt_1"),
        event: s("door.opened"),
        data: s("{\"n\":1}"),
        created_at: 1_764_583_200_000,
        account: s("erp"),
        idempotency_key: Some(s("k-1")),
    };
    let webhook = webhooks::Webhook {
        id: s("wh_1"),
        app: s("erp"),
        event: s("*"),
        url: s("http://h/a"),
        secret: s("whsec_x"),
        created_at: 1,
        created_by: s("ops"),
        notify: Some(s("ops@example.com")),
        state: webhooks::State::Disabled,
        disabled_at: Some(2),
        disabled_reason: Some(s("500")),
        failing_since: Some(3),
        head_attempts: 4,
        last_error: Some(s("e")),
        next_retry_at: Some(5),
        queued: 6,
        attempts_seq: 7,
        token_sha256: Some([9; 32]),
        buffer_until: Some(8),
        not_kept: 10,
    };
    let attempt = webhooks::Attempt {
        event_id: s("evt_1"),
        attempt: 2,
        at: 3,
        status_code: Some(500),
        error: Some(s("e")),
        duration_ms: 4,
        next_retry_at: Some(5),
        response: s("r"),
    };
    let mail = mail::Mail {
        id: s("mail_1"),
        to: s("ops@example.com"),
        kind: mail::Kind::ApiFailures { account: s("erp") },
        entries: vec![mail::Entry {
            at: 1,
            title: s("t"),
            detail: s("d"),
        }],
        total: 2,
        created_at: 3,
        last_entry_at: 4,
        send_after: 5,
        state: mail::State::Failed,
        open: true,
        attempts: 6,
        sent_at: Some(7),
        last_error: Some(s("e")),
    };
    let execution = executions::Execution {
        id: s("exe_1"),
        interface: s("shop"),
        schedule: Some(s("hourly")),
        kind: executions::Kind::Daily,
        status: executions::Status::Ko,
        started_at: 1,
        ended_at: Some(2),
        errors: 3,
        successes: 4,
        lines: 5,
        day: Some(s("2026-12-01")),
        acknowledged: Some(executions::Ack {
            at: 6,
            by: s("tech"),
            note: Some(s("n")),
            errors: 3,
        }),
    };
    let line = executions::LogLine {
        at: 1,
        level: executions::Level::Error,
        category: Some(executions::Category::Cascade),
        message: s("m"),
        detail: Some(s("d")),
    };
    let interface = executions::Interface {
        name: s("api"),
        kind: s("api"),
        last_execution: Some(s("exe_1")),
    };
    let notification = notifications::Notification {
        system: s("erp"),
        event: s("door.opened"),
        url: s("http://h/p"),
        created_at: 1,
        ping: notifications::rules::Pinging {
            inactive: true,
            unacked: 2,
            suspended: true,
            next_send_at: Some(3),
            retry: true,
            last_sent_at: Some(4),
        },
        last_error: Some((5, s("e"))),
        missed: 6,
    };
    let action = actions::Action {
        id: s("act_1"),
        interface: s("crm"),
        payload: s("{}"),
        owner: Some(s("o@example.com")),
        created_by: s("erp"),
        idempotency_key: Some(s("k")),
        callback_sha256: [7; 32],
        progress: actions::rules::Progress {
            state: actions::rules::State::Todo,
            attempts_made: 1,
            attempts_max: 2,
            next_retry_at: Some(3),
            last_error: Some((4, s("e"))),
            closed: Some(actions::rules::Closed::Refused),
            todo: Some(actions::rules::TodoReason::Timeout),
            queue: Some(s("q")),
            callback: Some(actions::rules::Callback {
                success: false,
                data: Some(s("{}")),
                reason: Some(s("r")),
            }),
        },
        created_at: 5,
        updated_at: 6,
        resolved_by: Some(s("tech")),
        note: Some(s("n")),
        assignee: Some(s("a")),
    };
    let planned = schedules::Planned {
        name: s("hourly"),
        every_ms: 3_600_000,
        next_run_at: 1,
        position: 2,
        running: Some((s("exe_1"), true)),
        last_execution: Some(s("exe_0")),
    };
    let clock = crate::clock::Saved {
        last: 1_764_583_200_000,
        ledger: vec![crate::clock::Offset {
            from: 1_764_583_000_000,
            offset: -86_400_000,
            floor: 1_764_583_000_000,
        }],
    };
    let all = [
        ("clock", hex(&clock), "80d4d695db6601809fbe95db66ffefb252809fbe95db66"),
        (
            "event",
            hex(&event),
            "056576745f310b646f6f722e6f70656e6564077b226e223a317d80d4d695db660365727001036b2d31",
        ),
        (
            "webhook",
            hex(&webhook),
            "0477685f3103657270012a0a687474703a2f2f682f610777687365635f7802036f7073010f6f7073406578616d706c652e636f6d0101040103353030010604010165010a060701090909090909090909090909090909090909090909090909090909090909090901100a",
        ),
        ("attempt", hex(&attempt), "056576745f31020601f40301016504010a0172"),
        (
            "mail",
            hex(&mail),
            "066d61696c5f310f6f7073406578616d706c652e636f6d00036572700102017401640206080a020106010e010165",
        ),
        (
            "execution",
            hex(&execution),
            "056578655f310473686f700106686f75726c790102020104030405010a323032362d31322d3031010c047465636801016e03",
        ),
        ("log line", hex(&line), "02020104016d010164"),
        ("interface", hex(&interface), "036170690361706901056578655f31"),
        (
            "notification",
            hex(&notification),
            "036572700b646f6f722e6f70656e65640a687474703a2f2f682f70020102010106010108010a016506",
        ),
        (
            "action",
            hex(&action),
            "056163745f310363726d027b7d010d6f406578616d706c652e636f6d0365727001016b070707070707070707070707070707070707070707070707070707070707070704010201060108016501020101010171010001027b7d0101720a0c01047465636801016e010161",
        ),
        (
            "schedule",
            hex(&planned),
            "06686f75726c7980bab703020201056578655f310101056578655f30",
        ),
    ];
    for (what, got, want) in all {
        assert_eq!(got, want, "the stored {what}: {WHAT_TO_DO}");
    }

    // Records written before their trailing fields existed read as none;
    // an older release reads a newer record's fields it knows.
    let before = |hex_text: &str| hex::decode(hex_text).unwrap();
    let old_execution = before("056578655f310473686f700106686f75726c790102020104030405010a323032362d31322d3031");
    let read: executions::Execution = crate::store::decode("execution", &old_execution).unwrap();
    assert_eq!(read.acknowledged, None);
    assert_eq!(
        hex(&executions::Execution {
            acknowledged: Some(executions::Ack {
                at: 6,
                by: s("tech"),
                note: Some(s("n")),
                errors: 3
            }),
            ..read
        }),
        hex(&execution)
    );
    let old_action = before(
        "056163745f310363726d027b7d010d6f406578616d706c652e636f6d0365727001016b070707070707070707070707070707070707070707070707070707070707070704010201060108016501020101010171010001027b7d0101720a0c",
    );
    let read: actions::Action = crate::store::decode("action", &old_action).unwrap();
    assert_eq!((&read.resolved_by, &read.note, &read.assignee), (&None, &None, &None));
    assert_eq!(
        actions::Action {
            resolved_by: action.resolved_by.clone(),
            note: action.note.clone(),
            assignee: action.assignee.clone(),
            ..read
        },
        action
    );
    let truncated = &crate::store::encode(&execution)[..10];
    assert!(
        crate::store::decode::<executions::Execution>("execution", truncated).is_err(),
        "a record cut inside its known fields is an error"
    );
}
