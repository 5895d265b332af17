//! `anomalyd detect`: the daemon's detector over a file. Writes one row of
//! results per input row and the alert events the daemon would produce.

use crate::daemon::config::{DaemonConfig, EntitySource, InputConfig, WindowConfig};
use crate::detect::DetectorConfig;
use crate::offline::decode::{ColumnRoles, RowDecoder, TimeSource};
use crate::offline::input::{delimiter_name, Format, InputOptions, Table};
use crate::offline::output::FileResults;
use crate::offline::{DetectSettings, Detection, Summary};
use crate::serve::Scorer;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// What to read and how to decide: shared by `detect` and `eval labelled`.
#[derive(Debug, Args)]
pub struct DetectInput {
    /// The input: CSV (any delimiter), JSON lines or Parquet; `-` reads standard input.
    #[arg(long)]
    pub input: PathBuf,
    /// The format (default: by extension; on standard input, by content).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The CSV delimiter, one character or `tab` (default: detected from the first lines).
    #[arg(long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    /// The model's ONNX file (default: `model.path` of `--config`, else the embedded default model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The daemon's config file: its `[detector]`, `[windows]` and `model.path` apply.
    #[arg(long, conflicts_with = "detector")]
    pub config: Option<PathBuf>,
    /// Detector settings alone (the JSON of `config/detector.json`).
    #[arg(long)]
    pub detector: Option<PathBuf>,
    /// Score a window every this many rows of an entity (overrides `windows.stride`).
    #[arg(long)]
    pub stride: Option<usize>,
    /// The entity column (default: a column named `entity`, else one entity for the whole file).
    #[arg(long)]
    pub entity_column: Option<String>,
    /// The entity's name when there is no entity column (default: the file's stem).
    #[arg(long)]
    pub entity: Option<String>,
    /// The time column (default: the first of timestamp, time, ts, datetime, date; none: row order).
    #[arg(long)]
    pub time_column: Option<String>,
    /// Ignore any time column: each entity's rows are one second apart, in file order.
    #[arg(long)]
    pub row_order: bool,
    /// The topic the alerts' `source` names (default: the config's first input topic, else the file name).
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Windows per model call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `anomalyd detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Input and detector.
    #[command(flatten)]
    pub input: DetectInput,
    /// The per-row results (CSV); `-` = standard output.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// The alert and gap events (JSON lines, as on the alerts topic)
    /// (default: beside a file `--out` as `<out>.alerts.jsonl`; none when
    /// `--out` is `-` or a device).
    #[arg(long)]
    pub alerts: Option<PathBuf>,
}

fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\\t" => Ok(b'\t'),
        _ if text.len() == 1 && text.is_ascii() => Ok(text.as_bytes()[0]),
        _ => Err(format!(
            "{text:?}: the delimiter is one ASCII character, or `tab`"
        )),
    }
}

/// What `--config` (or `--detector`) gives.
struct Settings {
    detector: DetectorConfig,
    windows: WindowConfig,
    /// `model.path`.
    model: Option<PathBuf>,
    /// The first input topic: what the alerts' `source` names.
    topic: Option<String>,
    /// How the daemon reads its records.
    input: Option<InputConfig>,
}

/// Everything a run needs, prepared from the arguments.
pub struct Prepared {
    /// The model.
    pub scorer: Scorer,
    /// Detector, windows, source topic, batch.
    pub settings: DetectSettings,
    /// The open input.
    pub table: Table,
    /// Its row decoder.
    pub decoder: RowDecoder,
}

impl DetectInput {
    /// Loads the settings and the model, opens the input and finds its columns.
    pub fn prepare(&self, label: Option<&str>) -> anyhow::Result<Prepared> {
        if self.batch == 0 {
            anyhow::bail!("--batch must be at least 1");
        }
        let Settings {
            detector,
            mut windows,
            model: config_model,
            topic: config_topic,
            input,
        } = self.settings()?;
        if let Some(stride) = self.stride {
            if stride == 0 {
                anyhow::bail!("--stride must be at least 1");
            }
            windows.stride = stride;
        }
        let scorer = match self.model.as_ref().or(config_model.as_ref()) {
            Some(path) => Scorer::load(path)?,
            None => crate::serve::embedded::default_scorer()?,
        };
        let table = Table::open(
            &self.input,
            &InputOptions {
                format: self.format,
                delimiter: self.delimiter,
            },
        )?;
        let roles = self.roles(&table, &scorer, input.as_ref(), label)?;
        let (stem, file_name) = self.input_names();
        let decoder = RowDecoder::new(&table, roles, self.entity.clone().unwrap_or(stem));
        let settings = DetectSettings {
            detector,
            windows,
            source_topic: self
                .source_topic
                .clone()
                .or(config_topic)
                .unwrap_or(file_name),
            batch: self.batch,
        };
        Ok(Prepared {
            scorer,
            settings,
            table,
            decoder,
        })
    }

    /// Finds the input's columns: the model's channels (under the daemon
    /// config's names, if given), the entity, the time and the label.
    fn roles(
        &self,
        table: &Table,
        scorer: &Scorer,
        input: Option<&InputConfig>,
        label: Option<&str>,
    ) -> anyhow::Result<ColumnRoles> {
        // With a daemon config, its record field names and channel names
        // are the defaults (a JSON lines file of its records reads as is).
        let present = |name: &String| table.columns().contains(name);
        let channels: Vec<String> = scorer
            .metadata()
            .channels
            .iter()
            .map(|c| {
                input
                    .and_then(|i| i.channels.get(c))
                    .cloned()
                    .unwrap_or_else(|| c.clone())
            })
            .collect();
        let entity_column = self.entity_column.clone().or_else(|| {
            input
                .filter(|i| i.entity_from == EntitySource::Field)
                .map(|i| i.entity_field.clone())
                .filter(present)
        });
        let time_column = self.time_column.clone().or_else(|| {
            input
                .map(|i| i.timestamp_field.clone())
                .filter(|t| !self.row_order && present(t))
        });
        ColumnRoles::find(
            table,
            &channels,
            entity_column.as_deref(),
            time_column.as_deref(),
            self.row_order,
            label,
        )
        .map_err(anyhow::Error::msg)
    }

    /// The input's stem (the entity when there is no entity column) and
    /// file name (the alerts' source topic when nothing else names one).
    fn input_names(&self) -> (String, String) {
        let stem = if self.input.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            self.input
                .file_stem()
                .map_or("series".into(), |s| s.to_string_lossy().into_owned())
        };
        let file_name = if self.input.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            self.input
                .file_name()
                .map_or(stem.clone(), |s| s.to_string_lossy().into_owned())
        };
        (stem, file_name)
    }

    /// The settings from `--config` or `--detector`, or the defaults.
    fn settings(&self) -> anyhow::Result<Settings> {
        if let Some(path) = &self.config {
            // Its Kafka secrets are not needed here, so not resolved.
            let config = DaemonConfig::load_unresolved(path).map_err(|e| match e {
                crate::daemon::config::ConfigError::Read { .. } => anyhow::Error::new(e),
                other => anyhow::Error::new(super::run::BadConfig(other.to_string())),
            })?;
            return Ok(Settings {
                detector: config.detector,
                windows: config.windows,
                model: config.model.path,
                topic: config.kafka.input_topics.first().cloned(),
                input: Some(config.input),
            });
        }
        let detector = match &self.detector {
            Some(path) => super::eval::read_detector_config(path)?,
            None => DetectorConfig::default(),
        };
        Ok(Settings {
            detector,
            windows: WindowConfig::default(),
            model: None,
            topic: None,
            input: None,
        })
    }

    /// A progress bar over the input's bytes, hidden with `--quiet` or when
    /// standard error is not a terminal.
    pub fn progress(&self, table: &Table) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        match table.size() {
            Some(size) if table.format() != Format::Parquet => {
                let bar = ProgressBar::new(size);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {bytes}/{total_bytes} [{bar:30}] {elapsed} (eta {eta})",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                bar
            }
            _ => ProgressBar::new_spinner(),
        }
    }
}

/// Describes the input and the settings (printed before the summary).
pub fn describe(prepared: &Prepared) -> String {
    let table = &prepared.table;
    let roles = prepared.decoder.roles();
    let columns = table.columns();
    let format = match table.format() {
        Format::Csv => format!(
            "CSV, delimiter {}",
            delimiter_name(table.delimiter().unwrap_or(b','))
        ),
        Format::Jsonl => "JSON lines".into(),
        Format::Parquet => "Parquet".into(),
    };
    let entity = match roles.entity {
        Some(c) => format!("column {:?}", columns[c]),
        None => format!("none (one entity, {:?})", prepared.decoder.default_entity()),
    };
    let time = match roles.time {
        TimeSource::Column(c) => format!("column {:?}", columns[c]),
        TimeSource::RowOrder => "none (row order, one second apart)".into(),
    };
    let metadata = prepared.scorer.metadata();
    format!(
        "input      {} ({format}); entity: {entity}; time: {time}\n\
         model      {} ({} channels x {} rows), stride {}, warm-up {} windows",
        table.name(),
        prepared.scorer.model_version(),
        metadata.channels.len(),
        metadata.window_len,
        prepared.settings.windows.stride,
        prepared.settings.detector.calibration.warm_up(),
    )
}

/// The summary lines every offline run prints.
pub fn summary_text(summary: &Summary, warm_up: usize) -> String {
    let mut out = String::new();
    let skipped: Vec<String> = summary
        .skipped
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "rows       {} read, {} skipped{}; {} windows scored; {} entities",
        summary.rows,
        summary.skipped_rows(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join(", "))
        },
        summary.windows,
        summary.entities
    );
    for line in &summary.first_skips {
        let _ = writeln!(out, "  skipped  {line}");
    }
    if summary.skipped_rows() > summary.first_skips.len() {
        let _ = writeln!(
            out,
            "  skipped  ... {} more (each is in the output with its reason)",
            summary.skipped_rows() - summary.first_skips.len()
        );
    }
    let count = |kind: &str| summary.events.get(kind).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "alerts     {} opened, {} updated, {} resolved; {} gaps",
        count("opened"),
        count("updated"),
        count("resolved"),
        count("gap")
    );
    if !summary.never_calibrated.is_empty() {
        let shown: Vec<&str> = summary
            .never_calibrated
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        let _ = writeln!(
            out,
            "warm-up    {} of {} entities never had the {warm_up} scored windows calibration needs; they raised no alert: {}{}",
            summary.never_calibrated.len(),
            summary.entities,
            shown.join(", "),
            if summary.never_calibrated.len() > 5 { ", ..." } else { "" }
        );
    }
    out
}

/// A buffered writer of `path`; `-` = standard output.
pub fn create(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout().lock())));
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Box::new(std::io::BufWriter::with_capacity(1 << 16, file)))
}

/// Runs `anomalyd detect`.
pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let mut prepared = args.input.prepare(None)?;
    // Beside a file `--out`; not beside standard output or a device such as /dev/null.
    let beside_a_file =
        args.out.as_os_str() != "-" && std::fs::metadata(&args.out).map_or(true, |m| m.is_file());
    let alerts = match (&args.alerts, beside_a_file) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => None,
        (None, true) => Some(args.out.with_extension("alerts.jsonl")),
    };
    eprintln!("{}", describe(&prepared));
    let mut results = FileResults::new(
        create(&args.out)?,
        alerts.as_deref().map(create).transpose()?,
        &prepared.scorer.metadata().channels,
    )?;
    let progress = args.input.progress(&prepared.table);
    let started = std::time::Instant::now();
    let warm_up = prepared.settings.detector.calibration.warm_up();
    let summary = Detection::new(&prepared.scorer, prepared.settings.clone()).run(
        &mut prepared.table,
        &mut prepared.decoder,
        &mut results,
        &progress,
    )?;
    progress.finish_and_clear();
    results.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    eprint!("{}", summary_text(&summary, warm_up));
    eprintln!(
        "output     rows: {}{}; {:.1} s, {:.0} rows/s",
        if args.out.as_os_str() == "-" {
            "standard output".to_string()
        } else {
            args.out.display().to_string()
        },
        alerts
            .map(|a| format!("; alert events: {}", a.display()))
            .unwrap_or_default(),
        seconds,
        summary.rows as f64 / seconds.max(1e-9)
    );
    Ok(())
}
