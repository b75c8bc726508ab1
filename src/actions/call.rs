//! The outbound call of an action, without I/O: its body, and what an
//! answer (or its absence) means for the rules and for the log.

use jiff::Timestamp;

use super::record::Action;
use super::rules::Called;
use crate::executions::Category;
use crate::outbound::judge;

/// Where the external system answers: `server.public_url` + the callback path.
pub fn callback_url(public_url: &str, id: &str) -> String {
    format!("{}/v1/actions/{id}/callback", public_url.trim_end_matches('/'))
}

/// `{"action_id","interface","payload","callback_url","callback_token"}`,
/// with `payload` copied as stored (it was checked at create).
pub fn body(action: &Action, token: &str, public_url: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(action.payload.len() + 256);
    out.extend_from_slice(b"{\"action_id\":");
    serde_json::to_writer(&mut out, &action.id).expect("a string serializes");
    out.extend_from_slice(b",\"interface\":");
    serde_json::to_writer(&mut out, &action.interface).expect("a string serializes");
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(action.payload.as_bytes());
    out.extend_from_slice(b",\"callback_url\":");
    serde_json::to_writer(&mut out, &callback_url(public_url, &action.id)).expect("a string serializes");
    out.extend_from_slice(b",\"callback_token\":");
    serde_json::to_writer(&mut out, token).expect("a string serializes");
    out.push(b'}');
    out
}

/// What an answer means: a 2xx is accepted; a 5xx, 408 or 429 (and any
/// other answer that is not a 4xx) is a failed attempt, with a 429's or
/// 503's `Retry-After`; any other 4xx refuses the call for good. The
/// category says whom to call, as for webhooks.
pub fn answered(status: u16, retry_after: Option<&str>, now: Timestamp) -> (Called, Category) {
    let Err(failure) = judge(status, retry_after, now) else {
        return (Called::Accepted, Category::External);
    };
    let called = if (400..500).contains(&status) && !matches!(status, 408 | 429) {
        Called::Refused {
            message: failure.message,
        }
    } else {
        Called::Failed {
            message: failure.message,
            retry_after: failure.retry_after,
        }
    };
    (called, failure.category)
}

/// No answer: refused, reset, DNS, TLS, or the interface's `timeout`.
pub fn unanswered(error: &str, timed_out: bool) -> Called {
    let message = if timed_out {
        format!("no answer within the interface's timeout ({error})")
    } else {
        error.to_string()
    };
    Called::Failed {
        message,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actions::rules::Progress;

    #[test]
    fn the_body_carries_the_payload_as_sent_and_where_to_answer() {
        let a = Action {
            id: "act_01JZ".into(),
            interface: "crm".into(),
            payload: "{\"order\": 7, \"name\": \"Müller\"}".into(),
            owner: None,
            created_by: "erp".into(),
            idempotency_key: None,
            callback_sha256: [0; 32],
            progress: Progress::new(5),
            created_at: 0,
            updated_at: 0,
            resolved_by: None,
            note: None,
            assignee: None,
        };
        let body = body(&a, "hrl_tok", "https://gw.example.com:8470/");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["action_id"], "act_01JZ");
        assert_eq!(v["interface"], "crm");
        assert_eq!(v["payload"]["name"], "Müller");
        assert_eq!(
            v["callback_url"],
            "https://gw.example.com:8470/v1/actions/act_01JZ/callback"
        );
        assert_eq!(v["callback_token"], "hrl_tok");
        assert_eq!(v.as_object().unwrap().len(), 5);
    }

    #[test]
    fn answers_are_accepted_retried_or_refused_as_api_md_says() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(answered(202, None, now).0, Called::Accepted);
        for status in [500, 502, 503, 408, 429] {
            assert!(
                matches!(answered(status, None, now).0, Called::Failed { .. }),
                "{status}"
            );
        }
        let (called, _) = answered(429, Some("120"), now);
        assert_eq!(
            called,
            Called::Failed {
                message: "answered 429".into(),
                retry_after: Some(Duration::from_secs(120)),
            }
        );
        let (called, category) = answered(422, None, now);
        assert!(matches!(called, Called::Refused { .. }));
        assert_eq!(category, Category::Mapping);
        let (called, category) = answered(401, None, now);
        assert!(matches!(called, Called::Refused { .. }));
        assert_eq!(category, Category::Configuration);
        assert!(matches!(unanswered("connection refused", false), Called::Failed { .. }));
    }
}
