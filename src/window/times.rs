//! The event times of a window's ring of rows, in 4 bytes each where they fit.
//!
//! Rows of one window lie within hours or days of each other, so they are
//! kept as u32 millisecond offsets from a base (up to 49.7 days apart). When
//! a time does not fit (daily data with a 64-row window spans 64 days, or a
//! row goes back before the base), the offsets are rebased on the oldest
//! stored time; if they still do not fit, the times are kept as i64 from
//! then on. A checkpoint writes the times as i64 either way.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Event times (epoch ms) of the ring's slots.
#[derive(Debug, Clone, PartialEq)]
pub enum RingTimes {
    /// `base + offsets[slot]`.
    Offsets {
        /// The time offsets count from.
        base: i64,
        /// One per slot.
        offsets: Vec<u32>,
    },
    /// One full time per slot.
    Full(Vec<i64>),
}

impl RingTimes {
    /// `slots` slots, all at time 0.
    pub fn new(slots: usize) -> Self {
        RingTimes::Offsets {
            base: 0,
            offsets: vec![0; slots],
        }
    }

    /// The time in `slot`.
    pub fn get(&self, slot: usize) -> i64 {
        match self {
            RingTimes::Offsets { base, offsets } => base + offsets[slot] as i64,
            RingTimes::Full(times) => times[slot],
        }
    }

    /// Sets `slot` to `time`; only the slots in `live` (the others hold
    /// nothing of use) are kept when the offsets have to be rebased.
    pub fn set(&mut self, slot: usize, time: i64, live: std::ops::Range<usize>) {
        if let RingTimes::Offsets { base, offsets } = self {
            if let Some(offset) = offset_from(*base, time) {
                offsets[slot] = offset;
                return;
            }
            let others = live.filter(|&s| s != slot);
            let (oldest, newest) = others.clone().fold((time, time), |(lo, hi), s| {
                let t = *base + offsets[s] as i64;
                (lo.min(t), hi.max(t))
            });
            if offset_from(oldest, newest).is_some() {
                for s in others {
                    offsets[s] = (*base + offsets[s] as i64 - oldest) as u32;
                }
                *base = oldest;
                offsets[slot] = (time - oldest) as u32;
                return;
            }
            let full = (0..offsets.len())
                .map(|s| *base + offsets[s] as i64)
                .collect();
            *self = RingTimes::Full(full);
        }
        if let RingTimes::Full(times) = self {
            times[slot] = time;
        }
    }

    fn len(&self) -> usize {
        match self {
            RingTimes::Offsets { offsets, .. } => offsets.len(),
            RingTimes::Full(times) => times.len(),
        }
    }
}

fn offset_from(base: i64, time: i64) -> Option<u32> {
    u32::try_from(time.checked_sub(base)?).ok()
}

impl Serialize for RingTimes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((0..self.len()).map(|slot| self.get(slot)))
    }
}

impl<'de> Deserialize<'de> for RingTimes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let times = Vec::<i64>::deserialize(deserializer)?;
        let mut ring = RingTimes::new(times.len());
        let slots = 0..times.len();
        for (slot, time) in times.into_iter().enumerate() {
            ring.set(slot, time, slots.start..slot);
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets every time in turn on a ring of `slots`, as the assembler does,
    /// and checks each live slot reads back what was set.
    fn check(times: &[i64], slots: usize) -> RingTimes {
        let mut ring = RingTimes::new(slots);
        let mut expected = vec![None; slots];
        for (pushed, &time) in times.iter().enumerate() {
            let slot = pushed % slots;
            ring.set(slot, time, 0..(pushed + 1).min(slots));
            expected[slot] = Some(time);
            for (s, want) in expected.iter().enumerate() {
                if let Some(want) = want {
                    assert_eq!(ring.get(s), *want, "slot {s} after {pushed} pushes");
                }
            }
        }
        let bytes = rmp_serde::to_vec(&ring).unwrap();
        let restored: RingTimes = rmp_serde::from_slice(&bytes).unwrap();
        for s in 0..slots {
            assert_eq!(restored.get(s), ring.get(s));
        }
        ring
    }

    #[test]
    fn minute_data_stays_in_offsets_for_years() {
        let start = 1_700_000_000_000;
        // Two years of one-minute rows, in a 64-slot ring: rebased as it goes.
        let times: Vec<i64> = (0..2 * 525_600).map(|i| start + i * 60_000).collect();
        assert!(matches!(check(&times, 64), RingTimes::Offsets { .. }));
    }

    #[test]
    fn daily_data_over_a_long_window_falls_back_to_full_times() {
        let day = 86_400_000;
        let times: Vec<i64> = (0..200).map(|i| 1_700_000_000_000 + i * day).collect();
        assert!(matches!(check(&times, 16), RingTimes::Offsets { .. }));
        assert!(matches!(check(&times, 64), RingTimes::Full(_)));
    }

    #[test]
    fn times_before_the_base_and_negative_times_read_back() {
        check(&[5_000, 1_000, -7, 9_000_000_000, 3], 3);
        check(&[i64::MIN, i64::MAX, 0], 2);
    }
}
