//! The daemon against a real Kafka-protocol broker (librdkafka's mock
//! cluster, in this process) with the real binary as a child process:
//! end to end, delivery across a crash, dead letters, metrics, readiness,
//! config checking and graceful shutdown.

use super::delivery_support::*;
use super::kafka_support::*;
use anomalyd::demo::feed::record_json;
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
    let broker = start_broker(&all_topics(2));
    let dir = tempfile::tempdir().unwrap();
    // A week of 15-minute samples, as in the demo (the data has daily cycles).
    let calibration = "[detector.calibration]\nmethod = \"likelihood\"\nwarm_up = 672\n";
    let mut daemon = DaemonProcess::launch(dir.path(), &broker.brokers, "e2e", "e2e", calibration);
    produce_series(&broker.brokers, &[&clean, &anomalous]);
    let expected = expected_windows(&[&clean, &anomalous]);
    let mut scores = TopicReader::new(&broker.brokers, "scores", 1);
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
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());

    // The scores equal offline `anomalyd score` on the same rows.
    let csv = dir.path().join("rows.csv");
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
    let offline = dir.path().join("offline.csv");
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
    let mut alerts = TopicReader::new(&broker.brokers, "alerts", 1);
    alerts.catch_up();
    let opened: Vec<serde_json::Value> = alerts
        .json()
        .into_iter()
        .filter(|m| m["event"] == "opened")
        .collect();
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
    let broker = start_broker(&all_topics(4));
    let dir = tempfile::tempdir().unwrap();
    produce_series(&broker.brokers, &series);
    let expected = expected_windows(&series);
    let mut scores = TopicReader::new(&broker.brokers, "scores", 1);
    let mut alerts = TopicReader::new(&broker.brokers, "alerts", 1);

    // First run: killed (SIGKILL) halfway through. Commits follow the
    // entity checkpoints: frequent ones, and small batches that make the run
    // last longer, give the check more commits to see.
    let extra = "[scoring]\nmax_batch = 2\n[state]\ncheckpoint_interval_ms = 200\n";
    let first = DaemonProcess::launch(dir.path(), &broker.brokers, "first", "delivery", extra);
    let half = expected.len() as f64 / 2.0;
    let checks_first = check_commits_never_pass_unacknowledged_outputs(
        &broker.brokers,
        "delivery",
        4,
        &expected,
        &mut scores,
        &mut alerts,
        |_| first.metric("anomalyd_windows_scored_total").unwrap_or(0.0) >= half,
    );
    first.signal(libc::SIGKILL);
    drop(first);
    let committed_at_crash = committed(&broker.brokers, "delivery", "input", 4);

    // Second run: picks up from the committed offsets.
    let mut second =
        DaemonProcess::launch(dir.path(), &broker.brokers, "second", "delivery", extra);
    let deadline = Instant::now() + Duration::from_secs(120);
    let checks_second = check_commits_never_pass_unacknowledged_outputs(
        &broker.brokers,
        "delivery",
        4,
        &expected,
        &mut scores,
        &mut alerts,
        |scores| {
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
    assert!(second.wait_exit(Duration::from_secs(30)).unwrap().success());
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
    // topics, so a few are all a two-second run allows.)
    assert!(
        snapshots.len() >= 3,
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
fn malformed_records_go_to_the_dead_letter_topic_with_reasons() {
    let data = data();
    let s = &data.series[0];
    let broker = start_broker(&all_topics(1));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = DaemonProcess::launch(
        dir.path(),
        &broker.brokers,
        "dlq",
        "dlq",
        "[input]\nmax_record_bytes = 4096\n",
    );
    let producer = producer(&broker.brokers);
    let bad: Vec<(&str, String)> = vec![
        ("bad_json", "{\"entity\": ".to_string()),
        ("too_large", format!("{{\"entity\": \"{}\"}}", "x".repeat(5000))),
        ("empty_payload", String::new()),
        ("not_utf8", String::from_utf8_lossy(b"\xff").into_owned()),
        ("missing_entity", r#"{"ts": 1767225600000, "values": {}}"#.to_string()),
        ("bad_timestamp", r#"{"entity": "x", "ts": "noon", "values": {}}"#.to_string()),
        ("timestamp_out_of_range", r#"{"entity": "x", "ts": 12, "values": {}}"#.to_string()),
        ("missing_channel", r#"{"entity": "x", "ts": 1767225600000, "values": {"temperature": 1}}"#.to_string()),
        (
            "non_numeric",
            r#"{"entity": "x", "ts": 1767225600000, "values": {"temperature": "warm", "pressure": 1, "flow": 1, "vibration": 1, "power": 1}}"#.to_string(),
        ),
        (
            "non_finite",
            r#"{"entity": "x", "ts": 1767225600000, "values": {"temperature": "NaN", "pressure": 1, "flow": 1, "vibration": 1, "power": 1}}"#.to_string(),
        ),
    ];
    let mut sent_bad: BTreeMap<&str, usize> = BTreeMap::new();
    for row in 0..200 {
        send(
            &producer,
            "input",
            0,
            &s.entity,
            record_json(s, row).as_bytes(),
        );
        if row == 150 {
            // The same event time again: a duplicate, set aside as out of order.
            send(
                &producer,
                "input",
                0,
                &s.entity,
                record_json(s, row).as_bytes(),
            );
            *sent_bad.entry("out_of_order").or_default() += 1;
        }
        if row % 20 == 5 {
            let (reason, payload) = &bad[(row / 20) % bad.len()];
            let bytes: Vec<u8> = if *reason == "not_utf8" {
                vec![0xff, 0xfe, b'{']
            } else {
                payload.clone().into_bytes()
            };
            send(&producer, "input", 0, "k", &bytes);
            *sent_bad.entry(reason).or_default() += 1;
        }
    }
    // A duplicate of an earlier row: out of order for its entity.
    send(
        &producer,
        "input",
        0,
        &s.entity,
        record_json(s, 10).as_bytes(),
    );
    *sent_bad.entry("out_of_order").or_default() += 1;
    flush(&producer);
    let total_bad: usize = sent_bad.values().sum();
    let mut dead = TopicReader::new(&broker.brokers, "dead-letters", 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while dead.records.len() < total_bad {
        assert!(
            Instant::now() < deadline,
            "{} of {total_bad} dead letters",
            dead.records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
        dead.catch_up();
    }
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for record in &dead.records {
        let reason = record
            .headers
            .iter()
            .find(|(k, _)| k == "anomalyd-reason")
            .map(|(_, v)| v.clone())
            .expect("a reason header");
        assert!(record
            .headers
            .iter()
            .any(|(k, v)| k == "anomalyd-source" && v.starts_with("input/0/")));
        // The original key travels with the dead letter.
        let key = record.key.as_deref().expect("the original key");
        assert!(key == "k" || key == s.entity, "{key}");
        *by_reason.entry(reason).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        sent_bad.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(by_reason, expected);
    // The counters match, and the valid records were all decoded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let consumed = daemon.metric("anomalyd_records_consumed_total").unwrap();
        if consumed as usize == 200 + total_bad || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (reason, count) in &expected {
        let metric = daemon
            .metric(&format!(
                "anomalyd_records_rejected_total{{reason=\"{reason}\"}}"
            ))
            .unwrap();
        assert_eq!(metric as usize, *count, "{reason}");
    }
    // Duplicates and out-of-order records decode; the entity sets them aside.
    assert_eq!(
        daemon.metric("anomalyd_records_decoded_total").unwrap() as usize,
        200 + sent_bad["out_of_order"]
    );
    println!("dead letters by reason: {by_reason:?}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
}

#[test]
fn metrics_pass_promtool_and_readyz_follows_the_broker() {
    let data = data();
    let broker = start_broker(&all_topics(1));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = DaemonProcess::launch(dir.path(), &broker.brokers, "ops", "ops", "");
    // Until the group has assigned partitions it is not ready, and says why.
    let (status, body) = http_get(daemon.admin, "/readyz").unwrap();
    if status == 503 {
        assert!(body.contains("not ready"), "{body}");
    }
    daemon.wait_ready(Duration::from_secs(30));
    assert_eq!(http_get(daemon.admin, "/healthz").unwrap().0, 200);
    produce_series(&broker.brokers, &[&data.series[0].slice(0, 300)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon
        .metric("anomalyd_windows_scored_total")
        .unwrap_or(0.0)
        < (300 - WINDOW + 1) as f64
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Lag comes from the client statistics, once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, metrics) = http_get(daemon.admin, "/metrics").unwrap();
        if metrics.contains("anomalyd_consumer_lag{") || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for name in [
        "anomalyd_records_consumed_total",
        "anomalyd_records_decoded_total",
        "anomalyd_records_rejected_total",
        "anomalyd_windows_scored_total",
        "anomalyd_window_score_bucket",
        "anomalyd_alert_events_total",
        "anomalyd_scorer_batch_size_bucket",
        "anomalyd_scorer_batch_seconds_bucket",
        "anomalyd_end_to_end_latency_seconds_bucket",
        "anomalyd_consumer_lag",
        "anomalyd_entities_active",
        "anomalyd_entities_warming",
        "anomalyd_entities_evicted_total",
        "anomalyd_alerts_open",
        "anomalyd_model_info",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    match which("promtool") {
        Some(promtool) => {
            let mut child = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(metrics.as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            println!("promtool check metrics: OK");
        }
        None => {
            assert!(
                std::env::var_os("ANOMALYD_REQUIRE_PROMTOOL").is_none(),
                "promtool is required (ANOMALYD_REQUIRE_PROMTOOL is set) but not installed"
            );
            println!("SKIPPED promtool check: promtool is not installed (Debian package `prometheus`; .ci/run installs it)");
        }
    }
    // The broker goes away: not ready; it comes back: ready again.
    broker.cluster.broker_down(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(daemon.admin, "/readyz").unwrap();
        if status == 503 {
            assert!(body.contains("broker"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 with the broker down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.cluster.broker_up(1).unwrap();
    daemon.wait_ready(Duration::from_secs(60));
    daemon.signal(libc::SIGTERM);
    // While it drains, /readyz is 503; then it exits 0.
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

#[test]
fn check_config_names_the_bad_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let good = daemon_config("localhost:9092", "g", 9464, "");
    let (code, _, stdout) = run("good.toml", &good);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("OK"));
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/anomalyd.toml");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["check-config", shipped])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let (code, stderr, _) = run("unknown.toml", &format!("{good}\n[windows]\nstrid = 2\n"));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("strid"), "{stderr}");
    let (code, stderr, _) = run(
        "invalid.toml",
        &format!("{good}\n[scoring]\nmax_batch = 0\n"),
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("scoring.max_batch"), "{stderr}");
    let (code, stderr, _) = run(
        "type.toml",
        &format!("{good}\n[windows]\nstride = \"two\"\n"),
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("stride"), "{stderr}");
}

#[test]
fn sigterm_under_load_exits_zero_within_the_grace_period_with_offsets_committed() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().collect();
    let broker = start_broker(&all_topics(6));
    let dir = tempfile::tempdir().unwrap();
    produce_series(&broker.brokers, &series);
    let expected = expected_windows(&series);
    let grace = "[shutdown]\ngrace_period_s = 10\n";
    let mut daemon = DaemonProcess::launch(dir.path(), &broker.brokers, "term", "term", grace);
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon
        .metric("anomalyd_windows_scored_total")
        .unwrap_or(0.0)
        < 2000.0
    {
        assert!(
            Instant::now() < deadline,
            "no load; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .expect("exited within the grace period");
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        daemon.log_text()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let committed = committed(&broker.brokers, "term", "input", 6);
    let scored = {
        let mut scores = TopicReader::new(&broker.brokers, "scores", 1);
        scores.catch_up();
        score_sources(&scores).into_iter().collect::<BTreeSet<_>>()
    };
    for &(p, offset) in &expected {
        if offset < committed[p as usize] {
            assert!(
                scored.contains(&(p, offset)),
                "partition {p} committed at {} without the score of {offset}",
                committed[p as usize]
            );
        }
    }
    assert!(
        committed.iter().all(|&c| c > 0),
        "offsets not committed: {committed:?}"
    );
    assert!(daemon.log_text().contains("anomalyd stopped"));
    println!(
        "SIGTERM under load: exit 0 after {took:?}; committed {committed:?}; {} windows scored",
        scored.len()
    );
}

#[test]
fn sighup_reloads_a_good_model_and_refuses_a_bad_one_while_scoring_goes_on() {
    let data = data();
    let broker = start_broker(&all_topics(1));
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    std::fs::copy(format!("{models}/default.onnx"), &model).unwrap();
    std::fs::copy(
        format!("{models}/default.json"),
        dir.path().join("model.json"),
    )
    .unwrap();
    let extra = format!("[model]\npath = \"{}\"\n", model.display());
    let mut daemon = DaemonProcess::launch(dir.path(), &broker.brokers, "reload", "reload", &extra);
    daemon.wait_ready(Duration::from_secs(30));
    let version = "anomalyd_model_info{version=\"sha256:fd4e3ff9000b2068\"}";
    assert_eq!(daemon.metric(version), Some(1.0));
    let wait_for = |sample: &str, value: f64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.metric(sample).unwrap_or(-1.0) < value {
            assert!(
                Instant::now() < deadline,
                "{sample} never reached {value}; log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let s = &data.series[0];
    produce_series(&broker.brokers, &[&s.slice(0, 200)]);
    wait_for("anomalyd_windows_scored_total", (200 - WINDOW + 1) as f64);

    daemon.signal(libc::SIGHUP);
    wait_for("anomalyd_model_reloads_total{result=\"ok\"}", 1.0);

    // A truncated model file: refused, the old model keeps serving.
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for("anomalyd_model_reloads_total{result=\"refused\"}", 1.0);
    assert_eq!(daemon.metric(version), Some(1.0));
    let producer = producer(&broker.brokers);
    for row in 200..300 {
        send(
            &producer,
            "input",
            0,
            &s.entity,
            record_json(s, row).as_bytes(),
        );
    }
    flush(&producer);
    wait_for("anomalyd_windows_scored_total", (300 - WINDOW + 1) as f64);
    assert!(daemon.log_text().contains("model reload refused"));
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
}

#[test]
fn a_second_instance_takes_over_half_the_partitions_without_losing_windows() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(4).collect();
    let broker = start_broker(&all_topics(4));
    let dir = tempfile::tempdir().unwrap();
    // Stream the input at about 800 records/s, so the rebalance happens mid-stream.
    let feeder = stream_series(&broker.brokers, &series, 50, Duration::from_millis(250));
    let expected = expected_windows(&series);
    // A short session timeout, so the group notices membership changes quickly.
    let extra = "[scoring]\nmax_batch = 8\n[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n";
    let mut first = DaemonProcess::launch(dir.path(), &broker.brokers, "a", "pair", extra);
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
    let mut second = DaemonProcess::launch(dir.path(), &broker.brokers, "b", "pair", extra);
    let mut scores = TopicReader::new(&broker.brokers, "scores", 1);
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
        assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
    }
}

#[test]
fn secrets_and_record_contents_never_reach_output_logs_or_metrics() {
    const SECRET: &str = "s3cret-Pa55word-do-not-print";
    let broker = start_broker(&all_topics(1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    let anomalyd = |command: &str, with_secret: bool| {
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"));
        if command == "run" {
            process.args(["run", "--config"]);
        } else {
            process.arg(command);
        }
        process.arg(&path);
        if with_secret {
            process.env("ANOMALYD_TEST_SECRET", SECRET);
        } else {
            process.env_remove("ANOMALYD_TEST_SECRET");
        }
        let output = process.output().unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), shown)
    };
    let password = "[kafka.properties]\n\"sasl.password\" = \"${ANOMALYD_TEST_SECRET}\"\n";
    std::fs::write(
        &path,
        daemon_config(&broker.brokers, "secrets", free_port(), password),
    )
    .unwrap();
    let (code, shown) = anomalyd("check-config", true);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("sasl.password = ********"), "{shown}");
    assert!(
        !shown.contains(SECRET),
        "check-config printed a secret:\n{shown}"
    );
    // Without the variable, the error names the key and the variable, not a value.
    let (code, shown) = anomalyd("check-config", false);
    assert_eq!(code, Some(64), "{shown}");
    assert!(
        shown.contains("sasl.password") && shown.contains("ANOMALYD_TEST_SECRET"),
        "{shown}"
    );

    // librdkafka refuses this OAuth property in this build (no libcurl), and
    // its error repeats the value: check-config and run must not.
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, format!("{SECRET}-file\n")).unwrap();
    let oauth = format!(
        "[kafka.properties]\n\"sasl.oauthbearer.client.secret\" = \"${{file:{}}}\"\n",
        secret_file.display()
    );
    std::fs::write(
        &path,
        daemon_config(&broker.brokers, "secrets", free_port(), &oauth),
    )
    .unwrap();
    for command in ["check-config", "run"] {
        let (code, shown) = anomalyd(command, true);
        assert_ne!(code, Some(0), "{command}: {shown}");
        assert!(
            shown.contains("sasl.oauthbearer.client.secret"),
            "{command}: {shown}"
        );
        assert!(
            !shown.contains(SECRET),
            "{command} printed a secret:\n{shown}"
        );
        if command == "check-config" {
            assert_eq!(code, Some(64), "{shown}");
        }
    }

    // The daemon's own log at debug level, with a property librdkafka takes.
    let port = free_port();
    std::fs::write(
        &path,
        daemon_config(&broker.brokers, "secrets", port, password),
    )
    .unwrap();
    let log = dir.path().join("secrets.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["run", "--config"])
        .arg(&path)
        .env("ANOMALYD_TEST_SECRET", SECRET)
        .env("ANOMALYD_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(admin, "/readyz"), Some((200, _))) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A record whose entity and values must not reach /metrics.
    let producer = producer(&broker.brokers);
    let record = r#"{"entity": "private-entity-7731", "ts": 1767225600000, "values": {"temperature": 1234.5678, "pressure": 1, "flow": 1, "vibration": 1, "power": 1}}"#;
    send(&producer, "input", 0, "private-key-7731", record.as_bytes());
    flush(&producer);
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (_, body) = http_get(admin, "/metrics").unwrap();
        if metric_value(&body, "anomalyd_records_decoded_total") == Some(1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the record was not decoded:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for private in [
        SECRET,
        "private-entity-7731",
        "private-key-7731",
        "1234.5678",
    ] {
        assert!(!metrics.contains(private), "/metrics shows {private}");
    }
    // The admin listener is bound to the configured address only (loopback
    // here, not every interface), and nothing it serves changes state.
    assert!(
        listening_sockets(port).iter().all(|a| a == "0100007F"),
        "bound to {:?}",
        listening_sockets(port)
    );
    for (request, status) in [
        ("POST /metrics", 405),
        ("PUT /readyz", 405),
        ("DELETE /healthz", 405),
        ("POST /reload", 404),
        ("GET /debug", 404),
    ] {
        assert_eq!(http_status(admin, request), Some(status), "{request}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(
        text.contains("sasl.password"),
        "the log should show the key (masked):\n{text}"
    );
    assert!(!text.contains(SECRET), "the log holds a secret:\n{text}");
}

/// The local IPv4 addresses (as /proc/net/tcp writes them) listening on `port`.
fn listening_sockets(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let wanted = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, local_port) = fields.get(1)?.split_once(':')?;
            // State 0A is LISTEN.
            (local_port == wanted && fields.get(3) == Some(&"0A")).then(|| address.to_string())
        })
        .collect()
}

/// The status of a request line such as `POST /metrics`, sent with an empty body.
fn http_status(address: std::net::SocketAddr, request: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{request} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn tls_and_sasl_configs_pass_check_config() {
    // The shipped example, with its password file and brokers supplied.
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("kafka-password");
    std::fs::write(&password, "scram-secret-4412\n").unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/kafka-tls-sasl.toml"
    ))
    .unwrap()
    .replace(
        "/run/secrets/kafka-password",
        &password.display().to_string(),
    );
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .arg("check-config")
            .arg(&path)
            .env("KAFKA_BROKERS", "kafka-1:9093,kafka-2:9093")
            .output()
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), shown)
    };
    let (code, shown) = check("tls-sasl.toml", &example);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("SASL_SSL"), "{shown}");
    assert!(!shown.contains("scram-secret-4412"), "{shown}");
    // Mutual TLS and the other SASL mechanisms are accepted too.
    for (mechanism, protocol) in [
        ("PLAIN", "SASL_SSL"),
        ("SCRAM-SHA-256", "SASL_SSL"),
        ("SCRAM-SHA-512", "SASL_PLAINTEXT"),
    ] {
        let text = example
            .replace("SCRAM-SHA-512", mechanism)
            .replace("\"SASL_SSL\"", &format!("\"{protocol}\""));
        let (code, shown) = check("variant.toml", &text);
        assert_eq!(code, Some(0), "{mechanism} over {protocol}: {shown}");
    }
    let mutual = daemon_config(
        "kafka-1:9093",
        "g",
        9464,
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.endpoint.identification.algorithm\" = \"https\"\n",
    );
    let (code, shown) = check("mtls.toml", &mutual);
    assert_eq!(code, Some(0), "{shown}");
    // A misspelt protocol is named.
    let (code, shown) = check("bad.toml", &example.replace("\"SASL_SSL\"", "\"SASL_TLS\""));
    assert_eq!(code, Some(64), "{shown}");
    assert!(shown.contains("security.protocol"), "{shown}");
}
