//! Reads CSV (a timestamp column and numeric value columns; the delimiter,
//! `,` `;` tab or `|`, is detected) or JSON lines (`{"ts": ..., "values":
//! {...}}`) into one [`Series`] per entity.

use super::timestamp::parse_timestamp;
use super::Series;
use std::collections::HashMap;
use std::path::Path;

/// Which columns mean what.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Name of the timestamp column (CSV) or field (JSON lines, `ts` by default there).
    pub timestamp_column: String,
    /// Column holding the entity; `None` = the whole file is one entity named after the file.
    pub entity_column: Option<String>,
    /// Channels to read, in this order; `None` = every numeric column.
    pub channels: Option<Vec<String>>,
    /// Column with a per-row label to keep (not a channel).
    pub label_column: Option<String>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            timestamp_column: "timestamp".into(),
            entity_column: None,
            channels: None,
            label_column: None,
        }
    }
}

/// Why an input file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's content is wrong at a given place.
    #[error("{path}, line {line}: {message}")]
    Content {
        /// The file.
        path: String,
        /// 1-based line number (the header is line 1 in CSV).
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// Reads a CSV or JSON lines file (chosen by extension: `.jsonl`/`.ndjson` are JSON lines).
pub fn read_series(path: &Path, options: &ReadOptions) -> Result<Vec<Series>, SeriesError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeriesError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let default_entity = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "series".into());
    let is_json_lines = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl") | Some("ndjson")
    );
    let origin = path.display().to_string();
    if is_json_lines {
        parse_json_lines(&text, options, &default_entity, &origin)
    } else {
        parse_csv(&text, options, &default_entity, &origin)
    }
}

/// Accumulates rows per entity, checking time order.
struct Grouper {
    channels: Vec<String>,
    order: Vec<String>,
    by_entity: HashMap<String, Series>,
    has_labels: bool,
}

impl Grouper {
    fn new(channels: Vec<String>, has_labels: bool) -> Self {
        Self {
            channels,
            order: Vec::new(),
            by_entity: HashMap::new(),
            has_labels,
        }
    }

    fn push(
        &mut self,
        entity: &str,
        timestamp: i64,
        values: &[f32],
        label: Option<String>,
    ) -> Result<(), String> {
        if !self.by_entity.contains_key(entity) {
            self.order.push(entity.to_string());
            self.by_entity.insert(
                entity.to_string(),
                Series {
                    entity: entity.to_string(),
                    channels: self.channels.clone(),
                    timestamps: Vec::new(),
                    values: Vec::new(),
                    labels: self.has_labels.then(Vec::new),
                },
            );
        }
        let series = self.by_entity.get_mut(entity).expect("inserted above");
        if let Some(&last) = series.timestamps.last() {
            if timestamp < last {
                return Err(format!(
                    "timestamp {timestamp} of entity {entity:?} is earlier than the previous row ({last}): rows must be in time order per entity (if the file holds several entities, name their column with --entity-column)"
                ));
            }
        }
        series.timestamps.push(timestamp);
        series.values.extend_from_slice(values);
        if let (Some(labels), Some(label)) = (series.labels.as_mut(), label) {
            labels.push(label);
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Series> {
        self.order
            .iter()
            .map(|e| {
                self.by_entity
                    .remove(e)
                    .expect("every ordered entity exists")
            })
            .collect()
    }
}

fn content_error(origin: &str, line: usize, message: String) -> SeriesError {
    SeriesError::Content {
        path: origin.to_string(),
        line,
        message,
    }
}

/// Column names taken for labels, never for channels unless named.
const LABEL_NAMES: [&str; 6] = [
    "anomaly",
    "label",
    "labels",
    "is_anomaly",
    "anomalous",
    "target",
];

fn is_label_name(name: &str) -> bool {
    LABEL_NAMES.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// A finite number; with `decimal_comma` (a file not separated by commas),
/// `1,5` reads as 1.5.
fn parse_number(text: &str, column: &str, decimal_comma: bool) -> Result<f32, String> {
    let trimmed = text.trim();
    let value: f32 = trimmed
        .parse()
        .or_else(|e| match decimal_comma && trimmed.contains(',') {
            true => trimmed.replacen(',', ".", 1).parse(),
            false => Err(e),
        })
        .map_err(|_| format!("column {column:?}: {text:?} is not a number"))?;
    if !value.is_finite() {
        return Err(format!(
            "column {column:?}: {text:?} is not a finite number"
        ));
    }
    Ok(value)
}

fn parse_csv(
    text: &str,
    options: &ReadOptions,
    default_entity: &str,
    origin: &str,
) -> Result<Vec<Series>, SeriesError> {
    let content_error = |line: usize, message: String| content_error(origin, line, message);
    let prefix = &text.as_bytes()[..text.len().min(1 << 16)];
    let delimiter = crate::offline::input::sniff_delimiter(prefix);
    let decimal_comma = delimiter != b',';
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| content_error(1, e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let find = |name: &str| -> Result<usize, SeriesError> {
        header.iter().position(|h| h == name).ok_or_else(|| {
            content_error(
                1,
                format!("no column named {name:?}; the header has {header:?}"),
            )
        })
    };
    let timestamp_index = find(&options.timestamp_column)?;
    let entity_index = options.entity_column.as_deref().map(find).transpose()?;
    let label_index = options.label_column.as_deref().map(find).transpose()?;
    let records: Vec<csv::StringRecord> = reader
        .records()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| content_error(i + 2, e.to_string())))
        .collect::<Result<_, _>>()?;

    let channel_indices: Vec<usize> = match &options.channels {
        Some(names) => names.iter().map(|n| find(n)).collect::<Result<_, _>>()?,
        None => {
            let reserved = [Some(timestamp_index), entity_index, label_index];
            numeric_columns(&header, &reserved, records.first(), decimal_comma)
        }
    };
    if channel_indices.is_empty() {
        return Err(content_error(
            1,
            "no numeric value columns found; name them with --channels".into(),
        ));
    }
    let channels: Vec<String> = channel_indices.iter().map(|&i| header[i].clone()).collect();
    let mut grouper = Grouper::new(channels.clone(), label_index.is_some());
    let mut values = vec![0.0f32; channels.len()];
    for (i, record) in records.iter().enumerate() {
        let line = i + 2;
        let field = |index: usize| record.get(index).unwrap_or("");
        let timestamp =
            parse_timestamp(field(timestamp_index)).map_err(|m| content_error(line, m))?;
        for (slot, (&index, name)) in values.iter_mut().zip(channel_indices.iter().zip(&channels)) {
            *slot = parse_number(field(index), name, decimal_comma)
                .map_err(|m| content_error(line, m))?;
        }
        let entity = entity_index.map(field).unwrap_or(default_entity);
        let label = label_index.map(|index| field(index).to_string());
        grouper
            .push(entity, timestamp, &values, label)
            .map_err(|m| content_error(line, m))?;
    }
    Ok(grouper.finish())
}

/// Every column but the `reserved` ones whose first value is a number is
/// a channel, except one named like a label: a model that reads the labels
/// learns nothing about the signal.
fn numeric_columns(
    header: &[String],
    reserved: &[Option<usize>],
    first: Option<&csv::StringRecord>,
    decimal_comma: bool,
) -> Vec<usize> {
    for (i, name) in header.iter().enumerate() {
        if !reserved.contains(&Some(i)) && is_label_name(name) {
            tracing::warn!(
                column = %name,
                "left out of the channels: it is named like a label (name it in --channels to use it)"
            );
        }
    }
    (0..header.len())
        .filter(|i| !reserved.contains(&Some(*i)) && !is_label_name(&header[*i]))
        .filter(|&i| {
            first
                .and_then(|r| r.get(i))
                .is_some_and(|v| parse_number(v, "", decimal_comma).is_ok())
        })
        .collect()
}

fn parse_json_lines(
    text: &str,
    options: &ReadOptions,
    default_entity: &str,
    origin: &str,
) -> Result<Vec<Series>, SeriesError> {
    let content_error = |line: usize, message: String| content_error(origin, line, message);
    let timestamp_field = if options.timestamp_column == "timestamp" {
        "ts"
    } else {
        options.timestamp_column.as_str()
    };
    let entity_field = options.entity_column.as_deref().unwrap_or("entity");
    let mut grouper: Option<Grouper> = None;
    let mut values = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| content_error(line, e.to_string()))?;
        let timestamp = match record.get(timestamp_field) {
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| format!("{timestamp_field:?} must be whole epoch milliseconds")),
            Some(serde_json::Value::String(s)) => parse_timestamp(s),
            _ => Err(format!("missing field {timestamp_field:?}")),
        }
        .map_err(|m| content_error(line, m))?;
        let record_values = record
            .get("values")
            .and_then(|v| v.as_object())
            .ok_or_else(|| content_error(line, "missing object field \"values\"".into()))?;
        let grouper = grouper.get_or_insert_with(|| {
            let channels = options
                .channels
                .clone()
                .unwrap_or_else(|| record_values.keys().cloned().collect());
            Grouper::new(channels, options.label_column.is_some())
        });
        values.clear();
        for channel in &grouper.channels {
            let value = record_values
                .get(channel)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| format!("channel {channel:?} is missing or not a number"))
                .and_then(|v| parse_number(&v.to_string(), channel, false))
                .map_err(|m| content_error(line, m))?;
            values.push(value);
        }
        let entity = record
            .get(entity_field)
            .and_then(|v| v.as_str())
            .unwrap_or(default_entity);
        let label = options.label_column.as_deref().map(|field| {
            record
                .get(field)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        });
        grouper
            .push(entity, timestamp, &values, label)
            .map_err(|m| content_error(line, m))?;
    }
    Ok(grouper.map(Grouper::finish).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_entities_and_default_channels() {
        let text = "timestamp,entity,a,b,kind\n\
                    2024-01-01 00:00:00,p1,1,2,\n\
                    2024-01-01 00:00:00,p2,3,4,spike\n\
                    2024-01-01 00:01:00,p1,5,6,\n";
        let options = ReadOptions {
            entity_column: Some("entity".into()),
            label_column: Some("kind".into()),
            ..Default::default()
        };
        let series = parse_csv(text, &options, "f", "f.csv").unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].entity, "p1");
        assert_eq!(series[0].channels, vec!["a", "b"]);
        assert_eq!(series[0].values, vec![1.0, 2.0, 5.0, 6.0]);
        assert_eq!(series[1].labels.as_ref().unwrap()[0], "spike");
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let text = "timestamp,a\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,oops\n";
        let message = parse_csv(text, &ReadOptions::default(), "f", "f.csv")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("line 3") && message.contains("\"a\""),
            "{message}"
        );
        let missing = ReadOptions {
            channels: Some(vec!["nope".into()]),
            ..Default::default()
        };
        let message = parse_csv(text, &missing, "f", "f.csv")
            .unwrap_err()
            .to_string();
        assert!(message.contains("no column named \"nope\""), "{message}");
    }

    #[test]
    fn a_semicolon_separated_file_is_read() {
        let text = "timestamp;a;b\n2024-01-01 00:00:00;1,5;2\n2024-01-01 00:01:00;3;4\n";
        let series = parse_csv(text, &ReadOptions::default(), "f", "f.csv").unwrap();
        assert_eq!(series[0].channels, vec!["a", "b"]);
        assert_eq!(series[0].values, vec![1.5, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn a_label_column_is_not_a_channel_unless_named() {
        let text = "timestamp,a,label\n2024-01-01 00:00:00,1,0\n";
        let series = parse_csv(text, &ReadOptions::default(), "f", "f.csv").unwrap();
        assert_eq!(series[0].channels, vec!["a"]);
        let named = ReadOptions {
            channels: Some(vec!["a".into(), "label".into()]),
            ..Default::default()
        };
        let series = parse_csv(text, &named, "f", "f.csv").unwrap();
        assert_eq!(series[0].channels, vec!["a", "label"]);
    }

    #[test]
    fn rows_out_of_time_order_are_refused() {
        let text = "timestamp,a\n2024-01-01 00:01:00,1\n2024-01-01 00:00:00,2\n";
        let message = parse_csv(text, &ReadOptions::default(), "f", "f.csv")
            .unwrap_err()
            .to_string();
        assert!(message.contains("time order"), "{message}");
    }

    #[test]
    fn json_lines() {
        let text = r#"{"ts": 1000, "values": {"x": 1.5, "y": 2}}
{"ts": "1970-01-01T00:00:02Z", "values": {"x": 2.5, "y": 3}}
"#;
        let series = parse_json_lines(text, &ReadOptions::default(), "pump", "f.jsonl").unwrap();
        assert_eq!(series[0].entity, "pump");
        assert_eq!(series[0].timestamps, vec![1000, 2000]);
        assert_eq!(series[0].values, vec![1.5, 2.0, 2.5, 3.0]);
        let bad = r#"{"ts": 1000, "values": {"x": "NaN", "y": 2}}"#;
        let options = ReadOptions {
            channels: Some(vec!["x".into(), "y".into()]),
            ..Default::default()
        };
        assert!(parse_json_lines(bad, &options, "p", "f.jsonl").is_err());
    }
}
