//! Checking what a local program publishes: one event or a batch, each
//! with a valid name, `data` within `storage.max_event_size`, and an
//! optional idempotency key. Every refusal names the field at fault.

use serde::Deserialize;
use serde_json::value::RawValue;

pub const MAX_BATCH: usize = 1000;
pub const MAX_NAME: usize = 128;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Levels of nesting `data` may have. Deeper values are refused: JSON
/// parsers (serde_json's among them) stop at 128, so a receiver or a
/// reader could not take them, and herald serves what it accepts.
pub const MAX_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in JSON text (strings skipped).
pub fn depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in json.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[derive(Debug)]
pub struct NewEvent {
    pub event: String,
    pub data: String,
    pub idempotency_key: Option<String>,
}

/// A field that failed validation: its path in the request and why.
#[derive(Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    event: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    idempotency_key: Option<serde_json::Value>,
}

/// Parses and checks a publish body that is already known to be JSON: one
/// event object or an array of up to [`MAX_BATCH`]. Returns the events and
/// whether the body was an array.
pub fn parse(body: &str, max_data: u64) -> Result<(Vec<NewEvent>, bool), FieldError> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(body).map_err(|_| FieldError {
            field: "events".into(),
            message: "must be an array of event objects".into(),
        })?;
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(FieldError {
                field: "events".into(),
                message: format!("a batch holds 1 to {MAX_BATCH} events; this one has {}", items.len()),
            });
        }
        let events = items
            .iter()
            .enumerate()
            .map(|(i, raw)| parse_item(raw, &format!("[{i}]."), max_data))
            .collect::<Result<_, _>>()?;
        Ok((events, true))
    } else {
        let raw: &RawValue = serde_json::from_str(body).map_err(|_| FieldError {
            field: "event".into(),
            message: "the body must be a JSON object".into(),
        })?;
        Ok((vec![parse_item(raw, "", max_data)?], false))
    }
}

/// One event object; its fields named with `prefix` in errors (`[3].data`).
pub fn parse_item(raw: &RawValue, prefix: &str, max_data: u64) -> Result<NewEvent, FieldError> {
    let field = |name: &str| format!("{prefix}{name}");
    let item: Item<'_> = serde_json::from_str(raw.get()).map_err(|e| match unknown_field(&e) {
        // A field herald does not know is a mistake to name, not to ignore.
        Some(name) => FieldError {
            field: field(&name),
            message: "is not a field of an event; give event, data and idempotency_key only".into(),
        },
        None => FieldError {
            field: if prefix.is_empty() {
                "event".to_string()
            } else {
                prefix.trim_end_matches('.').to_string()
            },
            message: "must be a JSON object like {\"event\": \"door.opened\", \"data\": {...}}".into(),
        },
    })?;
    let event = match item.event {
        Some(serde_json::Value::String(s)) if valid_name(&s) => s,
        Some(serde_json::Value::String(s)) => {
            return Err(FieldError {
                field: field("event"),
                message: format!(
                    "{:?} is not an event name: use 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ : -",
                    truncate(&s, 40)
                ),
            });
        }
        Some(_) => {
            return Err(FieldError {
                field: field("event"),
                message: "must be a string".into(),
            });
        }
        None => {
            return Err(FieldError {
                field: field("event"),
                message: "is missing; name the event, like \"door.opened\"".into(),
            });
        }
    };
    let data = item.data.map_or("null", RawValue::get);
    if depth(data) > MAX_DEPTH {
        return Err(FieldError {
            field: field("data"),
            message: format!(
                "is nested {} levels deep; at most {MAX_DEPTH} levels of arrays and objects are accepted",
                depth(data)
            ),
        });
    }
    if data.len() as u64 > max_data {
        return Err(FieldError {
            field: field("data"),
            message: format!(
                "is {} bytes; at most {max_data} are accepted (storage.max_event_size)",
                data.len()
            ),
        });
    }
    let idempotency_key = match item.idempotency_key {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if (1..=MAX_IDEMPOTENCY_KEY).contains(&s.chars().count()) => Some(s),
        Some(serde_json::Value::String(_)) => {
            return Err(FieldError {
                field: field("idempotency_key"),
                message: format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
            });
        }
        Some(_) => {
            return Err(FieldError {
                field: field("idempotency_key"),
                message: "must be a string".into(),
            });
        }
    };
    Ok(NewEvent {
        event,
        data: data.to_string(),
        idempotency_key,
    })
}

/// The name serde reports for `deny_unknown_fields` ("unknown field `x`, …").
pub fn unknown_field(e: &serde_json::Error) -> Option<String> {
    let text = e.to_string();
    let rest = text.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("door.opened"));
        assert!(valid_name("a:b-c_d.E9"));
        assert!(!valid_name(""));
        assert!(!valid_name("with space"));
        assert!(!valid_name(&"x".repeat(129)));
        assert!(valid_name(&"x".repeat(128)));
    }

    #[test]
    fn parse_single_and_batch() {
        let (events, batch) = parse(r#"{"event":"a","data":{"x":1.50}}"#, 1024).unwrap();
        assert!(!batch);
        assert_eq!(events[0].data, r#"{"x":1.50}"#);
        let (events, batch) = parse(r#"[{"event":"a"},{"event":"b","idempotency_key":"k"}]"#, 1024).unwrap();
        assert!(batch);
        assert_eq!(events[0].data, "null");
        assert_eq!(events[1].idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn depth_counts_arrays_and_objects_but_not_strings() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth(r#"{"a":[1,{"b":"[[[{"}]}"#), 3);
        assert_eq!(depth(r#"["\"[", []]"#), 2);
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&format!(r#"{{"event":"a","data":{}}}"#, deep(MAX_DEPTH)), 1 << 20).is_ok());
        let e = parse(&format!(r#"[{{"event":"a","data":{}}}]"#, deep(MAX_DEPTH + 1)), 1 << 20).unwrap_err();
        assert_eq!(e.field, "[0].data");
        assert!(e.message.contains("65 levels"), "{}", e.message);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"[{"event":"a"},{"event":"bad name"}]"#, 1024).unwrap_err();
        assert_eq!(e.field, "[1].event");
        let e = parse(r#"{"data":1}"#, 1024).unwrap_err();
        assert_eq!(e.field, "event");
        let e = parse(r#"{"event":"a","data":"0123456789"}"#, 8).unwrap_err();
        assert_eq!(e.field, "data");
        let e = parse(r#"{"event":"a","idempotency_key":5}"#, 8).unwrap_err();
        assert_eq!(e.field, "idempotency_key");
        let e = parse("[]", 8).unwrap_err();
        assert_eq!(e.field, "events");
        let e = parse("[1]", 8).unwrap_err();
        assert_eq!(e.field, "[0]");
        let e = parse(r#"[{"event":"a"},{"event":"b","dat":1}]"#, 8).unwrap_err();
        assert_eq!(e.field, "[1].dat");
    }
}
