//! Finding where in the file a value was written, so that every error
//! names its line and dotted key (`config line 2: server.listen: ...`).

/// The 1-based line of byte `offset`, and the dotted key written there
/// (`server.listen`), found from the nearest table header above it.
pub(super) fn key_at(text: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(text.len());
    let line = text[..offset].matches('\n').count() + 1;
    let mut section = String::new();
    for l in text.lines().take(line - 1) {
        if let Some(h) = header(l) {
            section = h.to_string();
        }
    }
    let here = text.lines().nth(line - 1).unwrap_or("");
    if let Some(h) = header(here) {
        return (line, h.to_string());
    }
    let key = here.split('=').next().unwrap_or("").trim().trim_matches('"');
    let key = match (section.is_empty(), key.is_empty()) {
        (_, true) => section,
        (true, false) => key.to_string(),
        (false, false) => format!("{section}.{key}"),
    };
    (line, key)
}

pub(super) fn header(line: &str) -> Option<&str> {
    let l = line.trim();
    let inner = l.strip_prefix("[[").and_then(|r| r.split("]]").next());
    let inner = inner.or_else(|| l.strip_prefix('[').and_then(|r| r.split(']').next()));
    inner.map(str::trim)
}

/// The line where `key` is set inside `[section]`.
pub(super) fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = "";
    for (i, l) in text.lines().enumerate() {
        if let Some(h) = header(l) {
            current = h;
        } else if current == section && assigns(l, key) {
            return Some(i + 1);
        }
    }
    None
}

/// The line where `key` is set inside the `n`th `[[array]]` table (or the
/// table's header when the key is missing).
pub(super) fn line_of_nth(text: &str, array_header: &str, n: usize, key: &str) -> Option<usize> {
    let mut count = 0;
    let mut inside = false;
    let mut header_line = None;
    for (i, l) in text.lines().enumerate() {
        if l.trim() == array_header {
            inside = count == n;
            if inside {
                header_line = Some(i + 1);
            }
            count += 1;
        } else if header(l).is_some() {
            inside = false;
        } else if inside && assigns(l, key) {
            return Some(i + 1);
        }
    }
    header_line
}

pub(super) fn assigns(line: &str, key: &str) -> bool {
    line.split_once('=')
        .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
}
