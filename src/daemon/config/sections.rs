//! The sections of the daemon's configuration file, one type per TOML table,
//! with their defaults.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Consumer group; instances with the same group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics with sensor records.
    pub input_topics: Vec<String>,
    /// Topic for alert events.
    #[serde(default = "default_alerts_topic")]
    pub alerts_topic: String,
    /// Topic for every window's score; absent = not produced.
    #[serde(default)]
    pub scores_topic: Option<String>,
    /// Topic for records that could not be used, with the reason in a header.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// How often safe offsets are committed (ms).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// librdkafka properties for the consumer and both producers (TLS, SASL, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producers only (bulk and alerts).
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the alerts producer only, applied last.
    #[serde(default)]
    pub alerts_producer_properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The property tables with their key names.
    pub fn property_tables(&self) -> [(&'static str, &BTreeMap<String, String>); 4] {
        [
            ("properties", &self.properties),
            ("consumer_properties", &self.consumer_properties),
            ("producer_properties", &self.producer_properties),
            (
                "alerts_producer_properties",
                &self.alerts_producer_properties,
            ),
        ]
    }

    /// The same tables, to change their values in place.
    pub fn property_tables_mut(&mut self) -> [(&'static str, &mut BTreeMap<String, String>); 4] {
        [
            ("properties", &mut self.properties),
            ("consumer_properties", &mut self.consumer_properties),
            ("producer_properties", &mut self.producer_properties),
            (
                "alerts_producer_properties",
                &mut self.alerts_producer_properties,
            ),
        ]
    }
}

/// Where a record's entity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitySource {
    /// The JSON field `input.entity_field`.
    Field,
    /// The Kafka record key (UTF-8).
    Key,
}

/// `[input]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Where the entity comes from: `field` or `key`.
    pub entity_from: EntitySource,
    /// JSON field holding the entity (with `entity_from = "field"`).
    pub entity_field: String,
    /// JSON field holding the event time (RFC 3339 string or epoch ms number).
    pub timestamp_field: String,
    /// JSON field holding the object of channel values.
    pub values_field: String,
    /// Model channel → channel name in the records, where they differ.
    pub channels: BTreeMap<String, String>,
    /// Records larger than this many bytes are rejected.
    pub max_record_bytes: usize,
    /// Event times before this instant (RFC 3339) are rejected as absurd.
    pub min_timestamp: String,
    /// Event times more than this many seconds ahead of the wall clock are rejected.
    pub max_future_s: u64,
}

impl InputConfig {
    /// The earliest accepted event time (epoch ms), `min_timestamp` read
    /// (validated with the config).
    pub fn min_timestamp_ms(&self) -> i64 {
        crate::series::timestamp::parse_timestamp(&self.min_timestamp).expect("validated")
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            entity_from: EntitySource::Field,
            entity_field: "entity".into(),
            timestamp_field: "ts".into(),
            values_field: "values".into(),
            channels: BTreeMap::new(),
            max_record_bytes: 1 << 20,
            min_timestamp: "2000-01-01T00:00:00Z".into(),
            max_future_s: 86_400,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The ONNX file (its metadata is the `.json` beside it); absent = the
    /// default model embedded in the binary. SIGHUP reloads it.
    pub path: Option<PathBuf>,
}

/// `[windows]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// A window is scored every `stride` samples of an entity.
    pub stride: usize,
    /// With `stride` > 1, each entity's windows end at its own phase
    /// (`0..stride` samples after its first full window, a fixed hash of its
    /// key), so entities that report in lockstep do not all complete a
    /// window on the same sample. `false`: every entity's first window ends
    /// on its `window_len`-th sample.
    pub stagger: bool,
    /// A gap in event time longer than this (ms) resets the entity's window.
    pub max_gap_ms: u64,
    /// Entities without a record for this long (wall clock, s) are evicted.
    pub entity_ttl_s: u64,
    /// At most this many entities are kept; a new one beyond it evicts the least recently seen.
    pub max_entities: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            stagger: true,
            max_gap_ms: 3_600_000,
            entity_ttl_s: 3_600,
            max_entities: 100_000,
        }
    }
}

/// Fewest windows a model thread is given: below this a batch is scored on
/// one thread, as splitting it would cost more than it saves.
pub const MIN_WINDOWS_PER_THREAD: usize = 8;

/// `[scoring]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Most windows scored in one model call.
    pub max_batch: usize,
    /// Longest a window waits for its batch to fill (ms) while more samples
    /// keep arriving; a batch is scored at once when nothing more is queued.
    pub max_wait_ms: u64,
    /// Threads that run the model. A batch of at least
    /// [`MIN_WINDOWS_PER_THREAD`] windows per thread is split between them;
    /// with 1 the scorer thread runs the model itself. `"auto"` (the
    /// default): see [`ModelThreads::Auto`].
    pub threads: ModelThreads,
    /// Decoded samples queued between the consumer and the scorer, at most;
    /// they travel in messages of up to 256 samples, and one more message
    /// may be filling.
    pub queue_capacity: usize,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait_ms: 5,
            threads: ModelThreads::Auto,
            queue_capacity: 8_192,
        }
    }
}

/// `scoring.threads`: how many threads run the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelThreads {
    /// As many as the cores this process may run on (its CPU affinity and
    /// cgroup quota, as `std::thread::available_parallelism` reads them),
    /// but no more than a full batch can keep busy (`max_batch` /
    /// [`MIN_WINDOWS_PER_THREAD`]): in a container limited to 1.5 CPUs it
    /// is 1, not the node's core count.
    Auto,
    /// This many (1 to 64).
    Count(usize),
}

impl ModelThreads {
    /// The number of model threads for batches of at most `max_batch`
    /// windows, given the cores this process may run on.
    pub fn resolve(self, max_batch: usize, cores: usize) -> usize {
        match self {
            Self::Count(count) => count,
            Self::Auto => cores.min(max_batch / MIN_WINDOWS_PER_THREAD).max(1),
        }
    }

    /// The cores this process may run on (1 if they cannot be read).
    pub fn available_cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl<'de> Deserialize<'de> for ModelThreads {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ModelThreads;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a thread count (1 to 64) or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, count: i64) -> Result<ModelThreads, E> {
                usize::try_from(count)
                    .map(ModelThreads::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(count), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, count: u64) -> Result<ModelThreads, E> {
                usize::try_from(count)
                    .map(ModelThreads::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(count), &self))
            }
            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<ModelThreads, E> {
                match word {
                    "auto" => Ok(ModelThreads::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(word), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the HTTP listener (`/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// `/readyz` fails when the consumer or scorer made no progress for this long (s).
    pub stall_timeout_s: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".parse().expect("valid address"),
            stall_timeout_s: 30,
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest a SIGTERM/SIGINT shutdown may take (s): drain, flush, commit.
    pub grace_period_s: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_period_s: 20 }
    }
}

/// `[state]`: entity-state checkpoints (ARCHITECTURE.md, "Delivery").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Checkpoint entity state to `topic` and restore it on assignment; off =
    /// entities warm up again after every restart or rebalance.
    pub checkpoints: bool,
    /// The compacted topic the checkpoints go to; created if missing, with as
    /// many partitions as the largest input topic. Unset: `<group_id>-state`,
    /// so that each consumer group keeps its own state (a group replaying a
    /// topic must not skip records because another group scored them).
    #[serde(rename = "topic")]
    pub topic_setting: Option<String>,
    /// The topic in use: `topic_setting`, or the group's default (set when
    /// the configuration is loaded).
    #[serde(skip)]
    pub topic: String,
    /// How often changed entities are checkpointed (ms). Committed input
    /// offsets trail by about this much.
    pub checkpoint_interval_ms: u64,
    /// Longest the restore of newly assigned partitions may take (s); beyond
    /// it the daemon stops with an error rather than carry on without state.
    pub restore_timeout_s: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            checkpoints: true,
            topic_setting: None,
            topic: String::new(),
            checkpoint_interval_ms: 10_000,
            restore_timeout_s: 60,
        }
    }
}

fn default_group_id() -> String {
    "anomalyd".into()
}
fn default_alerts_topic() -> String {
    "anomalyd-alerts".into()
}
fn default_dead_letter_topic() -> String {
    "anomalyd-dead-letter".into()
}
fn default_commit_interval_ms() -> u64 {
    1_000
}

/// librdkafka properties the daemon sets itself: its delivery guarantee
/// depends on them, so the configuration may not override them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "request.required.acks",
];

/// Property names whose values are never printed.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas"]
        .iter()
        .any(|word| name.contains(word))
}
