//! Poison records, refused outputs, fatal errors, a stop that always ends
//! and state kept per consumer group: the real binary against the mock
//! cluster (docs/reliability.md, "Poison records" and "Error classes").

use super::super::delivery_support::*;
use super::super::kafka_support::*;
use anomalyd::demo::feed::record_json;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A test producer that may send records of up to 3 MB.
fn large_producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "3000000")
        .set("linger.ms", "2")
        .create()
        .unwrap()
}

/// Sends rows `rows` of the first synthetic series to partition 0.
fn send_rows(producer: &ThreadedProducer<DefaultProducerContext>, rows: std::ops::Range<usize>) {
    let data = data();
    let s = &data.series[0];
    for row in rows {
        send(
            producer,
            "input",
            0,
            &s.entity,
            record_json(s, row).as_bytes(),
        );
    }
    flush(producer);
}

/// Waits until `group` has committed `offset` on input partition 0.
fn wait_committed(
    brokers: &str,
    group: &str,
    offset: i64,
    limit: Duration,
    daemon: &DaemonProcess,
) {
    let reader = CommittedOffsets::new(brokers, group);
    let deadline = Instant::now() + limit;
    loop {
        let committed = reader.read("input", 1)[0];
        if committed >= offset {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {committed}, expected {offset}; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the dead-letter topic holds `count` records.
fn dead_letters(brokers: &str, count: usize, daemon: &DaemonProcess) -> Vec<ReadRecord> {
    let mut dead = TopicReader::new(brokers, "dead-letters", 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while dead.records.len() < count {
        assert!(
            Instant::now() < deadline,
            "{} of {count} dead letters; log:\n{}",
            dead.records.len(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
        dead.catch_up();
    }
    dead.records
}

/// Runs `send` while the daemon is paused, then queues `errors` (per request
/// kind) on the broker and lets the daemon go on. Injected errors hit every
/// client, the test's own producer too, so the records go in first.
fn send_then_fail(
    daemon: &DaemonProcess,
    broker: &Broker,
    send: impl FnOnce(),
    errors: &[(RDKafkaApiKey, &[RDKafkaRespErr])],
) {
    daemon.signal(libc::SIGSTOP);
    send();
    for (api, codes) in errors {
        broker.cluster.request_errors(*api, codes);
    }
    daemon.signal(libc::SIGCONT);
}

fn header<'a>(record: &'a ReadRecord, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn records_over_each_size_limit_are_set_aside_and_the_partition_goes_on() {
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    // Default limits: input.max_record_bytes 1 MiB, the producers' own
    // message.max.bytes derived from it.
    let mut daemon = scenario.launch("poison", "poison", "");
    let producer = large_producer(&broker.brokers);
    send_rows(&producer, 0..100);
    // Over input.max_record_bytes but within the producers' limit: set aside whole.
    let whole = format!("{{\"entity\": \"{}\"}}", "x".repeat(1_100_000));
    send(&producer, "input", 0, "big", whole.as_bytes());
    // Over the producers' limit too: set aside as a reference.
    let huge = format!("{{\"entity\": \"{}\"}}", "y".repeat(1_200_000));
    send(&producer, "input", 0, "huge", huge.as_bytes());
    flush(&producer);
    send_rows(&producer, 100..200);

    let records = dead_letters(&broker.brokers, 2, &daemon);
    let by_key = |key: &str| {
        records
            .iter()
            .find(|r| r.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no dead letter keyed {key}: {records:?}"))
    };
    let big = by_key("big");
    assert_eq!(big.payload.len(), whole.len(), "set aside whole");
    assert_eq!(header(big, "anomalyd-reason"), Some("too_large"));
    assert_eq!(header(big, "anomalyd-source"), Some("input/0/100"));
    assert_eq!(header(big, "anomalyd-refused"), None);
    let reference = by_key("huge");
    assert_eq!(header(reference, "anomalyd-reason"), Some("too_large"));
    assert_eq!(header(reference, "anomalyd-source"), Some("input/0/101"));
    assert_eq!(
        header(reference, "anomalyd-original-size"),
        Some(&*(huge.len() + "huge".len()).to_string())
    );
    assert!(
        header(reference, "anomalyd-refused").is_some_and(|why| why.contains("too large")),
        "{:?}",
        reference.headers
    );
    assert_eq!(reference.payload, huge.as_bytes()[..1024]);

    // Everything after them is read, scored and committed.
    wait_committed(
        &broker.brokers,
        "poison",
        202,
        Duration::from_secs(60),
        &daemon,
    );
    assert_eq!(daemon.metric("anomalyd_records_decoded_total"), Some(200.0));
    assert_eq!(
        daemon.metric("anomalyd_outputs_refused_total{output=\"dead_letter\"}"),
        Some(1.0)
    );
    daemon.signal(libc::SIGTERM);
    daemon.assert_clean_exit(Duration::from_secs(30));
}

#[test]
fn an_output_the_broker_refuses_is_set_aside_and_the_partition_goes_on() {
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    let mut daemon = scenario.launch("refused", "refused", "");
    let producer = producer(&broker.brokers);
    send_rows(&producer, 0..100);
    wait_committed(
        &broker.brokers,
        "refused",
        100,
        Duration::from_secs(60),
        &daemon,
    );
    // The broker refuses the next produce requests for their content: the
    // dead letter's, then its reference's. (Injected errors hit every
    // client: the record goes in while the daemon is paused, before them.)
    send_then_fail(
        &daemon,
        broker,
        || {
            send(&producer, "input", 0, "k", b"{\"entity\": ");
            flush(&producer);
        },
        &[(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 2],
        )],
    );
    let records = dead_letters(&broker.brokers, 1, &daemon);
    let reference = &records[0];
    assert_eq!(header(reference, "anomalyd-reason"), Some("bad_json"));
    assert_eq!(header(reference, "anomalyd-source"), Some("input/0/100"));
    assert!(
        header(reference, "anomalyd-refused").is_some_and(|why| why.contains("broker")),
        "{:?}",
        reference.headers
    );
    // A small record is whole in its reference.
    assert_eq!(reference.payload, b"{\"entity\": ");
    send_rows(&producer, 100..200);
    wait_committed(
        &broker.brokers,
        "refused",
        201,
        Duration::from_secs(60),
        &daemon,
    );
    assert!(daemon.metric("anomalyd_outputs_refused_total{output=\"dead_letter\"}") >= Some(1.0));
    daemon.signal(libc::SIGTERM);
    daemon.assert_clean_exit(Duration::from_secs(30));
}

#[test]
fn sigterm_ends_the_daemon_in_time_while_the_broker_refuses_every_output() {
    let data = data();
    let s = data.series[0].slice(0, 600);
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    let extra = "[shutdown]\ngrace_period_s = 4\n";
    let mut daemon = scenario.launch("stuck", "stuck", extra);
    let producer = producer(&broker.brokers);
    send_rows(&producer, 0..300);
    wait_committed(
        &broker.brokers,
        "stuck",
        300,
        Duration::from_secs(60),
        &daemon,
    );
    // The rest goes in while the daemon is paused; then every produce
    // request fails (librdkafka retries them). Injected errors hit every
    // client, the test's producer too: it is done by then.
    send_then_fail(
        &daemon,
        broker,
        || send_rows(&producer, 300..600),
        &[(
            RDKafkaApiKey::Produce,
            &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
        )],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.metric("anomalyd_records_consumed_total") < Some(600.0) {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    let took = asked.elapsed();
    println!("reliability | SIGTERM while every output is refused | exit {status:?} after {took:?} (grace 4 s)");
    assert!(
        took <= Duration::from_millis(4_500),
        "took {took:?}; log:\n{}",
        daemon.log_text()
    );
    // EX_TEMPFAIL: the drain was not complete.
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(75),
        "{}",
        daemon.log_text()
    );
    let committed = committed(&broker.brokers, "stuck", "input", 1)[0];
    assert!(
        (300..600).contains(&committed),
        "committed {committed}: nothing unacknowledged may be"
    );

    // The broker is back: a restart scores every window, none lost.
    broker.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let _restarted = scenario.launch("stuck-2", "stuck", extra);
    let expected = expected_windows(&[&s]);
    let mut scores = scenario.reader("scores");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        scores.catch_up();
        let seen: BTreeSet<_> = score_sources(&scores).into_iter().collect();
        if expected.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} windows scored after the restart",
            expected.intersection(&seen).count(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_groups_on_one_input_each_score_every_window() {
    let data = data();
    let s = data.series[0].slice(0, 400);
    let mut topics = all_topics(1);
    topics.extend([("first-state", 1), ("second-state", 1)]);
    let broker = start_broker(&topics);
    let dir = tempfile::tempdir().unwrap();
    produce_series(&broker.brokers, &[&s]);
    let expected = expected_windows(&[&s]);
    let mut scores = TopicReader::new(&broker.brokers, "scores", 1);
    // The first two use their groups' own state topics; the third shares
    // the first's explicitly, and must not restore its checkpoints.
    let runs = [
        ("first", GROUP_STATE_TOPIC.to_string()),
        ("second", GROUP_STATE_TOPIC.to_string()),
        (
            "third",
            "[state]\ntopic = \"first-state\"\ncheckpoint_interval_ms = 1000\n".to_string(),
        ),
    ];
    for (round, (group, extra)) in runs.iter().enumerate() {
        let mut daemon = DaemonProcess::launch(dir.path(), &broker.brokers, group, group, extra);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            scores.catch_up();
            let sources = score_sources(&scores);
            let complete = expected
                .iter()
                .all(|w| sources.iter().filter(|s| *s == w).count() > round);
            if complete {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{group}: log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_committed(
            &broker.brokers,
            group,
            s.len() as i64,
            Duration::from_secs(30),
            &daemon,
        );
        assert_eq!(
            daemon.metric("anomalyd_samples_already_checkpointed_total"),
            Some(0.0),
            "{group} skipped records"
        );
        let other = daemon.metric("anomalyd_state_restored_total{outcome=\"other_group\"}");
        if *group == "third" {
            assert!(other > Some(0.0), "{group}: {other:?}");
            assert!(daemon
                .log_text()
                .contains("checkpoints of other consumer groups"));
        } else {
            assert_eq!(other, Some(0.0), "{group}");
        }
        daemon.signal(libc::SIGTERM);
        daemon.assert_clean_exit(Duration::from_secs(30));
    }
}

/// Starts the daemon with `error` answering every `api` request, as a broker
/// that refuses for good does, and returns its exit code, its stderr and the
/// group's committed offset.
///
/// Every request, not only the first: a single queued error can be spent on
/// a request whose answer the client never reads (a bootstrap connection it
/// closes once it knows the broker's id, then asks again and is answered
/// normally). That happened on a loaded CI machine: the daemon then ran on
/// and committed.
fn run_into(api: RDKafkaApiKey, error: RDKafkaRespErr) -> (Option<i32>, String, i64) {
    let broker = start_broker(&all_topics(1));
    send_rows(&producer(&broker.brokers), 0..100);
    broker.cluster.request_errors(api, &[error; 1000]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fatal.toml");
    let log = dir.path().join("stderr.log");
    std::fs::write(
        &config,
        daemon_config(&broker.brokers, "fatal", free_port(), ""),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["run", "--config"])
        .arg(&config)
        // A file, not a pipe: a pipe read only after the exit would stop a
        // daemon that logs more than the pipe holds.
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    // The test's own reader asks the same broker.
    broker.cluster.clear_request_errors(api);
    let committed = committed(&broker.brokers, "fatal", "input", 1)[0];
    (status.code(), stderr, committed)
}

#[test]
fn fatal_errors_exit_with_their_codes_and_commit_nothing_unacknowledged() {
    use RDKafkaRespErr::*;
    let cases = [
        (
            "the group is not authorised",
            RDKafkaApiKey::FindCoordinator,
            RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
            77,
        ),
        (
            "the cluster refuses the idempotent producer",
            RDKafkaApiKey::InitProducerId,
            RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED,
            77,
        ),
        (
            "the idempotent producer is fenced",
            RDKafkaApiKey::InitProducerId,
            RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
            70,
        ),
    ];
    for (what, api, error, code) in cases {
        let (status, stderr, committed) = run_into(api, error);
        println!("reliability | fatal: {what} | exit {status:?} | committed {committed}");
        assert_eq!(status, Some(code), "{what}: {stderr}");
        assert!(stderr.contains("fatal error"), "{what}: {stderr}");
        // Stopped before any output was acknowledged: no record committed
        // (offset 0 is the position before the first record).
        assert!(committed <= 0, "{what}: committed {committed}");
    }
}

#[test]
fn a_producer_fenced_mid_stream_stops_the_daemon_with_nothing_unacknowledged_committed() {
    use RDKafkaRespErr::*;
    let data = data();
    let s = data.series[0].slice(0, 600);
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    let mut daemon = scenario.launch("fenced", "fenced", "");
    let producer = producer(&broker.brokers);
    send_rows(&producer, 0..300);
    wait_committed(
        &broker.brokers,
        "fenced",
        300,
        Duration::from_secs(60),
        &daemon,
    );
    // The rest goes in while the daemon is paused; then a produce request
    // fails out of sequence, the producer asks for a new epoch and the
    // broker says it is fenced: a fatal error.
    send_then_fail(
        &daemon,
        broker,
        || send_rows(&producer, 300..600),
        &[
            (
                RDKafkaApiKey::InitProducerId,
                &[RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 4],
            ),
            (
                RDKafkaApiKey::Produce,
                &[RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER; 4],
            ),
        ],
    );
    let status = daemon.wait_exit(Duration::from_secs(60));
    let committed = committed(&broker.brokers, "fenced", "input", 1)[0];
    println!("reliability | fatal mid-stream: the idempotent producer is fenced | exit {:?} | committed {committed}", status.and_then(|s| s.code()));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(70),
        "{}",
        daemon.log_text()
    );
    // Every window before the committed offset has its score: nothing
    // unacknowledged was committed.
    broker.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let mut scores = scenario.reader("scores");
    scores.catch_up();
    let seen: BTreeSet<(i32, i64)> = score_sources(&scores).into_iter().collect();
    let before: Vec<(i32, i64)> = expected_windows(&[&s])
        .into_iter()
        .filter(|&(_, offset)| offset < committed)
        .collect();
    assert!(committed >= 300, "committed {committed}");
    let missing: Vec<_> = before.iter().filter(|w| !seen.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "committed {committed} past unscored windows {missing:?}"
    );
}
