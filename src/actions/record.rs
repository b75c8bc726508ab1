//! An action as the store keeps it, and as the API shows it. The callback
//! token is given out once, in the outbound call; only its SHA-256 is kept,
//! and a presented token is compared with it in constant time.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::rules::{Progress, State, TodoReason};
use crate::clock;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// A ULID: ordered by creation.
    pub id: String,
    pub interface: String,
    /// The payload as the creator sent it (JSON text).
    pub payload: String,
    pub owner: Option<String>,
    /// The account that created it, whose e-mail is mailed without `owner`.
    pub created_by: String,
    pub idempotency_key: Option<String>,
    pub callback_sha256: [u8; 32],
    pub progress: Progress,
    pub created_at: i64,
    pub updated_at: i64,
    // Added in schema 2 at the end (older records read as none):
    /// The person who resolved it (to do), or acknowledged it (closed).
    pub resolved_by: Option<String>,
    /// Their note.
    pub note: Option<String>,
    /// The person a to-do action is assigned to.
    pub assignee: Option<String>,
}

/// A fresh callback token and the hash kept of it.
pub fn new_callback_token() -> (String, [u8; 32]) {
    let token = crate::auth::new_token();
    let hash = Sha256::digest(token.as_bytes()).into();
    (token, hash)
}

impl Action {
    /// Whether `token` is this action's callback token.
    pub fn token_matches(&self, token: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        hash.ct_eq(&self.callback_sha256).into()
    }

    /// The API's view: API.md's action object.
    pub fn json(&self) -> Value {
        let p = &self.progress;
        let mut v = json!({
            "id": self.id,
            "interface": self.interface,
            "state": p.state.as_str(),
            "attempts_made": p.attempts_made,
            "attempts_max": p.attempts_max,
            "created_at": clock::rfc3339(self.created_at),
            "updated_at": clock::rfc3339(self.updated_at),
        });
        match (p.state, p.closed, p.todo) {
            (State::Completed, ..) => v["resolution"] = json!("successfully_completed"),
            (State::Closed, ..) => v["resolution"] = json!("unsuccessfully_completed"),
            (State::Todo, _, Some(TodoReason::UpdatedByIntegration)) => {
                v["reason"] = json!("updated_by_integration");
                if let Some(r) = p.callback.as_ref().and_then(|c| c.reason.as_ref()) {
                    v["rejected_reason"] = json!(r);
                }
            }
            (State::Todo, _, Some(TodoReason::Timeout)) => v["reason"] = json!("timeout"),
            _ => {}
        }
        if let Some(q) = &p.queue {
            v["queue"] = json!(q);
        }
        if let Some(data) = p.callback.as_ref().filter(|c| c.success).and_then(|c| c.data.as_ref()) {
            // Stored as the JSON text it came as; it parsed then, so it parses now.
            v["data"] = serde_json::from_str(data).unwrap_or(Value::Null);
        }
        if let Some(owner) = &self.owner {
            v["owner"] = json!(owner);
        }
        for (field, value) in [
            ("resolved_by", &self.resolved_by),
            ("note", &self.note),
            ("assignee", &self.assignee),
        ] {
            if let Some(value) = value {
                v[field] = json!(value);
            }
        }
        if let Some((at, message)) = &p.last_error {
            v["last_error"] = json!({"at": clock::rfc3339(*at), "message": message});
        }
        if let Some(t) = p.next_retry_at.filter(|_| p.state == State::Retrying) {
            v["next_retry_at"] = json!(clock::rfc3339(t));
        }
        v
    }

    /// "attempt N of M", as the status page and `herald status` show it.
    pub fn attempts_text(&self) -> String {
        format!(
            "attempt {} of {}",
            self.progress.attempts_made, self.progress.attempts_max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::rules::{Callback, Closed};

    fn action() -> (Action, String) {
        let (token, hash) = new_callback_token();
        let a = Action {
            id: "01JZ0000000000000000000000".into(),
            interface: "crm".into(),
            payload: "{\"order\":7}".into(),
            owner: None,
            created_by: "erp".into(),
            idempotency_key: None,
            callback_sha256: hash,
            progress: Progress::new(5),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            resolved_by: None,
            note: None,
            assignee: None,
        };
        (a, token)
    }

    #[test]
    fn only_the_token_given_out_matches() {
        let (a, token) = action();
        assert!(a.token_matches(&token));
        assert!(!a.token_matches(&format!("{token}x")));
        assert!(!a.token_matches(""));
        let (other, _) = new_callback_token();
        assert_ne!(token, other);
        assert!(!a.token_matches(&other));
        // The record keeps no trace of the token itself.
        let stored = crate::store::encode(&a);
        assert!(!stored.windows(token.len()).any(|w| w == token.as_bytes()));
    }

    #[test]
    fn the_view_has_api_md_s_fields_for_each_end() {
        let (mut a, _) = action();
        let v = a.json();
        assert_eq!(v["state"], "pending");
        assert_eq!(v["attempts_made"], 0);
        assert_eq!(v["attempts_max"], 5);
        assert!(v.get("resolution").is_none() && v.get("next_retry_at").is_none());

        a.progress.state = State::Completed;
        a.progress.callback = Some(Callback {
            success: true,
            data: Some("{\"ticket\":\"T-1\"}".into()),
            reason: None,
        });
        let v = a.json();
        assert_eq!(v["resolution"], "successfully_completed");
        assert_eq!(v["data"]["ticket"], "T-1");

        a.progress.state = State::Todo;
        a.progress.todo = Some(TodoReason::UpdatedByIntegration);
        a.progress.callback = Some(Callback {
            success: false,
            data: None,
            reason: Some("customer unknown".into()),
        });
        let v = a.json();
        assert_eq!(v["reason"], "updated_by_integration");
        assert_eq!(v["rejected_reason"], "customer unknown");
        assert!(v.get("data").is_none() && v.get("resolution").is_none());

        a.progress.state = State::Closed;
        a.progress.todo = None;
        a.progress.closed = Some(Closed::AttemptsUsed);
        a.progress.last_error = Some((1_700_000_060_000, "503 Service Unavailable".into()));
        let v = a.json();
        assert_eq!(v["resolution"], "unsuccessfully_completed");
        assert_eq!(v["last_error"]["message"], "503 Service Unavailable");
        assert_eq!(a.attempts_text(), "attempt 0 of 5");
    }
}
