//! Heap allocations per record on the hot path, after warm-up, counted by a
//! counting global allocator (calls to `alloc`, `alloc_zeroed` and
//! `realloc`; librdkafka's own C allocations are not Rust's and not
//! counted). The records are the end-to-end bench's: 1,000 entities × 4
//! channels, about 138 bytes of JSON each, window 64, stride 8.
//!
//! - **decode**: the consumer thread's `Decoder::decode`, record → sample.
//! - **consumer**: all of the consumer thread's part after librdkafka: the
//!   record's hold in the offset ledger, decode, and the sample with its
//!   original record into the batch sent to the scorer (256 per batch); the
//!   batch's holds are released when it is full (in the daemon they live
//!   until their window is decided or checkpointed, so the ledger's B-tree
//!   holds more offsets than here).
//! - **entities and model**: the scorer thread's path for those samples:
//!   `EntityTable::admit`, the model on batches of 64 windows (one thread),
//!   `EntityDetector::decide`. Not the outputs' messages (they need a sink).
//!
//! Each is measured over 200 samples per entity after 200 of warm-up (every
//! entity has its first windows and calibration history). Prints JSON lines.
//! `cargo bench --bench allocations`.

#[path = "support/mod.rs"]
mod support;

use anomalyd::daemon::config::{InputConfig, WindowConfig};
use anomalyd::daemon::entities::{Admission, EntityTable};
use anomalyd::daemon::ledger::{Ledger, LedgerBatch, Partition, SourceOffset};
use anomalyd::daemon::scoring::SampleBatch;
use anomalyd::daemon::source::decode::{Decoder, Sample};
use anomalyd::detect::{DetectorConfig, PendingWindow};
use anomalyd::serve::Scorer;
use anomalyd::synthetic::{generate, SyntheticConfig};
use std::sync::Arc;
use std::time::Instant;
use support::counting::{allocations, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTITIES: usize = 1_000;
const WARM_UP: usize = 200;
const MEASURED: usize = 200;
const BATCH: usize = 64;

/// One record of every entity per step, as JSON, in the end-to-end bench's shape.
fn records(channels: &[String], steps: std::ops::Range<usize>) -> Vec<(String, String)> {
    let data = generate(&SyntheticConfig {
        channels: channels.len(),
        ..Default::default()
    });
    let mut records = Vec::new();
    for step in steps {
        for entity in 0..ENTITIES {
            let machine = &data.series[entity % data.series.len()];
            let row = machine.row((entity * 37 + step) % machine.len());
            let values: Vec<String> = channels
                .iter()
                .zip(row)
                .map(|(name, v)| format!("\"{name}\":{v}"))
                .collect();
            let key = format!("machine-{entity:04}");
            let ts = 1_700_000_000_000i64 + step as i64 * 900_000;
            let json = format!(
                "{{\"entity\":\"{key}\",\"ts\":{ts},\"values\":{{{}}}}}",
                values.join(",")
            );
            records.push((key, json));
        }
    }
    records
}

/// Allocations of the scorer thread's path, by step.
#[derive(Debug, Default)]
struct ScoringAllocations {
    /// Windows scored.
    windows: usize,
    /// `EntityTable::admit`: the window's values and its pending rows.
    admit: u64,
    /// The model on batches of [`BATCH`] windows: tract's run and the
    /// scorer's per-window results.
    model: u64,
    /// `EntityDetector::decide`.
    decide: u64,
}

/// The scorer thread's path for `samples`: admit, model in batches, decide.
fn score(
    table: &mut EntityTable,
    scorer: &Scorer,
    samples: &[Sample],
    first: i64,
) -> ScoringAllocations {
    let partition = Partition {
        topic: Arc::from("bench"),
        partition: 0,
    };
    let mut pending: Vec<(usize, PendingWindow)> = Vec::with_capacity(BATCH);
    let mut counts = ScoringAllocations::default();
    let mut ledger = LedgerBatch::detached();
    let flush = |table: &mut EntityTable,
                 pending: &mut Vec<(usize, PendingWindow)>,
                 counts: &mut ScoringAllocations| {
        let before = allocations();
        let scores = scorer
            .score_normalised_windows(pending.iter().map(|(_, p)| &p.window))
            .expect("tract scores");
        let scored = allocations();
        for ((index, window), scored) in pending.drain(..).zip(&scores) {
            let state = table.get_mut(&samples[index].entity).expect("admitted");
            state.detector.decide(scorer, &window, scored);
        }
        counts.model += scored - before;
        counts.decide += allocations() - scored;
        counts.windows += scores.len();
    };
    for (index, sample) in samples.iter().enumerate() {
        let source = SourceOffset {
            partition: partition.clone(),
            offset: first + index as i64,
        };
        let before = allocations();
        let admission = table.admit(scorer, sample, &source, Instant::now(), &mut ledger);
        counts.admit += allocations() - before;
        match admission {
            Admission::Accepted {
                window: Some(window),
                ..
            } => {
                pending.push((index, window));
                if pending.len() == BATCH {
                    flush(table, &mut pending, &mut counts);
                }
            }
            Admission::Accepted { window: None, .. } => {}
            other => panic!("sample {index} not accepted: {other:?}"),
        }
        ledger.clear();
    }
    flush(table, &mut pending, &mut counts);
    counts
}

/// The consumer thread's allocations per record over `measured`, after
/// `warm`: hold, decode, batch.
fn consumer_path(
    decoder: &Decoder,
    warm: &[(String, String)],
    measured: &[(String, String)],
) -> f64 {
    let ledger = Ledger::default();
    let partitions: Vec<Partition> = (0..64)
        .map(|partition| Partition {
            topic: Arc::from("input"),
            partition,
        })
        .collect();
    let mut batch = SampleBatch::default();
    let mut run = |records: &[(String, String)], first: usize| {
        for (index, (key, json)) in records.iter().enumerate() {
            let offset = (first + index) as i64;
            let hold = ledger.hold(SourceOffset {
                partition: partitions[index % partitions.len()].clone(),
                offset,
            });
            let sample = decoder
                .decode(Some(json.as_bytes()), Some(key.as_bytes()), i64::MAX / 2)
                .expect("decodes")
                .pop()
                .expect("one sample");
            batch.push(
                smallvec::smallvec![(sample, hold)],
                Some(offset),
                Some(key.as_bytes()),
                json.as_bytes(),
            );
            if batch.len() == 256 {
                // Sent; the scorer's releases are counted in its path, so
                // these are released here.
                ledger.release_all(batch.take().into_holds());
            }
        }
    };
    run(warm, 0);
    let before = allocations();
    run(measured, warm.len());
    (allocations() - before) as f64 / measured.len() as f64
}

fn main() -> anyhow::Result<()> {
    let (_, scorer) = support::four_channel_model();
    let channels = scorer.metadata().channels.clone();
    let decoder = Decoder::new(&InputConfig::default(), 946_684_800_000, &channels);
    let decode_all = |records: &[(String, String)]| -> Vec<Sample> {
        records
            .iter()
            .map(|(key, json)| {
                decoder
                    .decode(Some(json.as_bytes()), Some(key.as_bytes()), i64::MAX / 2)
                    .expect("decodes")
                    .pop()
                    .expect("one sample")
            })
            .collect()
    };
    let warm = records(&channels, 0..WARM_UP);
    let measured = records(&channels, WARM_UP..WARM_UP + MEASURED);
    let warm_samples = decode_all(&warm);

    // Decode: the samples are kept (as the consumer hands them on), so
    // that freeing them is not in the count either way.
    let mut kept = Vec::with_capacity(measured.len());
    let before = allocations();
    for (key, json) in &measured {
        kept.push(
            decoder
                .decode(Some(json.as_bytes()), Some(key.as_bytes()), i64::MAX / 2)
                .expect("decodes")
                .pop()
                .expect("one sample"),
        );
    }
    let decode = (allocations() - before) as f64 / measured.len() as f64;
    println!(
        "{{\"path\": \"decode\", \"records\": {}, \"allocations_per_record\": {decode:.2}}}",
        measured.len()
    );

    let consumer = consumer_path(&decoder, &warm, &measured);
    println!(
        "{{\"path\": \"consumer\", \"records\": {}, \"allocations_per_record\": {consumer:.3}}}",
        measured.len()
    );

    let window = WindowConfig {
        stride: 8,
        max_entities: ENTITIES,
        ..Default::default()
    };
    let mut table = EntityTable::new(
        window,
        DetectorConfig::default(),
        scorer.metadata().window_len,
        true,
    );
    score(&mut table, &scorer, &warm_samples, 0);
    let before = allocations();
    let counts = score(&mut table, &scorer, &kept, warm_samples.len() as i64);
    let scoring = allocations() - before;
    let per_window = |count: u64| count as f64 / counts.windows as f64;
    println!(
        "{{\"path\": \"entities and model\", \"records\": {}, \"windows\": {}, \"allocations_per_record\": {:.2}, \"allocations_per_window\": {:.1}, \"per_window\": {{\"admit\": {:.2}, \"model\": {:.2}, \"decide\": {:.2}}}}}",
        kept.len(),
        counts.windows,
        scoring as f64 / kept.len() as f64,
        per_window(scoring),
        per_window(counts.admit),
        per_window(counts.model),
        per_window(counts.decide),
    );
    Ok(())
}
