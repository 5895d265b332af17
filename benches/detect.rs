//! `anomalyd detect` throughput on an 8-channel CSV, beside `anomalyd score`
//! on the same file in the same run: rows per second of each (both are one
//! thread), and their ratio. `detect` runs at the model's default stride (8)
//! and at stride 1, the stride `score` always uses.
//!
//! `cargo bench --bench detect -- [--rows N] [--rounds R]` (default 200,000
//! rows of 80 entities, 3 rounds, alternating). Prints one JSON object per
//! run and a summary object with the medians and ratios.

use anomalyd::recipe::ModelRecipe;
use anomalyd::synthetic::{generate, SyntheticConfig};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a whole number"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Seconds one run of the binary with `args` takes.
fn timed(args: &[&str], dir: &Path) -> f64 {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("anomalyd runs");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    seconds
}

fn main() {
    let rows = arg("--rows", 200_000);
    let rounds = arg("--rounds", 3).max(1);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let per_entity = 2688;
    let data = generate(&SyntheticConfig {
        entities: rows.div_ceil(per_entity),
        channels: 8,
        ..Default::default()
    });
    // The file: entities interleaved row by row, as a stream would bring them.
    let channels = &data.series[0].channels;
    let mut text = format!("timestamp,entity,{}\n", channels.join(","));
    let mut written = 0;
    'rows: for r in 0..per_entity {
        for s in &data.series {
            if written == rows {
                break 'rows;
            }
            let values: Vec<String> = s.row(r).iter().map(|v| v.to_string()).collect();
            text += &format!("{},{},{}\n", s.timestamps[r], s.entity, values.join(","));
            written += 1;
        }
    }
    std::fs::write(dir.path().join("input.csv"), text).expect("input written");
    // A model of those channels (how well it is trained does not change its speed).
    let mut recipe = ModelRecipe {
        name: "bench8".into(),
        ..Default::default()
    };
    recipe.training.max_epochs = 1;
    recipe.training.min_steps = 0;
    let built = recipe
        .build(&data.clean_part()[..1], "bench")
        .expect("the model trains");
    anomalyd::export::write_artefact(&built.artefact, dir.path()).expect("model written");
    let stride = built.artefact.metadata.default_stride.to_string();
    let runs: [(&str, Vec<&str>); 3] = [
        (
            "detect_default_stride",
            vec![
                "detect",
                "--quiet",
                "--model",
                "bench8.onnx",
                "--input",
                "input.csv",
                "--out",
                "rows.csv",
                "--stride",
                &stride,
            ],
        ),
        (
            "detect_stride_1",
            vec![
                "detect",
                "--quiet",
                "--model",
                "bench8.onnx",
                "--input",
                "input.csv",
                "--out",
                "rows.csv",
                "--stride",
                "1",
            ],
        ),
        (
            "score",
            vec![
                "score",
                "--model",
                "bench8.onnx",
                "--input",
                "input.csv",
                "--out",
                "scores.csv",
                "--entity-column",
                "entity",
            ],
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for round in 0..rounds {
        for (i, (name, args)) in runs.iter().enumerate() {
            let seconds = timed(args, dir.path());
            let rate = written as f64 / seconds;
            rates[i].push(rate);
            println!(
                "{}",
                serde_json::json!({"round": round, "run": name, "rows": written, "seconds": seconds, "rows_per_s": rate})
            );
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    println!(
        "{}",
        serde_json::json!({
            "summary": "median rows/s over the rounds (whole process: start, model load, read, detect, write)",
            "rows": written,
            "channels": 8,
            "model_default_stride": built.artefact.metadata.default_stride,
            "detect_default_stride_rows_per_s": medians[0],
            "detect_stride_1_rows_per_s": medians[1],
            "score_rows_per_s": medians[2],
            "detect_default_stride_over_score": medians[0] / medians[2],
            "detect_stride_1_over_score": medians[1] / medians[2],
        })
    );
}
