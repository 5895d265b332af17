//! `anomalyd generate`: writes the synthetic data set as CSV files.

use crate::series::timestamp::format_timestamp;
use crate::series::Series;
use crate::synthetic::{generate, SyntheticConfig};
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `anomalyd generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Folder to write `train.csv` (anomaly-free part) and `test.csv` (labelled part) to.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of entities.
    #[arg(long, default_value_t = 6)]
    pub entities: usize,
    /// Channels per entity (3 to 8).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=8))]
    pub channels: u8,
    /// Days per entity (96 samples a day).
    #[arg(long, default_value_t = 28)]
    pub days: usize,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The CSV delimiter, one character (`;` writes decimal commas too, as
    /// such files often have).
    #[arg(long, default_value_t = ',')]
    pub delimiter: char,
    /// The label column: the anomaly's kind (empty = normal), or 0/1 flags.
    #[arg(long, value_enum, default_value_t = LabelStyle::Kinds)]
    pub labels: LabelStyle,
    /// Leave out the entity column (with one entity: a plain recording).
    #[arg(long)]
    pub no_entity_column: bool,
}

/// How the label column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelStyle {
    /// The anomaly's kind, empty when normal.
    Kinds,
    /// 1 = anomaly, 0 = normal.
    Flags,
}

/// How `write_csv` lays out a file.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The delimiter.
    pub delimiter: u8,
    /// Labels as kinds or flags.
    pub labels: LabelStyle,
    /// Write the entity column.
    pub entity_column: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            delimiter: b',',
            labels: LabelStyle::Kinds,
            entity_column: true,
        }
    }
}

/// Runs `anomalyd generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let data = generate(&SyntheticConfig {
        entities: args.entities,
        channels: args.channels as usize,
        days: args.days,
        seed: args.seed,
        ..Default::default()
    });
    if !args.delimiter.is_ascii() || args.delimiter.is_ascii_alphanumeric() {
        anyhow::bail!("--delimiter must be an ASCII punctuation or space character");
    }
    if args.no_entity_column && args.entities > 1 {
        anyhow::bail!("--no-entity-column needs --entities 1: the rows of several entities could not be told apart");
    }
    let layout = Layout {
        delimiter: args.delimiter as u8,
        labels: args.labels,
        entity_column: !args.no_entity_column,
    };
    std::fs::create_dir_all(&args.out)?;
    let train = args.out.join("train.csv");
    let test = args.out.join("test.csv");
    write_csv(&data.clean_part(), &train, layout)?;
    write_csv(&data.test_part(), &test, layout)?;
    println!(
        "wrote {} ({} rows per entity, no anomalies) and {} (labelled in column `anomaly`)",
        train.display(),
        data.clean_rows,
        test.display()
    );
    Ok(())
}

/// Writes series as CSV with columns `timestamp,entity,<channels...>,anomaly`
/// (`layout` chooses the delimiter, the labels and the entity column).
pub fn write_csv(series: &[Series], path: &Path, layout: Layout) -> anyhow::Result<()> {
    let mut writer = csv::WriterBuilder::new()
        .delimiter(layout.delimiter)
        .from_path(path)?;
    let Some(first) = series.first() else {
        return Ok(());
    };
    let mut header = vec!["timestamp".to_string()];
    if layout.entity_column {
        header.push("entity".into());
    }
    header.extend(first.channels.iter().cloned());
    header.push("anomaly".into());
    writer.write_record(&header)?;
    let decimal_comma = layout.delimiter == b';';
    for s in series {
        for row in 0..s.len() {
            let mut record = vec![format_timestamp(s.timestamps[row])];
            if layout.entity_column {
                record.push(s.entity.clone());
            }
            record.extend(s.row(row).iter().map(|v| {
                let text = format!("{v:.4}");
                if decimal_comma {
                    text.replace('.', ",")
                } else {
                    text
                }
            }));
            let kind = s
                .labels
                .as_ref()
                .map(|l| l[row].clone())
                .unwrap_or_default();
            record.push(match layout.labels {
                LabelStyle::Kinds => kind,
                LabelStyle::Flags => u8::from(!kind.is_empty()).to_string(),
            });
            writer.write_record(&record)?;
        }
    }
    writer.flush()?;
    Ok(())
}
