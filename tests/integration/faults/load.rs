//! Load faults: input far faster than scoring (memory, lag, drain) and model
//! reloads while records flow; bad models refused at start.

use super::*;
use anomalyd::model::ModelMetadata;
use rdkafka::producer::Producer;
use std::path::{Path, PathBuf};

/// Partitions and entities of the overload test.
const OVERLOAD_PARTITIONS: i32 = 8;
const ENTITIES_PER_PARTITION: usize = 40;
/// Rows per entity of the first backlog; the second is twice as long.
const FIRST_BACKLOG_ROWS: usize = 250;

/// One overload record: entity `e`, row `row`, five smooth channels.
fn overload_record(entity: &str, row: usize) -> String {
    let t = row as f64 / 24.0;
    format!(
        r#"{{"entity": "{entity}", "ts": {}, "values": {{"temperature": {:.3}, "pressure": {:.3}, "flow": {:.3}, "vibration": {:.3}, "power": {:.3}}}}}"#,
        1_767_225_600_000i64 + row as i64 * 60_000,
        60.0 + 5.0 * t.sin(),
        3.0 + 0.2 * (t * 1.3).cos(),
        12.0 + (t * 0.7).sin(),
        0.4 + 0.05 * (t * 3.1).sin(),
        8.0 + 0.5 * t.cos()
    )
}

/// What one backlog did to the daemon.
struct Backlog {
    records: usize,
    bytes: usize,
    produced_per_second: f64,
    peak_lag: f64,
    drain_seconds: f64,
    peak_rss: u64,
}

/// Produces `rows` of every entity as fast as the client can, then waits
/// until the daemon has scored `windows_before` plus the new windows, and
/// its lag is back to 0.
fn backlog(
    brokers: &str,
    daemon: &DaemonProcess,
    rows: std::ops::Range<usize>,
    windows_after: usize,
) -> Backlog {
    let producer = producer(brokers);
    let started = Instant::now();
    let (mut records, mut bytes) = (0, 0);
    for row in rows {
        for p in 0..OVERLOAD_PARTITIONS {
            for e in 0..ENTITIES_PER_PARTITION {
                let entity = format!("machine-{p}-{e}");
                let record = overload_record(&entity, row);
                bytes += record.len();
                records += 1;
                send(&producer, "input", p, &entity, record.as_bytes());
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let produced_per_second = records as f64 / started.elapsed().as_secs_f64();
    let mut peak_lag = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        peak_lag = peak_lag.max(daemon.metric_sum("anomalyd_consumer_lag"));
        let scored = daemon
            .metric("anomalyd_windows_scored_total")
            .unwrap_or(0.0);
        if scored as usize >= windows_after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{scored} of {windows_after} windows scored; log:\n{}",
            daemon.log_text()
        );
        assert!(daemon.peak_rss_bytes().is_some(), "the daemon died");
        std::thread::sleep(Duration::from_millis(200));
    }
    let drain_seconds = started.elapsed().as_secs_f64();
    // The lag gauge comes from the client statistics (every second): it drains to 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.metric_sum("anomalyd_consumer_lag") > 0.0 {
        assert!(Instant::now() < deadline, "the lag never came back to 0");
        std::thread::sleep(Duration::from_millis(200));
    }
    Backlog {
        records,
        bytes,
        produced_per_second,
        peak_lag,
        drain_seconds,
        peak_rss: daemon.peak_rss_bytes().unwrap(),
    }
}

#[test]
fn overload_keeps_memory_bounded_reports_lag_and_drains() {
    let topics = [
        ("input", OVERLOAD_PARTITIONS),
        ("anomalyd-state", OVERLOAD_PARTITIONS),
        ("alerts", 1),
        ("scores", 1),
        ("dead-letters", 1),
    ];
    let broker = start_broker(&topics);
    let dir = tempfile::tempdir().unwrap();
    // Memory is bounded by librdkafka's prefetch (queued.max.messages.kbytes,
    // lowered here from its 64 MiB default) and by scoring.queue_capacity.
    // Entity state grows with each score until the calibration history is
    // full (and checkpoints with it): a short history fills during the first
    // backlog, so what the second adds is what the backlog itself costs.
    let extra = "[kafka.consumer_properties]\n\"queued.max.messages.kbytes\" = \"1024\"\n\
                 [detector.calibration]\nmethod = \"likelihood\"\nhistory = 150\n";
    let mut daemon =
        DaemonProcess::launch(dir.path(), &broker.brokers, "overload", "overload", extra);
    daemon.wait_ready(Duration::from_secs(30));
    let idle_rss = daemon.peak_rss_bytes().unwrap();
    let entities = OVERLOAD_PARTITIONS as usize * ENTITIES_PER_PARTITION;
    let windows_of = |rows: usize| (rows - WINDOW + 1) * entities;
    // A backlog, then one twice as large: if the daemon held its backlog, its
    // peak memory would grow with it.
    let first_rows = FIRST_BACKLOG_ROWS;
    let all_rows = 3 * FIRST_BACKLOG_ROWS;
    let first = backlog(
        &broker.brokers,
        &daemon,
        0..first_rows,
        windows_of(first_rows),
    );
    let second = backlog(
        &broker.brokers,
        &daemon,
        first_rows..all_rows,
        windows_of(all_rows),
    );
    // (The scores topic outgrows what the mock broker keeps: count
    // acknowledgements, which trail the last scores by a few milliseconds.)
    super::wait_for_metric(
        &daemon,
        "anomalyd_produced_total{output=\"scores\"}",
        windows_of(all_rows) as f64,
        Duration::from_secs(20),
    );
    let scored = daemon.metric("anomalyd_windows_scored_total").unwrap() as usize;
    let acknowledged = daemon
        .metric("anomalyd_produced_total{output=\"scores\"}")
        .unwrap() as usize;
    let windows = windows_of(all_rows);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for (name, b) in [("first", &first), ("second", &second)] {
        println!(
            "overload, {name} backlog: {} records ({:.1} MiB) produced at {:.0}/s; peak lag {} records; drained {:.1} s after the first record ({:.0} records/s); peak RSS {:.1} MiB",
            b.records,
            mib(b.bytes as u64),
            b.produced_per_second,
            b.peak_lag,
            b.drain_seconds,
            b.records as f64 / b.drain_seconds,
            mib(b.peak_rss)
        );
    }
    println!(
        "reliability | overload: backlogs of {} then {} records | windows {windows} | scored {scored} | scores acknowledged {acknowledged} | RSS idle {:.1} MiB, peak {:.1} MiB after the first backlog, {:.1} MiB after the second",
        first.records,
        second.records,
        mib(idle_rss),
        mib(first.peak_rss),
        mib(second.peak_rss)
    );
    assert_eq!(scored, windows, "every window scored once");
    assert_eq!(acknowledged, windows, "every score acknowledged once");
    // The lag gauge follows the client statistics (once a second, from the
    // partitions' fetch state): it must show each backlog, and most of the larger one.
    assert!(
        first.peak_lag > 0.0 && second.peak_lag > 0.0,
        "no lag reported"
    );
    assert!(
        second.peak_lag > (second.records / 4) as f64,
        "the input was not produced faster than it was scored (peak lag {})",
        second.peak_lag
    );
    // Bounded: doubling the backlog adds far less than its size to the peak.
    let growth = second.peak_rss.saturating_sub(first.peak_rss);
    assert!(
        growth < second.bytes as u64 / 4,
        "the peak RSS grew by {:.1} MiB with a backlog of {:.1} MiB",
        mib(growth),
        mib(second.bytes as u64)
    );
    daemon.signal(libc::SIGTERM);
    daemon.assert_clean_exit(Duration::from_secs(30));
}

/// A model's ONNX bytes and metadata JSON.
type ModelFiles = (Vec<u8>, String);

/// The shipped model's two files.
fn shipped_model() -> ModelFiles {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    (
        std::fs::read(format!("{models}/default.onnx")).unwrap(),
        std::fs::read_to_string(format!("{models}/default.json")).unwrap(),
    )
}

/// The shipped model with one output bias changed by `edit`, its metadata
/// version recomputed when `reversion` (a retrained model) or left (tampered).
fn edited_model(
    edit: impl FnOnce(&mut tract_onnx::pb::TensorProto),
    reversion: bool,
) -> ModelFiles {
    use prost::Message;
    let (onnx, json) = shipped_model();
    let mut model = tract_onnx::pb::ModelProto::decode(onnx.as_slice()).unwrap();
    let bias = model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == "decoder.output.bias")
        .expect("the output bias is an initializer");
    edit(bias);
    let onnx = model.encode_to_vec();
    let mut metadata = ModelMetadata::from_json(&json, "shipped").unwrap();
    if reversion {
        metadata.model_version = metadata.compute_version(&onnx);
    }
    (onnx, serde_json::to_string_pretty(&metadata).unwrap())
}

/// Writes a model's two files at `path` (ONNX) and beside it (JSON), the way
/// a deployment would: each written aside and renamed into place.
fn install_model(path: &Path, (onnx, json): &ModelFiles) {
    let json_path = path.with_extension("json");
    for (target, bytes) in [
        (path.to_path_buf(), onnx.as_slice()),
        (json_path, json.as_bytes()),
    ] {
        let aside = target.with_extension("tmp");
        std::fs::write(&aside, bytes).unwrap();
        std::fs::rename(&aside, &target).unwrap();
    }
}

/// The bad models: (what is wrong, the files, what the refusal must say).
fn bad_models() -> Vec<(&'static str, ModelFiles, &'static str)> {
    let (onnx, json) = shipped_model();
    vec![
        (
            "truncated",
            (onnx[..onnx.len() / 2].to_vec(), json.clone()),
            "is not a usable ONNX model",
        ),
        (
            "NaN weights",
            edited_model(|b| b.float_data[0] = f32::NAN, true),
            "weights are not finite",
        ),
        (
            "wrong shapes",
            edited_model(
                |b| {
                    b.dims[0] += 3;
                    b.float_data.extend([0.0; 3]);
                },
                true,
            ),
            "is not a usable ONNX model",
        ),
        (
            "changed after export",
            edited_model(|b| b.float_data[0] += 0.01, false),
            "changed after export",
        ),
    ]
}

#[test]
fn a_bad_model_is_refused_at_start_before_it_serves() {
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    for (what, files, says) in bad_models() {
        let path = scenario.dir.path().join("model.onnx");
        install_model(&path, &files);
        let port = free_port();
        let config = daemon_config(
            &broker.brokers,
            "bad-model",
            port,
            &format!("[model]\npath = \"{}\"\n", path.display()),
        );
        let config_path = scenario.dir.path().join("bad-model.toml");
        std::fs::write(&config_path, config).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .args(["run", "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // EX_DATAERR: the model is refused; restarting will not help.
        assert_eq!(output.status.code(), Some(65), "{what}: {stderr}");
        assert!(stderr.contains(says), "{what}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{what}: {stderr}"
        );
        assert!(
            http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/healthz").is_none(),
            "{what}: the admin port answers"
        );
        println!("refused at start ({what}): exit {:?}", output.status.code());
    }
}

#[test]
fn models_swap_under_load_without_losing_or_rescoring_windows() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(2).collect();
    let scenario = Scenario::new(2);
    let broker = &scenario.broker;
    let path: PathBuf = scenario.dir.path().join("model.onnx");
    let shipped = shipped_model();
    let retrained = edited_model(|b| b.float_data[0] += 0.01, true);
    install_model(&path, &shipped);
    let extra = format!("[model]\npath = \"{}\"\n", path.display());
    let mut daemon = scenario.launch("swap", "swap", &extra);
    daemon.wait_ready(Duration::from_secs(30));
    // About 400 records/s: the swaps land while records flow.
    let feeder = stream_series(&broker.brokers, &series, 20, Duration::from_millis(100));
    let mut progress = 300.0;
    let mut step = |daemon: &DaemonProcess| {
        wait_for_metric(
            daemon,
            "anomalyd_windows_scored_total",
            progress,
            Duration::from_secs(60),
        );
        progress += 400.0;
    };
    let reload = |daemon: &DaemonProcess, result: &str, count: f64| {
        daemon.signal(libc::SIGHUP);
        wait_for_metric(
            daemon,
            &format!("anomalyd_model_reloads_total{{result=\"{result}\"}}"),
            count,
            Duration::from_secs(30),
        );
    };
    step(&daemon);
    install_model(&path, &retrained);
    reload(&daemon, "ok", 1.0);
    let mut refused = 0.0;
    for (what, files, says) in bad_models() {
        step(&daemon);
        install_model(&path, &files);
        refused += 1.0;
        reload(&daemon, "refused", refused);
        let log = daemon.log_text();
        assert!(log.contains(says), "{what}: {log}");
    }
    step(&daemon);
    install_model(&path, &shipped);
    reload(&daemon, "ok", 2.0);
    feeder.join().unwrap();
    let expected = expected_windows(&series);
    let mut scores = scenario.reader("scores");
    let mut alerts = scenario.reader("alerts");
    wait_for_every_window(&mut scores, &expected, Duration::from_secs(120), &[&daemon]);
    assert_every_alert_event_delivered(&daemon, &mut alerts);
    let tally = Tally::count(record_count(&series), &expected, &mut scores, &mut alerts);
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for message in scores.json() {
        *by_version
            .entry(message["model_version"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    tally.report(
        "SIGHUP: 2 good models and 4 bad ones while records flow",
        &format!("windows per model version {by_version:?}; 2 reloads ok, {refused} refused"),
    );
    assert_eq!(tally.missing, 0);
    assert_eq!(tally.duplicates, 0, "a swap re-scored windows");
    assert_eq!(by_version.len(), 2, "both models scored: {by_version:?}");
    daemon.signal(libc::SIGTERM);
    daemon.assert_clean_exit(Duration::from_secs(30));
}
