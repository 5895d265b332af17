//! `anomalyd score`: streams a CSV file in order and writes, for every row,
//! the score of the window ending at that row (empty until the first full window).

use crate::series::timestamp::parse_timestamp;
use crate::serve::Scorer;
use crate::window::{Window, WindowAssembler};
use anyhow::Context;
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;

/// Options of `anomalyd score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The model's ONNX file; its metadata is the `.json` file beside it.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV file with a header holding the timestamp and every model channel.
    #[arg(long)]
    pub input: PathBuf,
    /// Output CSV: `timestamp[,entity],score,<channel>_contribution...`.
    #[arg(long)]
    pub out: PathBuf,
    /// Timestamp column.
    #[arg(long, default_value = "timestamp")]
    pub timestamp_column: String,
    /// Column naming the entity; each entity has its own windows.
    #[arg(long)]
    pub entity_column: Option<String>,
    /// Windows scored per tract call.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

/// A row waiting for its window's score.
struct PendingRow {
    fields: Vec<String>,
    window: Option<usize>,
}

/// Runs `anomalyd score`.
pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let scorer = Scorer::load(&args.model)?;
    let metadata = scorer.metadata();
    let (mut reader, header) = open_csv(&args.input)?;
    let columns = scorer.map_channels(&header)?;
    let find = |name: &str| {
        header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column named {name:?}; the header has {header:?}",
                args.input.display()
            )
        })
    };
    let timestamp_index = find(&args.timestamp_column)?;
    let entity_index = args.entity_column.as_deref().map(find).transpose()?;

    let mut writer = csv::Writer::from_path(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    writer.write_record(output_header(&metadata.channels, entity_index.is_some()))?;

    let channels = metadata.channels.len();
    let mut assemblers: HashMap<String, WindowAssembler> = HashMap::new();
    let mut pending: Vec<PendingRow> = Vec::new();
    let mut windows: Vec<Window> = Vec::new();
    let mut row_values = vec![0.0f32; channels];
    let mut rows = 0usize;
    let mut scored = 0usize;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}, line {line}", args.input.display()))?;
        let field = |index: usize| record.get(index).unwrap_or("");
        let timestamp = parse_timestamp(field(timestamp_index))
            .map_err(|m| anyhow::anyhow!("{}, line {line}: {m}", args.input.display()))?;
        let names = columns.iter().zip(&metadata.channels);
        for (slot, (&index, name)) in row_values.iter_mut().zip(names) {
            *slot = finite(field(index)).with_context(|| {
                format!(
                    "{}, line {line}: column {name:?}: {:?} is not a finite number",
                    args.input.display(),
                    field(index)
                )
            })?;
        }
        let entity = entity_index.map(field).unwrap_or("").to_string();
        let assembler = assemblers
            .entry(entity.clone())
            .or_insert_with(|| WindowAssembler::new(channels, metadata.window_len, 1));
        let window = assembler.push(timestamp, &row_values).map(|w| {
            windows.push(w);
            windows.len() - 1
        });
        let mut fields = vec![field(timestamp_index).to_string()];
        if entity_index.is_some() {
            fields.push(entity);
        }
        pending.push(PendingRow { fields, window });
        rows += 1;
        if windows.len() >= args.batch_size {
            scored += flush(&scorer, &mut pending, &mut windows, &mut writer)?;
        }
    }
    scored += flush(&scorer, &mut pending, &mut windows, &mut writer)?;
    writer.flush()?;
    println!(
        "scored {scored} windows over {rows} rows with model {} -> {}",
        scorer.model_version(),
        args.out.display()
    );
    Ok(())
}

/// Opens a CSV file with its delimiter sniffed from its first 64 KiB, and
/// reads its header (names trimmed).
fn open_csv(path: &std::path::Path) -> anyhow::Result<(csv::Reader<std::fs::File>, Vec<String>)> {
    use std::io::Read;
    let mut prefix = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .take(1 << 16)
        .read_to_end(&mut prefix)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(crate::offline::input::sniff_delimiter(&prefix))
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    Ok((reader, header))
}

/// The output's header: timestamp, entity (if the input has one), score,
/// and each channel's contribution.
fn output_header(channels: &[String], with_entity: bool) -> Vec<String> {
    let mut header = vec!["timestamp".to_string()];
    if with_entity {
        header.push("entity".into());
    }
    header.push("score".into());
    header.extend(channels.iter().map(|c| format!("{c}_contribution")));
    header
}

/// A field as a finite `f32`, if it is one.
fn finite(text: &str) -> Option<f32> {
    text.trim().parse::<f32>().ok().filter(|v| v.is_finite())
}

/// Scores the pending windows in one batch and writes the pending rows in order.
fn flush(
    scorer: &Scorer,
    pending: &mut Vec<PendingRow>,
    windows: &mut Vec<Window>,
    writer: &mut csv::Writer<std::fs::File>,
) -> anyhow::Result<usize> {
    let scores = if windows.is_empty() {
        Vec::new()
    } else {
        scorer.score_windows(windows.iter())?
    };
    let channels = scorer.metadata().channels.len();
    for row in pending.drain(..) {
        let mut fields = row.fields;
        match row.window {
            Some(index) => {
                let score = &scores[index];
                fields.push(format!("{:.6}", score.score));
                fields.extend(
                    score
                        .channel_contributions
                        .iter()
                        .map(|c| format!("{c:.6}")),
                );
            }
            None => fields.extend(std::iter::repeat_n(String::new(), channels + 1)),
        }
        writer.write_record(&fields)?;
    }
    let count = windows.len();
    windows.clear();
    Ok(count)
}
