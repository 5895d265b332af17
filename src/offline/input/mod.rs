//! The rows of a file for `anomalyd detect`: CSV with any delimiter, JSON
//! lines or Parquet, from a path or standard input (`-`), read as a stream.
//!
//! Every format is seen as a table: named columns, and rows whose cells are
//! text, numbers, booleans or times. A row that cannot be read at all (bad
//! UTF-8, a line that is not JSON) comes back as [`Next::Unreadable`] with
//! its line; the caller counts it and goes on.

mod csv_rows;
mod json_rows;
mod parquet_rows;

pub use csv_rows::sniff_delimiter;

use std::io::Read;
use std::path::Path;

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text with a header line and a delimiter (detected, or `--delimiter`).
    Csv,
    /// One JSON object per line: the columns are its fields, and for a field
    /// holding an object (`values` in the daemon's record format) that
    /// object's fields.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

/// How to open the input.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// The format; `None` = by extension (`.parquet`, `.jsonl`/`.ndjson`/`.json`,
    /// anything else CSV), or by content on standard input.
    pub format: Option<Format>,
    /// The CSV delimiter; `None` = detected from the first lines.
    pub delimiter: Option<u8>,
}

/// One cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// Absent, empty or null.
    Missing,
    /// Text, as in the file (a CSV cell is always text).
    Text(&'a str),
    /// A number (JSON, Parquet).
    Number(f64),
    /// A boolean (JSON, Parquet).
    Bool(bool),
    /// A time (Parquet timestamp and date columns), epoch milliseconds.
    TimeMs(i64),
}

/// A row of the table, borrowed from the reader until the next call.
pub enum Row<'a> {
    /// A CSV record.
    Csv(&'a csv::StringRecord),
    /// A JSON object and where each column is in it.
    Json(&'a json_rows::JsonRow, &'a [json_rows::Path]),
    /// A row of a Parquet record batch.
    Parquet(&'a arrow_array::RecordBatch, usize),
}

impl<'a> Row<'a> {
    /// The cell of column `column` (an index into [`Table::columns`]).
    pub fn cell(&self, column: usize) -> Cell<'a> {
        match *self {
            Row::Csv(record) => match record.get(column) {
                Some(text) if !text.trim().is_empty() => Cell::Text(text),
                _ => Cell::Missing,
            },
            Row::Json(row, paths) => json_rows::cell(row, &paths[column]),
            Row::Parquet(batch, index) => parquet_rows::cell(batch.column(column), index),
        }
    }
}

/// What [`Table::next_row`] read.
pub enum Next<'a> {
    /// A row.
    Row(Row<'a>),
    /// A row that could not be read; the reader goes on after it.
    Unreadable(String),
    /// No more rows.
    End,
}

/// Why the input could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened or read.
    #[error("cannot read {name}: {source}")]
    Io {
        /// The file.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not of its format (no header, not Parquet, ...).
    #[error("{name}: {message}")]
    Format {
        /// The file.
        name: String,
        /// What is wrong.
        message: String,
    },
}

enum Reader {
    Csv(csv_rows::CsvRows),
    Json(json_rows::JsonRows),
    Parquet(parquet_rows::ParquetRows),
}

/// An open input: its columns, then its rows one at a time.
pub struct Table {
    name: String,
    columns: Vec<String>,
    format: Format,
    delimiter: Option<u8>,
    size: Option<u64>,
    reader: Reader,
    /// 1-based line (CSV, JSON lines) or row (Parquet) of the latest row.
    line: usize,
}

impl Table {
    /// Opens `path` (`-` = standard input).
    pub fn open(path: &Path, options: &InputOptions) -> Result<Self, InputError> {
        let stdin = path.as_os_str() == "-";
        let name = if stdin {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        let io = |source| InputError::Io {
            name: name.clone(),
            source,
        };
        let (source, size): (Box<dyn Read>, Option<u64>) = if stdin {
            (Box::new(std::io::stdin().lock()), None)
        } else {
            let file = std::fs::File::open(path).map_err(io)?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(file), size)
        };
        let (prefix, source) = read_prefix(source).map_err(io)?;
        let format = options
            .format
            .unwrap_or_else(|| guess_format(path, &prefix));
        let (reader, columns, delimiter, line) = match format {
            Format::Csv => {
                let delimiter = options
                    .delimiter
                    .unwrap_or_else(|| sniff_delimiter(&prefix));
                let (rows, columns) = csv_rows::CsvRows::open(source, delimiter, &name)?;
                (Reader::Csv(rows), columns, Some(delimiter), 1)
            }
            Format::Jsonl => {
                let (rows, columns) = json_rows::JsonRows::open(source, &name)?;
                (Reader::Json(rows), columns, None, 0)
            }
            Format::Parquet => {
                // Parquet's footer is at the end: a file is read where it
                // is, standard input is read whole first.
                let (rows, columns) = if stdin {
                    parquet_rows::ParquetRows::from_reader(source, &name)?
                } else {
                    let file = std::fs::File::open(path).map_err(io)?;
                    parquet_rows::ParquetRows::from_file(file, &name)?
                };
                (Reader::Parquet(rows), columns, None, 0)
            }
        };
        Ok(Self {
            name,
            columns,
            format,
            delimiter,
            size,
            reader,
            line,
        })
    }

    /// The input's name in messages (its path, or "standard input").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column names, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The format being read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The CSV delimiter in use.
    pub fn delimiter(&self) -> Option<u8> {
        self.delimiter
    }

    /// The file's size in bytes, when known (not on standard input).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Bytes read so far (CSV and JSON lines; 0 for Parquet).
    pub fn position(&self) -> u64 {
        match &self.reader {
            Reader::Csv(rows) => rows.position(),
            Reader::Json(rows) => rows.position(),
            Reader::Parquet(_) => 0,
        }
    }

    /// The 1-based line of the latest row (the header is line 1 of a CSV
    /// file); for Parquet, the 1-based row.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The type of a column, if the format has types and the column's type
    /// cannot be read (Parquet); `None` when it can.
    pub fn unreadable_type(&self, column: usize) -> Option<String> {
        match &self.reader {
            Reader::Parquet(rows) => rows.unreadable_type(column),
            _ => None,
        }
    }

    /// The next row.
    pub fn next_row(&mut self) -> Result<Next<'_>, InputError> {
        match &mut self.reader {
            Reader::Csv(rows) => rows.next(&self.name, &mut self.line),
            Reader::Json(rows) => rows.next(&self.name, &mut self.line),
            Reader::Parquet(rows) => rows.next(&self.name, &mut self.line),
        }
    }
}

/// Reads the first 64 KiB of the input, to guess the format and the
/// delimiter from, and returns them with a reader of the whole input.
fn read_prefix(mut source: Box<dyn Read>) -> std::io::Result<(Vec<u8>, Box<dyn Read>)> {
    let mut prefix = Vec::with_capacity(1 << 16);
    (&mut source).take(1 << 16).read_to_end(&mut prefix)?;
    let whole = std::io::Cursor::new(prefix.clone()).chain(source);
    Ok((prefix, Box::new(whole)))
}

fn guess_format(path: &Path, prefix: &[u8]) -> Format {
    if prefix.starts_with(b"PAR1") {
        return Format::Parquet;
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet" | "pq") => Format::Parquet,
        Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
        _ if path.as_os_str() == "-" && prefix.trim_ascii_start().starts_with(b"{") => {
            Format::Jsonl
        }
        _ => Format::Csv,
    }
}

/// A readable name for a delimiter byte.
pub fn delimiter_name(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "tab".into(),
        b',' => "','".into(),
        other => format!("'{}'", other as char),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(table: &mut Table, columns: &[usize]) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        loop {
            match table.next_row().unwrap() {
                Next::Row(row) => rows.push(
                    columns
                        .iter()
                        .map(|&c| format!("{:?}", row.cell(c)))
                        .collect(),
                ),
                Next::Unreadable(message) => rows.push(vec![format!("unreadable: {message}")]),
                Next::End => return rows,
            }
        }
    }

    #[test]
    fn a_semicolon_file_is_read_with_its_delimiter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, "a;b;label\n1,5;2;0\n3;;1\n").unwrap();
        let mut table = Table::open(&path, &InputOptions::default()).unwrap();
        assert_eq!(table.columns(), ["a", "b", "label"]);
        assert_eq!(table.delimiter(), Some(b';'));
        let rows = read_all(&mut table, &[0, 1]);
        assert_eq!(rows[0], ["Text(\"1,5\")", "Text(\"2\")"]);
        assert_eq!(rows[1], ["Text(\"3\")", "Missing"]);
        assert_eq!(table.line(), 3);
    }

    #[test]
    fn json_lines_flatten_the_values_object_and_go_on_after_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        std::fs::write(
            &path,
            "{\"ts\": 1000, \"entity\": \"p\", \"values\": {\"x\": 1.5}}\nnot json\n\n{\"ts\": 2000, \"values\": {\"x\": null}}\n",
        )
        .unwrap();
        let mut table = Table::open(&path, &InputOptions::default()).unwrap();
        assert_eq!(table.columns(), ["entity", "ts", "x"]);
        let rows = read_all(&mut table, &[0, 1, 2]);
        assert_eq!(rows[0], ["Text(\"p\")", "Number(1000.0)", "Number(1.5)"]);
        assert!(rows[1][0].starts_with("unreadable"), "{:?}", rows[1]);
        assert_eq!(rows[2], ["Missing", "Number(2000.0)", "Missing"]);
        assert_eq!(rows.len(), 3);
    }
}
