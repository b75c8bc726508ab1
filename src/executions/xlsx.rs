//! A one-sheet XLSX workbook, written row by row into a deflated zip held
//! in memory (so only the compressed file grows): the few SpreadsheetML
//! parts the export needs — inline strings, six cell formats, a frozen
//! header row, an autofilter, column widths.
//!
//! Why not rust_xlsxwriter: measured on the static aarch64 build, it added
//! 655 KB (5.12 → 5.78 MB) where the binary must stay under 5 MiB. This
//! writer on the zip crate (which rust_xlsxwriter uses as well) costs a
//! fraction of that. Its files are read back by an independent reader
//! (calamine) and checked against their XML in the tests.

use std::io::{Cursor, Write};

use jiff::civil::{Date, DateTime};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A cell's look: its format's index in `styles.xml` below.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    Plain = 0,
    Bold = 1,
    Header = 2,
    Time = 3,
    Red = 4,
    RedTime = 5,
    /// Long text: wrapped at the column's width, from the top.
    Wrap = 6,
    RedWrap = 7,
}

/// Points per line of text (Calibri 11, as the default row height).
const LINE_HEIGHT: f64 = 15.0;
/// Rows grow to show at most this many lines; the cell keeps the rest.
const MAX_LINES: usize = 27;

pub enum Cell<'a> {
    Text(&'a str),
    Number(f64),
    /// A local date and time, shown as `yyyy-mm-dd hh:mm:ss`.
    Time(DateTime),
    Empty,
}

/// Excel keeps at most this many characters in a cell.
const MAX_CELL: usize = 32_767;

pub struct Sheet {
    zip: ZipWriter<Cursor<Vec<u8>>>,
    name: String,
    /// The next row's number, 1-based.
    next: u32,
    /// The header row (1-based): frozen, and where the autofilter starts.
    header: u32,
    /// Each column's width, in characters.
    widths: Vec<f64>,
    buf: String,
}

fn options() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

fn io(e: zip::result::ZipError) -> std::io::Error {
    std::io::Error::other(e)
}

/// XML text, escaped; characters XML cannot hold become U+FFFD; cut to
/// what a cell keeps.
fn escape(out: &mut String, s: &str) {
    for c in s.chars().take(MAX_CELL) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// How many lines `text` takes in a column `width` characters wide.
fn wrapped_lines(text: &str, width: f64) -> usize {
    // A little narrower than the width: proportional fonts, word breaks.
    let per_line = (width * 0.9).max(1.0) as usize;
    text.split('\n')
        .map(|l| l.chars().count().div_ceil(per_line).max(1))
        .sum()
}

/// The column letter of a 0-based column (the export uses six).
fn column(col: usize) -> char {
    (b'A' + col as u8) as char
}

/// Excel's serial date: days since 1899-12-30, the time as the fraction.
pub fn serial(t: DateTime) -> f64 {
    let days = Date::constant(1899, 12, 30).until(t.date()).map_or(0, |s| s.get_days());
    let secs = f64::from(t.hour()) * 3600.0
        + f64::from(t.minute()) * 60.0
        + f64::from(t.second())
        + f64::from(t.subsec_nanosecond()) / 1e9;
    f64::from(days) + secs / 86_400.0
}

impl Sheet {
    /// A workbook with one sheet `name` of `widths.len()` columns; the row
    /// `header` (1-based) will be the frozen header with the autofilter.
    pub fn new(name: &str, widths: &[f64], header: u32) -> std::io::Result<Sheet> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (path, text) in [
            ("[Content_Types].xml", CONTENT_TYPES),
            ("_rels/.rels", ROOT_RELS),
            ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS),
            ("xl/styles.xml", STYLES),
        ] {
            zip.start_file(path, options()).map_err(io)?;
            zip.write_all(text.as_bytes())?;
        }
        zip.start_file("xl/worksheets/sheet1.xml", options()).map_err(io)?;
        let mut head = format!(
            "{XML}<worksheet xmlns=\"{MAIN}\" xmlns:r=\"{REL}\"><sheetPr><pageSetUpPr fitToPage=\"1\"/></sheetPr><sheetViews><sheetView workbookViewId=\"0\">\
             <pane ySplit=\"{header}\" topLeftCell=\"A{below}\" activePane=\"bottomLeft\" state=\"frozen\"/>\
             <selection pane=\"bottomLeft\"/></sheetView></sheetViews>\
             <sheetFormatPr defaultRowHeight=\"15\"/><cols>",
            below = header + 1
        );
        for (i, w) in widths.iter().enumerate() {
            head.push_str(&format!(
                "<col min=\"{n}\" max=\"{n}\" width=\"{w}\" customWidth=\"1\"/>",
                n = i + 1
            ));
        }
        head.push_str("</cols><sheetData>");
        zip.write_all(head.as_bytes())?;
        let mut escaped = String::new();
        escape(&mut escaped, name);
        Ok(Sheet {
            zip,
            name: escaped,
            next: 1,
            header,
            widths: widths.to_vec(),
            buf: String::with_capacity(1024),
        })
    }

    /// The next row; cells in column order.
    pub fn row(&mut self, cells: &[(Cell<'_>, Style)]) -> std::io::Result<()> {
        let r = self.next;
        self.next += 1;
        // A wrapped cell's lines: its own, each folded at the column's width.
        let lines = cells
            .iter()
            .enumerate()
            .filter(|(_, (_, style))| matches!(style, Style::Wrap | Style::RedWrap))
            .map(|(i, (cell, _))| match cell {
                Cell::Text(t) => wrapped_lines(t, self.widths.get(i).copied().unwrap_or(10.0)),
                _ => 1,
            })
            .max()
            .unwrap_or(1)
            .min(MAX_LINES);
        let b = &mut self.buf;
        b.clear();
        if lines > 1 {
            b.push_str(&format!(
                "<row r=\"{r}\" ht=\"{}\" customHeight=\"1\">",
                lines as f64 * LINE_HEIGHT
            ));
        } else {
            b.push_str(&format!("<row r=\"{r}\">"));
        }
        for (i, (cell, style)) in cells.iter().enumerate() {
            let at = format!("{}{r}", column(i));
            let s = *style as u8;
            match cell {
                Cell::Empty => b.push_str(&format!("<c r=\"{at}\" s=\"{s}\"/>")),
                Cell::Number(n) => b.push_str(&format!("<c r=\"{at}\" s=\"{s}\"><v>{n}</v></c>")),
                Cell::Time(t) => b.push_str(&format!("<c r=\"{at}\" s=\"{s}\"><v>{}</v></c>", serial(*t))),
                Cell::Text(t) => {
                    b.push_str(&format!(
                        "<c r=\"{at}\" s=\"{s}\" t=\"inlineStr\"><is><t xml:space=\"preserve\">"
                    ));
                    escape(b, t);
                    b.push_str("</t></is></c>");
                }
            }
        }
        b.push_str("</row>");
        self.zip.write_all(self.buf.as_bytes())
    }

    /// A row with nothing in it.
    pub fn skip(&mut self) {
        self.next += 1;
    }

    /// Ends the sheet (the autofilter over the header and the rows under
    /// it) and the workbook; the file's bytes.
    pub fn finish(mut self) -> std::io::Result<Vec<u8>> {
        let last_col = column(self.widths.len().saturating_sub(1));
        let last_row = (self.next - 1).max(self.header);
        let range = format!("A{}:{last_col}{last_row}", self.header);
        self.zip.write_all(
            // Printed landscape, one page wide (as many long as it takes),
            // the header row on every page.
            format!(
                "</sheetData><autoFilter ref=\"{range}\"/><pageMargins left=\"0.5\" right=\"0.5\" top=\"0.75\" \
                 bottom=\"0.75\" header=\"0.3\" footer=\"0.3\"/><pageSetup paperSize=\"9\" orientation=\"landscape\" \
                 fitToWidth=\"1\" fitToHeight=\"0\"/></worksheet>"
            )
            .as_bytes(),
        )?;
        // The autofilter's hidden name, as Excel writes it.
        let absolute = format!("$A${}:${last_col}${last_row}", self.header);
        let workbook = format!(
            "{XML}<workbook xmlns=\"{MAIN}\" xmlns:r=\"{REL}\"><bookViews><workbookView/></bookViews>\
             <sheets><sheet name=\"{name}\" sheetId=\"1\" r:id=\"rId1\"/></sheets><definedNames>\
             <definedName name=\"_xlnm._FilterDatabase\" localSheetId=\"0\" hidden=\"1\">'{name}'!{absolute}</definedName>\
             <definedName name=\"_xlnm.Print_Titles\" localSheetId=\"0\">'{name}'!${h}:${h}</definedName>\
             </definedNames></workbook>",
            name = self.name,
            h = self.header
        );
        self.zip.start_file("xl/workbook.xml", options()).map_err(io)?;
        self.zip.write_all(workbook.as_bytes())?;
        Ok(self.zip.finish().map_err(io)?.into_inner())
    }
}

const XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n";
const MAIN: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";

const CONTENT_TYPES: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
<Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
<Default Extension=\"xml\" ContentType=\"application/xml\"/>\
<Override PartName=\"/xl/workbook.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml\"/>\
<Override PartName=\"/xl/worksheets/sheet1.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml\"/>\
<Override PartName=\"/xl/styles.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml\"/>\
</Types>";

const ROOT_RELS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
<Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument\" Target=\"xl/workbook.xml\"/>\
</Relationships>";

const WORKBOOK_RELS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
<Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet\" Target=\"worksheets/sheet1.xml\"/>\
<Relationship Id=\"rId2\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles\" Target=\"styles.xml\"/>\
</Relationships>";

/// Formats in the order of [`Style`]: plain, bold, header (bold on grey,
/// thin bottom border), time, red (error rows: dark red on light red), red time.
const STYLES: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<styleSheet xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\">\
<numFmts count=\"1\"><numFmt numFmtId=\"164\" formatCode=\"yyyy\\-mm\\-dd\\ hh:mm:ss\"/></numFmts>\
<fonts count=\"3\"><font><sz val=\"11\"/><name val=\"Calibri\"/></font>\
<font><b/><sz val=\"11\"/><name val=\"Calibri\"/></font>\
<font><sz val=\"11\"/><color rgb=\"FF9C0006\"/><name val=\"Calibri\"/></font></fonts>\
<fills count=\"4\"><fill><patternFill patternType=\"none\"/></fill><fill><patternFill patternType=\"gray125\"/></fill>\
<fill><patternFill patternType=\"solid\"><fgColor rgb=\"FFD9D9D9\"/><bgColor indexed=\"64\"/></patternFill></fill>\
<fill><patternFill patternType=\"solid\"><fgColor rgb=\"FFFFC7CE\"/><bgColor indexed=\"64\"/></patternFill></fill></fills>\
<borders count=\"2\"><border><left/><right/><top/><bottom/><diagonal/></border>\
<border><left/><right/><top/><bottom style=\"thin\"><color auto=\"1\"/></bottom><diagonal/></border></borders>\
<cellStyleXfs count=\"1\"><xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\"/></cellStyleXfs>\
<cellXfs count=\"8\">\
<xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyAlignment=\"1\"><alignment vertical=\"top\"/></xf>\
<xf numFmtId=\"0\" fontId=\"1\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyFont=\"1\"/>\
<xf numFmtId=\"0\" fontId=\"1\" fillId=\"2\" borderId=\"1\" xfId=\"0\" applyFont=\"1\" applyFill=\"1\" applyBorder=\"1\"/>\
<xf numFmtId=\"164\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyNumberFormat=\"1\" applyAlignment=\"1\"><alignment vertical=\"top\"/></xf>\
<xf numFmtId=\"0\" fontId=\"2\" fillId=\"3\" borderId=\"0\" xfId=\"0\" applyFont=\"1\" applyFill=\"1\" applyAlignment=\"1\"><alignment vertical=\"top\"/></xf>\
<xf numFmtId=\"164\" fontId=\"2\" fillId=\"3\" borderId=\"0\" xfId=\"0\" applyNumberFormat=\"1\" applyFont=\"1\" applyFill=\"1\" applyAlignment=\"1\"><alignment vertical=\"top\"/></xf>\
<xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyAlignment=\"1\"><alignment wrapText=\"1\" vertical=\"top\"/></xf>\
<xf numFmtId=\"0\" fontId=\"2\" fillId=\"3\" borderId=\"0\" xfId=\"0\" applyFont=\"1\" applyFill=\"1\" applyAlignment=\"1\"><alignment wrapText=\"1\" vertical=\"top\"/></xf>\
</cellXfs><cellStyles count=\"1\"><cellStyle name=\"Normal\" xfId=\"0\" builtinId=\"0\"/></cellStyles>\
</styleSheet>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_text_counts_its_lines_and_the_folds_of_long_ones() {
        assert_eq!(wrapped_lines("short", 20.0), 1);
        assert_eq!(wrapped_lines("", 20.0), 1);
        assert_eq!(wrapped_lines("one\ntwo\nthree", 20.0), 3);
        // 18 characters a line in a column 20 wide: 40 take 3.
        assert_eq!(wrapped_lines(&"x".repeat(40), 20.0), 3);
        assert_eq!(wrapped_lines(&format!("{}\nend", "é".repeat(36)), 20.0), 3);
    }

    #[test]
    fn serial_dates_count_days_from_1899_12_30() {
        let t: DateTime = "2026-12-01T11:00:00".parse().unwrap();
        // 2026-12-01 is day 46357 in Excel's 1900 system.
        assert!((serial(t) - (46357.0 + 11.0 / 24.0)).abs() < 1e-9, "{}", serial(t));
    }

    #[test]
    fn text_is_escaped_and_cut_to_a_cell() {
        let mut out = String::new();
        escape(&mut out, "a<b & \"c\"\u{1}\n");
        assert_eq!(out, "a&lt;b &amp; &quot;c&quot;\u{FFFD}\n");
        let mut long = String::new();
        escape(&mut long, &"x".repeat(40_000));
        assert_eq!(long.len(), MAX_CELL);
    }
}
