//! End to end through a Kafka-protocol broker: librdkafka's mock cluster in
//! this process, the release `anomalyd` binary as a child process, 1,000
//! entities × 4 channels, window 64, stride 8, entity-state checkpoints on.
//!
//! 1. Fills the input topic (64 partitions) with 2,000 samples per entity.
//! 2. Consume-only ceiling: a consumer configured as the daemon's reads the
//!    same records and decodes each with the daemon's `Decoder`, nothing else.
//! 3. The daemon consumes the same records from the start: sustained samples
//!    and windows per second (from its metrics, between 10 % and 90 % of the
//!    windows), and its peak RSS.
//! 4. Latency, each rate on a fresh broker and daemon (a mock cluster slows
//!    down as its partitions fill with message sets): samples produced at a
//!    steady rate (half the daemon's measured maximum, then 100,000
//!    samples/s if that is below 90 % of the maximum), stamped with the wall
//!    clock as their event time, by a producer that batches for up to 5 ms
//!    (counted in the latency). A consumer of the
//!    scores and alerts topics takes latency as the time it receives a
//!    window's output minus the event time of the window's last sample, and
//!    the part until the daemon sent it (the output's create time); the
//!    daemon's own histogram gives the fraction of alerts the broker
//!    acknowledged within 10, 15, 20, 30 and 50 ms of their record. Then the
//!    same at 10,000 and 25,000 samples/s (`--low-rates`), where this
//!    machine's broker and load generator keep up: each line reports the
//!    load generator's largest backlog of unacknowledged records, which
//!    shows when the rig, not the daemon, is the bottleneck.
//!
//! Everything shares the machine's cores: broker, producer, daemon, readers.
//! The daemon runs with `windows.stagger` at its default (on); a baseline
//! from before it scores up to one more window per entity.
//! 5. With `--peer PYTHON --peer-script PEER_PY`: the Python peer pipeline
//!    (`../shared/bench/peer/peer.py`; `benches/peer.sh` makes the Python)
//!    on a fresh broker filled with the same records, same model, window
//!    and stride, onnxruntime with as many threads as the daemon's model
//!    threads, in every round after the daemon: samples/s and CPU per
//!    sample, and the ratios to this build.
//!
//! 6. With `--batch-form N`: this build again, on a fresh broker filled with
//!    the same samples as records in the batch form, N samples of an entity
//!    per record (docs/daemon.md, "Input records"): samples/s and CPU per
//!    sample, and the ratios to the single form in the same round.
//!
//! `--no-latency` skips step 4.
//! `--entities N` (1,000), `--channels C` (4; 3 to 8, a model of C channels is
//! trained and cached like the 4-channel one) and `--instances K` (1: K
//! daemons in one consumer group, their rates and CPU summed) change the
//! throughput steps' shape; the input topic gets partitions enough for the
//! mock cluster to keep every record (at most 4.5 MiB each, at least 64).
//! `--low-latency` runs the latency steps with `scoring.max_wait_ms = 1` and
//! the producer's `linger.ms = 0` (defaults 5 and 5).
//! Prints JSON lines. `cargo bench --bench end_to_end -- [--samples-per-entity N] [--latency-seconds S] [--low-rates R,R] [--low-latency] [--baseline ANOMALYD_BINARY [--baseline-model ONNX]] [--peer PYTHON --peer-script PEER_PY] [--rounds N] [--no-latency] [--batch-form N] [--entities N] [--channels C] [--instances K]`.

#[path = "../tests/integration/kafka_support.rs"]
#[allow(dead_code)]
mod kafka_support;
#[path = "end_to_end/latency.rs"]
mod latency;
#[path = "end_to_end/peer.rs"]
mod peer;
#[path = "support/mod.rs"]
mod support;

use anomalyd::daemon::config::{InputConfig, ModelThreads, ScoringConfig};
use anomalyd::daemon::source::decode::Decoder;
use anomalyd::synthetic::{generate, SyntheticConfig};
use anomalyd::window::entity_phase;
use kafka_support::{free_port, start_broker, Broker, DaemonProcess};
use latency::latency;
use peer::Peer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Entities by default (`--entities`); the latency steps always use this many.
const ENTITIES: usize = 1_000;
/// Input partitions when filling 2 M records ahead of the consumer: the
/// mock cluster keeps at most 5 MiB per partition (more are used when the
/// records need them).
const PARTITIONS: i32 = 64;

/// What the throughput steps run on.
struct Shape {
    entities: usize,
    partitions: i32,
    /// Daemons in one consumer group.
    instances: usize,
}

impl Shape {
    /// `entities` with partitions enough for `records` records of
    /// `record_bytes` each (at most 4.5 MiB per partition), at least 64.
    fn new(entities: usize, instances: usize, records: usize, record_bytes: usize) -> Self {
        let needed = (records * record_bytes).div_ceil(9 << 19) as i32;
        Self {
            entities,
            partitions: needed.max(PARTITIONS),
            instances,
        }
    }
}
/// Input and output partitions of the latency runs: the mock cluster finds
/// a fetch's offset by walking the partition's message sets from the
/// oldest, so many thin partitions get slower by the second; few fuller
/// ones stay fast.
const LATENCY_PARTITIONS: i32 = 4;
const STRIDE: usize = 8;
/// The benchmark model's window length.
const WINDOW_LEN: usize = 64;

/// The key (and entity field) of entity number `entity`.
fn entity_key(entity: usize) -> String {
    format!("machine-{entity:04}")
}

/// Wall-clock time since 1970 in ms, with sub-millisecond precision.
fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        * 1000.0
}

/// [`wall_ms`] in whole ms, as event times are.
fn now_ms() -> i64 {
    wall_ms() as i64
}

/// The records of the benchmark: entity `e` replays a generated machine's
/// 4 channels from its own starting row.
struct Records {
    channels: Vec<String>,
    machines: Vec<anomalyd::series::Series>,
}

impl Records {
    fn new(channels: &[String]) -> Self {
        let data = generate(&SyntheticConfig {
            channels: channels.len(),
            ..Default::default()
        });
        Self {
            channels: channels.to_vec(),
            machines: data.series,
        }
    }

    /// Entity `entity`'s channel values at `step`, with their names.
    fn values(&self, entity: usize, step: usize) -> impl Iterator<Item = (&String, f32)> {
        let machine = &self.machines[entity % self.machines.len()];
        let row = machine.row((entity * 37 + step) % machine.len());
        self.channels.iter().zip(row.iter().copied())
    }

    /// One record in the batch form: entity `entity`'s samples at each
    /// `(step, event time)` of `steps`.
    fn batch_json(&self, entity: usize, steps: &[(usize, i64)]) -> String {
        let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(",");
        let times = list(&mut steps.iter().map(|(_, ts)| ts.to_string()));
        let columns = list(&mut self.channels.iter().enumerate().map(|(c, name)| {
            let column = list(&mut steps.iter().map(|&(step, _)| {
                let (_, v) = self.values(entity, step).nth(c).expect("a channel");
                v.to_string()
            }));
            format!("\"{name}\":[{column}]")
        }));
        format!(
            "{{\"entity\":\"{}\",\"ts\":[{times}],\"values\":{{{columns}}}}}",
            entity_key(entity)
        )
    }

    fn json(&self, entity: usize, step: usize, ts_ms: i64) -> String {
        let mut values = String::new();
        for (c, (name, v)) in self.values(entity, step).enumerate() {
            if c > 0 {
                values.push(',');
            }
            values.push_str(&format!("\"{name}\":{v}"));
        }
        format!(
            "{{\"entity\":\"{}\",\"ts\":{ts_ms},\"values\":{{{values}}}}}",
            entity_key(entity)
        )
    }
}

fn producer(brokers: &str, linger_ms: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// A mock cluster with the benchmark's topics, `partitions` for the input.
fn bench_broker(partitions: i32) -> Broker {
    start_broker(&[
        ("input", partitions),
        ("anomalyd-state", partitions),
        ("scores", partitions.min(16)),
        ("alerts", 4),
        ("dead-letters", 1),
    ])
}

/// The mock cluster answers a fetch that finds no data only after the
/// consumer's whole `fetch.wait.max.ms` (500 ms by default), even if data
/// arrives meanwhile (librdkafka's `rdkafka_mock_handlers.c`: "If there was
/// no data, delay up to MaxWait"); a real broker answers as soon as data
/// arrives. Every consumer here, the daemon's included, waits at most this
/// long, to stand in for a real broker's long poll. 1 ms since 2026-12-02
/// (5 ms before, which added up to 5 ms at the daemon's input and again at
/// the bench's reader: at 10,000 samples/s p99 went from 25 to 16.5 ms).
const FETCH_WAIT_MAX_MS: &str = "1";

/// Daemon settings of `--low-latency`: the scorer waits at most 1 ms for a
/// batch to fill (default 5), the producer sends at once (default 5 ms).
const LOW_LATENCY: &str =
    "[scoring]\nmax_wait_ms = 1\n\n[kafka.producer_properties]\n\"linger.ms\" = \"0\"\n";

/// The release daemon on `broker`'s input: the benchmark model, stride 8,
/// checkpoints every 10 s, scores and alerts topics; `tuning` adds tables.
fn launch_daemon(
    binary: &Path,
    broker: &Broker,
    model: &Path,
    dir: &Path,
    name: &str,
    tuning: &str,
) -> DaemonProcess {
    let extra = format!(
        "[model]\npath = \"{}\"\n\n[windows]\nstride = {STRIDE}\n\n[state]\ncheckpoint_interval_ms = 10000\n\n[kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"{FETCH_WAIT_MAX_MS}\"\n\n{tuning}",
        model.display()
    );
    DaemonProcess::launch_binary(binary, dir, &broker.brokers, name, "bench", &extra)
}

/// Sends one record of `entity`, keyed and partitioned by it.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    partitions: i32,
    entity: usize,
    payload: &str,
) {
    let key = entity_key(entity);
    kafka_support::send(
        producer,
        "input",
        entity as i32 % partitions,
        &key,
        payload.as_bytes(),
    );
}

/// Reads every partition of `topic` from `offset`.
fn reader(brokers: &str, topic: &str, partitions: i32, offset: Offset) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{topic}-{}", free_port()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // As the daemon's consumer sets it (src/daemon/clients.rs).
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, offset)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    consumer
}

/// Reads `count` records of the input topic and decodes each; records per second.
fn consume_only(brokers: &str, partitions: i32, channels: &[String], count: usize) -> f64 {
    let consumer = reader(brokers, "input", partitions, Offset::Beginning);
    let decoder = Decoder::new(&InputConfig::default(), 946_684_800_000, channels);
    let mut decoded = 0usize;
    let mut started = None;
    while decoded < count {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("a record");
        started.get_or_insert_with(Instant::now);
        if decoder
            .decode(message.payload(), message.key(), now_ms())
            .is_ok()
        {
            decoded += 1;
        }
    }
    count as f64 / started.expect("records read").elapsed().as_secs_f64()
}

/// The daemon built with this benchmark.
fn current_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_anomalyd"))
}

/// The binaries to run in turn `turn`, each with the model it runs: this
/// build alone, or with the baseline, first in odd turns (the machine's speed
/// drifts, so the order alternates).
fn binaries_in_turn(
    model: &Path,
    baseline: Option<&(PathBuf, PathBuf)>,
    turn: usize,
) -> Vec<(&'static str, PathBuf, PathBuf)> {
    let mut binaries = vec![("current", current_binary(), model.to_path_buf())];
    if let Some((binary, model)) = baseline {
        binaries.push(("baseline", binary.clone(), model.clone()));
        if turn % 2 == 1 {
            binaries.reverse();
        }
    }
    binaries
}

/// Fills `broker`'s input topic (`shape.partitions` partitions) with
/// `per_entity` samples of every entity, spaced 15 minutes apart in event
/// time: one per record, or `batch` (> 1) per record in the batch form.
fn fill(broker: &Broker, records: &Records, shape: &Shape, per_entity: usize, batch: usize) {
    let started = Instant::now();
    let fill = producer(&broker.brokers, "20");
    let base_ms = now_ms() - (per_entity as i64 + 10) * 900_000;
    let batch = batch.max(1);
    let mut sent = 0usize;
    let mut bytes = 0usize;
    for first in (0..per_entity).step_by(batch) {
        let steps: Vec<(usize, i64)> = (first..(first + batch).min(per_entity))
            .map(|step| (step, base_ms + step as i64 * 900_000))
            .collect();
        for entity in 0..shape.entities {
            let payload = match steps.as_slice() {
                [(step, ts)] => records.json(entity, *step, *ts),
                _ => records.batch_json(entity, &steps),
            };
            send(&fill, shape.partitions, entity, &payload);
            sent += 1;
            bytes += payload.len();
        }
    }
    fill.flush(Duration::from_secs(60)).expect("flush");
    println!(
        "{{\"phase\": \"fill\", \"samples\": {}, \"records\": {sent}, \"samples_per_record\": {batch}, \"mean_record_bytes\": {:.0}, \"seconds\": {:.1}}}",
        per_entity * shape.entities,
        bytes as f64 / sent as f64,
        started.elapsed().as_secs_f64()
    );
}

/// What the daemon sustained on a filled topic.
struct Throughput {
    samples_per_s: f64,
    windows_per_s: f64,
    peak_rss_mib: f64,
    /// CPU time (user and system) of the whole daemon per sample, in µs:
    /// unlike the rate, it hardly depends on what else the shared cores run.
    cpu_us_per_sample: f64,
    /// CPU time of its scoring threads (scorer and model threads) per
    /// scored window, in µs.
    scoring_cpu_us_per_window: f64,
    /// Windows per model call, on average over the whole run.
    mean_batch: f64,
}

/// CPU seconds (user and system) from a `/proc/…/stat` line.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_second)
}

/// CPU seconds of process `pid`, and of its scoring threads (the scorer
/// thread and the model threads; names as `/proc` truncates them).
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let process = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_seconds(&s))
        .unwrap_or(f64::NAN);
    let scorer = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let comm = comm.trim();
            (comm == "anomalyd-scorer" || comm.starts_with("anomalyd-model"))
                .then(|| std::fs::read_to_string(task.path().join("stat")).ok())?
                .and_then(|s| stat_cpu_seconds(&s))
        })
        .sum();
    (process, scorer)
}

/// Windows the daemon scores from `per_entity` samples of each entity: each
/// entity's windows end at its own phase (`windows.stagger`, on by
/// default), so some entities complete one window fewer. A build from
/// before staggering (a baseline) scores up to one more window per entity
/// than this; the bench stops at this count for both.
fn windows_expected(entities: usize, per_entity: usize) -> usize {
    let after_first_window = per_entity.saturating_sub(WINDOW_LEN - 1);
    (0..entities)
        .map(|entity| {
            let phase = entity_phase(&entity_key(entity), STRIDE);
            after_first_window.saturating_sub(phase).div_ceil(STRIDE)
        })
        .sum()
}

/// Runs `shape.instances` daemons of `binary` in one consumer group on
/// `broker`'s filled input topic from the start until they have scored
/// every window; rates between 10 % and 90 % of the windows, summed over
/// the instances (CPU too; peak RSS is the largest instance's).
fn daemon_throughput(
    binary: &Path,
    broker: &Broker,
    model: &Path,
    shape: &Shape,
    per_entity: usize,
) -> anyhow::Result<Throughput> {
    let dir = tempfile::tempdir()?;
    let mut daemons: Vec<DaemonProcess> = (0..shape.instances)
        .map(|index| {
            launch_daemon(
                binary,
                broker,
                model,
                dir.path(),
                &format!("daemon{index}"),
                "",
            )
        })
        .collect();
    let windows_expected = windows_expected(shape.entities, per_entity) as f64;
    let sum = |daemons: &[DaemonProcess], metric: &str| -> f64 {
        daemons.iter().map(|d| d.metric_sum(metric)).sum()
    };
    // (seconds, samples consumed, windows scored, CPU seconds: daemons, scoring threads)
    let mut samples_seen = Vec::new();
    let started = Instant::now();
    loop {
        // Samples, counted as the records that carried them by a build
        // from before the batch form (a baseline).
        let consumed = match sum(&daemons, "anomalyd_samples_decoded_total") {
            0.0 => sum(&daemons, "anomalyd_records_consumed_total"),
            samples => samples,
        };
        let scored = sum(&daemons, "anomalyd_windows_scored_total");
        let (cpu, scoring_cpu) = daemons
            .iter()
            .map(|d| cpu_seconds(d.child.id()))
            .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
        samples_seen.push((
            started.elapsed().as_secs_f64(),
            consumed,
            scored,
            cpu,
            scoring_cpu,
        ));
        if scored >= windows_expected {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the daemons scored {scored} of {windows_expected} windows in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let at = |fraction: f64| {
        *samples_seen
            .iter()
            .find(|s| s.2 >= fraction * windows_expected)
            .expect("reached")
    };
    let (t0, c0, w0, cpu0, scorer0) = at(0.1);
    let (t1, c1, w1, cpu1, scorer1) = at(0.9);
    let throughput = Throughput {
        samples_per_s: (c1 - c0) / (t1 - t0),
        windows_per_s: (w1 - w0) / (t1 - t0),
        peak_rss_mib: daemons
            .iter()
            .filter_map(DaemonProcess::peak_rss_bytes)
            .max()
            .unwrap_or(0) as f64
            / 1048576.0,
        cpu_us_per_sample: (cpu1 - cpu0) / (c1 - c0) * 1e6,
        scoring_cpu_us_per_window: (scorer1 - scorer0) / (w1 - w0) * 1e6,
        mean_batch: sum(&daemons, "anomalyd_model_batch_size_sum")
            / sum(&daemons, "anomalyd_model_batch_size_count"),
    };
    for daemon in &mut daemons {
        daemon.signal(libc::SIGTERM);
    }
    for daemon in &mut daemons {
        daemon.wait_exit(Duration::from_secs(30));
    }
    Ok(throughput)
}

/// `values` to two decimals, for printing.
fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|r| (r * 100.0).round() / 100.0).collect()
}

/// The median of `values` (not empty).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The bench's arguments.
struct Options {
    per_entity: usize,
    entities: usize,
    channels: usize,
    instances: usize,
    latency_seconds: f64,
    tuning: &'static str,
    low_rates: Vec<f64>,
    baseline: Option<PathBuf>,
    baseline_model: Option<PathBuf>,
    rounds: Option<usize>,
    peer: Option<Peer>,
    skip_latency: bool,
    /// Samples per record of the batch-form run (`--batch-form N`).
    batch: Option<usize>,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Options {
            per_entity: 2_000,
            entities: ENTITIES,
            channels: support::CHANNELS,
            instances: 1,
            latency_seconds: 15.0,
            tuning: "",
            // Rates low enough for this machine's broker and load generator to keep up.
            low_rates: vec![10_000.0, 25_000.0],
            baseline: None,
            baseline_model: None,
            rounds: None,
            peer: None,
            skip_latency: false,
            batch: None,
        };
        let (mut peer_python, mut peer_script): (Option<PathBuf>, Option<PathBuf>) = (None, None);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut next = || args.next().unwrap_or_default();
            match arg.as_str() {
                "--samples-per-entity" => options.per_entity = next().parse()?,
                "--entities" => options.entities = next().parse()?,
                "--channels" => options.channels = next().parse()?,
                "--instances" => options.instances = next().parse()?,
                "--latency-seconds" => options.latency_seconds = next().parse()?,
                "--low-rates" => {
                    options.low_rates = next()
                        .split(',')
                        .filter(|r| !r.is_empty())
                        .map(|r| r.parse())
                        .collect::<Result<_, _>>()?
                }
                "--low-latency" => options.tuning = LOW_LATENCY,
                "--baseline" => options.baseline = Some(next().into()),
                "--baseline-model" => options.baseline_model = Some(next().into()),
                "--rounds" => options.rounds = Some(next().parse::<usize>()?),
                "--peer" => peer_python = Some(next().into()),
                "--peer-script" => peer_script = Some(next().into()),
                "--no-latency" => options.skip_latency = true,
                "--batch-form" => options.batch = Some(next().parse::<usize>()?.max(2)),
                "--bench" => {}
                other => anyhow::bail!("unknown argument {other}"),
            }
        }
        if let Some(binary) = &options.baseline {
            anyhow::ensure!(
                binary.is_file(),
                "no baseline binary at {}",
                binary.display()
            );
        }
        if let Some(model) = &options.baseline_model {
            anyhow::ensure!(
                options.baseline.is_some(),
                "--baseline-model needs --baseline"
            );
            anyhow::ensure!(model.is_file(), "no baseline model at {}", model.display());
        }
        options.peer = match (peer_python, peer_script) {
            (Some(python), Some(script)) => {
                let peer = Peer {
                    python,
                    script,
                    threads: ModelThreads::Auto.resolve(
                        ScoringConfig::default().max_batch,
                        ModelThreads::available_cores(),
                    ),
                };
                peer.check()?;
                Some(peer)
            }
            (None, None) => None,
            _ => anyhow::bail!("--peer PYTHON and --peer-script PEER_PY go together"),
        };
        Ok(options)
    }
}

/// The per-round ratios of the throughput steps.
#[derive(Default)]
struct Ratios {
    /// This build's samples/s, and over the consume-only ceiling.
    current: Vec<f64>,
    to_ceiling: Vec<f64>,
    /// This build's samples/s over the baseline's, and the baseline's CPU
    /// per sample over this build's (above 1: cheaper now).
    to_baseline: Vec<f64>,
    cpu_to_baseline: Vec<f64>,
    /// This build's samples/s over the peer's, and the peer's CPU per
    /// sample over this build's.
    to_peer: Vec<f64>,
    cpu_to_peer: Vec<f64>,
    /// This build's samples/s on records in the batch form over the single
    /// form, and its CPU per sample on the single form over the batch form.
    batch_to_single: Vec<f64>,
    cpu_batch_to_single: Vec<f64>,
}

/// Appends this build's samples/s over `other`'s and `other`'s CPU per
/// sample over this build's (`other`: samples/s, CPU µs per sample).
fn compare(current: &Throughput, other: (f64, f64), rates: &mut Vec<f64>, cpu: &mut Vec<f64>) {
    rates.push(current.samples_per_s / other.0);
    cpu.push(other.1 / current.cpu_us_per_sample);
}

/// What every round runs on.
struct Bench<'a> {
    options: &'a Options,
    shape: Shape,
    records: Records,
    model: PathBuf,
    baseline: Option<(PathBuf, PathBuf)>,
    total: usize,
}

impl Bench<'_> {
    /// One round of steps 1–3 (and 5): each daemon, then the peer, on a
    /// fresh, freshly filled broker.
    fn round(&self, round: usize, ratios: &mut Ratios) -> anyhow::Result<()> {
        let channels = &self.records.channels;
        let mut ceiling = None;
        let mut this_round = Vec::new();
        for (label, binary, model) in binaries_in_turn(&self.model, self.baseline.as_ref(), round) {
            let broker = bench_broker(self.shape.partitions);
            fill(
                &broker,
                &self.records,
                &self.shape,
                self.options.per_entity,
                1,
            );
            let ceiling = *ceiling.get_or_insert_with(|| {
                let rate = consume_only(&broker.brokers, self.shape.partitions, channels, self.total);
                println!(
                    "{{\"phase\": \"consume_only\", \"round\": {round}, \"samples_per_s\": {rate:.0}, \"values_per_s\": {:.0}}}",
                    rate * channels.len() as f64
                );
                rate
            });
            let run = daemon_throughput(
                &binary,
                &broker,
                &model,
                &self.shape,
                self.options.per_entity,
            )?;
            println!(
                "{{\"phase\": \"daemon\", \"round\": {round}, \"binary\": \"{label}\", \"samples\": {}, \"samples_per_s\": {:.0}, \"values_per_s\": {:.0}, \"windows_per_s\": {:.0}, \"vs_consume_only\": {:.2}, \"peak_rss_mib\": {:.1}, \"cpu_us_per_sample\": {:.2}, \"scoring_cpu_us_per_window\": {:.1}, \"mean_batch\": {:.1}}}",
                self.total,
                run.samples_per_s,
                run.samples_per_s * channels.len() as f64,
                run.windows_per_s,
                run.samples_per_s / ceiling,
                run.peak_rss_mib,
                run.cpu_us_per_sample,
                run.scoring_cpu_us_per_window,
                run.mean_batch,
            );
            if label == "current" {
                ratios.to_ceiling.push(run.samples_per_s / ceiling);
                ratios.current.push(run.samples_per_s);
            }
            this_round.push((label, run));
        }
        let current = &this_round
            .iter()
            .find(|(label, _)| *label == "current")
            .expect("this build ran")
            .1;
        if let Some((_, before)) = this_round.iter().find(|(label, _)| *label == "baseline") {
            let (samples_per_s, cpu_us_per_sample) =
                (before.samples_per_s, before.cpu_us_per_sample);
            compare(
                current,
                (samples_per_s, cpu_us_per_sample),
                &mut ratios.to_baseline,
                &mut ratios.cpu_to_baseline,
            );
        }
        if let Some(batch) = self.options.batch {
            let broker = bench_broker(self.shape.partitions);
            fill(
                &broker,
                &self.records,
                &self.shape,
                self.options.per_entity,
                batch,
            );
            let run = daemon_throughput(
                &current_binary(),
                &broker,
                &self.model,
                &self.shape,
                self.options.per_entity,
            )?;
            println!(
                "{{\"phase\": \"daemon_batch_form\", \"round\": {round}, \"samples_per_record\": {batch}, \"samples_per_s\": {:.0}, \"windows_per_s\": {:.0}, \"peak_rss_mib\": {:.1}, \"cpu_us_per_sample\": {:.2}, \"vs_single_form\": {:.2}}}",
                run.samples_per_s,
                run.windows_per_s,
                run.peak_rss_mib,
                run.cpu_us_per_sample,
                run.samples_per_s / current.samples_per_s,
            );
            compare(
                &run,
                (current.samples_per_s, current.cpu_us_per_sample),
                &mut ratios.batch_to_single,
                &mut ratios.cpu_batch_to_single,
            );
        }
        if let Some(peer) = &self.options.peer {
            let broker = bench_broker(self.shape.partitions);
            fill(
                &broker,
                &self.records,
                &self.shape,
                self.options.per_entity,
                1,
            );
            let run = peer.run(
                &broker,
                &self.model,
                channels,
                WINDOW_LEN,
                STRIDE,
                self.total,
            )?;
            println!(
                "{{\"phase\": \"peer\", \"round\": {round}, \"threads\": {}, \"samples_per_s\": {:.0}, \"windows_per_s\": {:.0}, \"cpu_us_per_sample\": {:.2}}}",
                peer.threads, run.samples_per_s, run.windows_per_s, run.cpu_us_per_sample
            );
            compare(
                current,
                (run.samples_per_s, run.cpu_us_per_sample),
                &mut ratios.to_peer,
                &mut ratios.cpu_to_peer,
            );
        }
        Ok(())
    }

    /// Step 4: latency at steady rates, each on a fresh broker and daemon;
    /// with a baseline, both binaries at each rate, in alternating order.
    fn latency_steps(&self, rate: f64) {
        let mut rates = vec![rate * 0.5];
        if 100_000.0 < rate * 0.9 {
            rates.push(100_000.0);
        }
        rates.extend(&self.options.low_rates);
        let tuning = self.options.tuning;
        for (index, target) in rates.into_iter().enumerate() {
            for (name, binary, model) in
                binaries_in_turn(&self.model, self.baseline.as_ref(), index)
            {
                let run = latency(
                    &binary,
                    &model,
                    tuning,
                    &self.records,
                    target,
                    self.options.latency_seconds,
                    3.0,
                );
                println!("{}", run.json_line(name, target, tuning == LOW_LATENCY));
            }
        }
    }
}

/// `"name": [per-round ratios], "median_name": median`, for a summary line.
fn ratio_fields(name: &str, ratios: &[f64]) -> String {
    format!(
        "\"{name}\": {:?}, \"median_{name}\": {:.2}",
        rounded(ratios),
        median(&mut ratios.to_vec())
    )
}

/// Prints the medians of the rounds' ratios; returns this build's median samples/s.
fn print_summaries(rounds: usize, ratios: &mut Ratios) -> f64 {
    // (phase, samples/s ratio and its name, CPU ratio and its name)
    let compared = [
        (
            "batch_form_summary",
            ("vs_single_form", &ratios.batch_to_single),
            (
                "cpu_per_sample_single_over_batch",
                &ratios.cpu_batch_to_single,
            ),
        ),
        (
            "peer_summary",
            ("vs_peer", &ratios.to_peer),
            ("cpu_per_sample_peer_over_current", &ratios.cpu_to_peer),
        ),
    ];
    for (phase, (rate_name, rates), (cpu_name, cpu)) in compared {
        if !rates.is_empty() {
            println!(
                "{{\"phase\": \"{phase}\", \"rounds\": {rounds}, {}, {}}}",
                ratio_fields(rate_name, rates),
                ratio_fields(cpu_name, cpu)
            );
        }
    }
    let rate = median(&mut ratios.current);
    let baseline = if ratios.to_baseline.is_empty() {
        String::new()
    } else {
        format!(
            ", {}, {}",
            ratio_fields("vs_baseline", &ratios.to_baseline),
            ratio_fields(
                "cpu_per_sample_baseline_over_current",
                &ratios.cpu_to_baseline
            )
        )
    };
    println!(
        "{{\"phase\": \"daemon_summary\", \"rounds\": {rounds}, \"median_samples_per_s\": {rate:.0}, \"median_vs_consume_only\": {:.2}{baseline}}}",
        median(&mut ratios.to_ceiling),
    );
    rate
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    // Alternating with a baseline or the peer, three rounds by default: the
    // machine's speed drifts, so only ratios within a round compare.
    let compared = options.baseline.is_some() || options.peer.is_some() || options.batch.is_some();
    let rounds = options
        .rounds
        .unwrap_or(if compared { 3 } else { 1 })
        .max(1);
    // The generated machines have 3 to 8 channels.
    anyhow::ensure!(
        (3..=anomalyd::synthetic::CHANNEL_NAMES.len()).contains(&options.channels),
        "--channels must be 3 to {} (the generated machines' channels)",
        anomalyd::synthetic::CHANNEL_NAMES.len()
    );
    let (model, scorer) = support::model_of(options.channels);
    anyhow::ensure!(
        scorer.metadata().window_len == WINDOW_LEN,
        "the benchmark model's windows are not {WINDOW_LEN} samples long"
    );
    // The baseline runs its own export of the model if given one (an
    // exporter change is part of what the baseline lacks), else this one.
    let baseline = options.baseline.clone().map(|binary| {
        (
            binary,
            options.baseline_model.clone().unwrap_or(model.clone()),
        )
    });
    let records = Records::new(&scorer.metadata().channels);
    let total = options.per_entity * options.entities;
    let shape = Shape::new(
        options.entities,
        options.instances,
        total,
        records.json(0, 0, now_ms()).len(),
    );
    println!(
        "{{\"phase\": \"shape\", \"entities\": {}, \"channels\": {}, \"samples_per_entity\": {}, \"partitions\": {}, \"instances\": {}}}",
        options.entities,
        records.channels.len(),
        options.per_entity,
        shape.partitions,
        options.instances
    );
    let bench = Bench {
        options: &options,
        shape,
        records,
        model,
        baseline,
        total,
    };
    let mut ratios = Ratios::default();
    for round in 0..rounds {
        bench.round(round, &mut ratios)?;
    }
    let rate = print_summaries(rounds, &mut ratios);
    if !options.skip_latency {
        bench.latency_steps(rate);
    }
    Ok(())
}
