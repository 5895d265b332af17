//! The outputs of a NAB run: NAB-format results files, the score summary
//! (oracle threshold and own decisions, per category) and a browsable report
//! with one plot per file.

use super::corpus::{Corpus, CorpusFile, Profile};
use super::run::FileRun;

pub use super::plots::write_report;
use super::scoring::{normalise, optimise_threshold, score_decisions, FileRows};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// One profile's corpus result.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileResult {
    /// Profile name.
    pub profile: String,
    /// The oracle threshold (fitted on the labels, as NAB does).
    pub threshold: f64,
    /// Normalised score at that threshold.
    pub oracle_score: f64,
    /// Normalised score of the detector's own alert decisions (an opened alert is a detection).
    pub own_score: f64,
}

/// One category's scores, at the corpus thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryResult {
    /// Category folder.
    pub category: String,
    /// Files in it.
    pub files: usize,
    /// Labelled windows in it.
    pub windows: usize,
    /// Oracle-threshold score per profile (normalised over this category's windows).
    pub oracle: Vec<f64>,
    /// Own-decision score per profile.
    pub own: Vec<f64>,
    /// Alerts opened outside every window (after the probationary prefix).
    pub false_alarms: usize,
}

/// One file's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    /// `category/file.csv`.
    pub file: String,
    /// Rows.
    pub rows: usize,
    /// Labelled windows.
    pub windows: usize,
    /// Windows with an alert opened inside them.
    pub caught: usize,
    /// Alerts opened outside every window.
    pub false_alarms: usize,
    /// Standard-profile raw score of the own decisions.
    pub own_raw_standard: f64,
    /// Seconds training the file's model.
    pub train_seconds: f64,
    /// Seconds streaming its rows.
    pub stream_seconds: f64,
}

/// Everything a NAB run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Detector name used in the results folder.
    pub detector: String,
    /// Files scored.
    pub files: usize,
    /// Labelled windows.
    pub windows: usize,
    /// Per profile.
    pub profiles: Vec<ProfileResult>,
    /// Per category.
    pub categories: Vec<CategoryResult>,
    /// The tuning half, the held-out half and the whole (see [`Split`]).
    pub splits: Vec<SplitResult>,
    /// Per file.
    pub per_file: Vec<FileResult>,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Worker threads.
    pub workers: usize,
    /// The settings (model recipe, calibration, alerts), for the record.
    pub settings: serde_json::Value,
}

/// The halves of the corpus parameters are chosen and checked on: the files
/// in sorted order (by relative path) at even positions (0, 2, 4, ...) are
/// the tuning half, at odd positions the held-out half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Even positions: parameters may be chosen on these labels.
    Tuning,
    /// Odd positions: only reported.
    HeldOut,
    /// Every file.
    Whole,
}

impl Split {
    /// Whether the file at `position` (in sorted order) is in the split.
    pub fn contains(self, position: usize) -> bool {
        match self {
            Split::Tuning => position.is_multiple_of(2),
            Split::HeldOut => !position.is_multiple_of(2),
            Split::Whole => true,
        }
    }

    /// The name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Split::Tuning => "tuning half (even positions)",
            Split::HeldOut => "held-out half (odd positions)",
            Split::Whole => "whole corpus",
        }
    }
}

/// The own-alert scores of one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitResult {
    /// Which files.
    pub split: Split,
    /// Files in it.
    pub files: usize,
    /// Labelled windows in it.
    pub windows: usize,
    /// The score of the detector's own alerts, per profile (standard, low FP, low FN).
    pub own: Vec<f64>,
}

/// Scores the runs against the corpus labels.
pub fn summarise(
    corpus: &Corpus,
    runs: &[FileRun],
    detector: &str,
    seconds: f64,
    workers: usize,
    settings: serde_json::Value,
) -> Summary {
    let rows: Vec<FileRows> = corpus
        .files
        .iter()
        .zip(runs)
        .map(|(file, run)| FileRows::new(file, run.scores.clone()))
        .collect();
    let decisions: Vec<&Vec<bool>> = runs.iter().map(|r| &r.opened).collect();
    let mut profiles = Vec::new();
    let mut thresholds = Vec::new();
    for profile in &corpus.profiles {
        let best = optimise_threshold(&rows, profile);
        thresholds.push(best.threshold);
        profiles.push(ProfileResult {
            profile: profile.name.clone(),
            threshold: best.threshold,
            oracle_score: best.normalised,
            own_score: score_decisions(&rows, &decisions, profile),
        });
    }
    let standard = &corpus.profiles[0];
    let per_file: Vec<FileResult> = corpus
        .files
        .iter()
        .zip(runs)
        .zip(&rows)
        .map(|((file, run), scored)| file_result(file, run, scored, standard))
        .collect();
    let categories = categories(corpus, &rows, &decisions, &thresholds, &per_file);
    let splits = splits(corpus, &rows, &decisions);
    Summary {
        splits,
        detector: detector.to_string(),
        files: corpus.files.len(),
        windows: corpus.window_count(),
        profiles,
        categories,
        per_file,
        seconds,
        workers,
        settings,
    }
}

/// One file's figures: windows caught and alerts outside them by its own
/// alerts, and its raw standard score.
fn file_result(
    file: &CorpusFile,
    run: &FileRun,
    scored: &FileRows,
    standard: &Profile,
) -> FileResult {
    let opened: Vec<usize> = (0..run.opened.len()).filter(|&i| run.opened[i]).collect();
    let scored_rows = file.probationary_rows();
    FileResult {
        file: file.relative_path(),
        rows: file.values.len(),
        windows: file.windows.len(),
        caught: file
            .windows
            .iter()
            .filter(|w| opened.iter().any(|&i| w[0] <= i && i <= w[1]))
            .count(),
        false_alarms: opened
            .iter()
            .filter(|&&i| i >= scored_rows && !file.label_of(i))
            .count(),
        own_raw_standard: scored.raw_score(standard, |i| run.opened[i]),
        train_seconds: run.train_seconds,
        stream_seconds: run.stream_seconds,
    }
}

/// Each category's scores: at the oracle thresholds and by its own alerts.
fn categories(
    corpus: &Corpus,
    rows: &[FileRows],
    decisions: &[&Vec<bool>],
    thresholds: &[f64],
    per_file: &[FileResult],
) -> Vec<CategoryResult> {
    let mut categories: Vec<CategoryResult> = Vec::new();
    let mut names: Vec<&str> = corpus.files.iter().map(|f| f.category.as_str()).collect();
    names.dedup();
    for name in names {
        let members: Vec<usize> = (0..corpus.files.len())
            .filter(|&i| corpus.files[i].category == name)
            .collect();
        let windows: usize = members.iter().map(|&i| rows[i].windows).sum();
        let score = |profile: &Profile, detected: &dyn Fn(usize, usize) -> bool| {
            let raw: f64 = members
                .iter()
                .map(|&i| rows[i].raw_score(profile, |r| detected(i, r)))
                .sum();
            normalise(raw, windows, profile)
        };
        categories.push(CategoryResult {
            category: name.to_string(),
            files: members.len(),
            windows,
            oracle: corpus
                .profiles
                .iter()
                .zip(thresholds)
                .map(|(p, &t)| score(p, &|i, r| rows[i].scores[r] >= t))
                .collect(),
            own: corpus
                .profiles
                .iter()
                .map(|p| score(p, &|i, r| decisions[i][r]))
                .collect(),
            false_alarms: members.iter().map(|&i| per_file[i].false_alarms).sum(),
        });
    }
    categories
}

/// The own-alert scores of the tuning half, the held-out half and the whole.
fn splits(corpus: &Corpus, rows: &[FileRows], decisions: &[&Vec<bool>]) -> Vec<SplitResult> {
    [Split::Tuning, Split::HeldOut, Split::Whole]
        .into_iter()
        .map(|split| {
            let members: Vec<usize> = (0..rows.len()).filter(|&i| split.contains(i)).collect();
            let files: Vec<FileRows> = members.iter().map(|&i| rows[i].clone()).collect();
            let chosen: Vec<&Vec<bool>> = members.iter().map(|&i| decisions[i]).collect();
            SplitResult {
                split,
                files: members.len(),
                windows: files.iter().map(|f| f.windows).sum(),
                own: corpus
                    .profiles
                    .iter()
                    .map(|p| score_decisions(&files, &chosen, p))
                    .collect(),
            }
        })
        .collect()
}

impl Summary {
    /// The summary as Markdown tables.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "NAB v1.1, {} files, {} labelled windows, detector `{}`: {:.1} minutes on {} worker(s).\n",
            self.files,
            self.windows,
            self.detector,
            self.seconds / 60.0,
            self.workers
        );
        let _ = writeln!(
            out,
            "| profile | oracle threshold | score at oracle threshold | score of own alerts |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for p in &self.profiles {
            let _ = writeln!(
                out,
                "| {} | {:.4} | {:.2} | {:.2} |",
                p.profile, p.threshold, p.oracle_score, p.own_score
            );
        }
        let _ = writeln!(
            out,
            "\nOwn alerts by half (parameters are chosen on the tuning half only):\n"
        );
        let _ = writeln!(
            out,
            "| files | count | windows | standard | low FP | low FN |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for split in &self.splits {
            let cells: Vec<String> = split.own.iter().map(|s| format!("{s:.2}")).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                split.split.name(),
                split.files,
                split.windows,
                cells.join(" | ")
            );
        }
        self.write_categories(&mut out);
        let caught: usize = self.per_file.iter().map(|f| f.caught).sum();
        let false_alarms: usize = self.per_file.iter().map(|f| f.false_alarms).sum();
        let train: f64 = self.per_file.iter().map(|f| f.train_seconds).sum();
        let stream: f64 = self.per_file.iter().map(|f| f.stream_seconds).sum();
        let _ = writeln!(
            out,
            "\nOwn alerts: {caught} of {} windows caught, {false_alarms} alerts opened outside every window. \
             Training {train:.0} s and streaming {stream:.0} s in total (summed over workers).",
            self.windows
        );
        out
    }

    /// The per-category table (oracle threshold / own alerts).
    fn write_categories(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\nPer category (oracle threshold / own alerts; standard, low FP, low FN):\n"
        );
        let _ = writeln!(
            out,
            "| category | files | windows | standard | low FP | low FN | own false alarms |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for c in &self.categories {
            // With no window the normalisation is undefined: only false alarms count.
            let cells: Vec<String> = c
                .oracle
                .iter()
                .zip(&c.own)
                .map(|(o, s)| {
                    if c.windows == 0 {
                        "n/a".to_string()
                    } else {
                        format!("{o:.1} / {s:.1}")
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.category,
                c.files,
                c.windows,
                cells.join(" | "),
                c.false_alarms
            );
        }
    }
}

/// Writes `<out>/results/<detector>/<category>/<detector>_<file>.csv` (NAB's
/// format) and `<out>/raw/<category>/<file>.csv` (raw and calibrated scores,
/// alert openings) for every file.
pub fn write_results(
    out: &Path,
    detector: &str,
    corpus: &Corpus,
    runs: &[FileRun],
) -> std::io::Result<()> {
    for (file, run) in corpus.files.iter().zip(runs) {
        let dir = out.join("results").join(detector).join(&file.category);
        std::fs::create_dir_all(&dir)?;
        let mut text = String::from("timestamp,value,anomaly_score,label\n");
        for (i, (stamp, value)) in file.timestamps.iter().zip(&file.values).enumerate() {
            let _ = writeln!(
                text,
                "{stamp},{value},{},{}",
                run.scores[i],
                u8::from(file.label_of(i))
            );
        }
        std::fs::write(dir.join(format!("{detector}_{}.csv", file.name)), text)?;
        // The detector's inner signals, for tuning calibration and alerts offline.
        let dir = out.join("raw").join(&file.category);
        std::fs::create_dir_all(&dir)?;
        let mut text =
            String::from("timestamp,raw_score,calibrated_score,out_of_range,decision_score,nab_score,alert_opened\n");
        for (i, stamp) in file.timestamps.iter().enumerate() {
            let _ = writeln!(
                text,
                "{stamp},{},{},{},{},{},{}",
                run.raw[i],
                run.calibrated[i],
                u8::from(run.out_of_range[i]),
                run.decision_scores[i],
                run.scores[i],
                u8::from(run.opened[i])
            );
        }
        std::fs::write(dir.join(format!("{}.csv", file.name)), text)?;
    }
    Ok(())
}
