//! The scorer thread's side of entity checkpoints: taking them, staging
//! them behind the outputs sent before them (by epoch), sending them once
//! those are acknowledged, and taking back the holds of failed ones.

use super::super::entities::StateWrite;
use super::super::ledger::{Hold, Partition};
use super::ScoringWorker;
use crate::daemon::sinks::{Output, OutputKind};
use crate::daemon::state;
use std::time::{Duration, Instant};

impl ScoringWorker {
    /// Scores what is queued, then stages a checkpoint of every changed
    /// entity (of `partitions`, or all) in a new epoch.
    pub(crate) fn checkpoint(&mut self, partitions: Option<&[Partition]>) {
        self.flush();
        self.apply_ledger();
        if self.checkpoints.is_none() {
            return;
        }
        let writes = self
            .entities
            .checkpoint(partitions, self.scorer.model_version());
        self.stage(writes);
    }

    /// Stages checkpoints or tombstones: they are sent once every output
    /// sent before now is acknowledged.
    pub(super) fn stage(&mut self, writes: Vec<StateWrite>) {
        if writes.is_empty() {
            return;
        }
        let epoch = self.sink.epochs().close();
        self.staged.push_back((epoch, writes));
    }

    /// Sends the staged checkpoints whose partitions have settled their
    /// epoch, in order. Settling is monotone (an epoch unsettled on a
    /// partition keeps every later epoch unsettled there), so a later
    /// checkpoint of an entity never passes an earlier one.
    pub(super) fn send_settled_checkpoints(&mut self) {
        let Some(schedule) = &self.checkpoints else {
            return;
        };
        let epochs = self.sink.epochs();
        let mut ready = Vec::new();
        for (epoch, writes) in &mut self.staged {
            let (now, later): (Vec<StateWrite>, Vec<StateWrite>) = std::mem::take(writes)
                .into_iter()
                .partition(|write| epochs.settled(*epoch, &write.holds));
            ready.extend(now);
            *writes = later;
        }
        self.staged.retain(|(_, writes)| !writes.is_empty());
        for write in ready {
            // Its holds are in the ledger already (taken when the samples arrived).
            self.sink.send(Box::new(Output {
                partition: Some(write.partition),
                key: Some(write.entity.into_bytes()),
                payload: write.payload,
                headers: vec![(
                    state::GROUP_HEADER.into(),
                    schedule.group.clone().into_bytes(),
                )],
                holds: write.holds,
                ..Output::new(OutputKind::State, &schedule.topic)
            }));
        }
    }

    /// Sends every staged checkpoint, waiting for the outputs before them
    /// until `deadline`. Returns whether all were sent.
    pub(super) fn send_checkpoints_by(&mut self, deadline: Instant) -> bool {
        loop {
            self.take_back_failed_checkpoints();
            self.send_settled_checkpoints();
            if self.staged.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // The consumer thread, which usually does this, is waiting for us.
            self.sink.resend_failed();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Takes the staged checkpoints of revoked `partitions` back unsent (sent
    /// later, they could land after their next owner's) and returns their
    /// holds.
    pub(super) fn discard_staged(&mut self, partitions: &[Partition]) -> Vec<Hold> {
        let revoked = |write: &StateWrite| {
            if write.holds.is_empty() {
                partitions.iter().any(|p| p.partition == write.partition)
            } else {
                write
                    .holds
                    .iter()
                    .any(|h| partitions.contains(&h.source().partition))
            }
        };
        let mut holds = Vec::new();
        for (_, writes) in &mut self.staged {
            let (gone, kept): (Vec<StateWrite>, Vec<StateWrite>) =
                std::mem::take(writes).into_iter().partition(revoked);
            holds.extend(gone.into_iter().flat_map(|write| write.holds));
            *writes = kept;
        }
        self.staged.retain(|(_, writes)| !writes.is_empty());
        holds
    }

    /// Failed checkpoints: their entities take the holds back and are
    /// checkpointed again with their current state.
    pub(super) fn take_back_failed_checkpoints(&mut self) {
        while let Ok(output) = self.sink.failed_checkpoints().try_recv() {
            let entity = String::from_utf8_lossy(output.key.as_deref().unwrap_or_default());
            let orphaned = self.entities.checkpoint_failed(&entity, output.holds);
            self.ledger_ops.release_all(orphaned);
        }
        self.apply_ledger();
    }
}
