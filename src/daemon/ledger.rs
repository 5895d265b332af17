//! The offset ledger: which input offsets are still needed, so that a
//! committed offset is never ahead of unfinished work (at-least-once).
//!
//! An offset is *held* while anything derived from its record is not done:
//! the record is being decoded or scored, an alert, score or dead letter made
//! from it awaits the broker's acknowledgement, or an entity's window buffer
//! still holds it for a future window. Holds are counted. The safe commit
//! position of a partition is its lowest held offset, or one past the highest
//! offset seen when nothing is held: everything before it is finished.
//!
//! A revoked partition is forgotten with the holds of the entity state
//! dropped with it; the holds of its outputs still in flight stay, so their
//! late acknowledgements release their own holds and never those of the
//! same offsets read again if the partition comes back.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

/// Where a record came from (ordered by partition, then offset).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceOffset {
    /// Its partition.
    pub partition: Partition,
    /// Its offset.
    pub offset: i64,
}

#[derive(Debug, Default)]
struct PartitionHolds {
    holds: BTreeMap<i64, u32>,
    /// One past the highest offset seen since the partition was assigned
    /// (`None`: none yet, nothing to commit).
    next: Option<i64>,
}

/// Holds and releases, applied together under one lock (see [`Ledger::apply`]).
#[derive(Debug, Default)]
pub struct LedgerBatch {
    /// Offsets to hold once more.
    pub holds: Vec<SourceOffset>,
    /// Offsets to release once.
    pub releases: Vec<SourceOffset>,
}

impl LedgerBatch {
    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty() && self.releases.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.holds.len() + self.releases.len()
    }
}

/// The ledger shared by the consumer, the scorer and the producer's delivery reports.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    inner: Arc<Mutex<Holds>>,
}

/// Every partition's holds; foldhash (the keys are partitions the group
/// assigned, not input), as a hold and a release hash a partition per record.
type Holds = HashMap<Partition, PartitionHolds, foldhash::fast::RandomState>;

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Holds> {
        // A panic elsewhere must not stop commits from being safe: the map is
        // only ever changed by whole operations, so it is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `source` once (a record arrived, or something derived from it is pending).
    pub fn hold(&self, source: &SourceOffset) {
        hold(&mut self.lock(), source);
    }

    /// Releases one hold of `source`. Releasing an offset of a forgotten partition does nothing.
    pub fn release(&self, source: &SourceOffset) {
        release(&mut self.lock(), source);
    }

    /// Applies a batch: all holds first, then all releases, atomically.
    pub fn apply(&self, batch: &mut LedgerBatch) {
        if batch.is_empty() {
            return;
        }
        let mut map = self.lock();
        for source in batch.holds.drain(..) {
            hold(&mut map, &source);
        }
        for source in batch.releases.drain(..) {
            release(&mut map, &source);
        }
    }

    /// The safe commit position of every partition seen.
    pub fn positions(&self) -> Vec<(Partition, i64)> {
        self.lock()
            .iter()
            .filter_map(|(p, h)| Some((p.clone(), safe_position(h)?)))
            .collect()
    }

    /// The safe commit position of one partition, if any record of it was
    /// seen since it was assigned.
    pub fn position(&self, partition: &Partition) -> Option<i64> {
        self.lock().get(partition).and_then(safe_position)
    }

    /// Offsets held in all partitions (for metrics and tests).
    pub fn held(&self) -> usize {
        self.lock()
            .values()
            .map(|h| h.holds.values().map(|&n| n as usize).sum::<usize>())
            .sum()
    }

    /// Forgets a revoked partition and every hold on it (when the holds of
    /// its dropped state are not known: a late acknowledgement of one of
    /// its outputs may then release a hold of the same offset read again).
    pub fn forget_all(&self, partition: &Partition) {
        self.lock().remove(partition);
    }

    /// Forgets a revoked partition after its final commit: releases
    /// `dropped` (the holds of the entity state dropped with it), keeps the
    /// holds of its outputs still in flight until they are acknowledged,
    /// and forgets how far it was read.
    pub fn forget(&self, partition: &Partition, dropped: &[SourceOffset]) {
        let mut map = self.lock();
        for source in dropped.iter().filter(|s| s.partition == *partition) {
            release(&mut map, source);
        }
        if let Some(entry) = map.get_mut(partition) {
            entry.next = None;
            if entry.holds.is_empty() {
                map.remove(partition);
            }
        }
    }
}

fn hold(map: &mut Holds, source: &SourceOffset) {
    if !map.contains_key(&source.partition) {
        map.insert(source.partition.clone(), PartitionHolds::default());
    }
    let entry = map.get_mut(&source.partition).expect("inserted");
    *entry.holds.entry(source.offset).or_insert(0) += 1;
    entry.next = Some(entry.next.unwrap_or(0).max(source.offset + 1));
}

fn release(map: &mut Holds, source: &SourceOffset) {
    let Some(entry) = map.get_mut(&source.partition) else {
        return;
    };
    if let Some(count) = entry.holds.get_mut(&source.offset) {
        *count -= 1;
        if *count == 0 {
            entry.holds.remove(&source.offset);
        }
    }
}

/// The lowest held offset, or one past the highest seen; `None` before the
/// first record since the partition was assigned. (Holds left from an
/// earlier assignment may lie beyond what was read since.)
fn safe_position(holds: &PartitionHolds) -> Option<i64> {
    let next = holds.next?;
    Some(
        holds
            .holds
            .keys()
            .next()
            .map_or(next, |&lowest| lowest.min(next)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> SourceOffset {
        SourceOffset {
            partition: Partition {
                topic: "t".into(),
                partition: 0,
            },
            offset,
        }
    }

    #[test]
    fn position_is_the_lowest_held_offset() {
        let ledger = Ledger::default();
        for offset in 0..5 {
            ledger.hold(&at(offset));
        }
        let p = at(0).partition;
        assert_eq!(ledger.position(&p), Some(0));
        // Finishing later records first does not move the position.
        ledger.release(&at(3));
        ledger.release(&at(1));
        assert_eq!(ledger.position(&p), Some(0));
        ledger.release(&at(0));
        assert_eq!(ledger.position(&p), Some(2));
        ledger.release(&at(2));
        ledger.release(&at(4));
        assert_eq!(ledger.position(&p), Some(5));
    }

    #[test]
    fn holds_are_counted() {
        let ledger = Ledger::default();
        let p = at(0).partition;
        ledger.hold(&at(7));
        let mut batch = LedgerBatch {
            holds: vec![at(7), at(7)],
            releases: vec![at(7)],
        };
        ledger.apply(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(ledger.held(), 2);
        ledger.release(&at(7));
        assert_eq!(ledger.position(&p), Some(7));
        ledger.release(&at(7));
        assert_eq!(ledger.position(&p), Some(8));
    }

    #[test]
    fn forgotten_partitions_ignore_late_releases() {
        let ledger = Ledger::default();
        ledger.hold(&at(1));
        ledger.forget(&at(1).partition, &[at(1)]);
        ledger.release(&at(1));
        assert!(ledger.positions().is_empty());
        assert_eq!(ledger.held(), 0);
    }

    #[test]
    fn a_late_acknowledgement_releases_only_its_own_hold_after_a_reassignment() {
        let ledger = Ledger::default();
        let p = at(0).partition;
        // Offsets 3 and 5 are held by the entity's state, 5 also by an output in flight.
        ledger.hold(&at(3));
        ledger.hold(&at(5));
        ledger.hold(&at(5));
        ledger.forget(&p, &[at(3), at(5)]);
        assert_eq!(ledger.position(&p), None, "nothing read since");
        // Assigned again: read from the committed offset 3.
        for offset in 3..=5 {
            ledger.hold(&at(offset));
        }
        ledger.release(&at(3));
        ledger.release(&at(4));
        assert_eq!(ledger.position(&p), Some(5));
        // The old output is acknowledged: offset 5 is still held for the new read.
        ledger.release(&at(5));
        assert_eq!(ledger.position(&p), Some(5));
        ledger.release(&at(5));
        assert_eq!(ledger.position(&p), Some(6));
    }

    #[test]
    fn holds_left_beyond_a_new_read_do_not_move_the_position_past_it() {
        let ledger = Ledger::default();
        let p = at(0).partition;
        ledger.hold(&at(9));
        ledger.forget(&p, &[]);
        ledger.hold(&at(2));
        ledger.release(&at(2));
        assert_eq!(ledger.position(&p), Some(3));
    }
}
