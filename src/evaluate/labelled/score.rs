//! Detection quality of the detector's own decisions against labelled rows.
//!
//! - **Point-wise**: a row is predicted anomalous when an alert is open for
//!   its entity after the row (the daemon's decision); skipped rows are left
//!   out. Precision, recall, F1, false-alarm rate (FP / (FP + TN)) and
//!   missed-alarm rate (FN / (TP + FN)).
//! - **Event-wise**: an *event* is a run of consecutive anomalous rows of an
//!   entity; an *alert* is a run of rows with an alert open. An event is
//!   caught when an alert starts inside it, or within `tolerance` rows after
//!   its start (for events shorter than that). An alert that overlaps no
//!   event (so extended) is one false positive. Time to detect: from the
//!   event's first row to the start of the alert that caught it.
//! - **AUC-PR** of the decision score (the score alerts are decided on;
//!   rows without a window of their own carry their entity's latest).
//! - **NAB-style score** (standard profile): the events are NAB's windows,
//!   the alert starts its detections, normalised to 0 (no detection) to 100
//!   (perfect), with no probationary rows.

use crate::evaluate::metrics::average_precision;
use crate::evaluate::nab::scoring::{normalise, row_roles, FileRows};
use crate::evaluate::nab::Profile;
use serde::Serialize;

/// One entity's rows, as the evaluation collected them.
#[derive(Debug, Clone, Default)]
pub struct EntityRows {
    /// The entity.
    pub entity: String,
    /// Label id per row (see `LabelValues`).
    pub labels: Vec<u32>,
    /// Whether the row was skipped.
    pub skipped: Vec<bool>,
    /// Whether an alert was open after the row.
    pub alerting: Vec<bool>,
    /// The decision score (carried between windows; 0 before the first).
    pub scores: Vec<f32>,
    /// Event time per row (epoch ms; 0 on a row whose time was unreadable).
    pub timestamps: Vec<i64>,
    /// The data row of each (0-based, in the file).
    pub rows: Vec<usize>,
    /// Values, row-major in model channel order (NaN on skipped rows).
    pub values: Vec<f32>,
}

/// A labelled event and whether it was caught.
#[derive(Debug, Clone, Serialize)]
pub struct EventOutcome {
    /// The entity.
    pub entity: String,
    /// The anomaly's kind (the label value).
    pub kind: String,
    /// First and last data row of the event (file positions, 0-based).
    pub rows: [usize; 2],
    /// Its length in rows.
    pub length: usize,
    /// Rows from its start to the alert that caught it.
    pub rows_to_detect: Option<usize>,
    /// The same in event time (ms).
    pub ms_to_detect: Option<i64>,
    /// Rows of it during which an alert was open.
    pub rows_alerting: usize,
}

/// Point-wise counts and rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PointWise {
    /// Anomalous rows with an alert open.
    pub true_positives: usize,
    /// Normal rows with an alert open.
    pub false_positives: usize,
    /// Anomalous rows without.
    pub false_negatives: usize,
    /// Normal rows without.
    pub true_negatives: usize,
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// FP / (FP + TN).
    pub false_alarm_rate: f64,
    /// FN / (TP + FN).
    pub missed_alarm_rate: f64,
}

/// Event-wise counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventWise {
    /// Labelled events.
    pub events: usize,
    /// Events caught.
    pub caught: usize,
    /// caught / events.
    pub recall: f64,
    /// Alerts (runs of rows with an alert open).
    pub alerts: usize,
    /// Alerts that overlap no event.
    pub false_alerts: usize,
    /// (alerts - false alerts) / alerts.
    pub precision: f64,
    /// Rows after an event's start within which an alert still catches it.
    pub tolerance_rows: usize,
    /// Median rows to detect over the caught events.
    pub median_rows_to_detect: Option<f64>,
}

/// Per kind of anomaly.
#[derive(Debug, Clone, Serialize)]
pub struct KindOutcome {
    /// The kind.
    pub kind: String,
    /// Its events.
    pub events: usize,
    /// Of them caught.
    pub caught: usize,
    /// Its rows.
    pub rows: usize,
    /// Of them with an alert open.
    pub rows_alerting: usize,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quality {
    /// Rows in the file.
    pub rows: usize,
    /// Rows skipped (bad input), not judged.
    pub skipped_rows: usize,
    /// Rows labelled anomalous (among those judged).
    pub anomalous_rows: usize,
    /// Point-wise.
    pub point: PointWise,
    /// Event-wise.
    pub events: EventWise,
    /// AUC-PR of the decision score (`None` without anomalous or normal rows).
    pub auc_pr: Option<f64>,
    /// NAB-style score, standard profile (`None` without events).
    pub nab_standard: Option<f64>,
    /// Per anomaly kind.
    pub by_kind: Vec<KindOutcome>,
    /// Every event.
    pub outcomes: Vec<EventOutcome>,
}

/// Runs of `true` as inclusive index ranges.
pub fn runs(flags: impl IntoIterator<Item = bool>) -> Vec<[usize; 2]> {
    let mut out = Vec::new();
    let mut start = None;
    let mut last = 0;
    for (i, flag) in flags.into_iter().enumerate() {
        match (flag, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push([s, i - 1]);
                start = None;
            }
            _ => {}
        }
        last = i;
    }
    if let Some(s) = start {
        out.push([s, last]);
    }
    out
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Measures `entities` against their labels (`kinds[label id]`: `None` = normal).
pub fn measure(entities: &[EntityRows], kinds: &[Option<String>], tolerance: usize) -> Quality {
    let mut quality = Quality::default();
    let mut scores = Vec::new();
    let mut truth = Vec::new();
    let mut by_kind: std::collections::BTreeMap<String, KindOutcome> = Default::default();
    let profile = Profile::standard_three().remove(0);
    let mut nab_raw = 0.0;
    let mut nab_windows = 0;
    for e in entities {
        let n = e.labels.len();
        quality.rows += n;
        let anomalous: Vec<bool> = e
            .labels
            .iter()
            .map(|&l| kinds[l as usize].is_some())
            .collect();
        let p = &mut quality.point;
        for (i, &truly) in anomalous.iter().enumerate() {
            if e.skipped[i] {
                quality.skipped_rows += 1;
                continue;
            }
            match (truly, e.alerting[i]) {
                (true, true) => p.true_positives += 1,
                (false, true) => p.false_positives += 1,
                (true, false) => p.false_negatives += 1,
                (false, false) => p.true_negatives += 1,
            }
            scores.push(e.scores[i]);
            truth.push(truly);
        }
        let events = runs(anomalous.iter().copied());
        let alerts = runs(e.alerting.iter().copied());
        let reach = |event: &[usize; 2]| event[1].max(event[0] + tolerance).min(n - 1);
        quality.events.alerts += alerts.len();
        quality.events.false_alerts += alerts
            .iter()
            .filter(|a| !events.iter().any(|ev| a[0] <= reach(ev) && ev[0] <= a[1]))
            .count();
        for event in &events {
            let kind = kinds[e.labels[event[0]] as usize]
                .clone()
                .unwrap_or_default();
            let catcher = alerts
                .iter()
                .find(|a| a[0] >= event[0] && a[0] <= reach(event));
            let rows_alerting = (event[0]..=event[1]).filter(|&i| e.alerting[i]).count();
            let entry = by_kind.entry(kind.clone()).or_insert_with(|| KindOutcome {
                kind: kind.clone(),
                events: 0,
                caught: 0,
                rows: 0,
                rows_alerting: 0,
            });
            entry.events += 1;
            entry.caught += usize::from(catcher.is_some());
            entry.rows += event[1] - event[0] + 1;
            entry.rows_alerting += rows_alerting;
            quality.outcomes.push(EventOutcome {
                entity: e.entity.clone(),
                kind,
                rows: [e.rows[event[0]], e.rows[event[1]]],
                length: event[1] - event[0] + 1,
                rows_to_detect: catcher.map(|a| a[0] - event[0]),
                ms_to_detect: catcher.map(|a| e.timestamps[a[0]] - e.timestamps[event[0]]),
                rows_alerting,
            });
        }
        if !events.is_empty() {
            nab_raw += nab_raw_score(e, &events, &alerts, &profile);
            nab_windows += events.len();
        }
    }
    finish_rates(&mut quality, tolerance);
    quality.auc_pr = average_precision(&scores, &truth);
    quality.nab_standard = (nab_windows > 0).then(|| normalise(nab_raw, nab_windows, &profile));
    quality.by_kind = by_kind.into_values().collect();
    quality
}

/// NAB's raw standard score of one entity: its labelled events are the
/// windows, the rows where its alerts start are the detections.
fn nab_raw_score(
    e: &EntityRows,
    events: &[[usize; 2]],
    alerts: &[[usize; 2]],
    profile: &Profile,
) -> f64 {
    let n = e.labels.len();
    let mut starts = vec![false; n];
    for a in alerts {
        starts[a[0]] = true;
    }
    let file = FileRows {
        category: String::new(),
        name: e.entity.clone(),
        roles: row_roles(n, events, 0),
        windows: events.len(),
        scores: Vec::new(),
    };
    file.raw_score(profile, |i| starts[i])
}

/// The rates and the median delay, from the counts.
fn finish_rates(quality: &mut Quality, tolerance: usize) {
    let p = &mut quality.point;
    quality.anomalous_rows = p.true_positives + p.false_negatives;
    p.precision = ratio(p.true_positives, p.true_positives + p.false_positives);
    p.recall = ratio(p.true_positives, p.true_positives + p.false_negatives);
    p.f1 = if p.precision + p.recall > 0.0 {
        2.0 * p.precision * p.recall / (p.precision + p.recall)
    } else {
        0.0
    };
    p.false_alarm_rate = ratio(p.false_positives, p.false_positives + p.true_negatives);
    p.missed_alarm_rate = ratio(p.false_negatives, p.true_positives + p.false_negatives);
    let ev = &mut quality.events;
    ev.events = quality.outcomes.len();
    ev.caught = quality
        .outcomes
        .iter()
        .filter(|o| o.rows_to_detect.is_some())
        .count();
    ev.recall = ratio(ev.caught, ev.events);
    ev.precision = ratio(ev.alerts - ev.false_alerts, ev.alerts);
    ev.tolerance_rows = tolerance;
    let mut delays: Vec<usize> = quality
        .outcomes
        .iter()
        .filter_map(|o| o.rows_to_detect)
        .collect();
    delays.sort_unstable();
    ev.median_rows_to_detect = (!delays.is_empty()).then(|| {
        let m = delays.len() / 2;
        if delays.len() % 2 == 1 {
            delays[m] as f64
        } else {
            (delays[m - 1] + delays[m]) as f64 / 2.0
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(labels: &[u32], alerting: &[bool]) -> EntityRows {
        let n = labels.len();
        EntityRows {
            entity: "e".into(),
            labels: labels.to_vec(),
            skipped: vec![false; n],
            alerting: alerting.to_vec(),
            scores: alerting
                .iter()
                .map(|&a| if a { 0.9 } else { 0.1 })
                .collect(),
            timestamps: (0..n as i64).map(|i| i * 60_000).collect(),
            rows: (0..n).collect(),
            values: vec![0.0; n],
        }
    }

    #[test]
    fn runs_are_inclusive_ranges() {
        assert_eq!(runs([false, true, true, false, true]), vec![[1, 2], [4, 4]]);
        assert!(runs([false, false]).is_empty());
    }

    #[test]
    fn a_caught_event_a_missed_one_and_a_false_alert() {
        let kinds = vec![None, Some("spike".to_string())];
        //           0  1  2  3  4  5  6  7  8  9 10 11
        let labels = [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0];
        let alerting = [
            false, false, false, true, true, true, false, false, false, false, false, true,
        ];
        let q = measure(&[entity(&labels, &alerting)], &kinds, 0);
        assert_eq!(q.events.events, 2);
        assert_eq!(q.events.caught, 1);
        assert_eq!(q.outcomes[0].rows_to_detect, Some(1));
        assert_eq!(q.outcomes[0].ms_to_detect, Some(60_000));
        assert_eq!(q.outcomes[1].rows_to_detect, None);
        assert_eq!((q.events.alerts, q.events.false_alerts), (2, 1));
        assert_eq!(q.point.true_positives, 2);
        assert_eq!(q.point.false_positives, 2);
        assert_eq!(q.point.false_negatives, 3);
        assert!((q.point.recall - 0.4).abs() < 1e-12);
        assert!((q.point.false_alarm_rate - 2.0 / 7.0).abs() < 1e-12);
        let nab = q.nab_standard.unwrap();
        assert!(nab > 0.0 && nab < 100.0, "{nab}");
        // A perfect detector: every event caught at its first row, no false alert.
        let perfect: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
        let q = measure(&[entity(&labels, &perfect)], &kinds, 0);
        assert_eq!(q.events.caught, 2);
        assert_eq!(q.events.false_alerts, 0);
        assert!((q.nab_standard.unwrap() - 100.0).abs() < 1e-9);
        assert!((q.point.f1 - 1.0).abs() < 1e-12);
        assert!((q.auc_pr.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_tolerance_catches_an_alert_just_after_a_short_event() {
        let kinds = vec![None, Some("spike".to_string())];
        let labels = [0, 0, 1, 0, 0, 0, 0];
        let alerting = [false, false, false, false, true, true, false];
        assert_eq!(
            measure(&[entity(&labels, &alerting)], &kinds, 0)
                .events
                .caught,
            0
        );
        let q = measure(&[entity(&labels, &alerting)], &kinds, 3);
        assert_eq!(q.events.caught, 1);
        assert_eq!(q.events.false_alerts, 0);
    }
}
