//! The demo's verdict: which injected anomalies an alert caught, which it
//! missed, and how many alerts opened where nothing was injected.

use super::view::SeenEvent;
use crate::series::timestamp::parse_timestamp;
use crate::series::Series;

/// One injected anomaly: a run of rows of one entity with the same label.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The entity.
    pub entity: String,
    /// The anomaly kind.
    pub kind: String,
    /// First and last event time (ms).
    pub start_ms: i64,
    /// See `start_ms`.
    pub end_ms: i64,
}

/// The injected anomalies of labelled series.
pub fn injected(series: &[Series]) -> Vec<Injected> {
    let mut out = Vec::new();
    for s in series {
        let Some(labels) = &s.labels else { continue };
        let mut row = 0;
        while row < labels.len() {
            if labels[row].is_empty() {
                row += 1;
                continue;
            }
            let start = row;
            while row < labels.len() && labels[row] == labels[start] {
                row += 1;
            }
            out.push(Injected {
                entity: s.entity.clone(),
                kind: labels[start].clone(),
                start_ms: s.timestamps[start],
                end_ms: s.timestamps[row - 1],
            });
        }
    }
    out
}

/// Caught and missed anomalies and false alarms.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Anomalies with an alert opened during them (or within `slack_ms` after).
    pub caught: Vec<Injected>,
    /// Anomalies without one.
    pub missed: Vec<Injected>,
    /// Alerts opened away from every anomaly: (entity, start).
    pub false_alarms: Vec<(String, String)>,
}

/// Matches opened alerts to injected anomalies. An alert counts for an
/// anomaly when it opens between its start and `slack_ms` after its end (the
/// window still holds the anomaly that long).
pub fn judge(injected: &[Injected], events: &[SeenEvent], slack_ms: i64) -> Verdict {
    let opened: Vec<(String, i64, String)> = events
        .iter()
        .filter(|e| e.event == "opened")
        .filter_map(|e| {
            let started = e
                .started_at
                .as_deref()
                .and_then(|t| parse_timestamp(t).ok())?;
            Some((
                e.entity.clone(),
                started,
                e.started_at.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let mut verdict = Verdict::default();
    let matches = |a: &Injected, entity: &str, at: i64| {
        a.entity == entity && at >= a.start_ms && at <= a.end_ms + slack_ms
    };
    for anomaly in injected {
        if opened.iter().any(|(e, at, _)| matches(anomaly, e, *at)) {
            verdict.caught.push(anomaly.clone());
        } else {
            verdict.missed.push(anomaly.clone());
        }
    }
    for (entity, at, text) in &opened {
        if !injected.iter().any(|a| matches(a, entity, *at)) {
            verdict.false_alarms.push((entity.clone(), text.clone()));
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(entity: &str, at: &str) -> SeenEvent {
        SeenEvent {
            event: "opened".into(),
            entity: entity.into(),
            alert_id: Some("x".into()),
            started_at: Some(at.into()),
            severity: None,
            calibrated_score: None,
            window_end: None,
            top_channels: Vec::new(),
        }
    }

    #[test]
    fn alerts_match_anomalies_of_their_entity_within_the_slack() {
        let day = 86_400_000;
        let anomalies = vec![Injected {
            entity: "m1".into(),
            kind: "spike".into(),
            start_ms: parse_timestamp("2026-01-02T00:00:00Z").unwrap(),
            end_ms: parse_timestamp("2026-01-02T01:00:00Z").unwrap(),
        }];
        let events = vec![
            opened("m1", "2026-01-02T02:00:00Z"),
            opened("m2", "2026-01-02T00:30:00Z"),
        ];
        let verdict = judge(&anomalies, &events, 2 * 3_600_000);
        assert_eq!(verdict.caught.len(), 1);
        assert_eq!(verdict.false_alarms.len(), 1);
        let verdict = judge(&anomalies, &events, day / 48);
        assert_eq!(verdict.missed.len(), 1);
        assert_eq!(verdict.false_alarms.len(), 2);
    }
}
