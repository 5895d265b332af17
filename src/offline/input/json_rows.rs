//! JSON lines rows: one object per line. The columns are the first object's
//! fields (in name order), and for a field holding an object (`values` in
//! the daemon's record format) that object's fields instead.

use super::{Cell, InputError, Next, Row};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};

/// One parsed line.
pub type JsonRow = Map<String, Value>;

/// Where a column's value is in an object.
#[derive(Debug, Clone)]
pub enum Path {
    /// A field of the object.
    Field(String),
    /// A field of an object held by a field.
    Nested(String, String),
}

/// The cell at `path` of `row`.
pub(super) fn cell<'a>(row: &'a JsonRow, path: &Path) -> Cell<'a> {
    let value = match path {
        Path::Field(name) => row.get(name),
        Path::Nested(outer, name) => row
            .get(outer)
            .and_then(Value::as_object)
            .and_then(|values| values.get(name)),
    };
    match value {
        None | Some(Value::Null) => Cell::Missing,
        Some(Value::String(s)) if s.trim().is_empty() => Cell::Missing,
        Some(Value::String(s)) => Cell::Text(s),
        Some(Value::Number(n)) => n.as_f64().map_or(Cell::Missing, Cell::Number),
        Some(Value::Bool(b)) => Cell::Bool(*b),
        Some(Value::Array(_)) => Cell::Text("(an array)"),
        Some(Value::Object(_)) => Cell::Text("(an object)"),
    }
}

/// A JSON lines reader.
pub(super) struct JsonRows {
    reader: BufReader<Box<dyn Read>>,
    buffer: Vec<u8>,
    row: JsonRow,
    paths: Vec<Path>,
    /// The first object, read to learn the columns, and its line.
    first: Option<(JsonRow, usize)>,
    position: u64,
}

impl JsonRows {
    /// Reads up to the first object to learn the columns.
    pub(super) fn open(
        source: Box<dyn Read>,
        name: &str,
    ) -> Result<(Self, Vec<String>), InputError> {
        let mut rows = Self {
            reader: BufReader::with_capacity(1 << 16, source),
            buffer: Vec::new(),
            row: Map::new(),
            paths: Vec::new(),
            first: None,
            position: 0,
        };
        let mut line = 0;
        let first = loop {
            if !rows.read_line(name, &mut line)? {
                return Err(InputError::Format {
                    name: name.to_string(),
                    message: "no JSON object: the file is empty".into(),
                });
            }
            if rows.buffer.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice::<JsonRow>(&rows.buffer) {
                Ok(object) => break object,
                Err(e) => {
                    return Err(InputError::Format {
                        name: name.to_string(),
                        message: format!("line {line}: the first record is not a JSON object: {e}"),
                    })
                }
            }
        };
        let mut columns = Vec::new();
        for (key, value) in &first {
            match value {
                Value::Object(values) => {
                    for channel in values.keys() {
                        columns.push(channel.clone());
                        rows.paths.push(Path::Nested(key.clone(), channel.clone()));
                    }
                }
                _ => {
                    columns.push(key.clone());
                    rows.paths.push(Path::Field(key.clone()));
                }
            }
        }
        rows.first = Some((first, line));
        Ok((rows, columns))
    }

    pub(super) fn position(&self) -> u64 {
        self.position
    }

    fn read_line(&mut self, name: &str, line: &mut usize) -> Result<bool, InputError> {
        self.buffer.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buffer)
            .map_err(|source| InputError::Io {
                name: name.to_string(),
                source,
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.position += n as u64;
        *line += 1;
        Ok(true)
    }

    pub(super) fn next(&mut self, name: &str, line: &mut usize) -> Result<Next<'_>, InputError> {
        if let Some((first, at)) = self.first.take() {
            self.row = first;
            *line = at;
            return Ok(Next::Row(Row::Json(&self.row, &self.paths)));
        }
        loop {
            if !self.read_line(name, line)? {
                return Ok(Next::End);
            }
            if self.buffer.trim_ascii().is_empty() {
                continue;
            }
            return Ok(match serde_json::from_slice::<JsonRow>(&self.buffer) {
                Ok(object) => {
                    self.row = object;
                    Next::Row(Row::Json(&self.row, &self.paths))
                }
                Err(e) => Next::Unreadable(format!("not a JSON object: {e}")),
            });
        }
    }
}
