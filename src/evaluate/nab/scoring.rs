//! NAB's scoring rules: a weight for every row, a file's raw score at a
//! threshold, the corpus-wide threshold optimiser and the normalised score.
//!
//! Written from `docs/nab-scoring.md` (the rules of NAB v1.1) and checked
//! against the published scores of two detectors (tests/integration/nab_golden.rs).

use super::corpus::{CorpusFile, Profile};

/// NAB's scaled sigmoid: `2 / (1 + e^(5x)) - 1`, and `-1` beyond `x = 3`.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// Where a row stands for scoring; weights are for unit tp/fp weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowRole {
    /// Probationary: not scored.
    Probation,
    /// Inside window `window` (index into the file's windows); `weight` is
    /// what a first detection here earns with `tpWeight = 1`.
    InWindow {
        /// Index of the window in the file.
        window: usize,
        /// Weight in (0, 1].
        weight: f64,
    },
    /// Outside every window: a detection here adds `fpWeight * weight` (weight in [-1, 0]).
    Outside {
        /// Weight in [-1, 0].
        weight: f64,
    },
}

/// The scoring role of every row of one file (depends only on positions).
pub fn row_roles(rows: usize, windows: &[[usize; 2]], probationary: usize) -> Vec<RowRole> {
    let sig_first = scaled_sigmoid(-1.0);
    let mut roles = Vec::with_capacity(rows);
    let mut last_window_before: Option<[usize; 2]> = None;
    let mut next = 0; // windows are in time order
    for i in 0..rows {
        while next < windows.len() && windows[next][1] < i {
            last_window_before = Some(windows[next]);
            next += 1;
        }
        if i < probationary {
            roles.push(RowRole::Probation);
            continue;
        }
        let inside = windows.iter().position(|w| w[0] <= i && i <= w[1]);
        roles.push(match inside {
            Some(window) => {
                let [a, b] = windows[window];
                let width = (b - a + 1) as f64;
                let position = -((b - i + 1) as f64) / width;
                RowRole::InWindow {
                    window,
                    weight: scaled_sigmoid(position) / sig_first,
                }
            }
            None => match last_window_before {
                None => RowRole::Outside { weight: -1.0 },
                Some([a, b]) => {
                    let width = (b - a + 1) as f64;
                    let position = (i - b) as f64 / (width - 1.0).max(1.0);
                    RowRole::Outside {
                        weight: scaled_sigmoid(position),
                    }
                }
            },
        });
    }
    roles
}

/// One file prepared for scoring: its row roles, window count and per-row scores.
#[derive(Debug, Clone)]
pub struct FileRows {
    /// Category, for per-category tables.
    pub category: String,
    /// File name.
    pub name: String,
    /// The role of each row.
    pub roles: Vec<RowRole>,
    /// Number of labelled windows.
    pub windows: usize,
    /// The detector's score of each row.
    pub scores: Vec<f64>,
}

impl FileRows {
    /// Pairs a corpus file with a detector's scores (one per row).
    pub fn new(file: &CorpusFile, scores: Vec<f64>) -> Self {
        assert_eq!(scores.len(), file.values.len(), "one score per row");
        Self {
            category: file.category.clone(),
            name: file.name.clone(),
            roles: row_roles(file.values.len(), &file.windows, file.probationary_rows()),
            windows: file.windows.len(),
            scores,
        }
    }

    /// Raw score (Step B) when the rows in `detected` are detections.
    pub fn raw_score(&self, profile: &Profile, detected: impl Fn(usize) -> bool) -> f64 {
        let mut best: Vec<Option<f64>> = vec![None; self.windows];
        let mut total = 0.0;
        for (i, role) in self.roles.iter().enumerate() {
            match *role {
                RowRole::Probation => {}
                RowRole::InWindow { window, weight } if detected(i) => {
                    let earned = profile.tp_weight * weight;
                    best[window] = Some(best[window].map_or(earned, |b: f64| b.max(earned)));
                }
                RowRole::Outside { weight } if detected(i) => total += profile.fp_weight * weight,
                _ => {}
            }
        }
        total
            + best
                .iter()
                .map(|b| b.unwrap_or(-profile.fn_weight))
                .sum::<f64>()
    }

    /// Raw score at threshold `t`: detections are rows with `score >= t`.
    pub fn raw_score_at(&self, profile: &Profile, threshold: f64) -> f64 {
        self.raw_score(profile, |i| self.scores[i] >= threshold)
    }
}

/// Step D: `100 (S - S_null) / (S_perfect - S_null)` for `windows` labelled windows.
pub fn normalise(raw: f64, windows: usize, profile: &Profile) -> f64 {
    let perfect = windows as f64 * profile.tp_weight;
    let null = -(windows as f64) * profile.fn_weight;
    if perfect == null {
        return 0.0;
    }
    100.0 * (raw - null) / (perfect - null)
}

/// The best corpus threshold of one profile and what it scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimum {
    /// The chosen threshold (1.1 means nothing is detected).
    pub threshold: f64,
    /// Corpus raw score at that threshold.
    pub raw: f64,
    /// Normalised score.
    pub normalised: f64,
}

/// Step C: the threshold that maximises the corpus raw score, among 1.1 and
/// every distinct score of a scored row; on a tie the higher threshold wins.
///
/// One sweep from the highest score down, adding each row's detection to a
/// running total, so the cost is a sort of all rows.
pub fn optimise_threshold(files: &[FileRows], profile: &Profile) -> Optimum {
    let total_windows: usize = files.iter().map(|f| f.windows).sum();
    let mut events: Vec<(f64, usize, usize)> = Vec::new();
    for (f, file) in files.iter().enumerate() {
        for (i, role) in file.roles.iter().enumerate() {
            if *role != RowRole::Probation {
                events.push((file.scores[i], f, i));
            }
        }
    }
    events.sort_by(|a, b| b.0.total_cmp(&a.0));
    let offsets: Vec<usize> = files
        .iter()
        .scan(0, |acc, f| {
            let start = *acc;
            *acc += f.windows;
            Some(start)
        })
        .collect();
    let mut best_in_window: Vec<Option<f64>> = vec![None; total_windows];
    let mut total = -(total_windows as f64) * profile.fn_weight;
    let mut add = |total: &mut f64, f: usize, i: usize| match files[f].roles[i] {
        RowRole::InWindow { window, weight } => {
            let earned = profile.tp_weight * weight;
            let slot = &mut best_in_window[offsets[f] + window];
            match *slot {
                None => {
                    *total += earned + profile.fn_weight;
                    *slot = Some(earned);
                }
                Some(previous) if earned > previous => {
                    *total += earned - previous;
                    *slot = Some(earned);
                }
                Some(_) => {}
            }
        }
        RowRole::Outside { weight } => *total += profile.fp_weight * weight,
        RowRole::Probation => {}
    };
    // Candidates in descending order: every distinct score, and 1.1 (nothing
    // detected, unless a detector emits scores above 1) in its place.
    const NOTHING: f64 = 1.1;
    let mut best: Option<(f64, f64)> = None;
    let consider = |value: f64, total: f64, best: &mut Option<(f64, f64)>| {
        if best.is_none_or(|(_, raw)| total > raw) {
            *best = Some((value, total));
        }
    };
    // Considering 1.1 twice (when a group sits exactly at 1.1) is harmless:
    // only a strictly larger total replaces the best.
    let mut nothing_considered = false;
    let mut index = 0;
    while index < events.len() {
        let value = events[index].0;
        if !nothing_considered && value < NOTHING {
            consider(NOTHING, total, &mut best);
            nothing_considered = true;
        }
        while index < events.len() && events[index].0 == value {
            add(&mut total, events[index].1, events[index].2);
            index += 1;
        }
        consider(value, total, &mut best);
    }
    if !nothing_considered {
        consider(NOTHING, total, &mut best);
    }
    let best = best.expect("1.1 is always a candidate");
    Optimum {
        threshold: best.0,
        raw: best.1,
        normalised: normalise(best.1, total_windows, profile),
    }
}

/// The corpus score when detections are given per row (the detector's own decisions).
pub fn score_decisions(
    files: &[FileRows],
    decisions: &[impl AsRef<[bool]>],
    profile: &Profile,
) -> f64 {
    let windows: usize = files.iter().map(|f| f.windows).sum();
    let raw: f64 = files
        .iter()
        .zip(decisions)
        .map(|(file, detected)| file.raw_score(profile, |i| detected.as_ref()[i]))
        .sum();
    normalise(raw, windows, profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard() -> Profile {
        Profile::standard_three().remove(0)
    }

    #[test]
    fn the_first_row_of_a_window_is_worth_tp_and_the_last_almost_nothing() {
        let roles = row_roles(40, &[[10, 19]], 0);
        assert_eq!(
            roles[10],
            RowRole::InWindow {
                window: 0,
                weight: 1.0
            }
        );
        let RowRole::InWindow { weight: last, .. } = roles[19] else {
            panic!()
        };
        // pos = -1/10 for the last of ten rows: sig(-0.1) / sig(-1) = 0.248.
        assert!((last - 0.248).abs() < 1e-3, "{last}");
        assert_eq!(roles[0], RowRole::Outside { weight: -1.0 });
        let RowRole::Outside {
            weight: right_after,
        } = roles[20]
        else {
            panic!()
        };
        // pos = 1/9 right after: sig(0.111) = -0.271.
        assert!((right_after + 0.271).abs() < 1e-3, "{right_after}");
        let RowRole::Outside { weight: far } = roles[39] else {
            panic!()
        };
        assert!((far + 1.0).abs() < 1e-4, "{far}");
    }

    #[test]
    fn a_file_scores_its_earliest_detection_and_each_false_alarm() {
        let rows = FileRows {
            category: "c".into(),
            name: "f".into(),
            roles: row_roles(40, &[[10, 19]], 0),
            windows: 1,
            scores: vec![0.0; 40],
        };
        let p = standard();
        assert_eq!(rows.raw_score(&p, |_| false), -1.0);
        assert!((rows.raw_score(&p, |i| i == 10 || i == 15) - 1.0).abs() < 1e-12);
        let two_false_alarms = rows.raw_score(&p, |i| i == 0 || i == 1);
        assert!((two_false_alarms - (-1.0 - 0.22)).abs() < 1e-12);
        assert_eq!(normalise(-1.0, 1, &p), 0.0);
        assert_eq!(normalise(1.0, 1, &p), 100.0);
    }

    #[test]
    fn the_optimiser_finds_the_threshold_that_catches_the_window_early() {
        let mut scores = vec![0.1; 40];
        scores[11] = 0.8; // early in the window
        scores[30] = 0.9; // one false alarm, higher than the catch
        let rows = vec![FileRows {
            category: "c".into(),
            name: "f".into(),
            roles: row_roles(40, &[[10, 19]], 0),
            windows: 1,
            scores,
        }];
        let best = optimise_threshold(&rows, &standard());
        assert_eq!(best.threshold, 0.8);
        let expected = rows[0].raw_score_at(&standard(), 0.8);
        assert!((best.raw - expected).abs() < 1e-12);
        // Nothing at all is worth less than the catch plus one false alarm.
        assert!(best.raw > -1.0);
    }

    #[test]
    fn a_null_detector_scores_zero_at_threshold_one_point_one() {
        let rows = vec![FileRows {
            category: "c".into(),
            name: "f".into(),
            roles: row_roles(40, &[[10, 19]], 5),
            windows: 1,
            scores: vec![0.5; 40],
        }];
        let best = optimise_threshold(&rows, &standard());
        assert_eq!(best.threshold, 1.1);
        assert_eq!(best.normalised, 0.0);
    }
}
