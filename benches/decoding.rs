//! Record decoding throughput: records and bytes per second of the daemon's
//! JSON record decoder on the demo's records, against baselines in the same
//! run: parsing the same bytes into a generic `serde_json::Value`, which does
//! less (no field lookup, channel mapping or checks), and the daemon's
//! decoder with sonic-rs (SIMD) as its JSON parser in place of serde_json:
//! the same one-pass field reader and checks, on sonic-rs's serde
//! deserializer. Prints JSON lines.
//! `cargo bench --bench decoding -- [--seconds S]`.

use anomalyd::daemon::config::InputConfig;
use anomalyd::daemon::source::decode::fields::read_fields_from;
use anomalyd::daemon::source::decode::{Decoder, Rejection, Samples};
use anomalyd::demo::feed::record_json;
use anomalyd::synthetic::{generate, SyntheticConfig};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs `work` over `records` repeatedly for about `seconds`; records per second.
fn rate(records: &[Vec<u8>], seconds: f64, mut work: impl FnMut(&[u8])) -> f64 {
    let deadline = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < deadline {
        for record in records {
            work(record);
        }
        done += records.len();
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// The daemon's decoding with sonic-rs as the JSON parser.
fn decode_with_sonic(
    decoder: &Decoder,
    record: &[u8],
    now_ms: i64,
) -> Option<Result<Samples, Rejection>> {
    let mut deserializer = sonic_rs::Deserializer::from_slice(record);
    let fields = read_fields_from(&mut deserializer, &decoder.field_names()).ok()?;
    deserializer.end().ok()?;
    Some(decoder.decode_fields(fields, None, now_ms))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut seconds = 3.0;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().unwrap_or_default().parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let data = generate(&SyntheticConfig::default());
    let channels = data.series[0].channels.clone();
    let records: Vec<Vec<u8>> = data
        .series
        .iter()
        .flat_map(|s| (0..s.len()).map(move |row| record_json(s, row).into_bytes()))
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let mean_bytes = bytes as f64 / records.len() as f64;
    let decoder = Decoder::new(&InputConfig::default(), 946_684_800_000, &channels);
    let now_ms = 1_900_000_000_000;
    // Every record decodes (a benchmark of the happy path).
    for record in &records {
        decoder
            .decode(Some(record), None, now_ms)
            .map_err(|r| anyhow::anyhow!("{:?}", r.reason))?;
    }
    for record in &records {
        let samples = decode_with_sonic(&decoder, record, now_ms)
            .ok_or_else(|| anyhow::anyhow!("sonic-rs cannot read a record"))?
            .map_err(|r| anyhow::anyhow!("{:?}", r.reason))?;
        anyhow::ensure!(
            Some(&samples) == decoder.decode(Some(record), None, now_ms).ok().as_ref(),
            "sonic-rs and serde_json decode a record differently"
        );
    }
    for round in 0..3 {
        let decoded = rate(&records, seconds, |r| {
            black_box(decoder.decode(Some(black_box(r)), None, now_ms).ok());
        });
        let baseline = rate(&records, seconds, |r| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(r)).ok());
        });
        let sonic = rate(&records, seconds, |r| {
            black_box(decode_with_sonic(&decoder, black_box(r), now_ms));
        });
        println!(
            "{{\"round\": {round}, \"records\": {}, \"mean_record_bytes\": {mean_bytes:.1}, \"decoder_records_per_s\": {decoded:.0}, \"decoder_mib_per_s\": {:.1}, \"serde_json_value_records_per_s\": {baseline:.0}, \"decoder_vs_value_parse\": {:.2}, \"decoder_on_sonic_rs_records_per_s\": {sonic:.0}, \"sonic_rs_vs_decoder\": {:.2}}}",
            records.len(),
            decoded * mean_bytes / 1048576.0,
            decoded / baseline,
            sonic / decoded
        );
    }
    Ok(())
}
