//! The entity table's side of entity-state checkpoints: restoring entities
//! from checkpoints, taking checkpoints of the changed ones, and taking back
//! the holds of a checkpoint that could not be written.

use super::{EntityState, EntityTable};
use crate::daemon::ledger::{Hold, Partition};
use crate::daemon::state::{self, Checkpoint, NORMALISED_ROWS_FORMAT};
use crate::serve::Scorer;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// A checkpoint or tombstone to write for an entity, with the holds its
/// acknowledgement releases.
#[derive(Debug)]
pub struct StateWrite {
    /// The entity (the record key).
    pub entity: String,
    /// The input partition number (the checkpoint goes to the same-numbered state partition).
    pub partition: i32,
    /// The encoded checkpoint; `None` for a tombstone (the entity was evicted).
    pub payload: Option<Vec<u8>>,
    /// Offsets held until it is acknowledged.
    pub holds: Vec<Hold>,
}

/// What a restore did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreCounts {
    /// Entities restored.
    pub restored: usize,
    /// Checkpoints refused (another window shape).
    pub refused: usize,
}

impl EntityTable {
    /// Takes restored checkpoints (replacing any state of those entities).
    pub fn restore(
        &mut self,
        checkpoints: Vec<Checkpoint>,
        scorer: &Scorer,
        now: Instant,
    ) -> RestoreCounts {
        let mut counts = RestoreCounts::default();
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        for checkpoint in checkpoints {
            let topic = topics
                .entry(checkpoint.topic.clone())
                .or_insert_with(|| checkpoint.topic.as_str().into())
                .clone();
            let through = checkpoint.source(topic);
            let mut detector = checkpoint.detector;
            match detector.adopt_settings(self.fresh_detector(&checkpoint.entity, scorer)) {
                Ok(mut reset) => {
                    if checkpoint.format_version < NORMALISED_ROWS_FORMAT {
                        // Older formats kept the window's rows raw.
                        detector.normalise_raw_window(scorer);
                    } else if checkpoint.model_version != scorer.model_version() {
                        // Its rows are normalised by a model this daemon no
                        // longer has: the window fills again from new rows.
                        detector.reset_window();
                        reset.push("window (another model normalised it)");
                    }
                    if !reset.is_empty() {
                        tracing::info!(entity = %checkpoint.entity, reset = ?reset, "restored with changed settings: these start afresh");
                    }
                }
                Err(error) => {
                    tracing::warn!(entity = %checkpoint.entity, %error, "checkpoint not restored; the entity warms up again");
                    counts.refused += 1;
                    continue;
                }
            }
            self.entities.insert(
                checkpoint.entity,
                Box::new(EntityState {
                    detector,
                    last_ms: checkpoint.last_ms,
                    last_seen: now,
                    partition: Some(through.partition.clone()),
                    held: VecDeque::new(),
                    unsaved: Vec::new(),
                    through: Some(through.clone()),
                    restored_through: Some(through),
                }),
            );
            counts.restored += 1;
        }
        counts
    }

    /// Checkpoints of the changed entities (of `partitions`, or all), with
    /// the holds each takes over. The entities count as saved from now on.
    pub fn checkpoint(
        &mut self,
        partitions: Option<&[Partition]>,
        model_version: &str,
    ) -> Vec<StateWrite> {
        let mut writes = Vec::new();
        for (entity, state) in &mut self.entities {
            if state.unsaved.is_empty()
                || partitions.is_some_and(|wanted| {
                    state.partition.as_ref().is_none_or(|p| !wanted.contains(p))
                })
            {
                continue;
            }
            let Some(through) = &state.through else {
                continue;
            };
            writes.push(StateWrite {
                entity: entity.clone(),
                partition: through.partition.partition,
                payload: Some(state::encode(
                    entity,
                    through,
                    state.last_ms,
                    model_version,
                    &state.detector,
                )),
                holds: std::mem::take(&mut state.unsaved),
            });
        }
        writes
    }

    /// A checkpoint could not be written: its entity takes the holds back and
    /// is checkpointed again. Returns the holds of an entity no longer here.
    pub fn checkpoint_failed(&mut self, entity: &str, holds: Vec<Hold>) -> Vec<Hold> {
        match self.entities.get_mut(entity) {
            Some(state) => {
                state.unsaved.extend(holds);
                Vec::new()
            }
            None => holds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::WindowConfig;
    use crate::daemon::entities::tests::{sample, source, sources};
    use crate::daemon::entities::Admission;
    use crate::daemon::ledger::LedgerBatch;
    use crate::detect::{DetectorConfig, EntityDetector};
    use crate::serve::embedded::default_scorer;
    use std::time::Duration;

    #[test]
    fn with_checkpoints_one_hold_per_entity_until_a_checkpoint_takes_it() {
        let scorer = default_scorer().unwrap();
        let window_len = scorer.metadata().window_len;
        let mut table = EntityTable::new(
            WindowConfig::default(),
            DetectorConfig::default(),
            window_len,
            true,
        );
        let now = Instant::now();
        let mut ledger = LedgerBatch::detached();
        for i in 0..(window_len as i64 + 5) {
            table.admit(
                &scorer,
                &sample("a", 1000 * i),
                &source(2 * i),
                now,
                &mut ledger,
            );
            table.admit(
                &scorer,
                &sample("b", 1000 * i),
                &source(2 * i + 1),
                now,
                &mut ledger,
            );
        }
        // Only the first sample of each entity is held.
        assert_eq!(ledger.holds(), vec![source(0), source(1)]);
        assert!(ledger.releases().next().is_none());
        let writes = table.checkpoint(None, scorer.model_version());
        assert_eq!(writes.len(), 2);
        let a = writes.iter().find(|w| w.entity == "a").unwrap();
        assert_eq!(sources(&a.holds), vec![source(0)]);
        let restored = Checkpoint::decode(a.payload.as_deref().unwrap()).unwrap();
        let last = 2 * (window_len as i64 + 4);
        assert_eq!(restored.through_offset, last);
        // Nothing changed since: no new checkpoint.
        assert!(table.checkpoint(None, scorer.model_version()).is_empty());

        // A new table restores "a" and skips its replayed samples up to the checkpoint.
        let mut fresh = EntityTable::new(
            WindowConfig::default(),
            DetectorConfig::default(),
            window_len,
            true,
        );
        let counts = fresh.restore(vec![restored], &scorer, now);
        assert_eq!(
            counts,
            RestoreCounts {
                restored: 1,
                refused: 0
            }
        );
        let mut ledger = LedgerBatch::detached();
        let replayed = fresh.admit(&scorer, &sample("a", 0), &source(last), now, &mut ledger);
        assert!(matches!(replayed, Admission::AlreadyCheckpointed));
        let next_ms = 1000 * (window_len as i64 + 5);
        let next = fresh.admit(
            &scorer,
            &sample("a", next_ms),
            &source(last + 2),
            now,
            &mut ledger,
        );
        // The restored buffer is full: the very next sample completes a window.
        assert!(matches!(
            next,
            Admission::Accepted {
                window: Some(_),
                gap: None
            }
        ));
        assert_eq!(ledger.holds(), vec![source(last + 2)]);

        // Eviction writes a tombstone that takes the entity's holds.
        let mut tombstones = Vec::new();
        let later = now + Duration::from_secs(WindowConfig::default().entity_ttl_s + 1);
        fresh.evict(later, 0, &mut ledger, &mut tombstones);
        assert_eq!(tombstones.len(), 1);
        assert!(tombstones[0].payload.is_none());
        assert_eq!(sources(&tombstones[0].holds), vec![source(last + 2)]);
    }

    /// A detector fed 200 rows with `scorer`, and the row for `i`.
    fn fed(scorer: &Scorer, entity: &str) -> (EntityDetector, impl Fn(usize) -> Vec<f32>) {
        let channels = scorer.metadata().channels.len();
        let row = move |i: usize| -> Vec<f32> {
            (0..channels)
                .map(|c| 50.0 + ((i * (c + 3)) % 17) as f32)
                .collect()
        };
        let mut detector = EntityDetector::new(entity, scorer, &DetectorConfig::default());
        for i in 0..200 {
            detector.push(scorer, 1000 * i as i64, &row(i));
        }
        (detector, row)
    }

    /// Restores `bytes` into a fresh entity table serving `scorer`.
    fn restore(bytes: &[u8], scorer: &Scorer) -> EntityTable {
        let mut table = EntityTable::new(
            WindowConfig::default(),
            DetectorConfig::default(),
            scorer.metadata().window_len,
            true,
        );
        let checkpoint = Checkpoint::decode(bytes).unwrap();
        let counts = table.restore(vec![checkpoint], scorer, Instant::now());
        assert_eq!((counts.restored, counts.refused), (1, 0));
        table
    }

    #[test]
    fn format_2_checkpoints_held_raw_rows_and_are_normalised_when_restored() {
        let scorer = default_scorer().unwrap();
        let (mut original, row) = fed(&scorer, "pump-1");
        // Format 2 stored the rows raw: a model that normalises nothing stores them so.
        let mut metadata = scorer.metadata().clone();
        for n in &mut metadata.normalisation {
            (n.center, n.scale, n.soft_clip) = (0.0, 1.0, None);
        }
        let onnx = crate::serve::embedded::DEFAULT_ONNX;
        let identity = Scorer::from_parts(onnx, metadata, "identity").unwrap();
        let (raw, _) = fed(&identity, "pump-1");
        let bytes = state::encode_as_format_2(
            "pump-1",
            &source(199),
            199_000,
            scorer.model_version(),
            &raw,
        );
        let mut table = restore(&bytes, &scorer);
        let restored = &mut table.get_mut("pump-1").unwrap().detector;
        let expected = original.push(&scorer, 200_000, &row(200)).unwrap();
        let window = restored.push(&scorer, 200_000, &row(200)).unwrap();
        assert_eq!(window.window.values, expected.window.values);
    }

    #[test]
    fn a_checkpoint_of_another_model_refills_its_window() {
        let scorer = default_scorer().unwrap();
        let (detector, row) = fed(&scorer, "pump-1");
        let through = source(199);
        let same = state::encode(
            "pump-1",
            &through,
            199_000,
            scorer.model_version(),
            &detector,
        );
        let other = state::encode("pump-1", &through, 199_000, "another-model", &detector);
        let mut table = restore(&same, &scorer);
        let restored = &mut table.get_mut("pump-1").unwrap().detector;
        assert!(restored.push(&scorer, 200_000, &row(200)).is_some());
        let mut table = restore(&other, &scorer);
        let restored = &mut table.get_mut("pump-1").unwrap().detector;
        let len = scorer.metadata().window_len;
        let windows: Vec<bool> = (200..200 + len)
            .map(|i| restored.push(&scorer, 1000 * i as i64, &row(i)).is_some())
            .collect();
        // Its rows were normalised by a model this daemon does not have:
        // the window fills again, a full window's length of rows.
        assert!(windows[..len - 1].iter().all(|&w| !w));
        assert!(windows[len - 1]);
    }

    #[test]
    fn a_checkpoint_taken_inside_a_record_of_several_samples_skips_only_the_ones_it_holds() {
        let scorer = default_scorer().unwrap();
        let window_len = scorer.metadata().window_len;
        let new_table = || {
            EntityTable::new(
                WindowConfig::default(),
                DetectorConfig::default(),
                window_len,
                true,
            )
        };
        let now = Instant::now();
        let mut ledger = LedgerBatch::detached();
        let mut table = new_table();
        // Offsets 0..40 carry one sample each; offset 40 carries six, of
        // which three are admitted before the checkpoint is taken.
        for i in 0..40 {
            table.admit(
                &scorer,
                &sample("a", 1000 * i),
                &source(i),
                now,
                &mut ledger,
            );
        }
        let batch_ms = |k: i64| 1000 * (40 + k);
        for k in 0..3 {
            table.admit(
                &scorer,
                &sample("a", batch_ms(k)),
                &source(40),
                now,
                &mut ledger,
            );
        }
        let writes = table.checkpoint(None, scorer.model_version());
        let restored = Checkpoint::decode(writes[0].payload.as_deref().unwrap()).unwrap();
        assert_eq!(restored.through_offset, 40);

        // The record is read again whole: its first three samples are
        // skipped, the other three taken, in order.
        let mut fresh = new_table();
        fresh.restore(vec![restored], &scorer, now);
        let replayed: Vec<bool> = (0..6)
            .map(|k| {
                let admission = fresh.admit(
                    &scorer,
                    &sample("a", batch_ms(k)),
                    &source(40),
                    now,
                    &mut ledger,
                );
                match admission {
                    Admission::AlreadyCheckpointed => false,
                    Admission::Accepted { .. } => true,
                    Admission::OutOfOrder { .. } => panic!("sample {k} taken for out of order"),
                }
            })
            .collect();
        assert_eq!(replayed, [false, false, false, true, true, true]);
        // Later records are taken as usual.
        let next = fresh.admit(
            &scorer,
            &sample("a", batch_ms(6)),
            &source(41),
            now,
            &mut ledger,
        );
        assert!(matches!(next, Admission::Accepted { .. }));
    }
}
