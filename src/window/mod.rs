//! Window assembly: turns one entity's rows into `channels × window_len` windows, ordered by time.
//!
//! A window is stored channel-major (`[channel][time]`), the layout the model
//! takes. The assembler does no I/O and never looks at the wall clock: event
//! time travels with the rows.

mod times;

use times::RingTimes;

/// One assembled window: the values as its rows were stored (raw, or
/// normalised where the assembler's user stores them so; see
/// [`WindowAssembler::push_mapped`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Event time of the first and of the last row (epoch ms).
    pub start_ms: i64,
    /// Event time of the last row; the window "ends" at this row.
    pub end_ms: i64,
    /// Channel-major values: `values[channel * window_len + t]`.
    pub values: Vec<f32>,
}

/// Streaming assembler for one entity: push rows in time order, get a window
/// every `stride` rows once `window_len` rows have been seen, the first
/// `phase` rows after the first full one (see [`entity_phase`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WindowAssembler {
    channels: usize,
    window_len: usize,
    stride: u32,
    /// Ring buffer of the last `window_len` rows, row-major.
    rows: Vec<f32>,
    timestamps: RingTimes,
    /// Rows pushed since the last reset.
    pushed: u64,
    /// A window ends on the rows `phase`, `phase + stride`, … after the first
    /// full window (`0..stride`; checkpoints written before it had 0).
    #[serde(default)]
    phase: u32,
}

/// The phase (`0..stride`) at which `entity`'s windows end when phases are
/// staggered: entities whose samples arrive in lockstep (one record per
/// entity per second, say) then complete their windows spread over the
/// `stride` samples instead of all on the same one, which evens out the
/// scoring load. A fixed function of the key (64-bit FNV-1a), the same on
/// every instance and in every version, so an entity keeps its phase when
/// it moves between instances or is restored from a checkpoint.
pub fn entity_phase(entity: &str, stride: usize) -> usize {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = entity.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    (hash % stride.max(1) as u64) as usize
}

impl WindowAssembler {
    /// An assembler for windows of `channels × window_len`, emitted every
    /// `stride` rows from the first full window on.
    pub fn new(channels: usize, window_len: usize, stride: usize) -> Self {
        assert!(channels > 0 && window_len > 0);
        let mut assembler = Self {
            channels,
            window_len,
            stride: 1,
            rows: vec![0.0; channels * window_len],
            timestamps: RingTimes::new(window_len),
            pushed: 0,
            phase: 0,
        };
        assembler.set_cadence(stride, 0);
        assembler
    }

    /// Adds one row (`channels` values); returns the window ending at it when one is due.
    pub fn push(&mut self, timestamp_ms: i64, row: &[f32]) -> Option<Window> {
        self.push_mapped(timestamp_ms, row, |_, value| value)
    }

    /// Adds one row stored as `map(channel, value)` of each value (the
    /// daemon stores rows normalised, once per row rather than once per
    /// window that contains it); returns the window ending at it when one is due.
    pub fn push_mapped(
        &mut self,
        timestamp_ms: i64,
        row: &[f32],
        map: impl Fn(usize, f32) -> f32,
    ) -> Option<Window> {
        assert_eq!(
            row.len(),
            self.channels,
            "row has the wrong number of channels"
        );
        let slot = (self.pushed % self.window_len as u64) as usize;
        let stored = &mut self.rows[slot * self.channels..(slot + 1) * self.channels];
        for (channel, (stored, &value)) in stored.iter_mut().zip(row).enumerate() {
            *stored = map(channel, value);
        }
        self.pushed += 1;
        let live = self.pushed.min(self.window_len as u64) as usize;
        self.timestamps.set(slot, timestamp_ms, 0..live);
        if self.pushed < self.window_len as u64 {
            return None;
        }
        let rows_after_first_window = self.pushed - self.window_len as u64;
        // (`max(1)`: a checkpoint is restored before its cadence is set again.)
        let stride = u64::from(self.stride.max(1));
        if rows_after_first_window % stride != u64::from(self.phase) {
            return None;
        }
        Some(self.current())
    }

    /// `(channels, window_len)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.channels, self.window_len)
    }

    /// A window is emitted every this many rows.
    pub fn stride(&self) -> usize {
        self.stride as usize
    }

    /// Rows after the first full window at which the first window is
    /// emitted (`0..stride`).
    pub fn phase(&self) -> usize {
        self.phase as usize
    }

    /// Emits a window every `stride` rows from now on, on the rows `phase`,
    /// `phase + stride`, … counted from the first full window.
    pub fn set_cadence(&mut self, stride: usize, phase: usize) {
        assert!(
            stride > 0 && phase < stride,
            "phase {phase}, stride {stride}"
        );
        self.stride = u32::try_from(stride).expect("a stride below 2^32");
        self.phase = phase as u32;
    }

    /// Whether enough rows have been seen for a full window.
    pub fn is_full(&self) -> bool {
        self.pushed >= self.window_len as u64
    }

    /// Replaces every stored value by `map(channel, value)` (for example to
    /// normalise the rows again for another model).
    pub fn map_rows(&mut self, map: impl Fn(usize, f32) -> f32) {
        for row in self.rows.chunks_mut(self.channels) {
            for (channel, value) in row.iter_mut().enumerate() {
                *value = map(channel, *value);
            }
        }
    }

    /// Rewrites the stored rows from `recent_rows`, the rows pushed last
    /// (row-major, oldest first), each value stored as `map(channel, value)`.
    /// They must cover every row of the window being assembled.
    pub fn rewrite_rows(&mut self, recent_rows: &[f32], map: impl Fn(usize, f32) -> f32) {
        let given = recent_rows.len() / self.channels;
        let live = self.pushed.min(self.window_len as u64) as usize;
        assert!(given >= live, "{given} rows given, the window holds {live}");
        for back in 0..live {
            let slot = ((self.pushed - 1 - back as u64) % self.window_len as u64) as usize;
            let row = &recent_rows[(given - 1 - back) * self.channels..][..self.channels];
            let stored = &mut self.rows[slot * self.channels..(slot + 1) * self.channels];
            for (channel, (stored, &value)) in stored.iter_mut().zip(row).enumerate() {
                *stored = map(channel, value);
            }
        }
    }

    /// Forgets all rows (for example after a gap in the data).
    pub fn reset(&mut self) {
        self.pushed = 0;
    }

    fn current(&self) -> Window {
        let oldest = (self.pushed % self.window_len as u64) as usize;
        let mut values = vec![0.0f32; self.channels * self.window_len];
        for t in 0..self.window_len {
            let slot = (oldest + t) % self.window_len;
            let row = &self.rows[slot * self.channels..(slot + 1) * self.channels];
            for (c, &v) in row.iter().enumerate() {
                values[c * self.window_len + t] = v;
            }
        }
        Window {
            start_ms: self.timestamps.get(oldest),
            end_ms: self
                .timestamps
                .get((oldest + self.window_len - 1) % self.window_len),
            values,
        }
    }
}

/// All windows of a row-major block of rows, every `stride` rows: returns the
/// channel-major windows concatenated (`[n, channels, window_len]`) and the
/// index of the last row of each window.
pub fn windows_of_rows(
    rows: &[f32],
    channels: usize,
    window_len: usize,
    stride: usize,
) -> (Vec<f32>, Vec<usize>) {
    let row_count = rows.len() / channels;
    let mut values = Vec::new();
    let mut ends = Vec::new();
    if row_count < window_len {
        return (values, ends);
    }
    let mut start = 0;
    while start + window_len <= row_count {
        for c in 0..channels {
            values.extend((start..start + window_len).map(|r| rows[r * channels + c]));
        }
        ends.push(start + window_len - 1);
        start += stride;
    }
    (values, ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<(i64, [f32; 2])> {
        (0..n)
            .map(|i| (i as i64 * 10, [i as f32, 100.0 + i as f32]))
            .collect()
    }

    #[test]
    fn first_window_after_window_len_rows_then_every_stride() {
        let mut assembler = WindowAssembler::new(2, 4, 2);
        let emitted: Vec<(usize, Window)> = rows(10)
            .into_iter()
            .enumerate()
            .filter_map(|(i, (ts, r))| assembler.push(ts, &r).map(|w| (i, w)))
            .collect();
        let ends: Vec<usize> = emitted.iter().map(|(i, _)| *i).collect();
        assert_eq!(ends, vec![3, 5, 7, 9]);
        let (_, last) = &emitted[3];
        // channel-major, oldest first: rows 6..=9
        assert_eq!(
            last.values,
            vec![6.0, 7.0, 8.0, 9.0, 106.0, 107.0, 108.0, 109.0]
        );
        assert_eq!((last.start_ms, last.end_ms), (60, 90));
    }

    #[test]
    fn streaming_and_batch_assembly_agree() {
        let data = rows(23);
        let flat: Vec<f32> = data.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        let (batch, ends) = windows_of_rows(&flat, 2, 5, 3);
        let mut assembler = WindowAssembler::new(2, 5, 3);
        let streamed: Vec<f32> = data
            .iter()
            .filter_map(|(ts, r)| assembler.push(*ts, r))
            .flat_map(|w| w.values)
            .collect();
        assert_eq!(batch, streamed);
        assert_eq!(ends, vec![4, 7, 10, 13, 16, 19, 22]);
    }

    #[test]
    fn reset_starts_over() {
        let mut assembler = WindowAssembler::new(1, 3, 1);
        for i in 0..3 {
            assembler.push(i, &[i as f32]);
        }
        assert!(assembler.is_full());
        assembler.reset();
        assert!(assembler.push(10, &[1.0]).is_none());
        assert!(assembler.push(11, &[2.0]).is_none());
        let window = assembler.push(12, &[3.0]).unwrap();
        assert_eq!(window.values, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_phase_shifts_every_window_by_that_many_rows() {
        let mut assembler = WindowAssembler::new(2, 4, 3);
        assembler.set_cadence(3, 2);
        let ends: Vec<usize> = rows(14)
            .into_iter()
            .enumerate()
            .filter_map(|(i, (ts, r))| assembler.push(ts, &r).map(|_| i))
            .collect();
        assert_eq!(ends, vec![5, 8, 11]);
    }

    #[test]
    fn a_checkpoint_without_a_phase_restores_with_phase_zero() {
        let mut assembler = WindowAssembler::new(1, 3, 4);
        assembler.set_cadence(4, 3);
        let mut fields = serde_json::to_value(&assembler).unwrap();
        assert_eq!(fields["phase"], 3);
        fields.as_object_mut().unwrap().remove("phase");
        let restored: WindowAssembler = serde_json::from_value(fields).unwrap();
        assert_eq!((restored.stride(), restored.phase()), (4, 0));
    }

    #[test]
    fn entity_phases_are_fixed_and_spread_evenly() {
        // 64-bit FNV-1a of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(entity_phase("a", 1 << 16), 0xec8c);
        assert_eq!(entity_phase("anything", 1), 0);
        let mut counts = [0usize; 8];
        for entity in 0..1000 {
            counts[entity_phase(&format!("entity-{entity}"), 8)] += 1;
        }
        // 125 each if perfectly even; a fair hash stays well within ±40.
        assert!(
            counts.iter().all(|&c| (85..=165).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn too_few_rows_give_no_windows() {
        let (values, ends) = windows_of_rows(&[1.0, 2.0], 1, 3, 1);
        assert!(values.is_empty() && ends.is_empty());
    }
}
