//! Ranking metrics for labelled scores: average precision (AUC-PR) and best F1.

/// One point of the precision-recall curve: flag every window scoring `>= threshold`.
struct CurvePoint {
    threshold: f32,
    precision: f64,
    recall: f64,
}

/// The precision-recall curve, from the highest threshold down; windows with
/// tied scores enter together. `None` if there is no positive.
fn precision_recall_curve(scores: &[f32], labels: &[bool]) -> Option<Vec<CurvePoint>> {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut curve = Vec::new();
    let (mut true_positives, mut seen, mut i) = (0usize, 0usize, 0usize);
    while i < order.len() {
        let threshold = scores[order[i]];
        while i < order.len() && scores[order[i]] == threshold {
            true_positives += labels[order[i]] as usize;
            seen += 1;
            i += 1;
        }
        curve.push(CurvePoint {
            threshold,
            precision: true_positives as f64 / seen as f64,
            recall: true_positives as f64 / positives as f64,
        });
    }
    Some(curve)
}

/// Average precision of `scores` against binary `labels` (higher score = more
/// likely positive): the area under the step precision-recall curve, with
/// tied scores taken as one threshold. `None` if there is no positive.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let curve = precision_recall_curve(scores, labels)?;
    let mut previous_recall = 0.0;
    let mut area = 0.0;
    for point in curve {
        area += (point.recall - previous_recall) * point.precision;
        previous_recall = point.recall;
    }
    Some(area)
}

/// The best F1 over all thresholds, and the threshold that gives it
/// (windows with score >= threshold are flagged).
pub fn best_f1(scores: &[f32], labels: &[bool]) -> Option<(f64, f32)> {
    let curve = precision_recall_curve(scores, labels)?;
    let mut best = (0.0f64, f32::INFINITY);
    for point in curve {
        if point.precision + point.recall > 0.0 {
            let f1 = 2.0 * point.precision * point.recall / (point.precision + point.recall);
            if f1 > best.0 {
                best = (f1, point.threshold);
            }
        }
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_ranking_scores_one() {
        let scores = [0.9, 0.8, 0.1, 0.2];
        let labels = [true, true, false, false];
        assert_eq!(average_precision(&scores, &labels), Some(1.0));
        assert_eq!(best_f1(&scores, &labels), Some((1.0, 0.8)));
    }

    #[test]
    fn known_average_precision() {
        // Ranked: P, N, P -> precision at positives 1/1 and 2/3: AP = (1 + 2/3) / 2.
        let scores = [0.9, 0.5, 0.7];
        let labels = [true, true, false];
        let ap = average_precision(&scores, &labels).unwrap();
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn ties_are_one_threshold_and_no_positive_is_none() {
        let scores = [0.5, 0.5, 0.5, 0.5];
        let labels = [true, false, false, false];
        assert_eq!(average_precision(&scores, &labels), Some(0.25));
        assert_eq!(average_precision(&scores, &[false; 4]), None);
        assert_eq!(best_f1(&scores, &[false; 4]), None);
    }
}
