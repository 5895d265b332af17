//! The samples the consumer hands the scorer: many to one channel message,
//! with their original records in one buffer for the dead-letter topic.

use super::super::ledger::Hold;
use crate::daemon::source::decode::Sample;
use crate::daemon::source::Taken;

/// Samples sent to the scorer together: one channel message, and one
/// buffer for their original records, instead of one each per sample.
#[derive(Default)]
pub struct SampleBatch {
    pub(super) samples: Vec<IncomingSample>,
    /// The original records' keys and payloads, back to back.
    pub(super) records: Vec<u8>,
}

/// A decoded sample with where it came from.
pub(super) struct IncomingSample {
    pub(super) sample: Sample,
    pub(super) source: Hold,
    /// Its Kafka timestamp.
    pub(super) record_time_ms: Option<i64>,
    /// The original record's key and payload in the batch's `records`, for
    /// the dead-letter topic if the sample turns out to be out of order.
    pub(super) key: Option<std::ops::Range<usize>>,
    pub(super) payload: std::ops::Range<usize>,
    /// Whether its record carried several samples (the batch form).
    pub(super) of_many: bool,
}

/// The original record of a sample, for the dead-letter topic.
pub(super) struct OriginalRecord<'a> {
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: &'a [u8],
    /// Whether the record carried several samples (the batch form).
    pub(super) of_many: bool,
}

impl SampleBatch {
    /// Adds a record's samples with their holds and the original record
    /// (kept once, however many samples it carried).
    pub fn push(
        &mut self,
        taken: Taken,
        record_time_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        let mut append = |bytes: &[u8]| {
            let start = self.records.len();
            self.records.extend_from_slice(bytes);
            start..self.records.len()
        };
        let key = key.map(&mut append);
        let payload = append(payload);
        let of_many = taken.len() > 1;
        for (sample, source) in taken {
            self.samples.push(IncomingSample {
                sample,
                source,
                record_time_ms,
                key: key.clone(),
                payload: payload.clone(),
                of_many,
            });
        }
    }

    /// Takes the samples, leaving an empty batch with as much room as they
    /// took: the next batch fills without growing (two allocations per
    /// message, not a doubling every few samples).
    pub fn take(&mut self) -> SampleBatch {
        let room = SampleBatch {
            samples: Vec::with_capacity(self.samples.len()),
            records: Vec::with_capacity(self.records.len()),
        };
        std::mem::replace(self, room)
    }

    /// The samples' holds, the rest dropped: for a caller that gives the
    /// batch up and releases them itself.
    pub fn into_holds(self) -> impl Iterator<Item = Hold> {
        self.samples.into_iter().map(|incoming| incoming.source)
    }

    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the batch has no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}
