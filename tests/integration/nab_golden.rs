//! The NAB scorer reproduces the published scores of two detectors from their per-row outputs.

use anomalyd::evaluate::nab::corpus::read_series;
use anomalyd::evaluate::nab::{optimise_threshold, Corpus, FileRows};
use std::path::{Path, PathBuf};

/// The shared NAB folder, or `None` (with a visible message) where it is absent.
pub fn shared_nab() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/nab");
    if root.join("labels/combined_windows.json").exists() {
        Some(root)
    } else {
        eprintln!(
            "SKIPPED: {} is absent; the NAB tests need the shared corpus",
            root.display()
        );
        None
    }
}

fn golden_rows(corpus: &Corpus, detector: &str) -> Vec<FileRows> {
    corpus
        .files
        .iter()
        .map(|file| {
            let path = corpus
                .root
                .join("golden")
                .join(detector)
                .join(&file.category)
                .join(format!("{detector}_{}.csv", file.name));
            let (timestamps, scores) = read_series(&path).expect("golden file reads");
            assert_eq!(timestamps, file.timestamps, "{}", path.display());
            FileRows::new(file, scores)
        })
        .collect()
}

fn check(detector: &str, expected: [(f64, f64, f64); 3]) {
    let Some(root) = shared_nab() else { return };
    let corpus = Corpus::load(&root).unwrap();
    assert_eq!(corpus.files.len(), 58);
    assert_eq!(corpus.window_count(), 116);
    let rows = golden_rows(&corpus, detector);
    for (profile, (threshold, raw, normalised)) in corpus.profiles.iter().zip(expected) {
        let best = optimise_threshold(&rows, profile);
        println!(
            "{detector} {}: threshold {} raw {:.4} score {:.2}",
            profile.name, best.threshold, best.raw, best.normalised
        );
        assert!(
            (best.threshold - threshold).abs() < 1e-9,
            "{detector} {}: threshold {} != {threshold}",
            profile.name,
            best.threshold
        );
        assert!(
            (best.raw - raw).abs() < 1e-3,
            "{}: raw {}",
            profile.name,
            best.raw
        );
        assert!(
            (best.normalised - normalised).abs() < 0.005,
            "{detector} {}: {:.4} != {normalised}",
            profile.name,
            best.normalised
        );
    }
}

#[test]
fn numenta_htm_scores_as_published() {
    let t = 0.543099145074;
    check(
        "numenta",
        [
            (t, 46.6345, 70.10),
            (t, 30.6453, 63.21),
            (t, 26.6345, 74.32),
        ],
    );
}

#[test]
fn artime_scores_as_published() {
    check(
        "ARTime",
        [
            (0.317486, 57.6608, 74.85),
            (0.317585, 35.1573, 65.15),
            (0.317486, 47.6608, 80.36),
        ],
    );
}

#[test]
fn the_null_detector_scores_zero() {
    let Some(root) = shared_nab() else { return };
    let corpus = Corpus::load(&root).unwrap();
    let rows: Vec<FileRows> = corpus
        .files
        .iter()
        .map(|f| FileRows::new(f, vec![0.5; f.values.len()]))
        .collect();
    for profile in &corpus.profiles {
        let best = optimise_threshold(&rows, profile);
        assert_eq!(best.threshold, 1.1);
        assert_eq!(best.normalised, 0.0);
    }
}
