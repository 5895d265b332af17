//! The daemon against a real Kafka-protocol broker (librdkafka's mock
//! cluster, in this process) with the real binary as a child process:
//! end to end, delivery across a crash, dead letters, metrics, readiness,
//! config checking and graceful shutdown. This file: end to end, delivery
//! across a crash, and a second instance joining the group.

mod dead_letters;
mod operations;
mod poison;
mod security;

use super::delivery_support::*;
use super::kafka_support::*;
use anomalyd::series::Series;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[test]
fn the_embedded_model_has_the_window_these_tests_assume() {
    let scorer = anomalyd::serve::embedded::default_scorer().unwrap();
    assert_eq!(scorer.metadata().window_len, WINDOW);
}

#[test]
fn end_to_end_alerts_on_anomalies_and_matches_offline_scores() {
    let data = data();
    let clean = data.series[0].slice(0, data.clean_rows);
    let anomalous = data.series[1].clone();
    let scenario = Scenario::new(2);
    let broker = &scenario.broker;
    // A week of 15-minute samples, as in the demo (the data has daily cycles).
    let calibration = "[detector.calibration]\nmethod = \"likelihood\"\nwarm_up = 672\n";
    let mut daemon = scenario.launch("e2e", "e2e", calibration);
    produce_series(&broker.brokers, &[&clean, &anomalous]);
    let expected = expected_windows(&[&clean, &anomalous]);
    let mut scores = scenario.reader("scores");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        scores.catch_up();
        let seen: BTreeSet<_> = score_sources(&scores).into_iter().collect();
        if expected.is_subset(&seen) {
            break;
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = expected.difference(&seen).take(10).collect();
            panic!(
                "only {} of {} windows scored; missing e.g. {missing:?}; seen from {:?} to {:?}; log:\n{}",
                seen.len(),
                expected.len(),
                seen.iter().next(),
                seen.iter().last(),
                daemon.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.signal(libc::SIGTERM);
    daemon.assert_clean_exit(Duration::from_secs(30));

    // The scores equal offline `anomalyd score` on the same rows.
    let csv = scenario.dir.path().join("rows.csv");
    let mut writer = csv::Writer::from_path(&csv).unwrap();
    let mut header = vec!["timestamp".to_string(), "entity".to_string()];
    header.extend(clean.channels.iter().cloned());
    writer.write_record(&header).unwrap();
    for s in [&clean, &anomalous] {
        for r in 0..s.len() {
            let mut row = vec![s.timestamps[r].to_string(), s.entity.clone()];
            row.extend(s.row(r).iter().map(|v| v.to_string()));
            writer.write_record(&row).unwrap();
        }
    }
    writer.flush().unwrap();
    let offline = scenario.dir.path().join("offline.csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["score", "--model"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.onnx"))
        .arg("--input")
        .arg(&csv)
        .arg("--out")
        .arg(&offline)
        .args(["--entity-column", "entity"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut offline_scores: HashMap<(String, i64), f64> = HashMap::new();
    for record in csv::Reader::from_path(&offline).unwrap().records() {
        let record = record.unwrap();
        if !record[2].is_empty() {
            offline_scores.insert(
                (record[1].to_string(), record[0].parse().unwrap()),
                record[2].parse().unwrap(),
            );
        }
    }
    let mut compared = 0;
    let mut worst = 0.0f64;
    for message in scores.json() {
        let key = (
            message["entity"].as_str().unwrap().to_string(),
            message["window_end_ms"].as_i64().unwrap(),
        );
        let online = message["raw_score"].as_f64().unwrap();
        let offline = offline_scores[&key];
        worst = worst.max((online - offline).abs() / offline.abs().max(1e-6));
        compared += 1;
    }
    println!("compared {compared} window scores with `anomalyd score`: worst relative difference {worst:.2e}");
    assert!(compared >= expected.len());
    assert!(worst < 1e-4, "online and offline scores differ by {worst}");

    // Alerts: on the anomalous stream during its anomalies; (almost) none on the clean one.
    let mut alerts = scenario.reader("alerts");
    alerts.catch_up();
    let opened: Vec<serde_json::Value> = alerts
        .json()
        .into_iter()
        .filter(|m| m["event"] == "opened")
        .collect();
    for message in &opened {
        // The exact end agrees with the whole-second RFC 3339 one.
        let end_ms = message["window_end_ms"].as_i64().expect("window_end_ms");
        let end = anomalyd::series::timestamp::parse_timestamp(
            message["window_end"].as_str().expect("window_end"),
        )
        .expect("RFC 3339");
        assert_eq!(end, end_ms - end_ms.rem_euclid(1000), "{message}");
    }
    let on_clean = opened
        .iter()
        .filter(|m| m["entity"] == clean.entity.as_str())
        .count();
    let injected =
        anomalyd::demo::summary::injected(&[anomalous.slice(data.clean_rows, anomalous.len())]);
    let step = anomalous.timestamps[1] - anomalous.timestamps[0];
    let caught = injected
        .iter()
        .filter(|a| {
            opened.iter().any(|m| {
                let at =
                    anomalyd::series::timestamp::parse_timestamp(m["started_at"].as_str().unwrap())
                        .unwrap();
                m["entity"] == a.entity.as_str()
                    && at >= a.start_ms
                    && at <= a.end_ms + WINDOW as i64 * step
            })
        })
        .count();
    println!(
        "alerts opened: {} on the clean stream, {} on the anomalous one; {caught} of {} injected anomalies caught",
        on_clean,
        opened.len() - on_clean,
        injected.len()
    );
    assert!(on_clean <= 1, "{on_clean} alerts on the clean stream");
    assert!(
        caught * 2 >= injected.len(),
        "only {caught} of {} anomalies caught",
        injected.len()
    );
    if let Some(first) = opened.first() {
        println!("example alert: {first}");
    }
    for message in &opened {
        for key in [
            "alert_id",
            "window_start",
            "window_end",
            "raw_score",
            "calibrated_score",
            "threshold",
            "severity",
            "top_channels",
            "model_version",
        ] {
            assert!(!message[key].is_null(), "alert without {key}: {message}");
        }
    }
}

#[test]
fn delivery_at_least_once_across_a_crash() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(4).collect();
    let scenario = Scenario::new(4);
    let broker = &scenario.broker;
    // The first half of the input now, the second after the crash: however
    // fast the daemon, the crash comes mid-stream.
    let rest = produce_first_half(&broker.brokers, &series);
    let expected = expected_windows(&series);
    let mut scores = scenario.reader("scores");
    let mut alerts = scenario.reader("alerts");

    // First run: killed (SIGKILL) about halfway through the first half.
    // Commits follow the entity checkpoints: frequent ones, and small
    // batches that make the run last longer, give the check more commits to
    // see.
    let extra = "[scoring]\nmax_batch = 1\n[state]\ncheckpoint_interval_ms = 200\n";
    let first = scenario.launch("first", "delivery", extra);
    let quarter = expected.len() as f64 / 4.0;
    let checks_first = check_commits_never_pass_unacknowledged_outputs(
        &broker.brokers,
        "delivery",
        4,
        &expected,
        &mut scores,
        &mut alerts,
        |_, _| first.metric("anomalyd_windows_scored_total").unwrap_or(0.0) >= quarter,
    );
    first.signal(libc::SIGKILL);
    drop(first);
    let committed_at_crash = committed(&broker.brokers, "delivery", "input", 4);
    produce_the_rest(&broker.brokers, &series, rest);

    // Second run: picks up from the committed offsets.
    let mut second = scenario.launch("second", "delivery", extra);
    let deadline = Instant::now() + Duration::from_secs(120);
    let checks_second = check_commits_never_pass_unacknowledged_outputs(
        &broker.brokers,
        "delivery",
        4,
        &expected,
        &mut scores,
        &mut alerts,
        |scores, _| {
            assert!(
                Instant::now() < deadline,
                "the second run did not finish; log:\n{}",
                second.log_text()
            );
            let seen: BTreeSet<(i32, i64)> = score_sources(scores).into_iter().collect();
            expected.is_subset(&seen)
        },
    );
    second.signal(libc::SIGTERM);
    second.assert_clean_exit(Duration::from_secs(30));
    scores.catch_up();
    alerts.catch_up();
    let snapshots: Vec<CommitSnapshot> = checks_first.into_iter().chain(checks_second).collect();
    let alert_pairs = check_alert_snapshots(&snapshots, &alert_keys(&alerts));
    let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for source in score_sources(&scores) {
        *counts.entry(source).or_default() += 1;
    }
    let missing = expected.iter().filter(|w| !counts.contains_key(w)).count();
    let duplicates: usize = counts.values().map(|&n| n - 1).sum();
    println!(
        "delivery: {} windows expected, {} missing, {duplicates} scored twice; committed at the crash {committed_at_crash:?}; {} commits checked against scores, {alert_pairs} (commit, alert) pairs against alerts ({} alert events)",
        expected.len(),
        missing,
        snapshots.len(),
        alerts.records.len()
    );
    assert_eq!(missing, 0);
    // (A guard against a vacuous check: each observation re-reads both
    // topics, so a few are all a short run allows; CI, on busy cores, saw
    // two with batches of 2. The alert pairs below must be checked too.)
    assert!(
        snapshots.len() >= 2,
        "too few commits observed to check anything"
    );
    assert!(
        alert_pairs > 0,
        "no alert lay before an observed commit: nothing was checked"
    );
    // Duplicates only within the uncommitted span: at most what lies past the committed offsets plus a window per entity.
    let uncommitted: i64 = committed_at_crash
        .iter()
        .zip(&series)
        .map(|(&c, s)| s.len() as i64 - c.max(0))
        .sum();
    assert!(
        duplicates as i64 <= uncommitted,
        "{duplicates} duplicates, {uncommitted} uncommitted records"
    );
}

#[test]
fn a_second_instance_takes_over_half_the_partitions_without_losing_windows() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(4).collect();
    let scenario = Scenario::new(4);
    let broker = &scenario.broker;
    // Stream the input at about 800 records/s, so the rebalance happens mid-stream.
    let feeder = stream_series(&broker.brokers, &series, 50, Duration::from_millis(250));
    let expected = expected_windows(&series);
    // A short session timeout, so the group notices membership changes quickly.
    let extra = "[scoring]\nmax_batch = 8\n[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n";
    let mut first = scenario.launch("a", "pair", extra);
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.metric("anomalyd_windows_scored_total").unwrap_or(0.0) < 500.0 {
        assert!(
            Instant::now() < deadline,
            "no progress; log:\n{}",
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second instance joins: the group rebalances and the first hands partitions over.
    let mut second = scenario.launch("b", "pair", extra);
    let mut scores = scenario.reader("scores");
    feeder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        scores.catch_up();
        let seen: BTreeSet<(i32, i64)> = score_sources(&scores).into_iter().collect();
        if expected.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} windows scored; logs:\n{}\n{}",
            seen.len(),
            expected.len(),
            first.log_text(),
            second.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let by_second = second.metric("anomalyd_windows_scored_total").unwrap();
    let duplicates = score_sources(&scores).len() - expected.len();
    println!(
        "rebalance: {} windows, none missing, {duplicates} scored twice; the second instance scored {by_second}",
        expected.len()
    );
    if std::env::var_os("SHOW_LOGS").is_some() {
        println!(
            "first:\n{}\nsecond:\n{}",
            first.log_text(),
            second.log_text()
        );
    }
    assert!(by_second > 0.0, "the second instance got no partitions");
    assert!(first.log_text().contains("partitions revoked"));
    for daemon in [&mut first, &mut second] {
        daemon.signal(libc::SIGTERM);
        daemon.assert_clean_exit(Duration::from_secs(30));
    }
}
