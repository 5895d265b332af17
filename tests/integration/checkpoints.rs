//! Entity-state checkpoints end to end: a restart restores every entity from
//! the state topic and decides exactly as an uninterrupted run would; an
//! unreadable checkpoint is counted, not fatal; a state topic with too few
//! partitions is refused at start.

use super::delivery_support::*;
use super::faults::{
    assert_same_alerts, record_count, reference_alert_ids, wait_for_alert_ids, Tally,
};
use super::kafka_support::*;
use anomalyd::series::Series;
use std::collections::BTreeSet;
use std::time::Duration;

/// Produces rows `rows` of each series (series i → partition i).
fn produce_range(brokers: &str, series: &[&Series], rows: std::ops::Range<usize>) {
    produce_rows(brokers, series, rows, usize::MAX, Duration::ZERO);
}

#[test]
fn a_restart_restores_every_entity_and_changes_no_decision() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(4).collect();
    let rows = series[0].len();
    let half = rows / 2;
    let scenario = Scenario::new(4);
    let broker = &scenario.broker;
    let expected = expected_windows(&series);
    let first_half: BTreeSet<_> = expected
        .iter()
        .filter(|(_, offset)| (*offset as usize) < half)
        .copied()
        .collect();
    let mut scores = scenario.reader("scores");
    let mut alerts = scenario.reader("alerts");

    produce_range(&broker.brokers, &series, 0..half);
    let mut first = scenario.launch("first", "restart", "");
    super::faults::wait_for_every_window(
        &mut scores,
        &first_half,
        Duration::from_secs(120),
        &[&first],
    );
    // A graceful stop checkpoints every entity and commits behind it.
    first.signal(libc::SIGTERM);
    first.assert_clean_exit(Duration::from_secs(30));
    let committed = committed(&broker.brokers, "restart", "input", 4);
    assert_eq!(committed, vec![half as i64; 4], "{}", first.log_text());

    // A checkpoint nobody can read, for an entity of partition 0.
    let producer = producer(&broker.brokers);
    send(
        &producer,
        "anomalyd-state",
        0,
        "ghost",
        b"\xc1 not MessagePack",
    );
    flush(&producer);

    produce_range(&broker.brokers, &series, half..rows);
    let second = scenario.launch("second", "restart", "");
    super::faults::wait_for_every_window(
        &mut scores,
        &expected,
        Duration::from_secs(120),
        &[&second],
    );
    let restored = second
        .metric("anomalyd_state_restored_total{outcome=\"restored\"}")
        .unwrap();
    let unreadable = second
        .metric("anomalyd_state_restored_total{outcome=\"unreadable\"}")
        .unwrap();
    assert_eq!((restored, unreadable), (4.0, 1.0), "{}", second.log_text());
    // Nothing warms up again: the restored entities were calibrated already.
    assert_eq!(second.metric("anomalyd_entities_warming"), Some(0.0));
    let reference = reference_alert_ids(&series);
    wait_for_alert_ids(&mut alerts, &reference, Duration::from_secs(20));
    let tally = Tally::count(record_count(&series), &expected, &mut scores, &mut alerts);
    assert_eq!(tally.missing, 0);
    // The graceful stop left nothing uncommitted: not one window twice.
    assert_eq!(tally.duplicates, 0);
    assert_eq!(tally.duplicate_alerts, 0);
    assert_same_alerts(&tally, &reference, "graceful restart");
    println!(
        "restart: {restored} entities restored, {unreadable} unreadable checkpoint counted; {} windows, {} alerts, 0 duplicates",
        tally.windows, tally.alerts
    );
    let mut second = second;
    second.signal(libc::SIGTERM);
    second.assert_clean_exit(Duration::from_secs(30));
}

/// (what, the state topic's (name, partitions) if any, what stderr says).
type Case = (&'static str, &'static [(&'static str, i32)], &'static str);

#[test]
fn a_state_topic_with_too_few_partitions_or_that_cannot_be_created_stops_the_start() {
    // (The mock broker cannot create topics on request: like a cluster where
    // anomalyd lacks the permission.)
    let cases: [Case; 2] = [
        (
            "too few partitions",
            &[("anomalyd-state", 1)],
            "the state topic anomalyd-state has 1 partitions, the input topic input 4",
        ),
        (
            "missing, cannot be created",
            &[],
            "create it with 4 partitions and cleanup.policy=compact, or set state.checkpoints = false",
        ),
    ];
    for (case, state_topic, says) in cases {
        let mut topics = vec![
            ("input", 4),
            ("alerts", 1),
            ("scores", 1),
            ("dead-letters", 1),
        ];
        topics.extend_from_slice(state_topic);
        let broker = start_broker(&topics);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("state.toml");
        std::fs::write(
            &config,
            daemon_config(&broker.brokers, "state", free_port(), ""),
        )
        .unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // EX_UNAVAILABLE: the state topic cannot be used.
        assert_eq!(output.status.code(), Some(69), "{case}: {stderr}");
        assert!(stderr.contains(says), "{case}: {stderr}");
    }
}
