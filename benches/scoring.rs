//! Scoring throughput of the tract scorer on the shipped model: windows per
//! second of the network alone (the part onnxruntime can also run) and of the
//! whole scorer (network plus the hybrid distance), for several batch sizes,
//! on one and on two threads. Prints one JSON object per measurement.
//!
//! `benches/scoring.sh` runs it beside onnxruntime on the same ONNX file and
//! the same windows (`--inputs FILE` writes them, f32 little-endian,
//! `[count, channels, window_len]`, normalised) and prints the ratios.
//! Alone: `cargo bench --bench scoring -- [--inputs FILE] [--seconds S] [--model ONNX]`
//! (default `models/default.onnx`).

use anomalyd::serve::Scorer;
use anomalyd::synthetic::{generate, SyntheticConfig};
use anomalyd::window::windows_of_rows;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BATCHES: [usize; 5] = [1, 8, 32, 128, 512];

/// Normalised windows of the demo's generated machines, as the daemon feeds them.
fn windows(scorer: &Scorer, count: usize) -> Vec<f32> {
    let metadata = scorer.metadata();
    let data = generate(&SyntheticConfig {
        channels: metadata.channels.len(),
        ..Default::default()
    });
    let size = scorer.window_size();
    let mut out = Vec::with_capacity(count * size);
    'series: for series in &data.series {
        let (values, _) = windows_of_rows(
            &series.values,
            series.channels.len(),
            metadata.window_len,
            1,
        );
        for window in values.chunks(size) {
            let mut window = window.to_vec();
            scorer.normalise(&mut window);
            out.extend_from_slice(&window);
            if out.len() == count * size {
                break 'series;
            }
        }
    }
    assert_eq!(out.len(), count * size, "not enough generated windows");
    out
}

/// Runs `work(batch index)` on `threads` threads for about `seconds`;
/// returns the batches done per second.
fn rate(threads: usize, seconds: f64, work: &(dyn Fn(usize) + Sync)) -> f64 {
    let deadline = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let done: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut n = 0;
                    while started.elapsed() < deadline {
                        work(t + n * threads);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    done as f64 / started.elapsed().as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut inputs: Option<PathBuf> = None;
    let mut seconds = 2.0;
    let mut model = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.onnx"));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--inputs" => inputs = args.next().map(PathBuf::from),
            "--seconds" => seconds = args.next().unwrap_or_default().parse()?,
            "--model" => model = args.next().map(PathBuf::from).unwrap_or(model),
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let scorer = Scorer::load(&model)?;
    let size = scorer.window_size();
    let max_batch = *BATCHES.last().unwrap();
    // Distinct windows for each of 4 batches, so caches do not flatter.
    let all = windows(&scorer, 4 * max_batch);
    if let Some(path) = &inputs {
        let bytes: Vec<u8> = all.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes)?;
    }
    for &batch in &BATCHES {
        let slice = |i: usize| {
            let start = (i % 4) * max_batch * size;
            &all[start..start + batch * size]
        };
        for threads in [1, 2] {
            let network = rate(threads, seconds, &|i| {
                scorer.reconstruct_normalised(slice(i), batch).unwrap();
            });
            let whole = rate(threads, seconds, &|i| {
                scorer.score_normalised(slice(i), batch).unwrap();
            });
            println!(
                "{{\"engine\": \"tract\", \"batch\": {batch}, \"threads\": {threads}, \"network_windows_per_s\": {:.1}, \"scorer_windows_per_s\": {:.1}}}",
                network * batch as f64,
                whole * batch as f64
            );
        }
    }
    Ok(())
}
