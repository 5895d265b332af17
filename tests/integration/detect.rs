//! `anomalyd detect` and `eval labelled`, run as the real binary: parity
//! with the daemon (the same records through a Kafka-protocol broker give
//! the same alert events), bad rows, the input formats, and the evaluation
//! of a `;`-separated file with a 0/1 label column.

use super::delivery_support::*;
use super::kafka_support::*;
use anomalyd::demo::feed::record_json;
use anomalyd::series::Series;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn anomalyd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anomalyd"))
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("anomalyd runs");
    assert!(
        output.status.success(),
        "{:?} failed: {}\n{}",
        command,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Events in a comparable order: by entity, input offset, then event kind.
fn sorted(mut events: Vec<Value>) -> Vec<Value> {
    let rank = |e: &Value| match e["event"].as_str() {
        Some("gap") => 0,
        Some("resolved") => 1,
        Some("opened") => 2,
        _ => 3,
    };
    events.sort_by_key(|e| {
        (
            e["entity"].as_str().unwrap_or_default().to_string(),
            e["source"]["offset"].as_i64().unwrap_or_default(),
            rank(e),
        )
    });
    events
}

#[test]
fn detect_gives_the_alert_events_of_the_daemon_on_the_same_records() {
    let data = data();
    // A clean machine and one with anomalies, interleaved row by row on one
    // partition, so that a record's offset is its row in the file.
    let clean = data.series[0].slice(0, data.clean_rows);
    let anomalous = data.series[1].clone();
    let both: [&Series; 2] = [&clean, &anomalous];
    let mut records = Vec::new();
    for row in 0..anomalous.len() {
        for s in both {
            if row < s.len() {
                records.push((s.entity.clone(), record_json(s, row)));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(&all_topics(1));
    // A week of 15-minute samples calibrates (the data has daily cycles).
    let extra = "[detector.calibration]\nmethod = \"likelihood\"\nwarm_up = 672\n";
    let mut daemon = DaemonProcess::launch(dir.path(), &broker.brokers, "parity", "parity", extra);
    let producer = producer(&broker.brokers);
    for (entity, payload) in &records {
        send(&producer, "input", 0, entity, payload.as_bytes());
    }
    flush(&producer);
    let expected: BTreeSet<i64> = (0..records.len() as i64)
        .filter(|&offset| {
            // Every row from each entity's 64th on completes a window.
            let row = offset as usize;
            let entity_row = if row < 2 * clean.len() {
                row / 2
            } else {
                row - clean.len()
            };
            entity_row >= WINDOW - 1
        })
        .collect();
    let mut scores = TopicReader::new(&broker.brokers, "scores", 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        scores.catch_up();
        let seen: BTreeSet<i64> = scores.json().iter().map(|m| source_of(m).1).collect();
        if expected.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} windows scored; log:\n{}",
            seen.len(),
            expected.len(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.signal(libc::SIGTERM);
    daemon.assert_clean_exit(Duration::from_secs(30));
    let mut alerts = TopicReader::new(&broker.brokers, "alerts", 1);
    alerts.catch_up();
    let online = sorted(alerts.json());

    // The same records as a JSON lines file, the same config file.
    let input = dir.path().join("records.jsonl");
    let lines: Vec<&str> = records.iter().map(|(_, r)| r.as_str()).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("rows.csv");
    let events = dir.path().join("events.jsonl");
    let output = run(anomalyd()
        .args(["detect", "--quiet", "--config"])
        .arg(dir.path().join("parity.toml"))
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--alerts")
        .arg(&events));
    let offline = sorted(
        std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    );
    let opened = online.iter().filter(|e| e["event"] == "opened").count();
    println!(
        "daemon: {} alert events ({opened} opened); detect: {} events; {}",
        online.len(),
        offline.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(opened >= 3, "too few alerts to compare: {online:?}");
    assert_eq!(online.len(), offline.len(), "event counts differ");
    for (a, b) in online.iter().zip(&offline) {
        assert_eq!(a, b, "the daemon's event against detect's");
    }
    // One output row per input row, and the alerting rows follow the events.
    let rows: Vec<csv::StringRecord> = csv::Reader::from_path(&out)
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), records.len());
    let opened_rows: BTreeSet<i64> = offline
        .iter()
        .filter(|e| e["event"] == "opened")
        .map(|e| e["source"]["offset"].as_i64().unwrap())
        .collect();
    for offset in opened_rows {
        assert_eq!(&rows[offset as usize][6], "alerting", "row {offset}");
    }
}

/// A `;`-separated 8-channel file with a 0/1 label column and no entity
/// column: the first `clean` rows normal, then a level shift and a noise
/// burst of `length` rows each, with normal rows between and after.
fn write_labelled_file(path: &Path, clean: usize, length: usize) -> usize {
    let mut text = String::from("time;c0;c1;c2;c3;c4;c5;c6;c7;label\n");
    let rows = clean + 4 * length;
    let mut state = 12345u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    for r in 0..rows {
        let phase = r - r.min(clean);
        let shift = phase < length;
        let burst = phase >= 2 * length && phase < 3 * length;
        let label = u8::from(r >= clean && (shift || burst));
        let mut cells = vec![format!("2026-01-01T00:00:00Z")];
        cells[0] =
            anomalyd::series::timestamp::format_timestamp(1_767_225_600_000 + r as i64 * 60_000);
        for c in 0..8 {
            let base = (r as f64 * 0.2 + c as f64).sin() * 2.0 + 10.0 * c as f64;
            let mut v = base + 0.1 * noise();
            if r >= clean && shift && c < 3 {
                v += 6.0;
            }
            if r >= clean && burst {
                v += 4.0 * noise();
            }
            cells.push(format!("{v:.3}").replace('.', ","));
        }
        cells.push(label.to_string());
        text += &cells.join(";");
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    rows
}

#[test]
fn eval_labelled_on_a_semicolon_file_with_zero_one_labels_gives_plausible_figures() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.csv");
    let test = dir.path().join("test.csv");
    write_labelled_file(&train, 900, 0);
    let rows = write_labelled_file(&test, 1500, 250);
    // A few hundred rows train sensibly: early stopping has a floor of steps.
    let output = run(anomalyd()
        .args(["train", "--quiet", "--input"])
        .arg(&train)
        .args([
            "--channels",
            "c0,c1,c2,c3,c4,c5,c6,c7",
            "--timestamp-column",
            "time",
        ])
        .args(["--window-len", "32", "--widths", "8,16", "--out-dir"])
        .arg(dir.path())
        .args(["--name", "m", "--min-steps", "300"]));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("optimiser steps"), "{text}");
    let out = dir.path().join("eval");
    let output = run(anomalyd()
        .args(["eval", "labelled", "--quiet", "--model"])
        .arg(dir.path().join("m.onnx"))
        .arg("--input")
        .arg(&test)
        .args(["--label-column", "label", "--out"])
        .arg(&out));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("1 = anomaly"),
        "the rule is printed: {stdout}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let quality = &summary["quality"];
    assert_eq!(quality["rows"], rows);
    assert_eq!(quality["anomalous_rows"], 500, "0 is not an anomaly kind");
    assert_eq!(quality["events"]["events"], 2);
    let recall = quality["point"]["recall"].as_f64().unwrap();
    let precision = quality["point"]["precision"].as_f64().unwrap();
    let auc = quality["auc_pr"].as_f64().unwrap();
    // Plausible: the shift is found, and the figures are not a degenerate 1.000.
    assert!(
        quality["events"]["caught"].as_u64().unwrap() >= 1,
        "{quality}"
    );
    assert!(recall > 0.1 && precision > 0.3, "{quality}");
    assert!(auc > 0.25 && auc < 1.0, "{quality}");
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(
        html.contains("<table>") && html.contains("entity-0.svg"),
        "{html}"
    );
    assert!(out.join("report/entity-0.svg").exists());
    assert!(!html.contains("<pre>"), "tables as HTML, not text");
}

#[test]
fn bad_rows_are_skipped_counted_and_named_and_every_row_has_an_output_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    let scorer = anomalyd::serve::embedded::default_scorer().unwrap();
    let channels = scorer.metadata().channels.clone();
    let mut text = format!("timestamp,entity,{}\n", channels.join(","));
    for r in 0..200i64 {
        let mut cells = vec![(1_000_000 + r * 60_000).to_string(), "p".into()];
        cells.extend(
            (0..channels.len()).map(|c| format!("{}", 50.0 + c as f64 + (r as f64 * 0.3).sin())),
        );
        match r {
            10 => cells[3] = "abc".into(),
            20 => cells[4] = String::new(),
            30 => cells[0] = (1_000_000 + 29 * 60_000).to_string(),
            40 => cells[2] = "inf".into(),
            50 => cells[0] = "yesterday".into(),
            _ => {}
        }
        text += &cells.join(",");
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("rows.csv");
    let output = run(anomalyd()
        .args(["detect", "--quiet", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out));
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    for expected in [
        "5 skipped",
        "non_numeric 1",
        "missing_channel 1",
        "out_of_order 1",
        "non_finite 1",
        "bad_timestamp 1",
        &format!(
            "row 10 (line 12): column {:?}: \"abc\" is not a number",
            channels[1]
        ),
    ] {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }
    let rows: Vec<csv::StringRecord> = csv::Reader::from_path(&out)
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 200);
    let skipped: Vec<usize> = rows
        .iter()
        .filter(|r| &r[6] == "skipped")
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert_eq!(skipped, [10, 20, 30, 40, 50]);
    assert!(rows[30][rows[30].len() - 1].starts_with("out_of_order"));
    // The first window is the 64th accepted row: row 68, after 5 skips.
    assert!(rows[67][3].is_empty() && !rows[68][3].is_empty());
}

#[test]
fn csv_json_lines_parquet_and_standard_input_give_the_same_rows() {
    use arrow_array::{
        ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    };
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let scorer = anomalyd::serve::embedded::default_scorer().unwrap();
    let channels = scorer.metadata().channels.clone();
    let rows = 150usize;
    let value = |r: usize, c: usize| 40.0 + 3.0 * c as f64 + ((r * (c + 1)) as f64 * 0.1).sin();
    let time = |r: usize| 1_767_225_600_000i64 + r as i64 * 900_000;
    // CSV, tab-separated, no entity column.
    let mut csv = format!("timestamp\t{}\n", channels.join("\t"));
    let mut jsonl = String::new();
    for r in 0..rows {
        let values: Vec<String> = (0..channels.len())
            .map(|c| value(r, c).to_string())
            .collect();
        csv += &format!("{}\t{}\n", time(r), values.join("\t"));
        let object: serde_json::Map<String, Value> = channels
            .iter()
            .enumerate()
            .map(|(c, name)| (name.clone(), Value::from(value(r, c))))
            .collect();
        jsonl += &format!(
            "{}\n",
            serde_json::json!({"ts": anomalyd::series::timestamp::format_timestamp(time(r)), "values": object})
        );
    }
    std::fs::write(dir.path().join("m.tsv"), &csv).unwrap();
    std::fs::write(dir.path().join("m.jsonl"), &jsonl).unwrap();
    let mut columns: Vec<(&str, ArrayRef)> = vec![(
        "timestamp",
        Arc::new(TimestampMillisecondArray::from(
            (0..rows).map(time).collect::<Vec<_>>(),
        )),
    )];
    for (c, name) in channels.iter().enumerate() {
        columns.push((
            name.as_str(),
            Arc::new(Float64Array::from(
                (0..rows).map(|r| value(r, c)).collect::<Vec<_>>(),
            )),
        ));
    }
    columns.push(("note", Arc::new(StringArray::from(vec!["x"; rows]))));
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(dir.path().join("m.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let scores_of = |input: &str, stdin: Option<&str>| -> Vec<String> {
        let mut command = anomalyd();
        command
            .args([
                "detect",
                "--quiet",
                "--entity",
                "m",
                "--source-topic",
                "t",
                "--input",
                input,
            ])
            .current_dir(dir.path());
        let output = match stdin {
            Some(name) => {
                use std::io::Write;
                let mut child = command
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let bytes = std::fs::read(dir.path().join(name)).unwrap();
                // Written from another thread: `detect` writes rows while it
                // reads, and a full stdout pipe would stop it reading.
                let mut stdin = child.stdin.take().unwrap();
                let writer = std::thread::spawn(move || stdin.write_all(&bytes));
                let output = child.wait_with_output().unwrap();
                writer.join().unwrap().unwrap();
                output
            }
            None => command.output().unwrap(),
        };
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .skip(1)
            .map(|line| line.split(',').skip(3).collect::<Vec<_>>().join(","))
            .collect()
    };
    let from_csv = scores_of("m.tsv", None);
    assert_eq!(from_csv.len(), rows);
    assert!(
        from_csv[62].starts_with(",,,warming_up"),
        "{}",
        from_csv[62]
    );
    assert!(
        !from_csv[63].starts_with(','),
        "a score from the 64th row: {}",
        from_csv[63]
    );
    assert_eq!(scores_of("m.jsonl", None), from_csv, "JSON lines");
    assert_eq!(scores_of("m.parquet", None), from_csv, "Parquet");
    assert_eq!(
        scores_of("-", Some("m.tsv")),
        from_csv,
        "CSV on standard input"
    );
    assert_eq!(
        scores_of("-", Some("m.parquet")),
        from_csv,
        "Parquet on standard input"
    );
}

#[test]
fn a_small_file_trains_past_its_epochs_and_without_validation() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("small.csv");
    write_labelled_file(&input, 300, 0);
    let train = |name: &str, validation: &str| -> (String, Value) {
        let output = run(anomalyd()
            .args(["train", "--quiet", "--input"])
            .arg(&input)
            .args([
                "--channels",
                "c0,c1,c2,c3,c4,c5,c6,c7",
                "--timestamp-column",
                "time",
            ])
            .args([
                "--window-len",
                "32",
                "--widths",
                "8,16",
                "--max-epochs",
                "2",
            ])
            .args([
                "--min-steps",
                "40",
                "--validation-fraction",
                validation,
                "--out-dir",
            ])
            .arg(dir.path())
            .args(["--name", name]));
        let metadata = std::fs::read_to_string(dir.path().join(format!("{name}.json"))).unwrap();
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            serde_json::from_str(&metadata).unwrap(),
        )
    };
    // 240 training rows: 209 windows, 4 steps an epoch; 40 steps need 10 epochs, not 2.
    let (stdout, metadata) = train("held", "0.2");
    assert_eq!(metadata["training"]["epochs_run"], 10, "{stdout}");
    assert!(stdout.contains("40 optimiser steps"), "{stdout}");
    // 29 validation windows: too few for quantiles, and it says so.
    assert_eq!(metadata["validation_scores"]["count"], 29);
    assert_eq!(
        metadata["validation_scores"]["quantiles"],
        serde_json::json!([])
    );
    assert!(
        stdout.contains("quantiles  not written: 29 validation windows"),
        "{stdout}"
    );
    // No validation: no early stopping, stated; every epoch runs.
    let (stdout, metadata) = train("all", "0");
    assert!(
        stdout.contains("no validation split: no early stopping"),
        "{stdout}"
    );
    assert_eq!(metadata["training"]["validation_windows"], 0);
    assert!(metadata["training"]["best_validation_loss"].is_null());
    assert_eq!(
        metadata["training"]["epochs_run"], 8,
        "269 windows: 5 steps an epoch"
    );
    // The model serves.
    run(anomalyd()
        .args(["detect", "--quiet", "--model"])
        .arg(dir.path().join("all.onnx"))
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("rows.csv")));
}

#[test]
fn generate_writes_the_layout_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    run(anomalyd()
        .args([
            "generate",
            "--entities",
            "1",
            "--channels",
            "8",
            "--days",
            "4",
        ])
        .args([
            "--delimiter",
            ";",
            "--labels",
            "flags",
            "--no-entity-column",
            "--out",
        ])
        .arg(dir.path()));
    let test = std::fs::read_to_string(dir.path().join("test.csv")).unwrap();
    let mut lines = test.lines();
    let header: Vec<&str> = lines.next().unwrap().split(';').collect();
    assert_eq!(header.len(), 10, "{header:?}");
    assert_eq!((header[0], header[9]), ("timestamp", "anomaly"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(';').collect()).collect();
    assert!(rows
        .iter()
        .all(|r| r.len() == 10 && (r[9] == "0" || r[9] == "1")));
    assert!(rows.iter().any(|r| r[9] == "1"), "some anomalies");
    assert!(rows[0][1].contains(','), "decimal commas: {:?}", rows[0]);
    // Several entities need their column.
    let output = anomalyd()
        .args(["generate", "--entities", "2", "--no-entity-column", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--entities 1"));
}
