//! Runs anomalyd over the NAB corpus the way a fair entry must: per file, a
//! fresh model trained on the probationary prefix only, then every row
//! streamed one at a time through the production path ([`EntityDetector`]).

use super::corpus::{Corpus, CorpusFile};
use crate::alert::AlertEvent;
use crate::detect::{DetectorConfig, EntityDetector};
use crate::recipe::{ModelRecipe, RecipeError};
use crate::series::timestamp::parse_timestamp;
use crate::series::Series;
use crate::serve::{ModelError, Scorer};
use crate::train::TrainOptions;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Why a NAB run stopped.
#[derive(Debug, thiserror::Error)]
pub enum NabRunError {
    /// A timestamp of a file could not be read.
    #[error("{file}: {message}")]
    Timestamp {
        /// The corpus file.
        file: String,
        /// Why.
        message: String,
    },
    /// Too few rows to train on.
    #[error("{file}: {rows} rows are too few to train {window_len}-row windows")]
    TooShort {
        /// The corpus file.
        file: String,
        /// Rows given.
        rows: usize,
        /// The recipe's window length.
        window_len: usize,
    },
    /// Training or exporting a file's model failed.
    #[error("{file}: training on rows {begin}..{end}: {error}")]
    Training {
        /// The corpus file.
        file: String,
        /// First row trained on.
        begin: usize,
        /// One past the last.
        end: usize,
        /// Why.
        error: RecipeError,
    },
    /// A trained model could not be loaded, or failed on a window.
    #[error("{file}: {error}")]
    Model {
        /// The corpus file (or the series' entity).
        file: String,
        /// Why.
        error: ModelError,
    },
    /// A file was not run because an earlier one failed.
    #[error("{file} was not run")]
    NotRun {
        /// The corpus file.
        file: String,
    },
}

/// Everything that decides a run; one set for the whole corpus.
#[derive(Debug, Clone)]
pub struct NabOptions {
    /// How each file's model is trained (window length, network, loss, epochs, seed).
    pub recipe: ModelRecipe,
    /// Calibration and alert settings.
    pub detector: DetectorConfig,
    /// Files processed at once (one thread each).
    pub workers: usize,
    /// Retrain every this many rows after the prefix, on past rows only (`None` = never).
    pub retrain_every: Option<usize>,
    /// Rows (the latest before the retraining point) a retrained model learns from.
    pub retrain_rows: usize,
    /// Open no alert during each file's probationary period (the
    /// detector's `probation_rows` is at least its length).
    pub probation_silence: bool,
}

impl Default for NabOptions {
    fn default() -> Self {
        Self {
            recipe: nab_recipe(),
            detector: DetectorConfig::default(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            retrain_every: None,
            retrain_rows: 750,
            probation_silence: true,
        }
    }
}

/// The model recipe used on NAB: the shipped network and loss on 32-row
/// windows (the shortest probationary prefix is 168 rows), at most 30
/// epochs, early stopping by epochs alone (no floor of optimiser steps:
/// the NAB figures in the README were measured so).
pub fn nab_recipe() -> ModelRecipe {
    ModelRecipe {
        name: "nab".into(),
        window_len: 32,
        default_stride: 1,
        training: TrainOptions {
            max_epochs: 30,
            patience: 5,
            min_steps: 0,
            ..TrainOptions::default()
        },
        ..ModelRecipe::default()
    }
}

/// What the detector produced for one file.
#[derive(Debug, Clone)]
pub struct FileRun {
    /// The score NAB judges, per row: the calibrated score (0 before the
    /// first window and while warming up), gated to its rising edges when the
    /// detector's `novelty_rows` is set.
    pub scores: Vec<f64>,
    /// The decision score per row, ungated: the calibrated score, or 1 on a range breach.
    pub decision_scores: Vec<f64>,
    /// The calibrated score per row (0 before the first window).
    pub calibrated: Vec<f64>,
    /// Rows whose value or roughness left the range seen so far.
    pub out_of_range: Vec<bool>,
    /// Raw score per row (0 before the first window).
    pub raw: Vec<f64>,
    /// Rows at which an alert opened: the detector's own detections.
    pub opened: Vec<bool>,
    /// Alerts as row ranges `[opened, resolved or last row]`.
    pub alerts: Vec<[usize; 2]>,
    /// The file's model version.
    pub model_version: String,
    /// Seconds spent training the model.
    pub train_seconds: f64,
    /// Seconds spent streaming the rows.
    pub stream_seconds: f64,
}

/// Trains on the probationary prefix of `file` and streams every row
/// (retraining on past rows only, when `options.retrain_every` is set).
pub fn run_file(file: &CorpusFile, options: &NabOptions) -> Result<FileRun, NabRunError> {
    let name = file.relative_path();
    let timestamps: Vec<i64> = file
        .timestamps
        .iter()
        .map(|t| parse_timestamp(t))
        .collect::<Result<_, _>>()
        .map_err(|message| NabRunError::Timestamp {
            file: name.clone(),
            message,
        })?;
    let values: Vec<f32> = file.values.iter().map(|&v| v as f32).collect();
    let prefix = file.probationary_rows();
    let started = Instant::now();
    let scorer = train_on(&name, &file.name, &timestamps, &values, 0..prefix, options)?;
    let mut train_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut retrain_seconds = 0.0;
    let retrain = |row: usize| -> Result<Option<Scorer>, NabRunError> {
        let Some(every) = options.retrain_every else {
            return Ok(None);
        };
        if row <= prefix || !(row - prefix).is_multiple_of(every) {
            return Ok(None);
        }
        let begin = row.saturating_sub(options.retrain_rows.max(prefix));
        let clock = Instant::now();
        let scorer = train_on(&name, &file.name, &timestamps, &values, begin..row, options)?;
        retrain_seconds += clock.elapsed().as_secs_f64();
        Ok(Some(scorer))
    };
    let mut detector = options.detector.clone();
    if options.probation_silence {
        detector.probation_rows = detector.probation_rows.max(prefix);
    }
    let run = stream(scorer, &file.name, &timestamps, &values, &detector, retrain)?;
    train_seconds += retrain_seconds;
    Ok(FileRun {
        train_seconds,
        stream_seconds: started.elapsed().as_secs_f64() - retrain_seconds,
        ..run
    })
}

/// Trains a fresh model on `rows` of one univariate series.
fn train_on(
    name: &str,
    entity: &str,
    timestamps: &[i64],
    values: &[f32],
    rows: std::ops::Range<usize>,
    options: &NabOptions,
) -> Result<Scorer, NabRunError> {
    let count = rows.len();
    // Hold out the latest 20 % for early stopping, but at least a window and
    // a few rows more (short files have short prefixes).
    let window_len = options.recipe.window_len;
    let held_out = ((count as f64 * 0.2).ceil() as usize).max(window_len + 8);
    if count < held_out + window_len + 8 {
        return Err(NabRunError::TooShort {
            file: name.to_string(),
            rows: count,
            window_len,
        });
    }
    let recipe = ModelRecipe {
        validation_fraction: held_out as f64 / count as f64,
        ..options.recipe.clone()
    };
    let series = Series {
        entity: entity.to_string(),
        channels: vec!["value".into()],
        timestamps: timestamps[rows.clone()].to_vec(),
        values: values[rows.clone()].to_vec(),
        labels: None,
    };
    let built =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            recipe.build(&[series], name)
        })
        .map_err(|error| NabRunError::Training {
            file: name.to_string(),
            begin: rows.start,
            end: rows.end,
            error,
        })?;
    Scorer::from_parts(&built.artefact.onnx, built.artefact.metadata, name).map_err(|error| {
        NabRunError::Model {
            file: name.to_string(),
            error,
        }
    })
}

/// Streams rows one at a time through a fresh [`EntityDetector`]; before each
/// row, `retrain(row)` may hand over a new model (trained on earlier rows).
pub fn stream(
    mut scorer: Scorer,
    entity: &str,
    timestamps: &[i64],
    values: &[f32],
    config: &DetectorConfig,
    mut retrain: impl FnMut(usize) -> Result<Option<Scorer>, NabRunError>,
) -> Result<FileRun, NabRunError> {
    let mut detector = EntityDetector::new(entity, &scorer, config);
    let rows = values.len();
    let mut run = FileRun {
        scores: Vec::with_capacity(rows),
        decision_scores: Vec::with_capacity(rows),
        calibrated: Vec::with_capacity(rows),
        out_of_range: Vec::with_capacity(rows),
        raw: Vec::with_capacity(rows),
        opened: Vec::with_capacity(rows),
        alerts: Vec::new(),
        model_version: scorer.model_version().to_string(),
        train_seconds: 0.0,
        stream_seconds: 0.0,
    };
    let mut open_since: Option<usize> = None;
    for (i, (&t, &v)) in timestamps.iter().zip(values).enumerate() {
        if let Some(fresh) = retrain(i)? {
            scorer = fresh;
            let window_len = scorer.metadata().window_len;
            detector.use_model_with_rows(&scorer, &values[i.saturating_sub(window_len)..i]);
        }
        let outcome = detector
            .observe(&scorer, t, &[v])
            .map_err(|error| NabRunError::Model {
                file: entity.to_string(),
                error,
            })?;
        run.scores.push(outcome.novel_score);
        run.decision_scores.push(outcome.score);
        run.calibrated
            .push(outcome.calibrated.as_ref().map_or(0.0, |c| c.score));
        run.out_of_range.push(outcome.out_of_range);
        run.raw.push(outcome.raw.unwrap_or(0.0));
        run.opened.push(outcome.opened());
        match outcome.event {
            Some(AlertEvent::Opened(_)) => open_since = Some(i),
            Some(AlertEvent::Updated(_)) if open_since.is_none() => {
                // A cooling alert re-opened: continue its span.
                if let Some(last) = run.alerts.pop() {
                    open_since = Some(last[0]);
                }
            }
            Some(AlertEvent::Resolved(_)) => {
                if let Some(start) = open_since.take() {
                    run.alerts.push([start, i]);
                }
            }
            _ => {}
        }
    }
    if let Some(start) = open_since {
        run.alerts.push([start, rows.saturating_sub(1)]);
    }
    Ok(run)
}

/// Runs every file of the corpus on `options.workers` threads; `progress` is
/// called after each file with (files done, file name).
pub fn run_corpus(
    corpus: &Corpus,
    options: &NabOptions,
    progress: impl Fn(usize, &str) + Sync,
) -> Result<Vec<FileRun>, NabRunError> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<FileRun, NabRunError>>>> =
        Mutex::new((0..corpus.files.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..options.workers.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(file) = corpus.files.get(index) else {
                    break;
                };
                let result = run_file(file, options);
                let failed = result.is_err();
                results.lock().expect("no worker panicked")[index] = Some(result);
                progress(
                    done.fetch_add(1, Ordering::SeqCst) + 1,
                    &file.relative_path(),
                );
                if failed {
                    // Stop handing out work; the error is reported below.
                    next.store(corpus.files.len(), Ordering::SeqCst);
                }
            });
        }
    });
    let results = results.into_inner().expect("no worker panicked");
    // Report the first failure (later files may not have run because of it).
    let mut runs = Vec::with_capacity(results.len());
    let mut not_run = None;
    for (file, result) in corpus.files.iter().zip(results) {
        match result {
            Some(run) => runs.push(run?),
            None => not_run = not_run.or(Some(file.relative_path())),
        }
    }
    if let Some(file) = not_run {
        return Err(NabRunError::NotRun { file });
    }
    Ok(runs)
}
