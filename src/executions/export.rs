//! An execution and its log lines as one file a support person can hand to
//! an expert: CSV (UTF-8 with BOM, `;`-separated, so spreadsheet programs
//! in German and French locales open it in columns) or XLSX (header row
//! frozen, autofilter, error rows red, times in `general.timezone`).
//!
//! Both read the log lines one at a time from a read transaction. The CSV
//! grows in memory (about 200 bytes a line: 20 MiB for 100,000 lines); the
//! XLSX rows are deflated as they are written, so only the compressed file
//! grows (see `xlsx`).

use jiff::tz::TimeZone;
use redb::ReadTransaction;

use super::log::LOGS;
use super::log::{Execution, Level, LogLine};
use super::xlsx::{Cell, Sheet, Style};
use crate::clock;
use crate::store::{self, StoreError};

/// The columns of both formats.
const HEADER: [&str; 6] = ["#", "time", "level", "category", "message", "detail"];

/// The file name: `herald-INTERFACE-EXECUTION_ID.EXT`, with anything but
/// `[A-Za-z0-9._-]` in the interface's name replaced.
pub fn file_name(exe: &Execution, ext: &str) -> String {
    format!("herald-{}-{}.{ext}", safe_name(&exe.interface), exe.id)
}

/// `text` as part of a file name: what is not a letter, a digit or
/// `. _ -` becomes `_` (a name from a header must not hold a path or a quote).
pub fn safe_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Calls `each` with every log line of `exe`, in order, with its number.
fn for_each_line(
    r: &ReadTransaction,
    exe: &Execution,
    mut each: impl FnMut(u32, LogLine) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let table = r.open_table(LOGS)?;
    for row in table.range((exe.id.as_str(), 0)..=(exe.id.as_str(), u32::MAX))? {
        let (k, v) = row?;
        each(k.value().1, store::decode("log line", v.value())?)?;
    }
    Ok(())
}

/// Local time, to the second, as a person reads it.
fn local(ms: i64, tz: &TimeZone) -> String {
    clock::from_ms(clock::shown(ms))
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One CSV field: quoted when it holds `;`, `"`, a line break, or leading
/// or trailing space; quotes doubled.
fn csv_field(out: &mut String, s: &str) {
    let quote = s.contains([';', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if quote {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

/// The CSV: BOM, the header row, one row per log line.
pub fn csv(r: &ReadTransaction, exe: &Execution, tz: &TimeZone) -> Result<String, StoreError> {
    let mut out = String::with_capacity(64 + exe.lines as usize * 160);
    out.push('\u{feff}');
    // The times' zone is named in their column's header: "time (Europe/Zurich)".
    let time_header = zoned_header(tz);
    let mut header = HEADER;
    header[1] = &time_header;
    csv_row(&mut out, &header);
    for_each_line(r, exe, |n, line| {
        let number = (n + 1).to_string();
        let time = local(line.at, tz);
        let category = line.category.map_or("", |c| c.as_str());
        let detail = line.detail.as_deref().unwrap_or("");
        csv_row(
            &mut out,
            &[&number, &time, line.level.as_str(), category, &line.message, detail],
        );
        Ok(())
    })?;
    Ok(out)
}

/// The time column's header, naming the zone its times are in.
fn zoned_header(tz: &TimeZone) -> String {
    format!("time ({})", zone_name(tz))
}

/// `general.timezone` as people name it.
pub fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().map_or_else(|| "UTC".to_string(), String::from)
}

/// Local time, for a time cell.
fn civil(ms: i64, tz: &TimeZone) -> jiff::civil::DateTime {
    clock::from_ms(clock::shown(ms)).to_zoned(tz.clone()).datetime()
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the XLSX file could not be written: {0}")]
    Write(#[from] std::io::Error),
}

/// Column widths that fit the longest value of each column (in characters,
/// a little more for the filter button), the message and detail columns
/// capped so a long line wraps the view rather than the screen.
fn fitting_widths(r: &ReadTransaction, exe: &Execution) -> Result<[f64; 6], StoreError> {
    const CAPS: [usize; 6] = [10, 19, 7, 13, 100, 80];
    let mut longest = HEADER.map(str::len);
    longest[0] = longest[0].max(exe.lines.to_string().len()).max("interface".len());
    longest[1] = longest[1]
        .max(19)
        .max(exe.interface.len())
        .max(exe.schedule.as_ref().map_or(0, String::len));
    for_each_line(r, exe, |_, line| {
        let lens = [
            0,
            0,
            line.level.as_str().len(),
            line.category.map_or(0, |c| c.as_str().len()),
            line.message.chars().count(),
            line.detail
                .as_ref()
                .map_or(0, |d| d.lines().map(|l| l.chars().count()).max().unwrap_or(0)),
        ];
        for (l, n) in longest.iter_mut().zip(lens) {
            *l = (*l).max(n);
        }
        Ok(())
    })?;
    let mut out = [0.0; 6];
    for (i, w) in out.iter_mut().enumerate() {
        *w = longest[i].min(CAPS[i]) as f64 + 3.0;
    }
    Ok(out)
}

/// The XLSX: the execution's fields first, then the header row (frozen,
/// with an autofilter) and one row per log line, error rows filled red.
pub fn xlsx(r: &ReadTransaction, exe: &Execution, tz: &TimeZone) -> Result<Vec<u8>, ExportError> {
    // interface, schedule, status, start, end, errors, time zone; a blank
    // row; the header.
    const HEADER_ROW: u32 = 9;
    let widths = fitting_widths(r, exe)?;
    let mut sheet = Sheet::new("log", &widths, HEADER_ROW)?;
    let time = |ms: Option<i64>| ms.map_or(Cell::Empty, |ms| Cell::Time(civil(ms, tz)));
    let facts = [
        ("interface", Cell::Text(&exe.interface), Style::Plain),
        (
            "schedule",
            Cell::Text(exe.schedule.as_deref().unwrap_or("")),
            Style::Plain,
        ),
        ("status", Cell::Text(exe.state().as_str()), Style::Plain),
        ("start", time(Some(exe.started_at)), Style::Time),
        ("end", time(exe.ended_at), Style::Time),
        ("errors", Cell::Number(f64::from(exe.errors)), Style::Plain),
    ];
    let zone = zone_name(tz);
    for (name, value, style) in facts {
        sheet.row(&[(Cell::Text(name), Style::Bold), (value, style)])?;
    }
    // Every time of the sheet is local time in this zone.
    sheet.row(&[
        (Cell::Text("time zone"), Style::Bold),
        (Cell::Text(&zone), Style::Plain),
    ])?;
    sheet.skip();
    let time_header = zoned_header(tz);
    let header: Vec<(Cell<'_>, Style)> = HEADER
        .iter()
        .enumerate()
        .map(|(i, h)| (Cell::Text(if i == 1 { time_header.as_str() } else { h }), Style::Header))
        .collect();
    sheet.row(&header)?;
    let mut failed = None;
    for_each_line(r, exe, |n, line| {
        let (plain, at, wrap) = if line.level == Level::Error {
            (Style::Red, Style::RedTime, Style::RedWrap)
        } else {
            (Style::Plain, Style::Time, Style::Wrap)
        };
        let written = sheet.row(&[
            (Cell::Number(f64::from(n + 1)), plain),
            (Cell::Time(civil(line.at, tz)), at),
            (Cell::Text(line.level.as_str()), plain),
            (Cell::Text(line.category.map_or("", |c| c.as_str())), plain),
            (Cell::Text(&line.message), wrap),
            (Cell::Text(line.detail.as_deref().unwrap_or("")), wrap),
        ]);
        if let Err(e) = written {
            failed.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(sheet.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        let mut out = String::new();
        csv_row(
            &mut out,
            &["1", "a;b", "say \"hi\"", "two\nlines", " padded", "plain ünïcode"],
        );
        assert_eq!(
            out,
            "1;\"a;b\";\"say \"\"hi\"\"\";\"two\nlines\";\" padded\";plain ünïcode\r\n"
        );
        // Read back by an independent reader, as a spreadsheet program would.
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .has_headers(false)
            .from_reader(out.as_bytes());
        let rec = reader.records().next().unwrap().unwrap();
        let got: Vec<&str> = rec.iter().collect();
        assert_eq!(
            got,
            ["1", "a;b", "say \"hi\"", "two\nlines", " padded", "plain ünïcode"]
        );
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        let exe = Execution {
            id: "exe_01".into(),
            interface: "fnac sales/2".into(),
            schedule: None,
            kind: super::super::Kind::Scheduled,
            status: super::super::Status::Ok,
            started_at: 0,
            ended_at: None,
            errors: 0,
            successes: 0,
            lines: 0,
            day: None,
            acknowledged: None,
        };
        assert_eq!(file_name(&exe, "xlsx"), "herald-fnac_sales_2-exe_01.xlsx");
    }
}
