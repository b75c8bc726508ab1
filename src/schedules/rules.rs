//! The rules of scheduled runs, pure: when the next run is planned, what a
//! pulled answer holds, and the idempotency keys of pulled items and pushed
//! batches.

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::events::{self, FieldError, NewEvent};

/// The next planned run after a run that was planned at `planned` started
/// at `now`: a fixed rate (`planned` + k × `every`), the first such time
/// after `now`, so a late run is not followed by the ones it missed.
pub fn next_slot(planned: i64, every_ms: i64, now: i64) -> i64 {
    let every = every_ms.max(1);
    if now < planned {
        return planned + every;
    }
    planned + ((now - planned) / every + 1) * every
}

/// The next run after `every` changed from `old` to `new`: the same
/// previous planned time plus the new interval, and not in the past.
pub fn moved(next_run_at: i64, old_ms: i64, new_ms: i64, now: i64) -> i64 {
    (next_run_at - old_ms + new_ms).max(now)
}

/// `idempotency-key` of a pushed batch: `SCHEDULE:FIRST_SEQ-LAST_SEQ`, the
/// same on a rerun that sends the same batch.
pub fn batch_key(schedule: &str, first: u64, last: u64) -> String {
    format!("{schedule}:{first}-{last}")
}

/// The idempotency key of a pulled item that brought none: from its
/// content, so a rerun that pulls the same item publishes nothing new.
pub fn derived_key(event: &str, data: &str) -> String {
    let mut h = Sha256::new();
    h.update(event.as_bytes());
    h.update(b"\n");
    h.update(data.as_bytes());
    format!("pull:{}", hex::encode(h.finalize()))
}

/// A pulled answer: the items that fit, each with its index, and those
/// that did not, with their index and why.
#[derive(Debug, Default)]
pub struct Pulled {
    pub items: Vec<(usize, NewEvent)>,
    pub bad: Vec<(usize, FieldError)>,
}

/// Reads a pull answer: a JSON array of `{"event","data","idempotency_key"?}`
/// or `{"events": [...]}`. A body that is neither is an error (the whole
/// answer is unusable); an item that does not fit is skipped, the rest kept.
pub fn pulled(body: &[u8], max_data: u64) -> Result<Pulled, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8 text".to_string())?;
    #[derive(serde::Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    let shape = "the answer is not a JSON array of events (nor {\"events\": [...]})";
    let items: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(|e| format!("{shape}: {e}"))?
    } else {
        serde_json::from_str::<Wrapped<'_>>(text)
            .map_err(|e| format!("{shape}: {e}"))?
            .events
    };
    let mut out = Pulled::default();
    for (i, raw) in items.into_iter().enumerate() {
        match events::parse_item(raw, &format!("[{i}]."), max_data) {
            Ok(mut e) => {
                if e.idempotency_key.is_none() {
                    e.idempotency_key = Some(derived_key(&e.event, &e.data));
                }
                out.items.push((i, e));
            }
            Err(f) => out.bad.push((i, f)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn runs_keep_a_fixed_rate_and_a_late_one_skips_what_it_missed() {
        // On time, or a little late: the next slot.
        assert_eq!(next_slot(10 * H, 2 * H, 10 * H), 12 * H);
        assert_eq!(next_slot(10 * H, 2 * H, 10 * H + 5_000), 12 * H);
        // Five hours late (a restart after a long stop): one run now, then
        // the next slot of the same rate, not the two missed ones.
        assert_eq!(next_slot(10 * H, 2 * H, 15 * H), 16 * H);
        // Exactly on a later slot: the one after it.
        assert_eq!(next_slot(10 * H, 2 * H, 14 * H), 16 * H);
        // A changed `every` moves the next run from the previous planned time.
        assert_eq!(moved(12 * H, 2 * H, 3 * H, 10 * H + 1), 13 * H);
        assert_eq!(moved(12 * H, 2 * H, H / 2, 11 * H), 11 * H, "never in the past");
    }

    #[test]
    fn batch_keys_name_the_schedule_and_the_range() {
        assert_eq!(batch_key("fnac-sales", 101, 1100), "fnac-sales:101-1100");
    }

    #[test]
    fn a_pull_answer_keeps_what_fits_and_names_what_does_not() {
        let body = br#"[{"event":"sale.created","data":{"n":1}},
                        {"event":"bad name!","data":{}},
                        {"event":"sale.created","data":{"n":2},"idempotency_key":"s-2"},
                        {"event":"sale.created","data":{"n":3},"colour":"red"}]"#;
        let p = pulled(body, 1 << 20).unwrap();
        let kept: Vec<usize> = p.items.iter().map(|(i, _)| *i).collect();
        assert_eq!(kept, [0, 2]);
        assert_eq!(p.items[1].1.idempotency_key.as_deref(), Some("s-2"));
        let first_key = p.items[0].1.idempotency_key.clone().unwrap();
        assert!(first_key.starts_with("pull:"), "{first_key}");
        // The same content pulled again derives the same key.
        let again = pulled(br#"{"events":[{"event":"sale.created","data":{"n":1}}]}"#, 1 << 20).unwrap();
        assert_eq!(again.items[0].1.idempotency_key.as_deref(), Some(first_key.as_str()));
        let bad: Vec<(usize, &str)> = p.bad.iter().map(|(i, f)| (*i, f.field.as_str())).collect();
        assert_eq!(bad, [(1, "[1].event"), (3, "[3].colour")]);
        // Data over the limit is the item's fault, not the answer's.
        let big = pulled(br#"[{"event":"a","data":"0123456789"}]"#, 5).unwrap();
        assert_eq!(big.bad[0].1.field, "[0].data");
        assert!(pulled(b"{\"rows\": []}", 10).is_err());
        assert!(pulled(b"<html>", 10).is_err());
    }
}
