//! A table row → a sample for the daemon's detector (entity, event time,
//! values in the model's channel order), or the reason it is skipped, with
//! the same reasons the daemon dead-letters records for.
//!
//! Handling of bad rows (docs/detect.md): a row with a
//! missing, non-numeric or non-finite channel value, a missing or
//! unreadable time or entity, or that cannot be read at all is skipped and
//! counted, and its message names the row and the column. A channel the
//! model expects but the file lacks is an error before any row is read.

use super::input::{Cell, Row, Table};
use crate::daemon::source::decode::RejectReason;
use crate::series::timestamp::parse_timestamp;
use std::collections::HashMap;

/// Why a row was skipped: the reason (as the daemon's dead letters name
/// it), the column, and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    /// The reason.
    pub reason: RejectReason,
    /// The column, where one cell was the cause.
    pub column: Option<String>,
    /// What was wrong.
    pub detail: String,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(column) => write!(f, "column {column:?}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

/// Where the event time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// A column: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), epoch milliseconds,
    /// or a Parquet timestamp or date.
    Column(usize),
    /// No time column: each entity's rows are one second apart, in file order.
    RowOrder,
}

/// Which columns mean what.
#[derive(Debug, Clone)]
pub struct ColumnRoles {
    /// The entity column; `None` = every row belongs to `default_entity`.
    pub entity: Option<usize>,
    /// The event time.
    pub time: TimeSource,
    /// The column of each model channel, in the model's order.
    pub channels: Vec<usize>,
    /// A label column to carry along (evaluation).
    pub label: Option<usize>,
}

/// The names a time column is looked for by, when none is named.
pub const TIME_COLUMNS: [&str; 5] = ["timestamp", "time", "ts", "datetime", "date"];

impl ColumnRoles {
    /// Finds the columns of `table` for a model with `channels`. `entity`
    /// and `time` name columns; without them, a column named `entity` is the
    /// entity, and the first of [`TIME_COLUMNS`] present is the time (none:
    /// row order). `row_order` forces row order.
    pub fn find(
        table: &Table,
        channels: &[String],
        entity: Option<&str>,
        time: Option<&str>,
        row_order: bool,
        label: Option<&str>,
    ) -> Result<Self, String> {
        let columns = table.columns();
        let find = |name: &str, what: &str| -> Result<usize, String> {
            columns.iter().position(|c| c == name).ok_or_else(|| {
                format!(
                    "{}: no {what} column named {name:?}; the columns are {columns:?}{}",
                    table.name(),
                    delimiter_hint(table)
                )
            })
        };
        let entity = match entity {
            Some(name) => Some(find(name, "entity")?),
            None => columns.iter().position(|c| c == "entity"),
        };
        let time = match (time, row_order) {
            (Some(_), true) => {
                return Err("name a time column or ask for row order, not both".into())
            }
            (Some(name), false) => TimeSource::Column(find(name, "time")?),
            (None, true) => TimeSource::RowOrder,
            (None, false) => TIME_COLUMNS
                .iter()
                .find_map(|name| columns.iter().position(|c| c == name))
                .map_or(TimeSource::RowOrder, TimeSource::Column),
        };
        let label = label.map(|name| find(name, "label")).transpose()?;
        let missing: Vec<&String> = channels.iter().filter(|c| !columns.contains(c)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}: the model's channels {missing:?} are not columns of the file; the columns are {columns:?}{}",
                table.name(),
                delimiter_hint(table)
            ));
        }
        let channels: Vec<usize> = channels
            .iter()
            .map(|c| columns.iter().position(|h| h == c).expect("checked above"))
            .collect();
        for &column in channels.iter().chain(&entity).chain(&label) {
            if let Some(kind) = table.unreadable_type(column) {
                return Err(format!(
                    "{}: column {:?} has type {kind}, which cannot be read (numbers, booleans, strings, timestamps and dates can)",
                    table.name(),
                    columns[column]
                ));
            }
        }
        Ok(Self {
            entity,
            time,
            channels,
            label,
        })
    }
}

/// A hint when a CSV header came out as one column: the delimiter may be another.
fn delimiter_hint(table: &Table) -> String {
    match (table.delimiter(), table.columns()) {
        (Some(delimiter), [only]) => {
            let others: Vec<char> = [',', ';', '\t', '|']
                .into_iter()
                .filter(|&c| c as u8 != delimiter && only.contains(c))
                .collect();
            match others.first() {
                Some(c) => format!(
                    " (one column: the header contains {c:?}; is that the delimiter? pass --delimiter)"
                ),
                None => " (one column: is the delimiter another? pass --delimiter)".into(),
            }
        }
        _ => String::new(),
    }
}

/// One decoded row.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// The entity.
    pub entity: String,
    /// Event time, epoch ms.
    pub timestamp_ms: i64,
    /// The time as written in the file (or the row number in row order).
    pub time: String,
    /// Values in the model's channel order.
    pub values: Vec<f32>,
    /// The label cell as text (empty when missing), if a label column was named.
    pub label: Option<String>,
}

/// Decodes rows for one model.
#[derive(Debug)]
pub struct RowDecoder {
    roles: ColumnRoles,
    names: Vec<String>,
    default_entity: String,
    /// Accept `1,5` for 1.5 (only when the delimiter is not a comma).
    decimal_comma: bool,
    /// Rows seen per entity, for row-order time.
    row_counts: HashMap<String, i64>,
}

impl RowDecoder {
    /// A decoder of `table`'s rows; rows without an entity column belong to `default_entity`.
    pub fn new(table: &Table, roles: ColumnRoles, default_entity: String) -> Self {
        Self {
            roles,
            names: table.columns().to_vec(),
            default_entity,
            decimal_comma: table.delimiter().is_some_and(|d| d != b','),
            row_counts: HashMap::new(),
        }
    }

    /// The column roles.
    pub fn roles(&self) -> &ColumnRoles {
        &self.roles
    }

    /// The entity of rows without an entity column.
    pub fn default_entity(&self) -> &str {
        &self.default_entity
    }

    /// Decodes `row` into `out` (its buffers are reused). On a skip, `out`
    /// still holds what could be read of the entity, time and label.
    pub fn decode(&mut self, row: &Row<'_>, out: &mut Decoded) -> Result<(), Skip> {
        let skip = |reason, column: usize, detail: String| Skip {
            reason,
            column: Some(self.names[column].clone()),
            detail,
        };
        out.label = self.roles.label.map(|c| label_text(row.cell(c)));
        out.timestamp_ms = 0;
        out.entity.clear();
        match self.roles.entity {
            None => out.entity.push_str(&self.default_entity),
            Some(c) => match row.cell(c) {
                Cell::Text(text) => out.entity.push_str(text.trim()),
                Cell::Number(n) => out.entity.push_str(&format_number(n)),
                Cell::Missing => {
                    return Err(skip(RejectReason::MissingEntity, c, "no entity".into()))
                }
                other => {
                    return Err(skip(
                        RejectReason::MissingEntity,
                        c,
                        format!("{other:?} is not an entity name"),
                    ))
                }
            },
        }
        out.time.clear();
        match self.roles.time {
            TimeSource::RowOrder => {
                let count = match self.row_counts.get_mut(out.entity.as_str()) {
                    Some(count) => count,
                    None => self.row_counts.entry(out.entity.clone()).or_insert(0),
                };
                out.timestamp_ms = *count * 1000;
                out.time.push_str(&count.to_string());
                *count += 1;
            }
            TimeSource::Column(c) => {
                let cell = row.cell(c);
                out.timestamp_ms =
                    time_of(cell).map_err(|m| skip(RejectReason::BadTimestamp, c, m))?;
                match cell {
                    Cell::Text(text) => out.time.push_str(text.trim()),
                    Cell::Number(n) => out.time.push_str(&format_number(n)),
                    _ => out
                        .time
                        .push_str(&crate::series::timestamp::format_timestamp_ms(
                            out.timestamp_ms,
                        )),
                }
            }
        }
        out.values.clear();
        for &c in &self.roles.channels {
            let value = number_of(row.cell(c), self.decimal_comma)
                .map_err(|(reason, m)| skip(reason, c, m))?;
            out.values.push(value);
        }
        Ok(())
    }
}

/// A cell as epoch milliseconds.
fn time_of(cell: Cell<'_>) -> Result<i64, String> {
    match cell {
        Cell::Text(text) => parse_timestamp(text),
        Cell::Number(n) if n.is_finite() && n.abs() < 9.0e15 => Ok(n.round() as i64),
        Cell::Number(n) => Err(format!("{n} is not epoch milliseconds")),
        Cell::TimeMs(ms) => Ok(ms),
        Cell::Missing => Err("no time".into()),
        Cell::Bool(b) => Err(format!("{b} is not a time")),
    }
}

/// A cell as a finite channel value.
fn number_of(cell: Cell<'_>, decimal_comma: bool) -> Result<f32, (RejectReason, String)> {
    let value = match cell {
        Cell::Number(n) => n as f32,
        Cell::Bool(b) => f32::from(u8::from(b)),
        Cell::Text(text) => {
            let text = text.trim();
            match text.parse::<f32>() {
                Ok(v) => v,
                Err(_) if decimal_comma && text.contains(',') => {
                    text.replacen(',', ".", 1).parse::<f32>().map_err(|_| {
                        (
                            RejectReason::NonNumeric,
                            format!("{text:?} is not a number"),
                        )
                    })?
                }
                Err(_) => {
                    return Err((
                        RejectReason::NonNumeric,
                        format!("{text:?} is not a number"),
                    ))
                }
            }
        }
        Cell::Missing => return Err((RejectReason::MissingChannel, "no value".into())),
        Cell::TimeMs(_) => return Err((RejectReason::NonNumeric, "a time, not a number".into())),
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err((
            RejectReason::NonFinite,
            format!("{value} is not a finite number"),
        ))
    }
}

/// A label cell as text: numbers without a needless `.0`, booleans as words.
fn label_text(cell: Cell<'_>) -> String {
    match cell {
        Cell::Missing => String::new(),
        Cell::Text(text) => text.trim().to_string(),
        Cell::Number(n) => format_number(n),
        Cell::Bool(b) => b.to_string(),
        Cell::TimeMs(ms) => ms.to_string(),
    }
}

/// A number as its shortest text, whole numbers without a fraction.
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::input::{InputOptions, Next};

    fn decode_all(text: &str, channels: &[&str]) -> Vec<Result<Decoded, String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pump.csv");
        std::fs::write(&path, text).unwrap();
        let mut table = Table::open(&path, &InputOptions::default()).unwrap();
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let roles = ColumnRoles::find(&table, &channels, None, None, false, None).unwrap();
        let mut decoder = RowDecoder::new(&table, roles, "pump".into());
        let mut out = Vec::new();
        loop {
            let mut decoded = Decoded::default();
            match table.next_row().unwrap() {
                Next::Row(row) => out.push(
                    decoder
                        .decode(&row, &mut decoded)
                        .map(|()| decoded)
                        .map_err(|s| format!("{}: {s}", s.reason.as_str())),
                ),
                Next::Unreadable(m) => out.push(Err(m)),
                Next::End => return out,
            }
        }
    }

    #[test]
    fn bad_cells_name_their_column_and_reason() {
        let rows = decode_all(
            "time;a;b\n2024-01-01 00:00:00;1,5;2\n2024-01-01 00:01:00;x;2\n2024-01-01 00:02:00;;2\nyesterday;1;2\n2024-01-01 00:04:00;NaN;2\n",
            &["b", "a"],
        );
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.values, [2.0, 1.5], "model order, decimal comma");
        assert_eq!(first.entity, "pump");
        assert_eq!(first.timestamp_ms, 1_704_067_200_000);
        assert_eq!(
            rows[1].as_ref().unwrap_err(),
            "non_numeric: column \"a\": \"x\" is not a number"
        );
        assert_eq!(
            rows[2].as_ref().unwrap_err(),
            "missing_channel: column \"a\": no value"
        );
        assert!(rows[3]
            .as_ref()
            .unwrap_err()
            .starts_with("bad_timestamp: column \"time\": cannot read timestamp \"yesterday\""));
        assert!(rows[4]
            .as_ref()
            .unwrap_err()
            .starts_with("non_finite: column \"a\""));
    }

    #[test]
    fn without_a_time_column_rows_count_per_entity() {
        let rows = decode_all("entity,a\np,1\nq,2\np,3\n", &["a"]);
        let times: Vec<(String, i64)> = rows
            .into_iter()
            .map(|r| r.unwrap())
            .map(|d| (d.entity, d.timestamp_ms))
            .collect();
        assert_eq!(
            times,
            [("p".into(), 0), ("q".into(), 0), ("p".into(), 1000)]
        );
    }

    #[test]
    fn a_missing_channel_is_an_error_that_hints_at_the_delimiter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, "timestamp;a;b\n1;2;3\n").unwrap();
        let options = InputOptions {
            delimiter: Some(b','),
            ..Default::default()
        };
        let table = Table::open(&path, &options).unwrap();
        let message =
            ColumnRoles::find(&table, &["a".into()], None, None, false, None).unwrap_err();
        assert!(
            message.contains("[\"a\"]")
                && message.contains("';'")
                && message.contains("--delimiter"),
            "{message}"
        );
    }
}
