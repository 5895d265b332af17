//! Memory per entity: the daemon's entity table (`EntityTable`, checkpoint
//! mode, the default detector settings, window 64 and stride 8) holding
//! 10,000 and 100,000 entities of 4 channels, each at its steady state.
//!
//! Steady state means a full calibration history, which takes 8,640 scores,
//! i.e. 69,120 samples per entity at stride 8: too many to stream into
//! 100,000 entities here. So one entity is grown from scratch through the
//! daemon's own path (admit, score with tract, decide) for 80,000 samples,
//! checkpointed, and every other entity is restored from that checkpoint, as
//! a restarted daemon restores them, then fed 16 more samples (two scored
//! windows each). To check that restoring does not hide growth, 100
//! entities are also grown from scratch (8 M samples, about 40 s). Live heap bytes are counted by a counting allocator; RSS is
//! read from `/proc/self/statm`. Prints JSON lines.
//! `cargo bench --bench entity_memory -- [--entities N,N,...]`.

#[path = "support/mod.rs"]
mod support;

use anomalyd::daemon::config::WindowConfig;
use anomalyd::daemon::entities::{Admission, EntityState, EntityTable};
use anomalyd::daemon::ledger::{LedgerBatch, Partition, SourceOffset};
use anomalyd::daemon::source::decode::Sample;
use anomalyd::daemon::state::Checkpoint;
use anomalyd::detect::{DetectorConfig, PendingWindow};
use anomalyd::serve::Scorer;
use anomalyd::synthetic::{generate, SyntheticConfig};
use std::sync::Arc;
use std::time::Instant;
use support::counting::{live_bytes, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Resident set size in bytes.
fn rss_bytes() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Streams rows into the table through the daemon's path: admit, score the
/// completed windows with tract (batches of up to 64), decide.
struct Feeder<'a> {
    scorer: &'a Scorer,
    partition: Partition,
    pending: Vec<(String, PendingWindow)>,
    windows: usize,
}

impl Feeder<'_> {
    fn admit(&mut self, table: &mut EntityTable, entity: &str, offset: i64, ms: i64, row: &[f32]) {
        let sample = Sample {
            entity: entity.into(),
            timestamp_ms: ms,
            values: row.into(),
        };
        let source = SourceOffset {
            partition: self.partition.clone(),
            offset,
        };
        let mut ledger = LedgerBatch::detached();
        match table.admit(self.scorer, &sample, &source, Instant::now(), &mut ledger) {
            Admission::Accepted {
                window: Some(window),
                ..
            } => {
                self.pending.push((sample.entity.to_string(), window));
                if self.pending.len() == 64 {
                    self.flush(table);
                }
            }
            Admission::Accepted { window: None, .. } => {}
            other => panic!("sample {offset} of {entity} not accepted: {other:?}"),
        }
    }

    fn flush(&mut self, table: &mut EntityTable) {
        let windows: Vec<_> = self.pending.iter().map(|(_, p)| p.window.clone()).collect();
        let scores = self
            .scorer
            .score_normalised_windows(&windows)
            .expect("tract scores");
        for ((entity, pending), score) in self.pending.drain(..).zip(&scores) {
            let state = table.get_mut(&entity).expect("admitted");
            state.detector.decide(self.scorer, &pending, score);
        }
        self.windows += scores.len();
    }
}

fn main() -> anyhow::Result<()> {
    let mut counts = vec![10_000usize, 100_000];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--entities" => {
                counts = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|n| n.parse())
                    .collect::<Result<_, _>>()?;
            }
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let (_, scorer) = support::four_channel_model();
    let metadata = scorer.metadata();
    assert_eq!(metadata.channels.len(), support::CHANNELS);
    let data = generate(&SyntheticConfig {
        channels: support::CHANNELS,
        ..Default::default()
    });
    let machine = &data.series[0];
    let step_ms = machine.timestamps[1] - machine.timestamps[0];
    let row = |i: usize| machine.row(i % machine.len());
    let window = WindowConfig {
        stride: 8,
        max_entities: counts.iter().copied().max().unwrap_or(0).max(1),
        ..Default::default()
    };
    let detector = DetectorConfig::default();
    let table = || EntityTable::new(window.clone(), detector.clone(), metadata.window_len, true);
    let mut feeder = Feeder {
        scorer: &scorer,
        partition: Partition {
            topic: Arc::from("bench"),
            partition: 0,
        },
        pending: Vec::new(),
        windows: 0,
    };
    let entity_name = |i: usize| format!("machine-{i:06}");

    // Warm tract's buffers first, so they do not count as entity state.
    let mut warm = table();
    for i in 0..(metadata.window_len + 64 * 8) {
        feeder.admit(&mut warm, "warm", i as i64, i as i64 * step_ms, row(i));
    }
    feeder.flush(&mut warm);
    drop(warm);

    // 100 entities grown from scratch to a full calibration history, their
    // samples interleaved as on a topic.
    let grown_entities = 100;
    let grown_samples = 80_000;
    let before = live_bytes();
    let mut grown = table();
    let started = Instant::now();
    for i in 0..grown_samples {
        for e in 0..grown_entities {
            feeder.admit(
                &mut grown,
                &entity_name(e),
                i as i64,
                i as i64 * step_ms,
                row(i + e),
            );
        }
    }
    feeder.flush(&mut grown);
    let grown_bytes = (live_bytes() - before) as f64 / grown_entities as f64;
    let mut writes = grown.checkpoint(None, scorer.model_version());
    let checkpoint_bytes = writes
        .iter()
        .filter_map(|w| w.payload.as_ref())
        .map(Vec::len)
        .sum::<usize>() as f64
        / writes.len() as f64;
    let checkpoint = writes.pop().and_then(|w| w.payload).expect("checkpoints");
    println!(
        "{{\"entities\": {grown_entities}, \"how\": \"grown\", \"samples_each\": {grown_samples}, \"windows_scored\": {}, \"seconds\": {:.1}, \"live_heap_bytes_per_entity\": {grown_bytes:.0}, \"checkpoint_bytes\": {checkpoint_bytes:.0}, \"entity_state_inline_bytes\": {}}}",
        feeder.windows,
        started.elapsed().as_secs_f64(),
        std::mem::size_of::<EntityState>(),
    );
    drop(grown);
    let template = Checkpoint::decode(&checkpoint).map_err(anyhow::Error::msg)?;

    for &count in &counts {
        let before_live = live_bytes();
        let before_rss = rss_bytes();
        let started = Instant::now();
        let mut entities = table();
        for chunk_start in (0..count).step_by(10_000) {
            let checkpoints: Vec<Checkpoint> = (chunk_start..(chunk_start + 10_000).min(count))
                .map(|i| Checkpoint {
                    entity: entity_name(i),
                    ..template.clone()
                })
                .collect();
            let restored = entities.restore(checkpoints, &scorer, Instant::now());
            assert_eq!(restored.refused, 0);
        }
        // Two more windows each, as live entities get.
        for extra in 1..=16 {
            let offset = template.through_offset + extra;
            let ms = template.last_ms + extra * step_ms;
            for i in 0..count {
                feeder.admit(
                    &mut entities,
                    &entity_name(i),
                    offset,
                    ms,
                    row(extra as usize),
                );
            }
        }
        feeder.flush(&mut entities);
        assert_eq!(entities.len(), count);
        let live = live_bytes() - before_live;
        let rss = rss_bytes() - before_rss;
        println!(
            "{{\"entities\": {count}, \"how\": \"restored\", \"live_heap_bytes_per_entity\": {:.0}, \"rss_bytes_per_entity\": {:.0}, \"window_values_bytes\": {}, \"seconds\": {:.1}}}",
            live as f64 / count as f64,
            rss as f64 / count as f64,
            scorer.window_size() * 4,
            started.elapsed().as_secs_f64()
        );
        drop(entities);
    }
    Ok(())
}
