//! The likelihood calibrator's history: closed blocks of moments, oldest
//! first, with their counts kept as runs.
//!
//! Every block but the first holds `refit_every` values, so storing a count
//! in each block would repeat one number 86 times per entity. The counts are
//! kept as runs of equal counts instead (one or two runs, more only after
//! `refit_every` changed between runs of the daemon), which takes each block
//! from 12 bytes to 8. A checkpoint still writes every block as
//! `(count, mean, M2)`, so the format does not depend on this layout.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;

/// The count, mean and sum of squared deviations (M2) of consecutive
/// history values: f32 keeps the mean and M2 of a block of log scores to
/// about 7 digits, far finer than any tail decision. A tuple, so a
/// checkpoint writes no field names for each block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Block(pub u32, pub f32, pub f32);

/// Closed blocks, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct BlockHistory {
    /// (mean, M2) of each block.
    moments: VecDeque<(f32, f32)>,
    /// (count, blocks): consecutive blocks of the same count, oldest first.
    counts: VecDeque<(u32, u32)>,
}

impl BlockHistory {
    /// No blocks, with room for `blocks` of them.
    pub fn with_capacity(blocks: usize) -> Self {
        Self {
            moments: VecDeque::with_capacity(blocks),
            counts: VecDeque::with_capacity(1),
        }
    }

    /// Appends the newest block. Grows exactly: a checkpoint restores the
    /// blocks with no spare room, and doubling would then keep twice the
    /// room in every entity.
    pub fn push(&mut self, block: Block) {
        let Block(count, mean, m2) = block;
        self.moments.reserve_exact(1);
        self.moments.push_back((mean, m2));
        match self.counts.back_mut() {
            Some((last, run)) if *last == count => *run += 1,
            _ => {
                self.counts.reserve_exact(1);
                self.counts.push_back((count, 1));
            }
        }
    }

    /// Removes and returns the oldest block.
    pub fn pop_front(&mut self) -> Option<Block> {
        let (mean, m2) = self.moments.pop_front()?;
        let (count, run) = self.counts.front_mut().expect("a count for every block");
        let count = *count;
        *run -= 1;
        if *run == 0 {
            self.counts.pop_front();
        }
        Some(Block(count, mean, m2))
    }

    /// The number of blocks.
    pub fn len(&self) -> usize {
        self.moments.len()
    }

    /// How many blocks fit without growing.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.moments.capacity()
    }

    /// The number of values in all blocks.
    pub fn values(&self) -> usize {
        self.counts
            .iter()
            .map(|&(count, run)| count as usize * run as usize)
            .sum()
    }

    /// The blocks, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Block> + '_ {
        self.counts
            .iter()
            .flat_map(|&(count, run)| std::iter::repeat_n(count, run as usize))
            .zip(&self.moments)
            .map(|(count, &(mean, m2))| Block(count, mean, m2))
    }
}

impl Serialize for BlockHistory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for BlockHistory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let blocks = Vec::<Block>::deserialize(deserializer)?;
        let mut history = BlockHistory::with_capacity(blocks.len());
        for block in blocks {
            history.push(block);
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_back_as_pushed_with_their_counts() {
        let blocks = [
            Block(100, 1.0, 2.0),
            Block(50, 3.0, 4.0),
            Block(50, 5.0, 6.0),
            Block(100, 7.0, 8.0),
        ];
        let mut history = BlockHistory::default();
        for block in blocks {
            history.push(block);
        }
        assert_eq!(history.counts.len(), 3, "runs of equal counts");
        assert_eq!(history.values(), 300);
        assert_eq!(history.iter().collect::<Vec<_>>(), blocks);
        // The checkpoint form is the list of blocks, as before the runs.
        let bytes = rmp_serde::to_vec_named(&history).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec_named(&blocks.to_vec()).unwrap());
        let mut restored: BlockHistory = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(restored, history);
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(restored.pop_front(), Some(*block));
            assert_eq!(restored.len(), blocks.len() - i - 1);
        }
        assert_eq!(restored.pop_front(), None);
        assert!(restored.counts.is_empty());
    }
}
