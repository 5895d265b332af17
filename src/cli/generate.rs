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
    std::fs::create_dir_all(&args.out)?;
    let train = args.out.join("train.csv");
    let test = args.out.join("test.csv");
    write_csv(&data.clean_part(), &train)?;
    write_csv(&data.test_part(), &test)?;
    println!(
        "wrote {} ({} rows per entity, no anomalies) and {} (labelled in column `anomaly`)",
        train.display(),
        data.clean_rows,
        test.display()
    );
    Ok(())
}

/// Writes series as CSV with columns `timestamp,entity,<channels...>,anomaly`.
pub fn write_csv(series: &[Series], path: &Path) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    let Some(first) = series.first() else {
        return Ok(());
    };
    let mut header = vec!["timestamp".to_string(), "entity".to_string()];
    header.extend(first.channels.iter().cloned());
    header.push("anomaly".into());
    writer.write_record(&header)?;
    for s in series {
        for row in 0..s.len() {
            let mut record = vec![format_timestamp(s.timestamps[row]), s.entity.clone()];
            record.extend(s.row(row).iter().map(|v| format!("{v:.4}")));
            record.push(
                s.labels
                    .as_ref()
                    .map(|l| l[row].clone())
                    .unwrap_or_default(),
            );
            writer.write_record(&record)?;
        }
    }
    writer.flush()?;
    Ok(())
}
