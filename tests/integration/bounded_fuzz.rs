//! A short, bounded, seeded fuzz run inside `cargo test`: random and mutated
//! inputs for the record decoder, the config loader and the model metadata
//! loader. Each must answer with a value or an error, never panic.

use anomalyd::daemon::config::{DaemonConfig, InputConfig};
use anomalyd::daemon::source::decode::Decoder;
use anomalyd::model::ModelMetadata;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROUNDS: usize = 50_000;

/// A mutated copy of `seed`: byte flips, insertions, deletions, splices of
/// interesting tokens, or plain random bytes.
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"null",
        b"NaN",
        b"-Infinity",
        b"1e309",
        b"-0",
        b"\"\"",
        b"{}",
        b"[]",
        b"\\u0000",
        b"9223372036854775808",
        b"\xff\xfe",
        b"\"ts\"",
        b"\"values\"",
        b"\"entity\"",
        b"[[[[",
        b"}}}}",
        b"${",
        b"${file:/nonexistent}",
        b"=",
        b"[kafka]",
        b"\n",
    ];
    if rng.random_bool(0.05) {
        let len = rng.random_range(0..200);
        return (0..len).map(|_| rng.random()).collect();
    }
    let mut out = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..out.len())
        };
        match rng.random_range(0..4) {
            0 if !out.is_empty() => out[at] = rng.random(),
            1 => out.insert(at, rng.random()),
            2 if !out.is_empty() => {
                let end = (at + rng.random_range(1..8)).min(out.len());
                out.drain(at..end);
            }
            _ => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

#[test]
fn record_decoder_never_panics() {
    let channels: Vec<String> = ["temperature", "pressure", "flow", "vibration", "power"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let decoder = Decoder::new(&InputConfig::default(), 946_684_800_000, &channels);
    // The single form and the batch form.
    let seeds: [&[u8]; 2] = [
        br#"{"entity": "pump-7", "ts": "2026-01-01T00:15:00Z", "values": {"temperature": 61.2, "pressure": 3.1, "flow": 12.0, "vibration": 0.4, "power": 7.9}}"#,
        br#"{"entity": "pump-7", "ts": ["2026-01-01T00:15:00Z", 1767226500000], "values": {"temperature": [61.2, 61.4], "pressure": [3.1, 3.1], "flow": [12.0, 11.8], "vibration": [0.4, 0.4], "power": [7.9, 8.0]}}"#,
    ];
    let now_ms = 1_800_000_000_000;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..ROUNDS {
        let payload = mutate(&mut rng, seeds[round % 2]);
        let key = mutate(&mut rng, b"pump-7");
        match decoder.decode(Some(&payload), Some(&key), now_ms) {
            Ok(samples) => {
                assert!(!samples.is_empty());
                for sample in &samples {
                    assert!(sample.values.iter().all(|v| v.is_finite()));
                    assert_eq!(sample.values.len(), channels.len());
                    // Written back as a record of its own (a dead letter of
                    // one sample), it reads as itself.
                    let alone = decoder.single_record(sample);
                    let again = decoder.decode(Some(&alone), Some(&key), now_ms);
                    assert_eq!(again.ok().as_deref(), Some(std::slice::from_ref(sample)));
                }
                accepted += 1;
            }
            Err(rejection) => {
                assert!(rejection.detail.len() <= 204);
                rejected += 1;
            }
        }
    }
    println!(
        "decoder: {ROUNDS} mutated records, {accepted} accepted, {rejected} rejected, no panic"
    );
    assert!(
        accepted > 0 && rejected > 0,
        "the mutations should produce both"
    );
}

#[test]
fn config_loader_never_panics() {
    let seed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/config/anomalyd.toml")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut accepted = 0;
    for _ in 0..ROUNDS / 4 {
        let text = String::from_utf8_lossy(&mutate(&mut rng, &seed)).into_owned();
        if let Ok(config) = DaemonConfig::from_toml(&text, "fuzz", &|_| None) {
            let _ = config.describe();
            accepted += 1;
        }
    }
    println!(
        "config: {} mutated files, {accepted} accepted, no panic",
        ROUNDS / 4
    );
}

#[test]
fn metadata_loader_never_panics() {
    let seed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.json")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut accepted = 0;
    for _ in 0..ROUNDS / 4 {
        let text = String::from_utf8_lossy(&mutate(&mut rng, &seed)).into_owned();
        if ModelMetadata::from_json(&text, "fuzz").is_ok() {
            accepted += 1;
        }
    }
    println!(
        "metadata: {} mutated files, {accepted} accepted, no panic",
        ROUNDS / 4
    );
}
