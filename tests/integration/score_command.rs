//! The `anomalyd score` and `train` commands, run as the real binary.

use super::common::{small_data, written_model};
use std::process::Command;

fn anomalyd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anomalyd"))
}

#[test]
fn score_writes_one_row_per_input_row_and_empty_scores_until_the_first_window() {
    let (dir, model) = written_model();
    let input = dir.path().join("input.csv");
    let test = small_data().test_part();
    // Two entities interleaved row by row: each has its own windows.
    let mut csv = String::from("timestamp,entity,flow,temperature,vibration,pressure\n");
    let rows = 100;
    for row in 0..rows {
        for s in &test[..2] {
            let v = s.row(row);
            csv += &format!(
                "{},{},{},{},{},{}\n",
                s.timestamps[row], s.entity, v[2], v[0], v[3], v[1]
            );
        }
    }
    std::fs::write(&input, csv).unwrap();
    let out = dir.path().join("scores.csv");
    let status = anomalyd()
        .args([
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--entity-column",
            "entity",
            "--batch-size",
            "16",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "timestamp,entity,score,temperature_contribution,pressure_contribution,flow_contribution,vibration_contribution");
    assert_eq!(lines.len(), 1 + 2 * rows);
    let scored: Vec<bool> = lines[1..]
        .iter()
        .map(|l| !l.split(',').nth(2).unwrap().is_empty())
        .collect();
    // Window 64: each entity's first score is at its 64th row, i.e. output row 2*63 (+1 for the second entity).
    assert!(scored[..126].iter().all(|s| !s));
    assert!(scored[126..].iter().all(|s| *s));
}

#[test]
fn score_refuses_an_input_without_the_model_channels() {
    let (dir, model) = written_model();
    let input = dir.path().join("input.csv");
    std::fs::write(&input, "timestamp,temperature\n2026-01-01 00:00:00,1.0\n").unwrap();
    let output = anomalyd()
        .args([
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
        .args(["--out", dir.path().join("o.csv").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("channel mismatch") && stderr.contains("pressure"),
        "{stderr}"
    );
}

#[test]
fn train_command_writes_the_artefact_and_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let status = anomalyd()
        .args([
            "generate",
            "--out",
            dir.path().to_str().unwrap(),
            "--entities",
            "2",
            "--channels",
            "3",
            "--days",
            "8",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let models = dir.path().join("models");
    let output = anomalyd()
        .args([
            "train",
            "--input",
            dir.path().join("train.csv").to_str().unwrap(),
        ])
        .args([
            "--entity-column",
            "entity",
            "--channels",
            "temperature,pressure,flow",
        ])
        .args([
            "--out-dir",
            models.to_str().unwrap(),
            "--name",
            "tiny",
            "--max-epochs",
            "2",
            // No floor of optimiser steps: exactly the two epochs asked for.
            "--min-steps",
            "0",
            "--train-stride",
            "4",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["tiny.onnx", "tiny.json", "tiny.loss.csv", "tiny.loss.svg"] {
        assert!(models.join(file).exists(), "{file} missing");
    }
    let curve = std::fs::read_to_string(models.join("tiny.loss.csv")).unwrap();
    assert_eq!(curve.lines().count(), 1 + 2, "{curve}");
    assert!(std::fs::read_to_string(models.join("tiny.loss.svg"))
        .unwrap()
        .contains("<svg"));
}

#[test]
fn a_missing_file_and_a_bad_width_are_each_named_once() {
    let missing = anomalyd()
        .args(["train", "--input", "/nonexistent/anomalyd-train.csv"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("/nonexistent/anomalyd-train.csv"),
        "{stderr}"
    );
    // The I/O error once, not again after the message that names it.
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");

    // The widths are checked before the corpus is read.
    let width = anomalyd()
        .args([
            "eval",
            "nab",
            "--data",
            "/nonexistent",
            "--out",
            "/nonexistent",
        ])
        .args(["--widths", "16,x"])
        .output()
        .unwrap();
    assert!(!width.status.success());
    let stderr = String::from_utf8_lossy(&width.stderr);
    assert!(stderr.contains("--widths: \"x\""), "{stderr}");
}
