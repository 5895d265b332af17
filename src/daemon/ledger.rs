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
//! Each hold is a [`Hold`] value, made only by the ledger and given back
//! exactly once: released when the work is done, or abandoned when it is
//! given up (the record is read again). It cannot be copied, so it cannot
//! be released twice; a hold dropped otherwise would stop its partition's
//! commits for good, and in debug builds it panics, unless the daemon is
//! stopping ([`Ledger::close`]).
//!
//! A revoked partition is forgotten with the holds of the entity state
//! dropped with it; the holds of its outputs still in flight stay, so their
//! late acknowledgements release their own holds and never those of the
//! same offsets read again if the partition comes back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// One hold of a source offset in the ledger, owed back exactly once: by
/// a release ([`Ledger::release`], [`LedgerBatch::release`]) when
/// everything derived from the record is done, or by [`Hold::abandon`]
/// when that work is given up and the record will be read again.
#[must_use = "a hold is released or abandoned; dropped, it stops its partition's commits"]
#[derive(Debug)]
pub struct Hold {
    source: SourceOffset,
    /// Debug builds: the ledger's closed flag while the hold is owed,
    /// `None` once it is given back.
    #[cfg(debug_assertions)]
    owed: Option<Arc<AtomicBool>>,
}

impl Hold {
    fn new(source: SourceOffset, closed: &Arc<AtomicBool>) -> Self {
        #[cfg(not(debug_assertions))]
        let _ = closed;
        Self {
            source,
            #[cfg(debug_assertions)]
            owed: Some(closed.clone()),
        }
    }

    /// The offset held.
    pub fn source(&self) -> &SourceOffset {
        &self.source
    }

    /// Gives the hold up without releasing it: its record is not finished,
    /// its offset stays held, and it is read again after a restart or by
    /// the partition's next owner.
    pub fn abandon(mut self) {
        self.settle();
    }

    fn settle(&mut self) {
        #[cfg(debug_assertions)]
        {
            self.owed = None;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        if let Some(closed) = &self.owed {
            if !closed.load(Ordering::SeqCst) && !std::thread::panicking() {
                panic!(
                    "the hold of {}/{} offset {} was dropped, neither released nor abandoned: its partition's commits would stop behind it",
                    self.source.partition.topic, self.source.partition.partition, self.source.offset
                );
            }
        }
    }
}

/// Gives back every hold in `holds` by abandoning it.
pub fn abandon_all(holds: impl IntoIterator<Item = Hold>) {
    holds.into_iter().for_each(Hold::abandon);
}

#[derive(Debug, Default)]
struct PartitionHolds {
    holds: BTreeMap<i64, u32>,
    /// One past the highest offset seen since the partition was assigned
    /// (`None`: none yet, nothing to commit).
    next: Option<i64>,
}

/// Holds and releases, applied together under one lock (see
/// [`Ledger::apply`]). Its holds are owed from the moment they are made;
/// the ledger counts them once the batch is applied, before anything can
/// release them.
#[derive(Debug)]
pub struct LedgerBatch {
    /// Offsets to hold once more.
    holds: Vec<SourceOffset>,
    /// Holds to release once (given back: dropping them is fine).
    releases: Vec<Hold>,
    /// The ledger's closed flag (see [`Ledger::close`]).
    closed: Arc<AtomicBool>,
}

impl Default for LedgerBatch {
    /// A batch for a ledger of its own.
    fn default() -> Self {
        Ledger::default().batch()
    }
}

impl LedgerBatch {
    /// A batch for a run that commits nothing (offline scoring, benches):
    /// its holds need not be given back.
    pub fn detached() -> Self {
        let ledger = Ledger::default();
        ledger.close();
        ledger.batch()
    }

    /// Holds `source` once more (counted when the batch is applied).
    pub fn hold(&mut self, source: &SourceOffset) -> Hold {
        self.holds.push(source.clone());
        Hold::new(source.clone(), &self.closed)
    }

    /// Releases `hold` (when the batch is applied, after its holds).
    pub fn release(&mut self, mut hold: Hold) {
        hold.settle();
        self.releases.push(hold);
    }

    /// Releases every hold in `holds`.
    pub fn release_all(&mut self, holds: impl IntoIterator<Item = Hold>) {
        for hold in holds {
            self.release(hold);
        }
    }

    /// Forgets the holds and releases not applied (for a run that commits
    /// nothing).
    pub fn clear(&mut self) {
        self.holds.clear();
        self.releases.clear();
    }

    /// The offsets to be held, in order.
    pub fn holds(&self) -> &[SourceOffset] {
        &self.holds
    }

    /// The offsets to be released, in order.
    pub fn releases(&self) -> impl Iterator<Item = &SourceOffset> {
        self.releases.iter().map(Hold::source)
    }

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
    /// Set once the daemon stops: unfinished work is given up from then
    /// on, and a hold dropped is not a leak.
    closed: Arc<AtomicBool>,
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
    pub fn hold(&self, source: SourceOffset) -> Hold {
        hold(&mut self.lock(), &source);
        Hold::new(source, &self.closed)
    }

    /// Holds `held`'s offset `count` times more, under one lock: a record
    /// that carries several samples holds its offset once per sample.
    pub fn hold_more(&self, held: &Hold, count: usize) -> Vec<Hold> {
        if count == 0 {
            return Vec::new();
        }
        let mut map = self.lock();
        (0..count)
            .map(|_| {
                hold(&mut map, &held.source);
                Hold::new(held.source.clone(), &self.closed)
            })
            .collect()
    }

    /// Releases `hold`. Releasing an offset of a forgotten partition does nothing.
    pub fn release(&self, hold: Hold) {
        give_back(&mut self.lock(), hold);
    }

    /// Releases every hold in `holds`, under one lock.
    pub fn release_all(&self, holds: impl IntoIterator<Item = Hold>) {
        let mut map = self.lock();
        for hold in holds {
            give_back(&mut map, hold);
        }
    }

    /// An empty batch of holds and releases for this ledger.
    pub fn batch(&self) -> LedgerBatch {
        LedgerBatch {
            holds: Vec::new(),
            releases: Vec::new(),
            closed: self.closed.clone(),
        }
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
        for given_back in batch.releases.drain(..) {
            release(&mut map, &given_back.source);
        }
    }

    /// The daemon is stopping: what is unfinished is given up, and holds
    /// dropped from now on are not leaks (their offsets stay held).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
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

    /// Forgets revoked partitions after their final commit: releases
    /// `dropped` (the holds of the entity state dropped with them), keeps
    /// the holds of their outputs still in flight until they are
    /// acknowledged, and forgets how far they were read.
    pub fn forget(&self, partitions: &[Partition], dropped: Vec<Hold>) {
        let mut map = self.lock();
        for hold in dropped {
            give_back(&mut map, hold);
        }
        for partition in partitions {
            if let Some(entry) = map.get_mut(partition) {
                entry.next = None;
                if entry.holds.is_empty() {
                    map.remove(partition);
                }
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

/// Releases `hold` in `map` and marks it given back.
fn give_back(map: &mut Holds, mut hold: Hold) {
    release(map, &hold.source);
    hold.settle();
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
        let mut holds: Vec<Option<Hold>> = (0..5).map(|o| Some(ledger.hold(at(o)))).collect();
        let mut release = |offset: usize| ledger.release(holds[offset].take().unwrap());
        let p = at(0).partition;
        assert_eq!(ledger.position(&p), Some(0));
        // Finishing later records first does not move the position.
        release(3);
        release(1);
        assert_eq!(ledger.position(&p), Some(0));
        release(0);
        assert_eq!(ledger.position(&p), Some(2));
        release(2);
        release(4);
        assert_eq!(ledger.position(&p), Some(5));
    }

    #[test]
    fn holds_are_counted() {
        let ledger = Ledger::default();
        let p = at(0).partition;
        let first = ledger.hold(at(7));
        let mut batch = ledger.batch();
        let second = batch.hold(&at(7));
        let third = batch.hold(&at(7));
        batch.release(first);
        ledger.apply(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(ledger.held(), 2);
        ledger.release(second);
        assert_eq!(ledger.position(&p), Some(7));
        ledger.release(third);
        assert_eq!(ledger.position(&p), Some(8));
    }

    #[test]
    fn forgotten_partitions_ignore_late_releases() {
        let ledger = Ledger::default();
        let p = at(1).partition;
        let state = ledger.hold(at(1));
        let output = ledger.hold(at(1));
        ledger.forget(std::slice::from_ref(&p), vec![state]);
        assert_eq!(ledger.held(), 1, "the output in flight keeps its hold");
        ledger.release(output);
        assert!(ledger.positions().is_empty());
        assert_eq!(ledger.held(), 0);
    }

    #[test]
    fn a_late_acknowledgement_releases_only_its_own_hold_after_a_reassignment() {
        let ledger = Ledger::default();
        let p = at(0).partition;
        // Offsets 3 and 5 are held by the entity's state, 5 also by an output in flight.
        let state = vec![ledger.hold(at(3)), ledger.hold(at(5))];
        let in_flight = ledger.hold(at(5));
        ledger.forget(std::slice::from_ref(&p), state);
        assert_eq!(ledger.position(&p), None, "nothing read since");
        // Assigned again: read from the committed offset 3.
        let mut read: Vec<Hold> = (3..=5).map(|o| ledger.hold(at(o))).collect();
        let again = read.pop().unwrap();
        ledger.release_all(read);
        assert_eq!(ledger.position(&p), Some(5));
        // The old output is acknowledged: offset 5 is still held for the new read.
        ledger.release(in_flight);
        assert_eq!(ledger.position(&p), Some(5));
        ledger.release(again);
        assert_eq!(ledger.position(&p), Some(6));
    }

    #[test]
    fn holds_left_beyond_a_new_read_do_not_move_the_position_past_it() {
        let ledger = Ledger::default();
        let p = at(0).partition;
        let left = ledger.hold(at(9));
        ledger.forget(std::slice::from_ref(&p), Vec::new());
        ledger.release(ledger.hold(at(2)));
        assert_eq!(ledger.position(&p), Some(3));
        ledger.release(left);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "neither released nor abandoned")]
    fn a_hold_dropped_without_a_release_fails_a_debug_assertion() {
        let ledger = Ledger::default();
        let mut batch = ledger.batch();
        let kept = vec![batch.hold(&at(1))];
        drop(kept);
    }

    #[test]
    fn a_closed_ledger_lets_holds_go_and_keeps_them_counted() {
        let ledger = Ledger::default();
        let abandoned = ledger.hold(at(1));
        abandoned.abandon();
        let dropped = ledger.hold(at(2));
        ledger.close();
        drop(dropped);
        assert_eq!(ledger.held(), 2, "neither was finished");
        assert_eq!(ledger.position(&at(0).partition), Some(1));
    }
}
