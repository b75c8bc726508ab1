//! An execution and its log lines as one file a support person can hand to
//! an expert: CSV (UTF-8 with BOM, `;`-separated, so spreadsheet programs
//! in German and French locales open it in columns) or XLSX (header row
//! frozen, autofilter, error rows red, times in `general.timezone`).
//!
//! Both read the log lines one at a time from a read transaction. The CSV
//! grows in memory (about 200 bytes a line: 20 MiB for 100,000 lines); the
//! XLSX sheet is written in rust_xlsxwriter's constant-memory mode, its rows
//! going to a temporary file in the data directory (not `/tmp`, often RAM
//! on a gateway), and only the compressed file is held at the end.

use std::path::Path;

use jiff::tz::TimeZone;
use redb::ReadTransaction;
use rust_xlsxwriter::{Color, ExcelDateTime, Format, FormatBorder, Workbook, XlsxError};

use super::{Execution, Level, LogLine};
use crate::clock;
use crate::store::{self, LOGS, StoreError};

/// The columns of both formats.
const HEADER: [&str; 6] = ["#", "time", "level", "category", "message", "detail"];

/// The file name: `herald-INTERFACE-EXECUTION_ID.EXT`, with anything but
/// `[A-Za-z0-9._-]` in the interface's name replaced.
pub fn file_name(exe: &Execution, ext: &str) -> String {
    let interface: String = exe
        .interface
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("herald-{interface}-{}.{ext}", exe.id)
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
    clock::from_ms(ms)
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
    csv_row(&mut out, &HEADER);
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

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the XLSX file could not be written: {0}")]
    Xlsx(#[from] XlsxError),
}

/// Local time as Excel's serial date-time, so the cells sort and filter as times.
fn excel_time(ms: i64, tz: &TimeZone) -> Result<ExcelDateTime, XlsxError> {
    let t = clock::from_ms(ms).to_zoned(tz.clone());
    ExcelDateTime::from_ymd(t.year() as u16, t.month() as u8, t.day() as u8)?.and_hms_milli(
        t.hour() as u16,
        t.minute() as u8,
        t.second() as u8,
        t.millisecond() as u16,
    )
}

/// The XLSX: the execution's fields first, then the header row (frozen,
/// with an autofilter) and one row per log line, error rows filled red.
/// `tempdir` holds the sheet's rows while it is written.
pub fn xlsx(r: &ReadTransaction, exe: &Execution, tz: &TimeZone, tempdir: &Path) -> Result<Vec<u8>, ExportError> {
    let mut book = Workbook::new();
    book.set_tempdir(tempdir)?;
    let bold = Format::new().set_bold();
    let head = Format::new()
        .set_bold()
        .set_background_color(Color::RGB(0xD9D9D9))
        .set_border_bottom(FormatBorder::Thin);
    let time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let red = Format::new()
        .set_background_color(Color::RGB(0xFFC7CE))
        .set_font_color(Color::RGB(0x9C0006));
    let red_time = red.clone().set_num_format("yyyy-mm-dd hh:mm:ss");
    let sheet = book.add_worksheet_with_constant_memory()?;
    sheet.set_name("log")?;
    // Widths that fit: the message column is the wide one; detail wraps in the cell.
    for (col, width) in [(0, 7.0), (1, 20.0), (2, 7.0), (3, 14.0), (4, 80.0), (5, 60.0)] {
        sheet.set_column_width(col, width)?;
    }
    let status = exe.status.as_str();
    let errors = exe.errors.to_string();
    let facts: [(&str, Option<&str>); 3] = [
        ("interface", Some(&exe.interface)),
        ("schedule", exe.schedule.as_deref()),
        ("status", Some(status)),
    ];
    let mut row = 0;
    for (name, value) in facts {
        sheet.write_string_with_format(row, 0, name, &bold)?;
        sheet.write_string(row, 1, value.unwrap_or(""))?;
        row += 1;
    }
    for (name, at) in [("start", Some(exe.started_at)), ("end", exe.ended_at)] {
        sheet.write_string_with_format(row, 0, name, &bold)?;
        match at {
            Some(ms) => sheet.write_datetime_with_format(row, 1, excel_time(ms, tz)?, &time)?,
            None => sheet.write_string(row, 1, "")?,
        };
        row += 1;
    }
    sheet.write_string_with_format(row, 0, "errors", &bold)?;
    sheet.write_string(row, 1, &errors)?;
    row += 2;
    let header_row = row;
    for (col, name) in HEADER.iter().enumerate() {
        sheet.write_string_with_format(header_row, col as u16, *name, &head)?;
    }
    let mut failed: Option<XlsxError> = None;
    for_each_line(r, exe, |n, line| {
        row += 1;
        let written = (|| -> Result<(), XlsxError> {
            let error = line.level == Level::Error;
            let (plain, at) = if error {
                (&red, &red_time)
            } else {
                (&Format::new(), &time)
            };
            sheet.write_number_with_format(row, 0, f64::from(n + 1), plain)?;
            sheet.write_datetime_with_format(row, 1, excel_time(line.at, tz)?, at)?;
            sheet.write_string_with_format(row, 2, line.level.as_str(), plain)?;
            sheet.write_string_with_format(row, 3, line.category.map_or("", |c| c.as_str()), plain)?;
            sheet.write_string_with_format(row, 4, &line.message, plain)?;
            sheet.write_string_with_format(row, 5, line.detail.as_deref().unwrap_or(""), plain)?;
            Ok(())
        })();
        if let Err(e) = written {
            failed.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    sheet.set_freeze_panes(header_row + 1, 0)?;
    sheet.autofilter(header_row, 0, row, 5)?;
    Ok(book.save_to_buffer()?)
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
        };
        assert_eq!(file_name(&exe, "xlsx"), "herald-fnac_sales_2-exe_01.xlsx");
    }
}
