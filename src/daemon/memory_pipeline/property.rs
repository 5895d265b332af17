//! The property: any interleaving of reads, deliveries, failures,
//! checkpoints, rebalances and crashes keeps at-least-once and, with
//! checkpoints, ends with the uninterrupted run's outputs.

use super::messages::{outputs_of, shown, Message, Messages};
use super::{settings, Pipeline, PARTITIONS};
use crate::daemon::ledger::SourceOffset;
use crate::serve::embedded::default_scorer;
use crate::serve::Scorer;
use proptest::prelude::*;
use rdkafka::error::RDKafkaErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One step of an interleaving.
#[derive(Debug, Clone)]
enum Step {
    /// Read this many records of a partition.
    Read(i32, usize),
    /// Acknowledge the output in flight at this position (modulo).
    Acknowledge(usize),
    /// Fail it with a transient error (it is sent again).
    Fail(usize),
    /// Send failed outputs again.
    Resend,
    /// Checkpoint every entity.
    Checkpoint,
    /// Commit the safe positions.
    Commit,
    /// Hand a partition back, then have it assigned again.
    Rebalance(i32),
    /// Crash; the in-flight outputs whose bit is set land.
    Crash(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..PARTITIONS, 1usize..120).prop_map(|(p, n)| Step::Read(p, n)),
        6 => any::<usize>().prop_map(Step::Acknowledge),
        2 => any::<usize>().prop_map(Step::Fail),
        2 => Just(Step::Resend),
        2 => Just(Step::Checkpoint),
        3 => Just(Step::Commit),
        1 => (0..PARTITIONS).prop_map(Step::Rebalance),
        1 => any::<u64>().prop_map(Step::Crash),
    ]
}

/// The uninterrupted run: every record read, every output acknowledged at once.
fn reference(scorer: &Arc<Scorer>) -> Vec<(SourceOffset, Message)> {
    let mut pipeline = Pipeline::new(scorer.clone(), true);
    pipeline.finish(&BTreeMap::new());
    outputs_of(&pipeline.log)
}

fn shared_scorer() -> Arc<Scorer> {
    static SCORER: std::sync::OnceLock<Arc<Scorer>> = std::sync::OnceLock::new();
    SCORER
        .get_or_init(|| Arc::new(default_scorer().unwrap()))
        .clone()
}

fn reference_outputs() -> &'static Vec<(SourceOffset, Message)> {
    static OUTPUTS: std::sync::OnceLock<Vec<(SourceOffset, Message)>> = std::sync::OnceLock::new();
    OUTPUTS.get_or_init(|| reference(&shared_scorer()))
}

#[test]
fn the_uninterrupted_run_has_alerts_scores_and_dead_letters() {
    let outputs = reference_outputs();
    let count = |topic: &str| outputs.iter().filter(|(_, m)| m.0 == topic).count();
    let config = settings(true);
    assert!(
        count(&config.kafka.alerts_topic) >= 2,
        "{}",
        count(&config.kafka.alerts_topic)
    );
    assert!(count("scores") > 100);
    assert_eq!(count(&config.kafka.dead_letter_topic), 3);
    let distinct: BTreeSet<&Message> = outputs.iter().map(|(_, m)| m).collect();
    assert_eq!(distinct.len(), outputs.len(), "no output twice");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// At-least-once under any interleaving: a committed position never
    /// passes a record whose outputs are not acknowledged; with
    /// checkpoints, in the end the output topics hold exactly the
    /// uninterrupted run's messages (some of them more than once). Without
    /// them an entity handed over or restarted warms up again from the
    /// rows its window buffer held, so its later scores differ. Failures here are transient ones: an
    /// output refused for its content is given up by design (set aside as
    /// a reference; a checkpoint is dropped and its entity's rows since
    /// its last checkpoint are not replayed after a restart,
    /// docs/reliability.md).
    #[test]
    fn any_interleaving_gives_the_uninterrupted_runs_outputs(
        checkpoints in any::<bool>(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let expected = reference_outputs();
        let mut required: BTreeMap<SourceOffset, BTreeSet<Message>> = BTreeMap::new();
        for (source, message) in expected {
            required.entry(source.clone()).or_default().insert(message.clone());
        }
        let mut pipeline = Pipeline::new(shared_scorer(), checkpoints);
        for step in steps {
            match step {
                Step::Read(p, n) => pipeline.read(p, n),
                Step::Acknowledge(pick) => pipeline.life.broker.acknowledge(pick),
                Step::Fail(pick) => pipeline.life.broker.fail(pick, None, RDKafkaErrorCode::RequestTimedOut),
                Step::Resend => pipeline.resend(),
                Step::Checkpoint => {
                    pipeline.life.worker.checkpoint(None);
                    pipeline.life.worker.tend(true);
                }
                Step::Commit => pipeline.commit(&required),
                Step::Rebalance(p) => {
                    pipeline.revoke(p, &required);
                    pipeline.assign(&[p]);
                }
                Step::Crash(landed) => pipeline.crash(landed),
            }
        }
        pipeline.finish(&required);
        prop_assert!(pipeline.life.broker.unacknowledged().is_empty());
        // Every hold taken is released, but those the window buffers keep
        // without checkpoints (each of the 4 entities' newest
        // `window_len - 1` samples): a forgotten release shows here.
        let window_len = shared_scorer().metadata().window_len;
        let buffered = if checkpoints { 0 } else { 4 * (window_len - 1) };
        prop_assert_eq!(pipeline.life.sink.ledger().held(), buffered);
        if checkpoints {
            // Everything is read, acknowledged and checkpointed: all committed.
            // (Without checkpoints the rows in window buffers stay held.)
            for p in 0..PARTITIONS {
                prop_assert_eq!(pipeline.committed.get(&p).copied(), Some(pipeline.input[&p].len() as i64));
            }
            let got: Vec<Message> = outputs_of(&pipeline.log).into_iter().map(|(_, m)| m).collect();
            let want: Vec<Message> = expected.iter().map(|(_, m)| m.clone()).collect();
            let (got_all, want_all) = (Messages::of(&got), Messages::of(&want));
            let missing: Vec<String> = want.iter().filter(|m| !got_all.contains(m)).map(shown).take(3).collect();
            let extra: Vec<String> = got.iter().filter(|m| !want_all.contains(m)).map(shown).take(3).collect();
            prop_assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
        }
    }
}
