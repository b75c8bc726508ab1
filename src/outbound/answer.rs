//! What an answer to an outbound call means, pure and tested without I/O:
//! any 2xx is success; anything else fails the attempt, with the category
//! that says whom to call and the `Retry-After` a busy receiver asked for.
//! Deliveries, action calls and scheduled runs judge alike.

use std::time::Duration;

use jiff::Timestamp;

use crate::category::Category;

/// Why an attempt failed, judged from what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub category: Category,
    pub message: String,
    pub status: Option<u16>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// 410 Gone: the receiver says this webhook is over.
    pub gone: bool,
}

/// Any 2xx is success; everything else fails the attempt, with the category
/// that says whom to call.
pub fn judge(status: u16, retry_after: Option<&str>, now: Timestamp) -> Result<(), Failure> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let category = match status {
        401 | 403 | 404 | 410 => Category::Configuration,
        400 | 422 => Category::Mapping,
        _ => Category::External,
    };
    let retry_after = if matches!(status, 429 | 503) {
        retry_after.and_then(|v| parse_retry_after(v, now))
    } else {
        None
    };
    Err(Failure {
        category,
        message: format!("answered {status}"),
        status: Some(status),
        retry_after,
        gone: status == 410,
    })
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(v: &str, now: Timestamp) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v.trim()).ok()?.timestamp();
    Duration::try_from(at.duration_since(now)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn failure(status: u16) -> Failure {
        judge(status, None, t("2026-11-22T10:00:00Z")).unwrap_err()
    }

    #[test]
    fn statuses_and_categories() {
        let now = t("2026-11-22T10:00:00Z");
        assert!(judge(200, None, now).is_ok() && judge(204, None, now).is_ok());
        assert_eq!(failure(500).category, Category::External);
        assert_eq!(failure(404).category, Category::Configuration);
        assert_eq!(failure(401).category, Category::Configuration);
        assert_eq!(failure(422).category, Category::Mapping);
        assert!(failure(410).gone);
        assert_eq!(
            judge(429, Some("120"), now).unwrap_err().retry_after,
            Some(Duration::from_secs(120))
        );
        let date = judge(503, Some("Sun, 22 Nov 2026 10:01:00 GMT"), now).unwrap_err();
        assert_eq!(date.retry_after, Some(Duration::from_secs(60)));
        assert_eq!(judge(500, Some("120"), now).unwrap_err().retry_after, None);
    }
}
