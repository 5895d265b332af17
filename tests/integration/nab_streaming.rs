//! The NAB evaluation is streaming: the model sees only the probationary
//! prefix, and changing a future row never changes an earlier score.

use anomalyd::evaluate::nab::corpus::CorpusFile;
use anomalyd::evaluate::nab::run::{nab_recipe, run_file, NabOptions};
use std::path::Path;

/// A daily-cycle series with a little deterministic noise, 5-minute rows.
pub fn cyclic_file(rows: usize) -> CorpusFile {
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let timestamps = (0..rows)
        .map(|i| {
            (start + chrono::Duration::minutes(5 * i as i64))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .collect();
    let values = (0..rows)
        .map(|i| {
            let t = i as f64 / 288.0 * std::f64::consts::TAU;
            50.0 + 10.0 * t.sin() + ((i * 7919) % 13) as f64 * 0.1
        })
        .collect();
    CorpusFile {
        category: "synthetic".into(),
        name: "cyclic".into(),
        timestamps,
        values,
        windows: vec![[700, 760]],
    }
}

/// Quick settings: few epochs, one worker.
pub fn quick_options() -> NabOptions {
    NabOptions {
        recipe: {
            let mut recipe = nab_recipe();
            recipe.training.max_epochs = 4;
            recipe
        },
        workers: 1,
        ..NabOptions::default()
    }
}

#[test]
fn changing_a_future_row_never_changes_an_earlier_score() {
    check_streaming(quick_options());
}

#[test]
fn retraining_on_past_rows_keeps_the_evaluation_streaming() {
    // Retrains at rows 380, 580, 780, ...: the change at 730 enters the
    // training data of the model that starts at 780, never an earlier one.
    check_streaming(NabOptions {
        retrain_every: Some(200),
        retrain_rows: 400,
        ..quick_options()
    });
}

fn check_streaming(options: NabOptions) {
    let file = cyclic_file(1200);
    assert_eq!(file.probationary_rows(), 180);
    let original = run_file(&file, &options).unwrap();
    let changed_row = 730;
    let mut changed = file.clone();
    changed.values[changed_row] += 40.0;
    let altered = run_file(&changed, &options).unwrap();
    // The model depends on the prefix only.
    assert_eq!(original.model_version, altered.model_version);
    // Every score before the change is identical, to the bit.
    assert_eq!(
        original.scores[..changed_row],
        altered.scores[..changed_row],
        "a score before row {changed_row} changed"
    );
    assert_eq!(original.raw[..changed_row], altered.raw[..changed_row]);
    // And the change is seen from its row on (so the comparison can fail).
    assert_ne!(original.raw[changed_row], altered.raw[changed_row]);
    // 90 is beyond the 40..61 the series has shown: the range check fires.
    assert_eq!(altered.decision_scores[changed_row], 1.0);
    let peak = |scores: &[f64]| scores.iter().cloned().fold(0.0, f64::max);
    assert!(
        peak(&altered.scores[changed_row..changed_row + 10])
            > peak(&original.scores[changed_row..changed_row + 10]),
        "the spike raises the calibrated score"
    );
}

#[test]
fn eval_nab_writes_results_nab_can_read() {
    let root = tempfile::tempdir().unwrap();
    let file = cyclic_file(1000);
    let data = root.path().join("data/synthetic");
    std::fs::create_dir_all(&data).unwrap();
    let mut csv = String::from("timestamp,value\n");
    for (t, v) in file.timestamps.iter().zip(&file.values) {
        csv.push_str(&format!("{t},{v}\n"));
    }
    std::fs::write(data.join("cyclic.csv"), csv).unwrap();
    std::fs::create_dir_all(root.path().join("labels")).unwrap();
    std::fs::write(
        root.path().join("labels/combined_windows.json"),
        format!(
            r#"{{"synthetic/cyclic.csv": [["{}.000000", "{}.000000"]]}}"#,
            file.timestamps[700], file.timestamps[760]
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nab_profiles.json"),
        root.path().join("config/profiles.json"),
    )
    .unwrap();
    let out = root.path().join("out");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["eval", "nab", "--epochs", "3", "--workers", "1", "--data"])
        .arg(root.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("| standard |"), "{stdout}");
    let results =
        std::fs::read_to_string(out.join("results/anomalyd/synthetic/anomalyd_cyclic.csv"))
            .unwrap();
    let mut lines = results.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score,label"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[700][3], "1");
    assert_eq!(rows[699][3], "0");
    assert!(rows.iter().all(|r| {
        let s: f64 = r[2].parse().unwrap();
        (0.0..=1.0).contains(&s)
    }));
    assert!(out.join("report/index.html").exists());
    assert!(out.join("report/synthetic_cyclic.svg").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["files"], 1);
}
