//! Range checks: whether a per-channel statistic (a value, or how much it
//! changes from row to row) leaves everything an entity has shown so far.

use serde::{Deserialize, Serialize};

/// The (min, max) of one statistic per channel, learned from rows judged
/// normal and only slowly from rows that breach it.
///
/// How a checked value teaches the bounds it goes beyond: a value within
/// the tolerance moves its bound `widen` of the way to itself, a value
/// beyond it `follow` of the way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Teach {
    /// The step toward a value beyond a bound but within the tolerance.
    pub widen: f32,
    /// The step toward a value beyond the tolerance (a breach).
    pub follow: f32,
}

impl Teach {
    /// Every value widens the bounds to itself.
    pub const FULLY: Teach = Teach {
        widen: 1.0,
        follow: 1.0,
    };
}

/// One thing for each side of the bounds: below the low one, above the high one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sides<T> {
    /// Below the low bound.
    pub below: T,
    /// Above the high bound.
    pub above: T,
}

impl<T: Copy> Sides<T> {
    /// The same on both sides.
    pub fn both(value: T) -> Self {
        Self {
            below: value,
            above: value,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bounds(Vec<(f32, f32)>);

impl Bounds {
    /// Bounds that start from `range` (empty: from the first row checked).
    pub fn seeded(range: Vec<(f32, f32)>) -> Self {
        Self(range)
    }

    /// Whether any finite value is beyond its channel's range widened by
    /// `tolerance` of its width on each side; then learns as `teach` says:
    /// a value within that margin moves its bound `widen` of the way to
    /// itself, a value beyond it `follow` of the way (1 while the entity is
    /// learning, 0 while an alert is held, a slow fraction otherwise), so a
    /// jump out of the range is not absorbed at once, and with `widen`
    /// below 1 neither is a run of steps each within the margin.
    pub fn check(&mut self, values: &[f32], tolerance: f64, teach: Teach) -> bool {
        self.check_by(
            values.iter().copied(),
            |low, high| Sides::both((high - low) as f64 * tolerance),
            Sides::both(teach),
        )
    }

    /// Widens each channel's range to take in `values` (finite ones), with
    /// no check: a record of extremes.
    pub fn include(&mut self, values: impl Iterator<Item = f32>) {
        if self.0.is_empty() {
            self.0 = values.map(|v| (v, v)).collect();
            return;
        }
        for (v, (low, high)) in values.zip(self.0.iter_mut()) {
            if v.is_finite() {
                *low = low.min(v);
                *high = high.max(v);
            }
        }
    }

    /// Widens each channel's range to the part of `excursion` that `seen`
    /// reached too (on each side, the lesser extreme of the two), then
    /// widens `seen` to `excursion`.
    pub fn take_repeated(&mut self, excursion: &Bounds, seen: &mut Bounds) {
        if !seen.is_empty() && !self.is_empty() {
            let sides = self.0.iter_mut().zip(&excursion.0).zip(&seen.0);
            for (((low, high), &(el, eh)), &(sl, sh)) in sides {
                *low = low.min(el.max(sl));
                *high = high.max(eh.min(sh));
            }
        }
        seen.include_bounds(excursion);
    }

    /// Widens each channel's range to take in `other`'s.
    fn include_bounds(&mut self, other: &Bounds) {
        self.include(other.0.iter().map(|&(low, _)| low));
        self.include(other.0.iter().map(|&(_, high)| high));
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets every channel's range.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// [`check`](Self::check) with the margins a function of the
    /// channel's (low, high), and each side taught as `teach` says.
    fn check_by(
        &mut self,
        values: impl Iterator<Item = f32>,
        margins: impl Fn(f32, f32) -> Sides<f64>,
        teach: Sides<Teach>,
    ) -> bool {
        if self.0.is_empty() {
            self.0 = values.map(|v| (v, v)).collect();
            return false;
        }
        let mut breach = false;
        for (v, (low, high)) in values.zip(self.0.iter_mut()) {
            if !v.is_finite() {
                continue;
            }
            let margins = margins(*low, *high);
            let breaches = *high > *low
                && ((v as f64) > *high as f64 + margins.above
                    || (v as f64) < *low as f64 - margins.below);
            breach |= breaches;
            // A value within the margin is normal and widens the range
            // `widen` of the way; a breaching one moves it `follow` of it.
            let step = |teach: Teach| if breaches { teach.follow } else { teach.widen };
            if v < *low {
                *low += (v - *low) * step(teach.below);
            }
            if v > *high {
                *high += (v - *high) * step(teach.above);
            }
        }
        breach
    }
}

/// Per channel, a moving average of the absolute change from the previous
/// row: it collapses on a stuck sensor and jumps on noise or a faster
/// oscillation, where the values themselves stay in range. It is bounded
/// on a log scale.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Roughness {
    /// Per channel: (previous value, average absolute change).
    channels: Vec<(f32, f32)>,
    rows: u32,
    bounds: Bounds,
}

impl Roughness {
    /// Takes the next row; once `rows` rows have been averaged, checks the
    /// averages against the bounds: a breach is an average more than
    /// `1 + tolerance.above` times the largest seen, or less than the
    /// smallest divided by `1 + tolerance.below` (learning as in
    /// [`Bounds::check`], each side as `teach` says).
    pub fn check(
        &mut self,
        row: &[f32],
        rows: usize,
        tolerance: Sides<f64>,
        teach: Sides<Teach>,
    ) -> bool {
        if self.channels.len() != row.len() {
            self.channels = row.iter().map(|&v| (v, 0.0)).collect();
            return false;
        }
        let alpha = 1.0 / rows.max(1) as f32;
        for ((previous, average), &v) in self.channels.iter_mut().zip(row) {
            if v.is_finite() {
                *average += ((v - *previous).abs() - *average) * alpha;
                *previous = v;
            }
        }
        self.rows = self.rows.saturating_add(1);
        if (self.rows as usize) < rows {
            return false;
        }
        // On a log scale: the statistic is a spread, so "beyond" is a
        // ratio, and a channel that stops moving (0) is far below any
        // spread it has shown.
        let logs = self
            .channels
            .iter()
            .map(|&(_, average)| average.max(f32::MIN_POSITIVE).ln());
        let margins = Sides {
            below: tolerance.below.ln_1p(),
            above: tolerance.above.ln_1p(),
        };
        self.bounds.check_by(logs, |_, _| margins, teach)
    }

    /// The statistic the bounds hold, per channel (log of the average change).
    fn logs(&self) -> impl Iterator<Item = f32> + '_ {
        self.channels
            .iter()
            .map(|&(_, average)| average.max(f32::MIN_POSITIVE).ln())
    }
}

/// The extremes of excursions: the values and roughness of the breaching
/// windows while an alert is open (and of the one that opened it). A level that two
/// resolved excursions have reached joins the entity's bounds, so a
/// recurring excursion (a spike as high as two before it) stops alerting,
/// while the first return to a level still alerts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Excursion {
    /// The open alert's extremes.
    values: Bounds,
    roughness: Bounds,
    /// The extremes of earlier resolved excursions, not yet learned.
    #[serde(default)]
    seen_values: Bounds,
    #[serde(default)]
    seen_roughness: Bounds,
}

impl Excursion {
    /// Records a breaching row and the roughness it left (once the
    /// roughness check has bounds).
    pub fn record(&mut self, row: &[f32], roughness: &Roughness) {
        self.values.include(row.iter().copied());
        if roughness.rows > 0 && !roughness.bounds.is_empty() {
            self.roughness.include(roughness.logs());
        }
    }

    /// The alert resolved: whatever of the excursion an earlier one reached
    /// too widens `range` and `roughness`; the rest is remembered.
    pub fn resolve(&mut self, range: &mut Bounds, roughness: &mut Roughness) {
        range.take_repeated(&self.values, &mut self.seen_values);
        if !self.roughness.is_empty() {
            roughness
                .bounds
                .take_repeated(&self.roughness, &mut self.seen_roughness);
        }
        self.clear();
    }

    /// Forgets the open alert's extremes without learning them.
    pub fn clear(&mut self) {
        self.values.clear();
        self.roughness.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teach(widen: f32, follow: f32) -> Teach {
        Teach { widen, follow }
    }

    #[test]
    fn bounds_widen_by_the_fraction_they_are_given() {
        let mut bounds = Bounds::seeded(vec![(0.0, 10.0)]);
        // Within the margin (0.5): widens `widen` of the way, whatever
        // `follow` is.
        assert!(!bounds.check(&[10.4], 0.05, teach(1.0, 0.0)));
        assert_eq!(bounds.0[0], (0.0, 10.4));
        assert!(!bounds.check(&[10.8], 0.05, teach(0.5, 0.0)));
        assert!((bounds.0[0].1 - 10.6).abs() < 1e-5);
        // Beyond it: moves `follow` of the way.
        assert!(bounds.check(&[20.6], 0.05, teach(1.0, 0.1)));
        assert!((bounds.0[0].1 - 11.6).abs() < 1e-5);
        assert!(bounds.check(&[20.6], 0.05, teach(1.0, 0.0)));
        assert!((bounds.0[0].1 - 11.6).abs() < 1e-5);
    }

    #[test]
    fn a_run_of_steps_within_the_margin_breaches_unless_each_widens_fully() {
        // Each value 4 % above the one before, within the 5 % margin of a
        // range that takes it in fully; half way, the run leaves the margin.
        let run: Vec<f32> = (1..=20).map(|k| 10.0 * 1.04f32.powi(k)).collect();
        let breaches = |widen: f32| {
            let mut bounds = Bounds::seeded(vec![(0.0, 10.0)]);
            run.iter()
                .filter(|&&v| bounds.check(&[v], 0.05, teach(widen, 0.01)))
                .count()
        };
        assert_eq!(breaches(1.0), 0);
        assert!(breaches(0.5) >= 10, "{}", breaches(0.5));
    }

    #[test]
    fn roughness_breaches_on_a_stuck_channel_and_on_noise() {
        let wave = |t: usize| (t as f32 * 0.7).sin();
        let learn = |r: &mut Roughness| {
            for t in 0..200 {
                r.check(
                    &[wave(t)],
                    4,
                    Sides::both(0.05),
                    Sides::both(teach(1.0, 0.01)),
                );
            }
        };
        let mut stuck = Roughness::default();
        learn(&mut stuck);
        let breaches = (0..20)
            .filter(|_| {
                stuck.check(
                    &[wave(199)],
                    4,
                    Sides::both(0.05),
                    Sides::both(teach(1.0, 0.01)),
                )
            })
            .count();
        assert!(breaches >= 10, "{breaches}");
        let mut noisy = Roughness::default();
        learn(&mut noisy);
        let breaches = (200..220)
            .filter(|&t| {
                noisy.check(
                    &[wave(t) + if t % 2 == 0 { 3.0 } else { -3.0 }],
                    4,
                    Sides::both(0.05),
                    Sides::both(teach(1.0, 0.01)),
                )
            })
            .count();
        assert!(breaches >= 15, "{breaches}");
    }

    #[test]
    fn a_decaying_roughness_breaches_a_lower_bound_that_only_breaches_move() {
        // A channel that stops: its roughness falls by a third each row,
        // each step within the tolerance below (a factor of 20) of the one
        // before.
        let breaches = |widen_below: f32| {
            let mut roughness = Roughness::default();
            let wave = |t: usize| (t as f32 * 0.7).sin();
            for t in 0..200 {
                roughness.check(&[wave(t)], 3, Sides::both(0.3), Sides::both(Teach::FULLY));
            }
            let teach = Sides {
                below: teach(widen_below, 0.03),
                above: teach(0.65, 0.03),
            };
            let tolerance = Sides {
                below: 19.0,
                above: 0.3,
            };
            (0..40)
                .filter(|_| roughness.check(&[wave(199)], 3, tolerance, teach))
                .count()
        };
        assert!(breaches(0.0) >= 20, "{}", breaches(0.0));
        // A lower bound that widened toward each quieter step would be
        // walked down with it.
        assert_eq!(breaches(0.65), 0);
    }

    #[test]
    fn a_level_two_excursions_reached_joins_the_range() {
        let mut range = Bounds::seeded(vec![(0.0, 10.0)]);
        let mut seen = Bounds::default();
        // The first excursion, to 20: remembered, not learned.
        range.take_repeated(&Bounds::seeded(vec![(5.0, 20.0)]), &mut seen);
        assert_eq!(range.0[0], (0.0, 10.0));
        // The second, to 30: the range takes what both reached (20).
        range.take_repeated(&Bounds::seeded(vec![(5.0, 30.0)]), &mut seen);
        assert_eq!(range.0[0], (0.0, 20.0));
        assert_eq!(seen.0[0], (5.0, 30.0));
        // Downwards on its own side.
        range.take_repeated(&Bounds::seeded(vec![(-8.0, 9.0)]), &mut seen);
        assert_eq!(range.0[0], (0.0, 20.0));
        range.take_repeated(&Bounds::seeded(vec![(-4.0, 9.0)]), &mut seen);
        assert_eq!(range.0[0], (-4.0, 20.0));
    }
}
