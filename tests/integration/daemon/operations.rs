//! Running the daemon: metrics and readiness, config checking, graceful
//! shutdown on SIGTERM and model reload on SIGHUP.

use super::super::delivery_support::*;
use super::super::kafka_support::*;
use anomalyd::demo::feed::record_json;
use anomalyd::series::Series;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[test]
fn metrics_pass_promtool_and_readyz_follows_the_broker() {
    let data = data();
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    let mut daemon = scenario.launch("ops", "ops", "");
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
        "anomalyd_calibrated_score_bucket",
        "anomalyd_alert_events_total",
        "anomalyd_model_batch_size_bucket",
        "anomalyd_model_batch_seconds_bucket",
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
    daemon.assert_clean_exit(Duration::from_secs(30));
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
    let scenario = Scenario::new(6);
    let broker = &scenario.broker;
    produce_series(&broker.brokers, &series);
    let expected = expected_windows(&series);
    let grace = "[shutdown]\ngrace_period_s = 10\n";
    let mut daemon = scenario.launch("term", "term", grace);
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
        let mut scores = scenario.reader("scores");
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
    // Every partition the daemon scored a window of has its offset
    // committed past that window. (Under this load a partition may not be
    // reached at all before the signal; then there is nothing to commit.)
    let mut newest_scored = vec![-1i64; committed.len()];
    for &(p, offset) in &scored {
        newest_scored[p as usize] = newest_scored[p as usize].max(offset);
    }
    assert!(
        committed
            .iter()
            .zip(&newest_scored)
            .all(|(&c, &newest)| newest < 0 || c > newest),
        "offsets not committed past the scored windows: committed {committed:?}, newest scored {newest_scored:?}"
    );
    assert!(
        committed.iter().filter(|&&c| c > 0).count() >= 2,
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
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    let model = scenario.dir.path().join("model.onnx");
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    std::fs::copy(format!("{models}/default.onnx"), &model).unwrap();
    std::fs::copy(
        format!("{models}/default.json"),
        scenario.dir.path().join("model.json"),
    )
    .unwrap();
    let extra = format!("[model]\npath = \"{}\"\n", model.display());
    let mut daemon = scenario.launch("reload", "reload", &extra);
    daemon.wait_ready(Duration::from_secs(30));
    let version = "anomalyd_model_info{version=\"sha256:6d901e0cb581c7bb\"}";
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
    daemon.assert_clean_exit(Duration::from_secs(30));
}

/// Stops two members of one group a moment apart, so the second is told to
/// stop while the group rebalances after the first left. Each must leave
/// the group and exit 0: librdkafka aborts (`rd_kafka_cgrp_terminated:
/// assert: !rd_kafka_assignment_in_progress`) if the consumer is closed
/// while a revoke is still being served.
#[test]
fn members_stopped_during_a_rebalance_exit_cleanly() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(4).collect();
    let scenario = Scenario::new(4);
    let broker = &scenario.broker;
    let extra = "[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"100\"\n";
    for (round, gap_ms) in [0u64, 50, 150, 400, 1000, 100].into_iter().enumerate() {
        let feeder = stream_series(&broker.brokers, &series, 200, Duration::from_millis(20));
        let group = format!("stop-{round}");
        let mut first = scenario.launch(&format!("a{round}"), &group, extra);
        let mut second = scenario.launch(&format!("b{round}"), &group, extra);
        first.wait_ready(Duration::from_secs(60));
        second.wait_ready(Duration::from_secs(60));
        first.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(gap_ms));
        second.signal(libc::SIGTERM);
        first.assert_clean_exit(Duration::from_secs(30));
        second.assert_clean_exit(Duration::from_secs(30));
        feeder.join().unwrap();
    }
}
