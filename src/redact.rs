//! Keeping secrets out of what people see: values of secret-looking names
//! in request targets, bodies and URLs are blanked out before anything is
//! logged, mailed, answered or shown on a page. One place, so every
//! feature hides the same things the same way.

/// Names whose values never leave herald: not in mails, logs or pages.
const SECRET_NAMES: [&str; 8] = [
    "secret",
    "password",
    "passwd",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "credential",
];
/// A body excerpt is at most this long.
const EXCERPT_BYTES: usize = 2048;
const HIDDEN: &str = "[redacted]";

pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| name.contains(s))
}

/// The path and query of a request, secret-looking query values blanked.
pub fn target(uri: &hyper::Uri) -> String {
    match uri.query() {
        Some(query) => format!("{}?{}", uri.path(), query_masked(query, HIDDEN)),
        None => uri.path().to_string(),
    }
}

fn query_masked(query: &str, hidden: &str) -> String {
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_name(k) => format!("{k}={hidden}"),
            _ => pair.to_string(),
        })
        .collect();
    parts.join("&")
}

/// A URL as people may see it: the password of its user part and the
/// values of secret-looking query parameters become `***`.
pub fn url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((user, host)) => match user.split_once(':') {
                    Some((name, _)) => format!("{name}:***@{host}"),
                    None => format!("{user}@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_string(),
    };
    match query {
        Some(q) => format!("{base}?{}", query_masked(q, "***")),
        None => base,
    }
}

/// The first 2 KiB of a request body with secret-looking values blanked,
/// and whether the text was re-serialised (a JSON body) rather than shown
/// as received (a body that is not JSON, where secrets are found by their
/// names in the raw text).
pub fn excerpt(body: &[u8]) -> (String, bool) {
    fn redact(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if is_secret_name(k) {
                        *v = serde_json::Value::String(HIDDEN.into());
                    } else {
                        redact(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
            _ => {}
        }
    }
    let (text, reserialised) = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            (v.to_string(), true)
        }
        Err(_) => (tokens_masked(&raw_masked(&String::from_utf8_lossy(body))), false),
    };
    if text.len() <= EXCERPT_BYTES {
        return (text, reserialised);
    }
    let mut end = EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (format!("{}… ({} bytes in all)", &text[..end], body.len()), reserialised)
}

/// JSON-like text that did not parse: the value after each secret-looking
/// `"name":` is blanked, and so is the value of each `name=` in a form.
fn raw_masked(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let (start, end, name) = match b[i] {
            b'"' => {
                let end = string_end(b, i);
                let closed = end > i + 1 && b[end - 1] == b'"';
                (
                    i,
                    end,
                    if closed {
                        text[i + 1..end - 1].to_string()
                    } else {
                        String::new()
                    },
                )
            }
            _ => {
                // Only ASCII bytes end a plain run, so each slice is whole UTF-8.
                let end = i + b[i..]
                    .iter()
                    .position(|c| b"\",:=&{}[] \n\t".contains(c))
                    .unwrap_or(b.len() - i);
                let end = end.max(i + 1);
                (i, end, text[i..end].to_string())
            }
        };
        out.push_str(&text[start..end]);
        i = end;
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && matches!(b[j], b':' | b'=') && is_secret_name(&name) {
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            out.push_str(&text[i..j]);
            i = if j < b.len() && b[j] == b'"' {
                string_end(b, j)
            } else {
                j + b[j..]
                    .iter()
                    .position(|c| b",}]&\n ".contains(c))
                    .unwrap_or(b.len() - j)
            };
            out.push_str(if b[j..].first() == Some(&b'"') {
                "\"[redacted]\""
            } else {
                HIDDEN
            });
        }
    }
    out
}

/// The index just past the string that opens at `start` (a `"`).
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// herald's own secrets by their shape: webhook secrets and tokens.
fn tokens_masked(text: &str) -> String {
    let mut out = text.to_string();
    for prefix in ["whsec_", "hrl_"] {
        while let Some(at) = out.find(prefix) {
            let len = out[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || "_-+/=".contains(c)))
                .unwrap_or(out.len() - at);
            out.replace_range(at..at + len, HIDDEN);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_hide_secrets_and_stop_at_2_kib() {
        let body = br#"{"url":"https://x.io","secret":"whsec_abc","auth":{"Password":"p","user":"u"},"api_token":"t"}"#;
        let (e, reserialised) = excerpt(body);
        assert!(reserialised);
        assert!(
            !e.contains("whsec_abc") && !e.contains("\"p\"") && !e.contains("\"t\""),
            "{e}"
        );
        assert!(e.contains("https://x.io") && e.contains("\"user\":\"u\""), "{e}");
        let long = format!(r#"{{"data":"{}"}}"#, "é".repeat(3000));
        let (e, _) = excerpt(long.as_bytes());
        assert!(
            e.len() < EXCERPT_BYTES + 40 && e.ends_with("bytes in all)"),
            "{}",
            e.len()
        );
        assert_eq!(excerpt(b"not json whsec_zzz").0, "not json [redacted]");
    }

    #[test]
    fn bodies_that_do_not_parse_are_redacted_by_name() {
        let (e, reserialised) = excerpt(br#"{"n": 1e400, "password":"hunter2", "Token" : 42, "ok":"x"}"#);
        assert!(!reserialised);
        assert_eq!(
            e,
            r#"{"n": 1e400, "password":"[redacted]", "Token" : [redacted], "ok":"x"}"#
        );
        let (e, _) = excerpt("user=é&password=hunter2&x=1".as_bytes());
        assert_eq!(e, "user=é&password=[redacted]&x=1");
        let (e, _) = excerpt(br#"{"secret":"a\"b", "k": hrl_abc-1}"#);
        assert_eq!(e, r#"{"secret":"[redacted]", "k": [redacted]}"#);
    }

    #[test]
    fn targets_hide_secret_query_parameters() {
        let uri: hyper::Uri = "/v1/webhooks/wh_1/activate?token=abc123&x=1&api_key=k".parse().unwrap();
        assert_eq!(
            target(&uri),
            "/v1/webhooks/wh_1/activate?token=[redacted]&x=1&api_key=[redacted]"
        );
        let plain: hyper::Uri = "/v1/events?after=5".parse().unwrap();
        assert_eq!(target(&plain), "/v1/events?after=5");
    }

    #[test]
    fn urls_hide_passwords_and_secret_parameters() {
        assert_eq!(
            url("https://erp:s3cret@erp.example.com:8443/in?token=abc&x=1"),
            "https://erp:***@erp.example.com:8443/in?token=***&x=1"
        );
        assert_eq!(url("http://erp@h/p"), "http://erp@h/p");
        assert_eq!(url("http://h/p?a=1"), "http://h/p?a=1");
    }
}
