//! Malformed records go to the dead-letter topic, each with its reason.

use super::super::delivery_support::*;
use super::super::kafka_support::*;
use anomalyd::demo::feed::record_json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn malformed_records_go_to_the_dead_letter_topic_with_reasons() {
    let data = data();
    let s = &data.series[0];
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    let mut daemon = scenario.launch("dlq", "dlq", "[input]\nmax_record_bytes = 4096\n");
    let producer = producer(&broker.brokers);
    let bad: Vec<(&str, String)> = vec![
        ("bad_json", "{\"entity\": ".to_string()),
        ("too_large", format!("{{\"entity\": \"{}\"}}", "x".repeat(5000))),
        ("empty_payload", String::new()),
        ("not_utf8", String::from_utf8_lossy(b"\xff").into_owned()),
        ("missing_entity", r#"{"ts": 1767225600000, "values": {}}"#.to_string()),
        ("bad_timestamp", r#"{"entity": "x", "ts": "noon", "values": {}}"#.to_string()),
        ("timestamp_out_of_range", r#"{"entity": "x", "ts": 12, "values": {}}"#.to_string()),
        ("missing_channel", r#"{"entity": "x", "ts": 1767225600000, "values": {"temperature": 1}}"#.to_string()),
        (
            "non_numeric",
            r#"{"entity": "x", "ts": 1767225600000, "values": {"temperature": "warm", "pressure": 1, "flow": 1, "vibration": 1, "power": 1}}"#.to_string(),
        ),
        (
            "non_finite",
            r#"{"entity": "x", "ts": 1767225600000, "values": {"temperature": "NaN", "pressure": 1, "flow": 1, "vibration": 1, "power": 1}}"#.to_string(),
        ),
    ];
    let mut sent_bad: BTreeMap<&str, usize> = BTreeMap::new();
    for row in 0..200 {
        send(
            &producer,
            "input",
            0,
            &s.entity,
            record_json(s, row).as_bytes(),
        );
        if row == 150 {
            // The same event time again: a duplicate, set aside as out of order.
            send(
                &producer,
                "input",
                0,
                &s.entity,
                record_json(s, row).as_bytes(),
            );
            *sent_bad.entry("out_of_order").or_default() += 1;
        }
        if row % 20 == 5 {
            let (reason, payload) = &bad[(row / 20) % bad.len()];
            let bytes: Vec<u8> = if *reason == "not_utf8" {
                vec![0xff, 0xfe, b'{']
            } else {
                payload.clone().into_bytes()
            };
            send(&producer, "input", 0, "k", &bytes);
            *sent_bad.entry(reason).or_default() += 1;
        }
    }
    // A duplicate of an earlier row: out of order for its entity.
    send(
        &producer,
        "input",
        0,
        &s.entity,
        record_json(s, 10).as_bytes(),
    );
    *sent_bad.entry("out_of_order").or_default() += 1;
    flush(&producer);
    let total_bad: usize = sent_bad.values().sum();
    let mut dead = scenario.reader("dead-letters");
    let deadline = Instant::now() + Duration::from_secs(60);
    while dead.records.len() < total_bad {
        assert!(
            Instant::now() < deadline,
            "{} of {total_bad} dead letters",
            dead.records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
        dead.catch_up();
    }
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for record in &dead.records {
        let reason = record
            .headers
            .iter()
            .find(|(k, _)| k == "anomalyd-reason")
            .map(|(_, v)| v.clone())
            .expect("a reason header");
        assert!(record
            .headers
            .iter()
            .any(|(k, v)| k == "anomalyd-source" && v.starts_with("input/0/")));
        // The original key travels with the dead letter.
        let key = record.key.as_deref().expect("the original key");
        assert!(key == "k" || key == s.entity, "{key}");
        *by_reason.entry(reason).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        sent_bad.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(by_reason, expected);
    // The counters match, and the valid records were all decoded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let consumed = daemon.metric("anomalyd_records_consumed_total").unwrap();
        if consumed as usize == 200 + total_bad || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (reason, count) in &expected {
        let metric = daemon
            .metric(&format!(
                "anomalyd_records_rejected_total{{reason=\"{reason}\"}}"
            ))
            .unwrap();
        assert_eq!(metric as usize, *count, "{reason}");
    }
    // Duplicates and out-of-order records decode; the entity sets them aside.
    assert_eq!(
        daemon.metric("anomalyd_records_decoded_total").unwrap() as usize,
        200 + sent_bad["out_of_order"]
    );
    println!("dead letters by reason: {by_reason:?}");
    daemon.signal(libc::SIGTERM);
    daemon.assert_clean_exit(Duration::from_secs(30));
}
