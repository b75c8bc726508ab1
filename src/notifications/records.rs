//! Collmex `API_NOTIFICATION` records, as the import takes them and the
//! export writes them: `API_NOTIFICATION;System;Event;URL;Inactive`, fields
//! separated by `;` and optionally quoted with `"` (`""` inside quotes is
//! one `"`), lines ended by CRLF or LF, no header, empty lines skipped.
//! Files come as UTF-8 or ISO-8859-1; the export is UTF-8 with CRLF.
//!
//! Parsing is all or nothing: every bad line is reported with its 1-based
//! number (empty lines count), the field at fault, and what to do.

use crate::events::valid_name;

/// One record: a notification to create or change, or (inactive 2) to delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub system: String,
    pub event: String,
    pub url: String,
    /// 0 active, 1 inactive, 2 delete.
    pub inactive: u8,
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub line: usize,
    /// `Record type`, `System`, `Event`, `URL` or `Inactive`.
    pub field: &'static str,
    pub message: String,
}

pub const RECORD_TYPE: &str = "API_NOTIFICATION";
pub const MAX_SYSTEM: usize = 20;
pub const MAX_URL: usize = 255;

/// Collmex's event numbers and the event names herald gives them.
pub const COLLMEX_EVENTS: [(&str, &str); 9] = [
    ("1", "booking.posted"),
    ("2", "stock.available.changed"),
    ("3", "sales_order.changed"),
    ("4", "delivery.changed"),
    ("5", "invoice.changed"),
    ("6", "quote.changed"),
    ("7", "stock.changed"),
    ("8", "product.changed"),
    ("9", "customer.changed"),
];

const FIELDS: [&str; 5] = ["Record type", "System", "Event", "URL", "Inactive"];

/// The event a notification names: a Collmex event number (1 to 9) is its
/// event's name; otherwise an event name (not all digits). `None` if neither.
pub fn event_named(field: &str) -> Option<String> {
    match COLLMEX_EVENTS.iter().find(|(n, _)| *n == field) {
        Some((_, name)) => Some(name.to_string()),
        None if valid_name(field) && !field.bytes().all(|b| b.is_ascii_digit()) => Some(field.to_string()),
        None => None,
    }
}

/// A Collmex `System`: 1 to 20 characters of printable text (Collmex
/// allows any), no control characters.
pub fn valid_system(s: &str) -> bool {
    (1..=MAX_SYSTEM).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

/// Why `url` cannot be pinged, if it cannot: http(s), a host, at most 255
/// characters, no spaces or control characters. Other characters (an
/// umlaut in the path) are sent percent-encoded.
pub fn url_problem(url: &str) -> Option<String> {
    if url.chars().count() > MAX_URL {
        return Some(format!(
            "is {} characters; at most {MAX_URL} are allowed",
            url.chars().count()
        ));
    }
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    // Brackets only around an IPv6 address (`[::1]`, `[::1]:8080`).
    let bracketed = |h: &str| {
        let name = h
            .rsplit_once(':')
            .filter(|(_, port)| !port.contains(']'))
            .map_or(h, |(n, _)| n);
        !h.contains(['[', ']']) || crate::net::valid_host(name)
    };
    if !host.is_some_and(|h| !h.is_empty() && h.is_ascii() && bracketed(h)) {
        return Some("must be an http(s) URL with a host, like https://erp.example.com/ping".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not hold spaces or control characters; write them percent-encoded".into());
    }
    None
}

/// The URL as it goes on the wire: every byte outside ASCII percent-encoded.
pub fn wire_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The file's text, by the `charset` of its content type (UTF-8 when none).
pub fn decode(body: &[u8], charset: Option<&str>) -> Result<String, String> {
    match charset.map(|c| c.trim().trim_matches('"').to_ascii_lowercase()) {
        None => utf8(body),
        Some(c) if c == "utf-8" || c == "utf8" => utf8(body),
        Some(c) if ["iso-8859-1", "iso8859-1", "latin1", "latin-1", "iso_8859-1"].contains(&c.as_str()) => {
            // ISO-8859-1 maps each byte to the code point of the same number.
            Ok(body.iter().map(|&b| char::from(b)).collect())
        }
        Some(other) => Err(format!("charset {other:?} is not supported; send utf-8 or iso-8859-1")),
    }
}

fn utf8(body: &[u8]) -> Result<String, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    String::from_utf8(body.to_vec()).map_err(|e| {
        let line = body[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("line {line} is not UTF-8; send the file as UTF-8, or say charset=iso-8859-1 if it is Latin-1")
    })
}

/// The records of a file, each with its line number, or every bad line.
pub fn parse(text: &str) -> Result<Vec<(usize, Record)>, Vec<LineError>> {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        match record(line) {
            Ok(r) => records.push((line_no, r)),
            Err((field, message)) => errors.push(LineError {
                line: line_no,
                field,
                message,
            }),
        }
    }
    if errors.is_empty() { Ok(records) } else { Err(errors) }
}

fn record(line: &str) -> Result<Record, (&'static str, String)> {
    let fields = split(line)?;
    if let Some(missing) = FIELDS.get(fields.len()) {
        let message = format!("is missing; a record has {} fields: {}", FIELDS.len(), FIELDS.join(";"));
        return Err((missing, message));
    }
    if fields.len() > FIELDS.len() {
        let message = format!(
            "is followed by {} more fields; a record has {}",
            fields.len() - 5,
            FIELDS.len()
        );
        return Err(("Inactive", message));
    }
    if fields[0] != RECORD_TYPE {
        let message = format!(
            "{:?} is not {RECORD_TYPE}; only notification records are imported",
            fields[0]
        );
        return Err(("Record type", message));
    }
    let system = fields[1].clone();
    if !valid_system(&system) {
        let message = format!("{system:?} must be 1 to {MAX_SYSTEM} characters of printable text");
        return Err(("System", message));
    }
    let event = match event_named(&fields[2]) {
        Some(name) => name,
        None => {
            let message = format!(
                "{:?} is neither a Collmex event number (1 to 9) nor an event name (A-Z a-z 0-9 . _ : -)",
                fields[2]
            );
            return Err(("Event", message));
        }
    };
    let url = fields[3].clone();
    if let Some(problem) = url_problem(&url) {
        return Err(("URL", problem));
    }
    let inactive = match fields[4].as_str() {
        // Collmex leaves it empty for an active notification.
        "" | "0" => 0,
        "1" => 1,
        "2" => 2,
        other => {
            return Err((
                "Inactive",
                format!("{other:?} must be 0 (active), 1 (inactive) or 2 (delete)"),
            ));
        }
    };
    Ok(Record {
        system,
        event,
        url,
        inactive,
    })
}

/// The fields of one line: `;`-separated, `"`-quoted where they need it.
fn split(line: &str) -> Result<Vec<String>, (&'static str, String)> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        let at = FIELDS.get(fields.len()).copied().unwrap_or("Inactive");
                        return Err((at, "opens a quote that is never closed".into()));
                    }
                }
            }
            if !matches!(chars.peek(), None | Some(';')) {
                let at = FIELDS.get(fields.len()).copied().unwrap_or("Inactive");
                return Err((
                    at,
                    "has text after its closing quote; put the whole field in quotes".into(),
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ';' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(';') => continue,
            _ => return Ok(fields),
        }
    }
}

/// The records as the export writes them: UTF-8, CRLF, quoted where needed.
pub fn export<'a>(records: impl IntoIterator<Item = &'a Record>) -> String {
    let quote = |f: &str| {
        if f.contains([';', '"', '\r', '\n']) || f.starts_with(' ') || f.ends_with(' ') {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_string()
        }
    };
    let mut out = String::new();
    for r in records {
        let fields = [RECORD_TYPE, &r.system, &r.event, &r.url, &r.inactive.to_string()];
        let line: Vec<String> = fields.iter().map(|f| quote(f)).collect();
        out.push_str(&line.join(";"));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, event: &str, url: &str, inactive: u8) -> Record {
        Record {
            system: system.into(),
            event: event.into(),
            url: url.into(),
            inactive,
        }
    }

    #[test]
    fn records_with_numbers_names_quotes_and_both_line_ends() {
        let text = "API_NOTIFICATION;shop;1;https://shop.example.com/ping;0\r\n\
                    \r\n\
                    \"API_NOTIFICATION\";\"crm\";door.opened;\"https://crm.example.com/a;b?x=\"\"y\"\"\";1\n\
                    API_NOTIFICATION;shop;9;https://shop.example.com/c;2\n";
        let got = parse(text).unwrap();
        assert_eq!(
            got,
            vec![
                (1, rec("shop", "booking.posted", "https://shop.example.com/ping", 0)),
                (3, rec("crm", "door.opened", "https://crm.example.com/a;b?x=\"y\"", 1)),
                (4, rec("shop", "customer.changed", "https://shop.example.com/c", 2)),
            ]
        );
    }

    #[test]
    fn every_bad_line_is_named_with_its_field() {
        assert!(url_problem("http://[::1]:8080/p").is_none());
        assert!(
            url_problem("http://[zz]/p").is_some(),
            "brackets only around an IPv6 address"
        );
        let text = "API_NOTIFICATION;shop;1;https://x.io/p;0\n\
                    \n\
                    API_NOTE;shop;1;https://x.io/p;0\n\
                    API_NOTIFICATION;a system name far too long;1;https://x.io/p;0\n\
                    API_NOTIFICATION;shop;10;https://x.io/p;0\n\
                    API_NOTIFICATION;shop;1;ftp://x.io/p;0\n\
                    API_NOTIFICATION;shop;1;https://x.io/p;3\n\
                    API_NOTIFICATION;shop;1\n\
                    API_NOTIFICATION;shop;1;\"https://x.io/p;0\n";
        let errors = parse(text).unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field)).collect();
        assert_eq!(
            got,
            [
                (3, "Record type"),
                (4, "System"),
                (5, "Event"),
                (6, "URL"),
                (7, "Inactive"),
                (8, "URL"),
                (9, "URL")
            ]
        );
        assert!(errors.iter().all(|e| e.message.len() > 10));
    }

    #[test]
    fn latin1_files_decode_and_umlauts_go_out_percent_encoded() {
        let latin1 = b"API_NOTIFICATION;shop;3;https://shop.example.com/\xfcbersicht;0\r\n";
        let text = decode(latin1, Some("ISO-8859-1")).unwrap();
        let records = parse(&text).unwrap();
        assert_eq!(records[0].1.url, "https://shop.example.com/übersicht");
        assert_eq!(wire_url(&records[0].1.url), "https://shop.example.com/%C3%BCbersicht");
        assert!(decode(latin1, None).unwrap_err().contains("line 1"));
        assert!(decode(b"x", Some("utf-16")).is_err());
    }

    #[test]
    fn export_then_parse_is_the_same() {
        let records = vec![
            rec("shop", "booking.posted", "https://shop.example.com/ping", 0),
            rec("crm", "door.opened", "https://crm.example.com/a;b?x=\"y\"", 1),
        ];
        let text = export(&records);
        // Collmex's events go out by name, which the import maps back to the same event.
        assert!(text.ends_with("\r\n") && text.starts_with("API_NOTIFICATION;shop;booking.posted;"));
        let back: Vec<Record> = parse(&text).unwrap().into_iter().map(|(_, r)| r).collect();
        assert_eq!(back, records);
    }

    #[test]
    fn an_empty_inactive_is_active_and_numbers_name_collmex_events() {
        let text = "API_NOTIFICATION;shop;9;https://shop.example.com/p;\r\n";
        let records = parse(text).unwrap();
        assert_eq!(
            (records[0].1.event.as_str(), records[0].1.inactive),
            ("customer.changed", 0)
        );
        assert_eq!(event_named("3").as_deref(), Some("sales_order.changed"));
        assert_eq!(event_named("door.opened").as_deref(), Some("door.opened"));
        assert_eq!(event_named("10"), None, "only 1 to 9 are Collmex's");
    }
}
