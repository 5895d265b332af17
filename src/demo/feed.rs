//! The demo's producer: streams the synthetic sensor set into the input
//! topic as JSON records keyed by entity, in event-time order across
//! entities, at an accelerated rate, with a few malformed records mixed in
//! to show the dead-letter path.

use crate::series::timestamp::format_timestamp;
use crate::series::Series;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

/// Malformed records the demo mixes in, with the reason the daemon should give.
pub const MALFORMED: [(&str, &str); 3] = [
    ("{\"entity\": \"machine-1\", \"ts\": ", "bad_json"),
    (
        "{\"entity\": \"machine-2\", \"ts\": \"2026-01-03T00:00:00Z\", \"values\": {}}",
        "missing_channel",
    ),
    (
        "{\"entity\": \"machine-3\", \"ts\": \"not a time\", \"values\": {}}",
        "bad_timestamp",
    ),
];

/// The JSON record of one row.
pub fn record_json(series: &Series, row: usize) -> String {
    let values: serde_json::Map<String, serde_json::Value> = series
        .channels
        .iter()
        .zip(series.row(row))
        .map(|(name, &v)| (name.clone(), serde_json::json!(v)))
        .collect();
    serde_json::json!({
        "entity": series.entity,
        "ts": format_timestamp(series.timestamps[row]),
        "values": values,
    })
    .to_string()
}

/// Produces every row of `series` (interleaved by time) and the malformed
/// records to `topic` at `rate` records per second; `progress` is called
/// with the number sent so far. Returns the number of records produced.
pub fn stream(
    brokers: &str,
    topic: &str,
    series: &[Series],
    rate: f64,
    mut progress: impl FnMut(usize),
) -> Result<usize, rdkafka::error::KafkaError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    let mut order: Vec<(i64, usize, usize)> = series
        .iter()
        .enumerate()
        .flat_map(|(e, s)| {
            s.timestamps
                .iter()
                .enumerate()
                .map(move |(r, &t)| (t, e, r))
        })
        .collect();
    order.sort_unstable();
    let started = Instant::now();
    let malformed_every = order.len() / (MALFORMED.len() + 1);
    let mut sent = 0usize;
    let mut malformed = MALFORMED.iter();
    for (i, &(_, e, r)) in order.iter().enumerate() {
        if i > 0 && i % malformed_every == 0 {
            if let Some((payload, _)) = malformed.next() {
                send(
                    &producer,
                    topic,
                    series[e].entity.as_bytes(),
                    payload.as_bytes(),
                );
                sent += 1;
            }
        }
        let json = record_json(&series[e], r);
        send(
            &producer,
            topic,
            series[e].entity.as_bytes(),
            json.as_bytes(),
        );
        sent += 1;
        if sent.is_multiple_of(200) {
            progress(sent);
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    for (payload, _) in malformed {
        send(&producer, topic, b"machine-0", payload.as_bytes());
        sent += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    progress(sent);
    Ok(sent)
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
