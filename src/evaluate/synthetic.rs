//! Detection quality on labelled data: AUC-PR and best F1, overall and per anomaly kind.

use super::metrics::{average_precision, best_f1};
use crate::series::Series;
use crate::serve::{ModelError, Scorer};
use crate::window::windows_of_rows;
use std::collections::BTreeMap;

/// Quality against one set of positives.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quality {
    /// Which positives: an anomaly kind, or "all".
    pub kind: String,
    /// Positive windows (containing that kind).
    pub positives: usize,
    /// Negative windows (containing no anomaly).
    pub negatives: usize,
    /// Average precision.
    pub auc_pr: f64,
    /// Best F1 over thresholds.
    pub best_f1: f64,
}

/// Window scores with the labels they contain.
pub struct LabelledScores {
    /// Score of each window.
    pub scores: Vec<f32>,
    /// Distinct non-empty labels of the rows in each window.
    pub labels: Vec<Vec<String>>,
}

/// Scores every `stride`-th window of each labelled series (raw values).
pub fn score_labelled(
    scorer: &Scorer,
    series: &[Series],
    stride: usize,
) -> Result<LabelledScores, ModelError> {
    let window_len = scorer.metadata().window_len;
    let mut result = LabelledScores {
        scores: Vec::new(),
        labels: Vec::new(),
    };
    for s in series {
        let columns = scorer.map_channels(&s.channels)?;
        let c = s.channels.len();
        // Reorder and normalise rows into model channel order.
        let rows: Vec<f32> = s
            .values
            .chunks(c)
            .flat_map(|row| {
                columns
                    .iter()
                    .zip(&scorer.metadata().normalisation)
                    .map(|(&i, n)| n.apply(row[i]))
                    .collect::<Vec<_>>()
            })
            .collect();
        let (windows, ends) = windows_of_rows(&rows, columns.len(), window_len, stride);
        let size = scorer.window_size();
        for chunk in windows.chunks(size * 256) {
            let scored = scorer.score_normalised(chunk, chunk.len() / size)?;
            result.scores.extend(scored.iter().map(|w| w.score));
        }
        let row_labels = s.labels.as_deref();
        for end in ends {
            let mut kinds: Vec<String> = row_labels
                .map(|labels| {
                    labels[end + 1 - window_len..=end]
                        .iter()
                        .filter(|l| !l.is_empty())
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            kinds.sort();
            kinds.dedup();
            result.labels.push(kinds);
        }
    }
    Ok(result)
}

/// AUC-PR and best F1 overall ("all") and for each kind (its windows against clean ones).
pub fn quality(scored: &LabelledScores) -> Vec<Quality> {
    let mut kinds: BTreeMap<&str, ()> = BTreeMap::new();
    for labels in &scored.labels {
        for label in labels {
            kinds.insert(label, ());
        }
    }
    let mut result = Vec::new();
    let mut evaluate = |kind: &str, is_positive: &dyn Fn(&[String]) -> bool| {
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for (score, window_labels) in scored.scores.iter().zip(&scored.labels) {
            let positive = is_positive(window_labels);
            if positive || window_labels.is_empty() {
                scores.push(*score);
                labels.push(positive);
            }
        }
        if let (Some(auc_pr), Some((f1, _))) = (
            average_precision(&scores, &labels),
            best_f1(&scores, &labels),
        ) {
            result.push(Quality {
                kind: kind.to_string(),
                positives: labels.iter().filter(|&&l| l).count(),
                negatives: labels.iter().filter(|&&l| !l).count(),
                auc_pr,
                best_f1: f1,
            });
        }
    };
    evaluate("all", &|labels| !labels.is_empty());
    for kind in kinds.keys() {
        evaluate(kind, &|labels| labels.iter().any(|l| l == kind));
    }
    result
}
