//! Faults of the process: `kill -9` at random moments with restarts, and a
//! consumer group of two where one member stops gracefully and then one dies.

use super::broker::uncommitted_records;
use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Runs of the crash test, each with two kills at random moments.
const CRASH_RUNS: u64 = 4;

#[test]
fn kill_9_at_random_moments_then_restart_scores_every_window() {
    let seed: u64 = std::env::var("ANOMALYD_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_128);
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(4).collect();
    let expected = expected_windows(&series);
    let reference = reference_alert_ids(&series);
    let mut totals = Tally::default();
    let mut moments = Vec::new();
    for run in 0..CRASH_RUNS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed + run);
        let scenario = Scenario::new(4);
        let broker = &scenario.broker;
        produce_series(&broker.brokers, &series);
        let mut scores = scenario.reader("scores");
        let mut alerts = scenario.reader("alerts");
        let group = format!("crash-{run}");
        // A short session timeout: the killed members leave the group quickly.
        let extra = "[scoring]\nmax_batch = 16\n[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n";
        let mut uncommitted = 0;
        let mut snapshots = Vec::new();
        for kill in 0..2 {
            let daemon = scenario.launch(&format!("run{run}-{kill}"), &group, extra);
            // The first kill comes at a random time, 0.2 s to 4 s after the
            // admin port answers: during the group join, the first fetches or
            // the steady state. The second comes mid-stream, after a random
            // number of windows.
            let started = Instant::now();
            let kill_time = started + Duration::from_millis(rng.random_range(200..4_000));
            let kill_after_windows = rng.random_range(200..5_000) as f64;
            let until = |_: &TopicReader, _: &[i64]| {
                if kill == 0 {
                    Instant::now() >= kill_time
                } else {
                    daemon
                        .metric("anomalyd_windows_scored_total")
                        .unwrap_or(0.0)
                        >= kill_after_windows
                        || started.elapsed() > Duration::from_secs(60)
                }
            };
            snapshots.extend(check_commits_never_pass_unacknowledged_outputs(
                &broker.brokers,
                &group,
                4,
                &expected,
                &mut scores,
                &mut alerts,
                until,
            ));
            let delay = started.elapsed();
            let scored = daemon
                .metric("anomalyd_windows_scored_total")
                .unwrap_or(0.0);
            daemon.signal(libc::SIGKILL);
            drop(daemon);
            let at_kill = committed(&broker.brokers, &group, "input", 4);
            uncommitted += uncommitted_records(&series, &at_kill);
            moments.push(format!(
                "{:.1} s ({scored} scored, committed {at_kill:?})",
                delay.as_secs_f64()
            ));
        }
        let mut last = scenario.launch(&format!("run{run}-last"), &group, extra);
        let deadline = Instant::now() + Duration::from_secs(120);
        snapshots.extend(check_commits_never_pass_unacknowledged_outputs(
            &broker.brokers,
            &group,
            4,
            &expected,
            &mut scores,
            &mut alerts,
            |scores, _| {
                assert!(
                    Instant::now() < deadline,
                    "run {run} did not finish; log:\n{}",
                    last.log_text()
                );
                let seen: BTreeSet<(i32, i64)> = score_sources(scores).into_iter().collect();
                expected.is_subset(&seen)
            },
        ));
        let pairs = check_alert_snapshots(&snapshots, &alert_keys(&alerts));
        let tally = Tally::count(record_count(&series), &expected, &mut scores, &mut alerts);
        println!(
            "crash run {run} (seed {}): {} missing, {} duplicate scores (bound {uncommitted}), {} alerts, {} duplicate alert messages, {} commits and {pairs} (commit, alert) pairs checked",
            seed + run,
            tally.missing,
            tally.duplicates,
            tally.alerts,
            tally.duplicate_alerts,
            snapshots.len()
        );
        assert_eq!(tally.missing, 0, "run {run} lost windows");
        assert_same_alerts(&tally, &reference, &format!("crash run {run}"));
        assert!(
            tally.duplicates <= uncommitted,
            "run {run}: {} duplicates, {uncommitted} records were past the committed offsets at the kills",
            tally.duplicates
        );
        last.signal(libc::SIGTERM);
        last.assert_clean_exit(Duration::from_secs(30));
        totals.records += tally.records;
        totals.windows += tally.windows;
        totals.missing += tally.missing;
        totals.duplicates += tally.duplicates;
        totals.alerts += tally.alerts;
        totals.duplicate_alerts += tally.duplicate_alerts;
    }
    totals.report(
        &format!("kill -9 twice per run at random moments, {CRASH_RUNS} runs"),
        &format!("seed {seed}; kills at {}", moments.join(", ")),
    );
}

#[test]
fn a_group_member_that_stops_or_dies_hands_its_partitions_over_losing_nothing() {
    let data = data();
    let series: Vec<&Series> = data.series.iter().take(4).collect();
    let scenario = Scenario::new(4);
    let broker = &scenario.broker;
    let expected = expected_windows(&series);
    // About 600 records/s, so each membership change lands mid-stream.
    let feeder = stream_series(&broker.brokers, &series, 30, Duration::from_millis(200));
    // A short session timeout, so the group notices a dead member quickly.
    let extra = "[scoring]\nmax_batch = 8\n[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n";
    let mut a = scenario.launch("a", "group", extra);
    let b = scenario.launch("b", "group", extra);
    wait_for_metric(
        &b,
        "anomalyd_windows_scored_total",
        300.0,
        Duration::from_secs(60),
    );
    // a stops gracefully: b takes its partitions.
    a.signal(libc::SIGTERM);
    a.assert_clean_exit(Duration::from_secs(30));
    let c = scenario.launch("c", "group", extra);
    wait_for_metric(
        &c,
        "anomalyd_windows_scored_total",
        300.0,
        Duration::from_secs(60),
    );
    // b dies: c takes everything once the session times out.
    let committed_at_kill = committed(&broker.brokers, "group", "input", 4);
    b.signal(libc::SIGKILL);
    drop(b);
    feeder.join().unwrap();
    let mut scores = scenario.reader("scores");
    let mut alerts = scenario.reader("alerts");
    wait_for_every_window(&mut scores, &expected, Duration::from_secs(120), &[&c]);
    let reference = reference_alert_ids(&series);
    wait_for_alert_ids(&mut alerts, &reference, Duration::from_secs(20));
    let tally = Tally::count(record_count(&series), &expected, &mut scores, &mut alerts);
    assert_same_alerts(&tally, &reference, "group handover");
    tally.report(
        "group of two: one member SIGTERM, a new one joins, then the other kill -9",
        &format!(
            "committed at the kill {committed_at_kill:?}; the survivor scored {}",
            c.metric("anomalyd_windows_scored_total").unwrap()
        ),
    );
    assert_eq!(tally.missing, 0);
    assert!(
        c.log_text().contains("partitions assigned"),
        "{}",
        c.log_text()
    );
    let mut c = c;
    c.signal(libc::SIGTERM);
    c.assert_clean_exit(Duration::from_secs(30));
}
