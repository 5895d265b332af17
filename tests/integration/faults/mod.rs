//! Fault tests: the real binary under broker outages, failing produce and
//! commit requests, `kill -9`, rebalances, overload and hot reloads, each
//! against librdkafka's mock cluster. Every test asserts that no window and
//! no alert is lost, counts the duplicates, and prints one `reliability |`
//! line: the figures in docs/reliability.md come from those lines.

mod broker;
mod load;
mod process;
mod tansu;

use super::delivery_support::*;
use super::kafka_support::*;
use anomalyd::series::Series;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What a fault run found: one row of the reliability table.
#[derive(Debug, Default)]
pub struct Tally {
    /// Input records produced.
    pub records: usize,
    /// Windows the input must yield.
    pub windows: usize,
    /// Windows with no score on the scores topic.
    pub missing: usize,
    /// Score messages beyond the first for a window.
    pub duplicates: usize,
    /// Distinct alert ids opened.
    pub alerts: usize,
    /// Those ids.
    pub opened: BTreeSet<String>,
    /// Alert messages beyond the first for the same (window, event).
    pub duplicate_alerts: usize,
}

impl Tally {
    /// Counts the scores and alerts topics against the windows `expected`.
    /// Asserts that a window's alert, when sent more than once, kept its id.
    pub fn count(
        records: usize,
        expected: &BTreeSet<(i32, i64)>,
        scores: &mut TopicReader,
        alerts: &mut TopicReader,
    ) -> Self {
        scores.catch_up();
        alerts.catch_up();
        let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
        for source in score_sources(scores) {
            *counts.entry(source).or_default() += 1;
        }
        let missing = expected.iter().filter(|w| !counts.contains_key(w)).count();
        let duplicates = counts.values().map(|&n| n - 1).sum();
        let mut ids: BTreeMap<(i32, i64, String), Vec<String>> = BTreeMap::new();
        let mut opened = BTreeSet::new();
        for message in alerts.json() {
            let (partition, offset) = source_of(&message);
            let event = message["event"].as_str().unwrap().to_string();
            let Some(id) = message["alert_id"].as_str() else {
                continue; // a gap event
            };
            if event == "opened" {
                opened.insert(id.to_string());
            }
            ids.entry((partition, offset, event))
                .or_default()
                .push(id.to_string());
        }
        // An alert opened by the same window is the same alert: same id. (A
        // resolve at the same window may belong to another alert after a
        // restart, whose warm-up moved where that alert opened.)
        let mut duplicate_alerts = 0;
        for (key, ids) in &ids {
            if key.2 == "opened" {
                assert!(
                    ids.iter().all(|id| id == &ids[0]),
                    "the alert opened by {key:?} was sent with different ids: {ids:?}"
                );
            }
            duplicate_alerts += ids.len() - 1;
        }
        Self {
            records,
            windows: expected.len(),
            missing,
            duplicates,
            alerts: opened.len(),
            opened,
            duplicate_alerts,
        }
    }

    /// Prints the table row.
    pub fn report(&self, fault: &str, extra: &str) {
        println!(
            "reliability | {fault} | records {} | windows {} | missing {} | duplicate scores {} | alerts opened {} | duplicate alert messages {} | {extra}",
            self.records, self.windows, self.missing, self.duplicates, self.alerts, self.duplicate_alerts
        );
    }
}

/// The alert ids an uninterrupted run opens on `series`: the daemon's
/// detector with its defaults (embedded model, stride 1), run offline one
/// window at a time.
pub fn reference_alert_ids(series: &[&Series]) -> BTreeSet<String> {
    use anomalyd::alert::AlertEvent;
    use anomalyd::detect::{DetectorConfig, EntityDetector};
    let scorer = anomalyd::serve::embedded::default_scorer().unwrap();
    let config = DetectorConfig::default();
    let mut ids = BTreeSet::new();
    for s in series {
        let columns = scorer.map_channels(&s.channels).unwrap();
        let mut detector = EntityDetector::new(&s.entity, &scorer, &config);
        for r in 0..s.len() {
            let row: Vec<f32> = columns.iter().map(|&c| s.row(r)[c]).collect();
            let outcome = detector.observe(&scorer, s.timestamps[r], &row).unwrap();
            if let Some(AlertEvent::Opened(alert)) = outcome.event {
                ids.insert(alert.id);
            }
        }
    }
    ids
}

/// Waits until the alerts topic holds every alert id of `reference` (the
/// last alerts trail the last scores a little), at most `limit`.
pub fn wait_for_alert_ids(alerts: &mut TopicReader, reference: &BTreeSet<String>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        alerts.catch_up();
        let opened: BTreeSet<String> = alerts
            .json()
            .iter()
            .filter(|m| m["event"] == "opened")
            .filter_map(|m| Some(m["alert_id"].as_str()?.to_string()))
            .collect();
        if reference.is_subset(&opened) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts that a faulty run opened exactly the alerts of an uninterrupted one.
pub fn assert_same_alerts(tally: &Tally, reference: &BTreeSet<String>, run: &str) {
    let lost: Vec<_> = reference.difference(&tally.opened).collect();
    let extra: Vec<_> = tally.opened.difference(reference).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "{run}: {} alerts lost {lost:?}, {} not in an uninterrupted run {extra:?}",
        lost.len(),
        extra.len()
    );
}

/// Waits until every expected window has a score, at most `limit`.
pub fn wait_for_every_window(
    scores: &mut TopicReader,
    expected: &BTreeSet<(i32, i64)>,
    limit: Duration,
    daemons: &[&DaemonProcess],
) {
    let deadline = Instant::now() + limit;
    loop {
        scores.catch_up();
        let seen: BTreeSet<(i32, i64)> = score_sources(scores).into_iter().collect();
        if expected.is_subset(&seen) {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = daemons
                .iter()
                .map(|d| {
                    let counters: Vec<String> = d
                        .metrics_text()
                        .lines()
                        .filter(|l| l.contains("rejected") || l.contains("already_checkpointed"))
                        .filter(|l| !l.starts_with('#'))
                        .map(str::to_string)
                        .collect();
                    format!(
                        "consumed {:?}, scored {:?}, produced {:?}; {}\n{}",
                        d.metric("anomalyd_records_consumed_total"),
                        d.metric("anomalyd_windows_scored_total"),
                        d.metric("anomalyd_produced_total{output=\"scores\"}"),
                        counters.join(", "),
                        d.log_text()
                    )
                })
                .collect();
            let missing: Vec<_> = expected.difference(&seen).collect();
            panic!(
                "{} of {} windows scored after {limit:?}; missing {:?} … {:?}; logs:\n{}",
                expected.intersection(&seen).count(),
                expected.len(),
                &missing[..missing.len().min(10)],
                missing.last(),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `metric` (a full sample) reaches `value` on `daemon`.
pub fn wait_for_metric(daemon: &DaemonProcess, metric: &str, value: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while daemon.metric(metric).unwrap_or(-1.0) < value {
        assert!(
            Instant::now() < deadline,
            "{metric} never reached {value}; metrics:\n{}\nlog:\n{}",
            http_get(daemon.admin, "/metrics").unwrap_or_default().1,
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// For a daemon that ran without a restart: every alert event it decided
/// (its `anomalyd_alert_events_total`) reached the alerts topic.
pub fn assert_every_alert_event_delivered(daemon: &DaemonProcess, alerts: &mut TopicReader) {
    // Decisions and deliveries trail the scores a little: wait until they agree.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let decided = daemon.metric_sum("anomalyd_alert_events_total");
        alerts.catch_up();
        let delivered: BTreeSet<(String, String)> = alerts
            .json()
            .iter()
            .filter_map(|m| {
                Some((
                    m["alert_id"].as_str()?.to_string(),
                    format!("{}@{}", m["event"], m["source"]["offset"]),
                ))
            })
            .collect();
        if delivered.len() as f64 == decided || Instant::now() > deadline {
            assert_eq!(
                delivered.len() as f64,
                decided,
                "alert events decided by the daemon vs distinct ones on the alerts topic"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Records in `series`.
pub fn record_count(series: &[&Series]) -> usize {
    series.iter().map(|s| s.len()).sum()
}
