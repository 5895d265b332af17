//! Tests of the detector's decision mechanisms, each against its absence:
//! probation silence, the range seeded from training and taught only
//! slowly by breaches, roughness bounds that lag a rise within their
//! tolerance, a wide tolerance below them (quiet is not stuck), levels two
//! excursions reached joining the range, alerts held through long
//! anomalies, and the cooldown after a detection.

use super::*;
use crate::serve::embedded::default_scorer;
use crate::synthetic::{generate, SyntheticConfig};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Anomaly-free rows of the default model's five channels: the first
/// machine of the generator's seed 7, the kind of machine the model was
/// trained on, made longer.
fn normal_rows(count: usize) -> Vec<Vec<f32>> {
    let data = generate(&SyntheticConfig {
        entities: 1,
        // The first half is anomaly-free.
        days: (2 * count).div_ceil(96),
        ..Default::default()
    });
    let series = &data.series[0];
    series
        .values
        .chunks(series.channels.len())
        .take(count)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Which event each row produced, for rows that produced one.
fn events(config: &DetectorConfig, rows: &[Vec<f32>]) -> Vec<(usize, &'static str)> {
    let scorer = default_scorer().expect("the embedded model loads");
    let mut detector = EntityDetector::new("pump", &scorer, config);
    let mut seen = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let outcome = detector
            .observe(&scorer, i as i64 * 900_000, row)
            .expect("scores");
        if let Some(event) = outcome.event {
            let kind = match event {
                AlertEvent::Opened(_) => "opened",
                AlertEvent::Updated(_) => "updated",
                AlertEvent::Resolved(_) => "resolved",
            };
            seen.push((i, kind));
        }
    }
    seen
}

fn opened_in(events: &[(usize, &str)], rows: std::ops::Range<usize>) -> usize {
    events
        .iter()
        .filter(|(i, kind)| *kind == "opened" && rows.contains(i))
        .count()
}

/// The training range of channel `c` of the default model.
fn training_range(c: usize) -> (f32, f32) {
    let scorer = default_scorer().expect("the embedded model loads");
    let [low, high] = scorer.metadata().normalisation[c]
        .range
        .expect("the default model records its training range");
    (low, high)
}

/// Rows with every channel in the middle of its training range.
fn centre_rows(count: usize) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            (0..5)
                .map(|c| {
                    let (low, high) = training_range(c);
                    (low + high) / 2.0
                })
                .collect()
        })
        .collect()
}

#[test]
fn no_alert_opens_during_probation() {
    let mut rows = normal_rows(1200);
    let (low, high) = training_range(0);
    // A value far above anything seen, inside probation.
    for row in &mut rows[600..620] {
        row[0] = high + 3.0 * (high - low);
    }
    let silent = DetectorConfig {
        probation_rows: 800,
        ..Default::default()
    };
    let told = DetectorConfig {
        probation_rows: 0,
        ..Default::default()
    };
    assert_eq!(opened_in(&events(&silent, &rows), 0..800), 0);
    assert_eq!(opened_in(&events(&told, &rows), 600..620), 1);
}

#[test]
fn the_range_starts_from_the_models_training_range() {
    let scorer = default_scorer().expect("the embedded model loads");
    let (low, high) = training_range(0);
    let mut rows = centre_rows(3);
    rows[0][0] = low + 0.45 * (high - low);
    rows[1][0] = low + 0.55 * (high - low);
    // Ordinary in training, far beyond this entity's first two rows.
    rows[2][0] = low + 0.95 * (high - low);
    let breaches = |config: &DetectorConfig| {
        let mut detector = EntityDetector::new("pump", &scorer, config);
        let mut breaches = 0;
        for (i, row) in rows.iter().enumerate() {
            detector.observe(&scorer, i as i64, row).unwrap();
            breaches += detector.last_out_of_range as usize;
        }
        breaches
    };
    assert_eq!(breaches(&DetectorConfig::default()), 0);
    let fresh = DetectorConfig {
        range_from_model: false,
        ..Default::default()
    };
    assert_eq!(breaches(&fresh), 1);
}

#[test]
fn a_level_outside_the_range_is_not_absorbed() {
    let scorer = default_scorer().expect("the embedded model loads");
    let (low, high) = training_range(0);
    // Normal rows until the calibration is ready (while it warms up, every
    // row teaches the range), then a drop by one and a half ranges, which
    // keeps the channel's texture and stays for 100 rows.
    let mut rows = normal_rows(300);
    for row in &mut rows[200..] {
        row[0] -= 1.5 * (high - low);
    }
    let breaches = |config: &DetectorConfig| {
        let mut detector = EntityDetector::new("pump", &scorer, config);
        let mut breaches = 0;
        for (i, row) in rows.iter().enumerate() {
            detector.observe(&scorer, i as i64, row).expect("scores");
            if i >= 200 {
                assert_eq!(detector.calibration_state(), CalibrationState::Ready);
                breaches += detector.last_out_of_range as usize;
            }
        }
        breaches
    };
    let slow = breaches(&DetectorConfig::default());
    assert!(slow >= 90, "the new level breached on {slow} of 100 rows");
    // The counterfactual: a range that takes in every value (and no held
    // alert, during which the range does not learn at all).
    let follows = DetectorConfig {
        range_follow: 1.0,
        alert_hold: 0,
        ..Default::default()
    };
    let absorbed = breaches(&follows);
    assert!(
        absorbed <= 3,
        "a range that follows every value: {absorbed}"
    );
}

/// 2,000 normal rows, then `anomaly` applied to rows 2,000..2,500, then
/// normal rows again up to 3,000.
fn with_anomaly(anomaly: impl Fn(&mut Vec<f32>, usize)) -> Vec<Vec<f32>> {
    let mut rows = normal_rows(3000);
    for (i, row) in rows[2000..2500].iter_mut().enumerate() {
        anomaly(row, i);
    }
    rows
}

/// Asserts that an alert opens early in the anomaly, stays open through
/// it and resolves soon after it ends.
fn assert_held(config: &DetectorConfig, rows: &[Vec<f32>], name: &str) {
    let events = events(config, rows);
    let opened: Vec<usize> = events
        .iter()
        .filter(|(_, k)| *k == "opened")
        .map(|(i, _)| *i)
        .collect();
    let start = *opened
        .iter()
        .find(|&&i| i >= 2000)
        .unwrap_or_else(|| panic!("{name}: no alert opened: {events:?}"));
    assert!(start < 2064, "{name}: opened at row {start}: {events:?}");
    let resolved = events
        .iter()
        .find(|(i, k)| *i > start && *k == "resolved")
        .map(|(i, _)| *i)
        .unwrap_or_else(|| panic!("{name}: never resolved: {events:?}"));
    assert!(
        resolved >= 2500,
        "{name}: resolved at row {resolved}, inside the anomaly: {events:?}"
    );
    assert!(
        resolved < 2500 + 150,
        "{name}: resolved at row {resolved}, long after the anomaly: {events:?}"
    );
}

fn level_shift() -> Vec<Vec<f32>> {
    let (low, high) = training_range(0);
    with_anomaly(|row, _| row[0] += high - low)
}

fn noise_burst() -> Vec<Vec<f32>> {
    let (low, high) = training_range(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let noise = Normal::new(0.0, 0.25 * (high - low)).expect("a valid spread");
    let draws: Vec<f32> = (0..500).map(|_| noise.sample(&mut rng)).collect();
    with_anomaly(move |row, i| row[1] += draws[i])
}

#[test]
fn an_alert_is_held_through_a_500_row_level_shift_and_resolves_after_it() {
    assert_held(&DetectorConfig::default(), &level_shift(), "level shift");
}

#[test]
fn an_alert_is_held_through_a_500_row_noise_burst_and_resolves_after_it() {
    assert_held(&DetectorConfig::default(), &noise_burst(), "noise burst");
}

#[test]
fn without_the_hold_the_calibration_learns_the_anomaly_and_the_alert_resolves_in_it() {
    let config = DetectorConfig {
        alert_hold: 0,
        ..Default::default()
    };
    for (rows, name) in [
        (level_shift(), "level shift"),
        (noise_burst(), "noise burst"),
    ] {
        let events = events(&config, &rows);
        assert!(
            opened_in(&events, 2000..2064) >= 1,
            "{name}: no alert at the onset: {events:?}"
        );
        let resolved_inside = events
            .iter()
            .any(|(i, k)| (2064..2500).contains(i) && *k == "resolved");
        assert!(
            resolved_inside,
            "{name}: held without the mechanism: {events:?}"
        );
    }
}

/// Rows of channel 1 that breach during a burst on it: from row 2,000 to
/// 2,060 a zig-zag whose height grows `growth` times per row, from a
/// quarter of the channel's ordinary change per row; under `config`.
fn growing_burst_breaches(config: &DetectorConfig, growth: f32) -> usize {
    let scorer = default_scorer().expect("the embedded model loads");
    let mut rows = normal_rows(2100);
    let ordinary = rows[1000..2000]
        .windows(2)
        .map(|w| (w[1][1] - w[0][1]).abs())
        .sum::<f32>()
        / 999.0;
    for (i, row) in rows[2000..2060].iter_mut().enumerate() {
        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
        row[1] += sign * 0.25 * ordinary * growth.powi(i as i32);
    }
    let mut detector = EntityDetector::new("pump", &scorer, config);
    let mut breaches = 0;
    for (i, row) in rows.iter().enumerate() {
        detector.observe(&scorer, i as i64, row).expect("scores");
        breaches += ((2000..2060).contains(&i) && detector.last_out_of_range) as usize;
    }
    breaches
}

/// A burst whose roughness grows 10 % a row: each row within the roughness
/// tolerance (30 %) of the one before.
const GROWTH: f32 = 1.1;

#[test]
fn a_noise_burst_that_builds_up_row_by_row_breaches_the_roughness_check() {
    let lagging = growing_burst_breaches(&DetectorConfig::default(), GROWTH);
    assert!(
        lagging >= 25,
        "the growing burst breached on {lagging} rows"
    );
    // The counterfactual: bounds that take in every rise within the
    // tolerance at once are walked up by the burst.
    let following = growing_burst_breaches(
        &DetectorConfig {
            roughness_widen: 1.0,
            ..Default::default()
        },
        GROWTH,
    );
    assert!(
        following * 2 <= lagging,
        "bounds that follow every rise: {following} breaching rows against {lagging}"
    );
}

/// Rows of the power channel (4) that breach under `config` when rows
/// 2,000..2,200 are replaced by `stretch` (given the row's index in the
/// stretch, the ordinary value and the value at row 1,999).
fn power_breaches(config: &DetectorConfig, stretch: impl Fn(usize, f32, f32) -> f32) -> Vec<usize> {
    let scorer = default_scorer().expect("the embedded model loads");
    let mut rows = normal_rows(2300);
    let before = rows[1999][4];
    for (i, row) in rows[2000..2200].iter_mut().enumerate() {
        row[4] = stretch(i, row[4], before);
    }
    let mut detector = EntityDetector::new("pump", &scorer, config);
    let mut breaching = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        detector.observe(&scorer, i as i64, row).expect("scores");
        if (2000..2200).contains(&i) && detector.last_out_of_range {
            breaching.push(i);
        }
    }
    breaching
}

#[test]
fn a_quiet_stretch_does_not_breach_the_roughness_check_and_a_stuck_sensor_does() {
    // Quiet: every change from row to row at a quarter of the ordinary,
    // the values drawn toward one in range, so the roughness falls below
    // the quietest the entity has shown. (The false alarms on the clean
    // half of machines the model was not trained on were such stretches,
    // at 0.5 to 0.7 of the quietest the warm-up had shown.)
    let quiet = |_: usize, value: f32, before: f32| before + 0.25 * (value - before);
    let breaching = power_breaches(&DetectorConfig::default(), quiet);
    assert!(
        breaching.is_empty(),
        "the quiet stretch breached on rows {breaching:?}"
    );
    // The counterfactual: the tolerance above on both sides.
    let symmetric = DetectorConfig {
        roughness_tolerance_below: DetectorConfig::default().roughness_tolerance,
        ..Default::default()
    };
    let breaching = power_breaches(&symmetric, quiet);
    assert!(
        breaching.len() >= 10,
        "with the tolerance above below too: {breaching:?}"
    );
    // Stuck: the value of row 1,999 from row 2,000 on, found within 20 rows
    // and breaching while it lasts.
    let stuck = |_: usize, _: f32, before: f32| before;
    let breaching = power_breaches(&DetectorConfig::default(), stuck);
    assert!(
        breaching.first().is_some_and(|&i| i < 2020) && breaching.len() >= 150,
        "the stuck sensor breached on rows {breaching:?}"
    );
}

#[test]
fn after_a_detection_the_cooldown_opens_no_second_alert() {
    let (low, high) = training_range(0);
    let mut rows = normal_rows(1400);
    // Two spikes 35 rows apart: one event as far as a pager is concerned.
    for t in (1000..1005).chain(1035..1040) {
        rows[t][0] = high + 2.0 * (high - low);
    }
    let events_with = events(&DetectorConfig::default(), &rows);
    assert_eq!(opened_in(&events_with, 1000..1400), 1, "{events_with:?}");
    let mut config = DetectorConfig::default();
    config.alerts.cooldown = 0;
    let events_without = events(&config, &rows);
    assert_eq!(
        opened_in(&events_without, 1000..1400),
        2,
        "{events_without:?}"
    );
}

/// Rows with a 3-row spike on channel 0 at each of `starts`, to `heights`
/// training ranges above the top of its training range.
fn spikes(starts: &[usize], heights: &[f32]) -> Vec<Vec<f32>> {
    let (low, high) = training_range(0);
    let mut rows = normal_rows(starts.last().map_or(0, |s| s + 300));
    for (&start, &height) in starts.iter().zip(heights) {
        for row in &mut rows[start..start + 3] {
            row[0] = high + height * (high - low);
        }
    }
    rows
}

/// For each spike of `spikes(starts, heights)`, whether any of its rows
/// breached the range, under `config`.
fn spikes_breaching(config: &DetectorConfig, starts: &[usize], heights: &[f32]) -> Vec<bool> {
    let scorer = default_scorer().expect("the embedded model loads");
    let rows = spikes(starts, heights);
    let mut detector = EntityDetector::new("pump", &scorer, config);
    let mut breached = vec![false; starts.len()];
    for (i, row) in rows.iter().enumerate() {
        detector.observe(&scorer, i as i64, row).expect("scores");
        if let Some(k) = starts.iter().position(|&s| (s..s + 3).contains(&i)) {
            breached[k] |= detector.last_out_of_range;
        }
    }
    breached
}

#[test]
fn a_level_two_excursions_reached_stops_breaching() {
    let starts = [1000, 1300, 1600, 1900];
    // The first return to a level still breaches; from the third on, the
    // level is one the entity shows.
    let learning = DetectorConfig {
        learn_excursions: true,
        ..Default::default()
    };
    let learned = spikes_breaching(&learning, &starts, &[2.0; 4]);
    assert_eq!(learned, [true, true, false, false]);
    let config = DetectorConfig {
        learn_excursions: false,
        ..Default::default()
    };
    let unlearned = spikes_breaching(&config, &starts, &[2.0; 4]);
    assert_eq!(unlearned, [true; 4]);
}

#[test]
fn a_higher_excursion_still_breaches_after_two_lower_ones() {
    let learning = DetectorConfig {
        learn_excursions: true,
        ..Default::default()
    };
    let breached = spikes_breaching(&learning, &[1000, 1300, 1600], &[2.0, 2.0, 4.0]);
    assert_eq!(breached, [true, true, true]);
}

/// Each window's outcome when `batch` rows are pushed before their windows
/// are decided, as the daemon does. Each window is scored on its own: the
/// model's rounding may differ with the batch size, and that is not what
/// this looks at.
fn decided_in_batches(config: &DetectorConfig, rows: &[Vec<f32>], batch: usize) -> Vec<RowOutcome> {
    let scorer = default_scorer().expect("the embedded model loads");
    let mut detector = EntityDetector::new("pump", &scorer, config);
    let mut outcomes = Vec::new();
    for (n, chunk) in rows.chunks(batch).enumerate() {
        let pending: Vec<PendingWindow> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, row)| detector.push(&scorer, ((n * batch + i) as i64) * 900_000, row))
            .collect();
        for window in &pending {
            let scored = scorer
                .score_normalised_windows([&window.window])
                .expect("scores")
                .pop()
                .expect("one score");
            outcomes.push(detector.decide(&scorer, window, &scored));
        }
    }
    outcomes
}

#[test]
fn decisions_do_not_depend_on_how_many_rows_are_pushed_before_they_are_decided() {
    // Breaches, alerts held and resolved, excursions learned.
    let mut rows = spikes(&[1000, 1300, 1600, 1900], &[2.0; 4]);
    rows.extend(level_shift().into_iter().skip(1800));
    for learn_excursions in [false, true] {
        let config = DetectorConfig {
            learn_excursions,
            ..Default::default()
        };
        let one_by_one = decided_in_batches(&config, &rows, 1);
        let alerts = one_by_one.iter().filter(|o| o.opened()).count();
        assert!(alerts >= 3, "the series should alert: {alerts}");
        for batch in [2, 7, 64, 500] {
            let batched = decided_in_batches(&config, &rows, batch);
            let first_difference = one_by_one.iter().zip(&batched).position(|(a, b)| a != b);
            assert_eq!(
                first_difference,
                None,
                "learn_excursions {learn_excursions}, batches of {batch}: {:?}",
                first_difference.map(|i| (&one_by_one[i], &batched[i]))
            );
            assert_eq!(batched.len(), one_by_one.len());
        }
    }
}
