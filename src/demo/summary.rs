//! The demo's verdict: which injected anomalies an alert caught, which it
//! missed, how much of each an alert was open through, and how many alerts
//! opened where nothing was injected.

use super::view::SeenEvent;
use crate::daemon::admin::metrics::Metrics;
use crate::series::timestamp::format_timestamp;
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
    /// Per injected anomaly (in `injected`'s order), the fraction of its
    /// time an alert of its entity was open.
    pub open_fraction: Vec<f64>,
}

/// Event time (ms) of an alert event: its window end, else its start.
fn event_ms(event: &SeenEvent) -> Option<i64> {
    event
        .window_end
        .as_deref()
        .or(event.started_at.as_deref())
        .and_then(|t| parse_timestamp(t).ok())
}

/// The spans during which each entity had an alert open: (entity, from,
/// to), `to` = `i64::MAX` for an alert never resolved.
fn open_spans(events: &[SeenEvent]) -> Vec<(String, i64, i64)> {
    let mut open: std::collections::HashMap<&str, i64> = Default::default();
    let mut spans = Vec::new();
    for event in events {
        let (Some(id), Some(at)) = (event.alert_id.as_deref(), event_ms(event)) else {
            continue;
        };
        match event.event.as_str() {
            "opened" => {
                open.entry(id).or_insert(at);
            }
            "resolved" => {
                if let Some(from) = open.remove(id) {
                    spans.push((event.entity.clone(), from, at));
                }
            }
            _ => {}
        }
    }
    for event in events {
        if let Some(from) = event.alert_id.as_deref().and_then(|id| open.remove(id)) {
            spans.push((event.entity.clone(), from, i64::MAX));
        }
    }
    spans
}

/// The fraction of `anomaly`'s time covered by `spans` of its entity.
fn covered(anomaly: &Injected, spans: &[(String, i64, i64)]) -> f64 {
    let mut parts: Vec<(i64, i64)> = spans
        .iter()
        .filter(|(entity, _, _)| *entity == anomaly.entity)
        .map(|&(_, from, to)| (from.max(anomaly.start_ms), to.min(anomaly.end_ms)))
        .filter(|(from, to)| from < to)
        .collect();
    let length = anomaly.end_ms - anomaly.start_ms;
    if length <= 0 {
        return if parts.is_empty() { 0.0 } else { 1.0 };
    }
    parts.sort_unstable();
    let (mut total, mut reached) = (0i64, i64::MIN);
    for (from, to) in parts {
        let from = from.max(reached);
        if to > from {
            total += to - from;
            reached = to;
        }
    }
    total as f64 / length as f64
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
    let spans = open_spans(events);
    let mut verdict = Verdict {
        open_fraction: injected.iter().map(|a| covered(a, &spans)).collect(),
        ..Verdict::default()
    };
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

/// Prints the summary: records, windows, alerts, and the verdict on the
/// injected anomalies by kind, with each one missed and each false alarm.
pub fn print(
    metrics: &Metrics,
    produced: usize,
    events: &[SeenEvent],
    injected: &[Injected],
    verdict: &Verdict,
) {
    let rejected: Vec<String> = crate::daemon::source::decode::RejectReason::ALL
        .iter()
        .filter_map(|r| {
            let n = metrics
                .records_rejected
                .with_label_values(&[r.as_str()])
                .get();
            (n > 0).then(|| format!("{} {n}", r.as_str()))
        })
        .collect();
    let count = |event: &str| events.iter().filter(|e| e.event == event).count();
    println!("\nsummary");
    println!(
        "  records    {} produced, {} consumed, {} decoded, {} dead-lettered ({})",
        produced,
        metrics.records_consumed.get(),
        metrics.records_decoded.get(),
        metrics.records_consumed.get() - metrics.records_decoded.get(),
        rejected.join(", ")
    );
    println!("  windows    {} scored", metrics.windows_scored.get());
    println!(
        "  alerts     {} opened, {} updated, {} resolved",
        count("opened"),
        count("updated"),
        count("resolved")
    );
    println!(
        "  injected anomalies caught {} of {}, false alarms {}",
        verdict.caught.len(),
        injected.len(),
        verdict.false_alarms.len()
    );
    let mut kinds: Vec<&str> = injected.iter().map(|a| a.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let caught = verdict.caught.iter().filter(|a| a.kind == kind).count();
        let total = injected.iter().filter(|a| a.kind == kind).count();
        let open: f64 = injected
            .iter()
            .zip(&verdict.open_fraction)
            .filter(|(a, _)| a.kind == kind)
            .map(|(_, f)| f)
            .sum();
        println!(
            "    {kind:<16} caught {caught} of {total}, an alert open through {:.0} % of its time",
            100.0 * open / total as f64
        );
    }
    for missed in &verdict.missed {
        println!(
            "  missed     {} {} at {}",
            missed.entity,
            missed.kind,
            format_timestamp(missed.start_ms)
        );
    }
    for (entity, at) in &verdict.false_alarms {
        println!("  false alarm {entity} at {at}");
    }
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

    fn event(kind: &str, id: &str, started: &str, at: &str) -> SeenEvent {
        SeenEvent {
            event: kind.into(),
            alert_id: Some(id.into()),
            window_end: Some(at.into()),
            ..opened("m1", started)
        }
    }

    #[test]
    fn the_open_fraction_is_the_anomalys_time_inside_open_alerts() {
        let anomalies = vec![Injected {
            entity: "m1".into(),
            kind: "level_shift".into(),
            start_ms: parse_timestamp("2026-01-02T00:00:00Z").unwrap(),
            end_ms: parse_timestamp("2026-01-02T10:00:00Z").unwrap(),
        }];
        let t0 = "2026-01-02T01:00:00Z";
        let events = vec![
            event("opened", "a", t0, t0),
            event("resolved", "a", t0, "2026-01-02T04:00:00Z"),
            // Re-opened in its cooldown (same id), never resolved.
            event("opened", "a", t0, "2026-01-02T06:00:00Z"),
            // Another entity's alert covers nothing of m1's anomaly.
            SeenEvent {
                entity: "m2".into(),
                ..event("opened", "b", t0, t0)
            },
        ];
        let verdict = judge(&anomalies, &events, 0);
        assert!(
            (verdict.open_fraction[0] - 0.7).abs() < 1e-9,
            "{:?}",
            verdict.open_fraction
        );
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
