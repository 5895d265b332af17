//! Fuzz target: the Kafka record decoder never panics, and what it accepts is
//! well-formed samples (one finite value per model channel, an entity, a time
//! in range), each of which, written back as a record, reads as itself. Input: `key \0 payload`, or only a payload when there is no NUL.
#![no_main]

use anomalyd::daemon::config::{EntitySource, InputConfig};
use anomalyd::daemon::source::decode::Decoder;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const CHANNELS: [&str; 5] = ["temperature", "pressure", "flow", "vibration", "power"];
const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
const NOW_MS: i64 = 1_800_000_000_000;

/// Two decoders: the defaults (entity in a field), and the entity from the
/// record key with one channel renamed.
fn decoders() -> &'static [Decoder; 2] {
    static DECODERS: OnceLock<[Decoder; 2]> = OnceLock::new();
    DECODERS.get_or_init(|| {
        let channels: Vec<String> = CHANNELS.iter().map(|c| c.to_string()).collect();
        let by_field = Decoder::new(&InputConfig::default(), MIN_TIMESTAMP_MS, &channels);
        let mut keyed = InputConfig {
            entity_from: EntitySource::Key,
            ..InputConfig::default()
        };
        keyed.channels.insert("temperature".into(), "temp_c".into());
        let by_key = Decoder::new(&keyed, MIN_TIMESTAMP_MS, &channels);
        [by_field, by_key]
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, payload) = match data.iter().position(|&b| b == 0) {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };
    for decoder in decoders() {
        match decoder.decode(Some(payload), key, NOW_MS) {
            Ok(samples) => {
                assert!(!samples.is_empty());
                for sample in &samples {
                    assert_eq!(sample.values.len(), CHANNELS.len());
                    assert!(sample.values.iter().all(|v| v.is_finite()));
                    assert!(!sample.entity.is_empty());
                    assert!(sample.timestamp_ms >= MIN_TIMESTAMP_MS);
                    // A sample written back as a record reads as itself.
                    let record = decoder.single_record(sample);
                    let again = decoder.decode(Some(&record), key, NOW_MS);
                    assert_eq!(again.ok().as_deref(), Some(std::slice::from_ref(sample)));
                }
            }
            Err(rejection) => assert!(rejection.detail.len() <= 204),
        }
    }
});
