//! What the benchmarks share: a model of the shape (4 channels ×
//! 64 samples), trained once by the benchmark itself and cached, and a
//! counting allocator.

#![allow(dead_code)] // each bench uses part of it

pub mod counting;

use anomalyd::export::write_artefact;
use anomalyd::recipe::ModelRecipe;
use anomalyd::serve::Scorer;
use anomalyd::synthetic::{generate, SyntheticConfig};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

/// Channels of the benchmark model and data.
pub const CHANNELS: usize = 4;

/// Where benchmarks keep what they make (`target/bench`).
pub fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench")
}

/// The default architecture and recipe trained for 2 epochs on 4 channels
/// of the generated machines: real weights of the right shape (throughput
/// and memory do not depend on how well it is trained). Trained on first
/// use (about 10 s), then loaded from `target/bench/bench4.onnx`, unless
/// the network or its exporter changed since (`bench4.sources` keeps a hash
/// of their sources): a benchmark of a new exporter must not run the old
/// one's graph. Returns the file (for a daemon's config) and the loaded model.
pub fn four_channel_model() -> (PathBuf, Scorer) {
    model_of(CHANNELS)
}

/// [`four_channel_model`] with `channels` channels (`target/bench/bench{channels}.onnx`).
pub fn model_of(channels: usize) -> (PathBuf, Scorer) {
    let dir = bench_dir();
    let name = format!("bench{channels}");
    let path = dir.join(format!("{name}.onnx"));
    let stamp = dir.join(format!("{name}.sources"));
    let sources = model_sources_hash();
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == sources) {
        if let Ok(scorer) = Scorer::load(&path) {
            return (path, scorer);
        }
    }
    eprintln!(
        "training the {channels}-channel benchmark model (2 epochs) into {}",
        dir.display()
    );
    let data = generate(&SyntheticConfig {
        channels,
        days: 7,
        ..Default::default()
    });
    let mut recipe = ModelRecipe {
        name: name.clone(),
        ..Default::default()
    };
    recipe.training.max_epochs = 2;
    let built = recipe
        .build(
            &data.clean_part(),
            &format!("generated machines, {channels} channels, 7 days"),
        )
        .expect("the benchmark model trains");
    let path = write_artefact(&built.artefact, &dir).expect("target/bench is writable");
    std::fs::write(&stamp, &sources).expect("target/bench is writable");
    let scorer = Scorer::load(&path).expect("the model just written loads");
    (path, scorer)
}

/// A hash of the sources that decide the benchmark model's graph: the
/// network, its exporter and the recipe.
fn model_sources_hash() -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    [
        include_str!("../../src/train/network.rs"),
        include_str!("../../src/export/onnx.rs"),
        include_str!("../../src/export/onnx/gapped.rs"),
        include_str!("../../src/export/onnx/graph.rs"),
        include_str!("../../src/recipe.rs"),
    ]
    .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
