//! Per-entity state of the scorer thread: each entity's detector (window
//! buffer, calibration, alerts), its latest event time, and the input offsets
//! its window buffer still needs.
//!
//! Policies (docs/daemon.md, "Windows"):
//! - event time must increase per entity: a sample at or before the entity's
//!   latest is out of order and goes to the dead-letter topic;
//! - a gap longer than `windows.max_gap_ms` restarts the entity's window and
//!   emits a gap event; calibration and alerts carry on;
//! - an entity with no sample for `windows.entity_ttl_s` (wall clock) is
//!   evicted; beyond `windows.max_entities` the least recently seen are evicted.
//!
//! Offset holds: with checkpoints (`state.checkpoints`), an entity holds the
//! offset of its first sample since its last checkpoint was taken, until that
//! checkpoint is acknowledged; a restart restores the checkpoint and skips
//! the replayed samples it covers. Without, the offsets of the last
//! `window_len - 1` samples stay held, so a restart or a new owner of the
//! partition replays them and rebuilds the window. Either way every window
//! is scored at least once.

mod saving;

pub use saving::{RestoreCounts, StateWrite};

use super::config::WindowConfig;
use super::ledger::{Hold, LedgerBatch, Partition, SourceOffset};
use crate::daemon::source::decode::Sample;
use crate::detect::{DetectorConfig, EntityDetector, PendingWindow};
use crate::serve::Scorer;
use crate::window::entity_phase;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One entity.
pub struct EntityState {
    /// Its detector.
    pub detector: EntityDetector,
    last_ms: i64,
    last_seen: Instant,
    /// The partition of its latest sample.
    partition: Option<Partition>,
    /// Without checkpoints: holds of the newest samples in the window buffer, oldest first.
    held: VecDeque<Hold>,
    /// With checkpoints: the first sample of each partition since the last
    /// checkpoint was taken (held until a checkpoint covering it is acknowledged).
    unsaved: Vec<Hold>,
    /// The latest sample admitted.
    through: Option<SourceOffset>,
    /// Restored from a checkpoint covering samples up to this one: replayed
    /// samples before it, and those of its own record up to the entity's
    /// latest event time, are skipped.
    restored_through: Option<SourceOffset>,
}

impl EntityState {
    /// Holds `source`'s offset until it is safe to commit: with
    /// checkpoints, the first sample since the last checkpoint, until one
    /// covers it; without, every sample a future window still needs.
    fn hold(
        &mut self,
        source: &SourceOffset,
        checkpoints: bool,
        window_len: usize,
        ledger: &mut LedgerBatch,
    ) {
        if checkpoints {
            // Hold the first sample since the last checkpoint until one covers it.
            if !self
                .unsaved
                .iter()
                .any(|s| s.source().partition == source.partition)
            {
                // Mostly one partition: no room for four.
                self.unsaved.reserve_exact(1);
                self.unsaved.push(ledger.hold(source));
            }
            self.through = Some(source.clone());
        } else {
            // Keep the offsets of the samples a future window still needs.
            self.held.push_back(ledger.hold(source));
            while self.held.len() > window_len.saturating_sub(1) {
                ledger.release(self.held.pop_front().expect("not empty"));
            }
        }
    }
}

/// What admitting a sample did.
#[derive(Debug)]
pub enum Admission {
    /// The sample is in the entity's window; it may have completed one, and
    /// it may have followed a gap.
    Accepted {
        /// The window it completed.
        window: Option<PendingWindow>,
        /// `(previous event time, gap)` when a gap restarted the window.
        gap: Option<(i64, i64)>,
    },
    /// At or before the entity's latest event time.
    OutOfOrder {
        /// The entity's latest event time.
        latest_ms: i64,
    },
    /// Replayed, and already part of the entity's restored checkpoint.
    AlreadyCheckpointed,
}

/// Counts from one eviction pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Idle longer than the TTL.
    pub ttl: usize,
    /// Beyond the entity cap.
    pub cap: usize,
}

/// All entities of this instance.
pub struct EntityTable {
    /// Boxed: a table's buckets run up to half empty, and an entity's state
    /// is about 700 bytes; empty buckets then cost 8 bytes, not 700.
    /// Looked up for every sample and every scored window: foldhash, with a
    /// random seed per table, in place of std's slower SipHash. Entity names
    /// come from the input; the seed and `windows.max_entities` bound what a
    /// producer choosing colliding names could do.
    entities: HashMap<String, Box<EntityState>, foldhash::fast::RandomState>,
    config: WindowConfig,
    detector: DetectorConfig,
    /// A detector built from the settings and the current model, whose
    /// shared settings every entity's detector takes (one copy, not one per entity).
    prototype: Option<EntityDetector>,
    window_len: usize,
    checkpoints: bool,
}

impl EntityTable {
    /// An empty table; `checkpoints` chooses how offsets are held (module docs).
    pub fn new(
        config: WindowConfig,
        detector: DetectorConfig,
        window_len: usize,
        checkpoints: bool,
    ) -> Self {
        Self {
            entities: HashMap::default(),
            config,
            detector,
            prototype: None,
            window_len,
            checkpoints,
        }
    }

    /// The prototype detector for `scorer`'s model, built when missing or
    /// when the model changed.
    fn prototype(&mut self, scorer: &Scorer) -> &EntityDetector {
        let stale = self
            .prototype
            .as_ref()
            .is_none_or(|p| p.alerts().model_version() != scorer.model_version());
        if stale {
            self.prototype = Some(EntityDetector::with_stride(
                "",
                scorer,
                &self.detector,
                self.config.stride,
                0,
            ));
        }
        self.prototype.as_ref().expect("just built")
    }

    fn fresh_detector(&mut self, entity: &str, scorer: &Scorer) -> EntityDetector {
        let stride = self.config.stride;
        let phase = if self.config.stagger {
            entity_phase(entity, stride)
        } else {
            0
        };
        let mut detector =
            EntityDetector::with_stride(entity, scorer, &self.detector, stride, phase);
        detector.share_settings(self.prototype(scorer));
        detector
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether no entity is held.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Entities still warming up.
    pub fn warming(&self) -> usize {
        self.entities
            .values()
            .filter(|e| e.detector.calibration_state() != crate::calibrate::CalibrationState::Ready)
            .count()
    }

    /// The names of the entities still warming up.
    pub fn warming_names(&self) -> Vec<String> {
        self.entities
            .iter()
            .filter(|(_, e)| {
                e.detector.calibration_state() != crate::calibrate::CalibrationState::Ready
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Open alerts: (warning, critical).
    pub fn open_alerts(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for state in self.entities.values() {
            if let Some(alert) = state.detector.alerts().current() {
                match alert.severity {
                    crate::alert::Severity::Warning => counts.0 += 1,
                    crate::alert::Severity::Critical => counts.1 += 1,
                }
            }
        }
        counts
    }

    /// The entity's state, if held.
    pub fn get_mut(&mut self, entity: &str) -> Option<&mut EntityState> {
        self.entities.get_mut(entity).map(|state| &mut **state)
    }

    /// Whether admitting a sample of `entity` now would exceed the cap.
    pub fn would_exceed_cap(&self, entity: &str) -> bool {
        self.entities.len() >= self.config.max_entities && !self.entities.contains_key(entity)
    }

    /// Takes a sample: out-of-order check, gap check, window assembly, offset holds.
    /// Holds and releases go into `ledger` (the sample's own processing hold
    /// is the caller's to release).
    pub fn admit(
        &mut self,
        scorer: &Scorer,
        sample: &Sample,
        source: &SourceOffset,
        now: Instant,
        ledger: &mut LedgerBatch,
    ) -> Admission {
        // Looked up first, so that a known entity's name is not copied for
        // every sample (`entry` takes the key by value).
        if !self.entities.contains_key(sample.entity.as_str()) {
            let detector = self.fresh_detector(&sample.entity, scorer);
            self.entities.insert(
                sample.entity.to_string(),
                Box::new(EntityState {
                    detector,
                    last_ms: i64::MIN,
                    last_seen: now,
                    partition: None,
                    held: VecDeque::new(),
                    unsaved: Vec::new(),
                    through: None,
                    restored_through: None,
                }),
            );
        }
        let state = self
            .entities
            .get_mut(sample.entity.as_str())
            .expect("inserted above if missing");
        state.last_seen = now;
        if let Some(restored) = &state.restored_through {
            if restored.partition == source.partition {
                // A record in the batch form carries several samples under
                // one offset: at the checkpoint's own offset, the samples
                // up to the entity's latest event time are the ones it holds.
                if source.offset < restored.offset
                    || (source.offset == restored.offset && sample.timestamp_ms <= state.last_ms)
                {
                    return Admission::AlreadyCheckpointed;
                }
                if source.offset > restored.offset {
                    state.restored_through = None;
                }
            }
        }
        if state.partition.as_ref() != Some(&source.partition) {
            state.partition = Some(source.partition.clone());
        }
        if state.last_ms != i64::MIN && sample.timestamp_ms <= state.last_ms {
            return Admission::OutOfOrder {
                latest_ms: state.last_ms,
            };
        }
        let mut gap = None;
        if state.last_ms != i64::MIN {
            let step = sample.timestamp_ms - state.last_ms;
            if step as u64 > self.config.max_gap_ms {
                gap = Some((state.last_ms, step));
                state.detector.reset_window();
                ledger.release_all(state.held.drain(..));
            }
        }
        state.last_ms = sample.timestamp_ms;
        let window = state
            .detector
            .push(scorer, sample.timestamp_ms, &sample.values);
        state.hold(source, self.checkpoints, self.window_len, ledger);
        Admission::Accepted { window, gap }
    }

    /// Evicts entities idle longer than the TTL and, beyond the cap, the least
    /// recently seen (1 % of the cap at a time, so a flood of new entities costs
    /// little per sample). Their held offsets are released; with checkpoints,
    /// a tombstone per entity goes into `tombstones` and takes their holds.
    pub fn evict(
        &mut self,
        now: Instant,
        incoming: usize,
        ledger: &mut LedgerBatch,
        tombstones: &mut Vec<StateWrite>,
    ) -> Evicted {
        let mut evicted = Evicted::default();
        let ttl = Duration::from_secs(self.config.entity_ttl_s);
        let checkpoints = self.checkpoints;
        let mut forget = |name: &str, state: &mut EntityState| {
            ledger.release_all(state.held.drain(..));
            let unsaved = std::mem::take(&mut state.unsaved);
            match &state.partition {
                Some(partition) if checkpoints => tombstones.push(StateWrite {
                    entity: name.to_string(),
                    partition: partition.partition,
                    payload: None,
                    holds: unsaved,
                }),
                _ => ledger.release_all(unsaved),
            }
        };
        self.entities.retain(|name, state| {
            let keep = now.duration_since(state.last_seen) < ttl;
            if !keep {
                evicted.ttl += 1;
                forget(name, state);
            }
            keep
        });
        let cap = self.config.max_entities;
        if !self.entities.is_empty() && self.entities.len() + incoming > cap {
            let excess = self.entities.len() + incoming - cap;
            let target = excess.max(cap / 100).clamp(1, self.entities.len());
            let mut by_age: Vec<(Instant, String)> = self
                .entities
                .iter()
                .map(|(name, state)| (state.last_seen, name.clone()))
                .collect();
            by_age.select_nth_unstable(target - 1);
            for (_, name) in by_age.into_iter().take(target) {
                if let Some(mut state) = self.entities.remove(&name) {
                    forget(&name, &mut state);
                    evicted.cap += 1;
                }
            }
        }
        evicted
    }

    /// Drops the entities of revoked partitions and puts their held offsets
    /// in `holds`. They are not released here: the final commit stays
    /// behind them, so the partition's next owner replays those samples and
    /// rebuilds the windows; the consumer releases them after it.
    pub fn drop_partitions(&mut self, partitions: &[Partition], holds: &mut Vec<Hold>) -> usize {
        let before = self.entities.len();
        self.entities.retain(|_, state| {
            let keep = state
                .partition
                .as_ref()
                .is_none_or(|p| !partitions.contains(p));
            if !keep {
                holds.extend(state.held.drain(..));
                holds.append(&mut state.unsaved);
            }
            keep
        });
        before - self.entities.len()
    }

    /// Switches every entity from `previous` to a model of the same shape.
    pub fn use_model(&mut self, previous: &Scorer, scorer: &Scorer) {
        self.prototype(scorer);
        let prototype = self.prototype.as_ref().expect("just built");
        for state in self.entities.values_mut() {
            state.detector.use_model(previous, scorer);
            state.detector.share_settings(prototype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::embedded::default_scorer;

    pub(super) fn source(offset: i64) -> SourceOffset {
        SourceOffset {
            partition: Partition {
                topic: "in".into(),
                partition: 0,
            },
            offset,
        }
    }

    pub(super) fn sources(holds: &[Hold]) -> Vec<SourceOffset> {
        holds.iter().map(|h| h.source().clone()).collect()
    }

    pub(super) fn sample(entity: &str, ms: i64) -> Sample {
        Sample {
            entity: entity.into(),
            timestamp_ms: ms,
            values: smallvec::smallvec![50.0; 5],
        }
    }

    fn table(config: WindowConfig) -> (EntityTable, Scorer) {
        let scorer = default_scorer().unwrap();
        let window_len = scorer.metadata().window_len;
        (
            EntityTable::new(config, DetectorConfig::default(), window_len, false),
            scorer,
        )
    }

    #[test]
    fn windows_come_every_stride_and_hold_only_what_a_future_window_needs() {
        let (mut table, scorer) = table(WindowConfig {
            stride: 4,
            ..Default::default()
        });
        let len = scorer.metadata().window_len;
        let now = Instant::now();
        let mut ledger = LedgerBatch::detached();
        let mut windows = Vec::new();
        for i in 0..(len + 8) as i64 {
            let admission = table.admit(
                &scorer,
                &sample("a", 1000 * i),
                &source(i),
                now,
                &mut ledger,
            );
            if let Admission::Accepted {
                window: Some(_), ..
            } = admission
            {
                windows.push(i);
            }
        }
        assert_eq!(
            windows,
            vec![len as i64 - 1, len as i64 + 3, len as i64 + 7]
        );
        // Every row was held once and all but the newest len - 1 released.
        assert_eq!(ledger.holds().len(), len + 8);
        assert_eq!(ledger.releases().count(), len + 8 - (len - 1));
        assert_eq!(ledger.releases().next(), Some(&source(0)));
    }

    /// The row of each entity's first window when 16 entities send in lockstep.
    fn first_window_rows(stagger: bool) -> Vec<i64> {
        let (mut table, scorer) = table(WindowConfig {
            stride: 8,
            stagger,
            ..Default::default()
        });
        let len = scorer.metadata().window_len as i64;
        let mut ledger = LedgerBatch::detached();
        let mut first = vec![None; 16];
        for i in 0..len + 8 {
            for (entity, first) in first.iter_mut().enumerate() {
                let admission = table.admit(
                    &scorer,
                    &sample(&format!("pump-{entity}"), 1000 * i),
                    &source(i),
                    Instant::now(),
                    &mut ledger,
                );
                if let Admission::Accepted {
                    window: Some(_), ..
                } = admission
                {
                    first.get_or_insert(i - (len - 1));
                }
            }
        }
        first.into_iter().map(|f| f.expect("a window")).collect()
    }

    #[test]
    fn staggered_entities_complete_windows_at_their_own_phase() {
        let staggered = first_window_rows(true);
        let phases: Vec<i64> = (0..16)
            .map(|e| entity_phase(&format!("pump-{e}"), 8) as i64)
            .collect();
        assert_eq!(staggered, phases);
        let distinct: std::collections::HashSet<_> = staggered.iter().collect();
        assert!(distinct.len() >= 5, "phases {staggered:?}");
        assert_eq!(first_window_rows(false), vec![0; 16]);
    }

    #[test]
    fn entities_share_one_copy_of_the_settings_also_after_a_model_reload() {
        let (mut table, scorer) = table(WindowConfig::default());
        let mut ledger = LedgerBatch::detached();
        for (i, entity) in ["a", "b"].into_iter().enumerate() {
            let source = source(i as i64);
            table.admit(
                &scorer,
                &sample(entity, 0),
                &source,
                Instant::now(),
                &mut ledger,
            );
        }
        let shared = |table: &mut EntityTable| {
            let a = table.get_mut("a").unwrap().detector.alerts().clone();
            let b = table.get_mut("b").unwrap().detector.alerts().clone();
            std::ptr::eq(a.policy(), b.policy())
                && std::ptr::eq(a.model_version(), b.model_version())
        };
        assert!(shared(&mut table));
        table.use_model(&scorer, &scorer);
        assert!(shared(&mut table));
    }

    #[test]
    fn out_of_order_samples_are_refused_and_gaps_restart_the_window() {
        let (mut table, scorer) = table(WindowConfig {
            max_gap_ms: 5_000,
            ..Default::default()
        });
        let now = Instant::now();
        let mut ledger = LedgerBatch::detached();
        for i in 0..10 {
            table.admit(
                &scorer,
                &sample("a", 1000 * i),
                &source(i),
                now,
                &mut ledger,
            );
        }
        let late = table.admit(&scorer, &sample("a", 9000), &source(10), now, &mut ledger);
        assert!(matches!(late, Admission::OutOfOrder { latest_ms: 9000 }));
        let held_before = ledger.holds().len() - ledger.releases().count();
        let after_gap = table.admit(&scorer, &sample("a", 20_000), &source(11), now, &mut ledger);
        match after_gap {
            Admission::Accepted {
                window: None,
                gap: Some((9000, 11_000)),
            } => {}
            other => panic!("{other:?}"),
        }
        // The gap released the held rows; only the new one is held.
        assert_eq!(ledger.holds().len() - ledger.releases().count(), 1);
        assert_eq!(held_before, 10);
    }

    #[test]
    fn idle_entities_expire_and_the_cap_evicts_the_least_recently_seen() {
        let (mut table, scorer) = table(WindowConfig {
            entity_ttl_s: 60,
            max_entities: 3,
            ..Default::default()
        });
        let start = Instant::now();
        let mut ledger = LedgerBatch::detached();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            table.admit(
                &scorer,
                &sample(name, 0),
                &source(i as i64),
                at,
                &mut ledger,
            );
        }
        assert!(table.would_exceed_cap("d"));
        assert!(!table.would_exceed_cap("a"));
        let evicted = table.evict(
            start + Duration::from_secs(5),
            1,
            &mut ledger,
            &mut Vec::new(),
        );
        assert_eq!(evicted, Evicted { ttl: 0, cap: 1 });
        assert!(table.get_mut("a").is_none(), "the oldest goes first");
        let evicted = table.evict(
            start + Duration::from_millis(61_500),
            0,
            &mut ledger,
            &mut Vec::new(),
        );
        assert_eq!(evicted, Evicted { ttl: 1, cap: 0 });
        assert_eq!(table.len(), 1);
        // Evicted entities released their held rows.
        assert_eq!(ledger.holds().len() - ledger.releases().count(), 1);
    }

    #[test]
    fn revoked_partitions_drop_their_entities_but_keep_their_holds() {
        let (mut table, scorer) = table(WindowConfig::default());
        let now = Instant::now();
        let mut ledger = LedgerBatch::detached();
        table.admit(&scorer, &sample("a", 0), &source(0), now, &mut ledger);
        let mut holds = Vec::new();
        let dropped = table.drop_partitions(&[source(0).partition], &mut holds);
        assert_eq!(dropped, 1);
        assert!(table.is_empty());
        assert!(ledger.releases().next().is_none());
        assert_eq!(
            sources(&holds),
            ledger.holds(),
            "handed over to be released after the commit"
        );
    }
}
