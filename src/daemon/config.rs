//! The daemon's configuration: one strict TOML file (unknown keys are errors),
//! every key documented in `config/anomalyd.toml`, `${VAR}` and
//! `${file:PATH}` references for secrets, Kafka client properties passed through.

use crate::detect::DetectorConfig;
use crate::series::timestamp::parse_timestamp;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a configuration was refused. Each message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (toml names the key and line).
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message, with the key and its position.
        message: String,
    },
    /// A value of the right type but not allowed.
    #[error("config {path}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration of `anomalyd run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Brokers, topics and client properties.
    pub kafka: KafkaConfig,
    /// How records are read.
    #[serde(default)]
    pub input: InputConfig,
    /// Which model scores the windows.
    #[serde(default)]
    pub model: ModelConfig,
    /// Per-entity windows and entity state bounds.
    #[serde(default)]
    pub windows: WindowConfig,
    /// Micro-batching of the scorer.
    #[serde(default)]
    pub scoring: ScoringConfig,
    /// Calibration and alert decisions (the same keys as `config/detector.json`).
    #[serde(default)]
    pub detector: DetectorConfig,
    /// The HTTP admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Entity-state checkpoints.
    #[serde(default)]
    pub state: StateConfig,
}

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
    /// librdkafka properties for both consumer and producer (TLS, SASL, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The three property tables with their key names.
    pub fn property_tables(&self) -> [(&'static str, &BTreeMap<String, String>); 3] {
        [
            ("properties", &self.properties),
            ("consumer_properties", &self.consumer_properties),
            ("producer_properties", &self.producer_properties),
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
            max_gap_ms: 3_600_000,
            entity_ttl_s: 3_600,
            max_entities: 100_000,
        }
    }
}

/// `[scoring]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Most windows scored in one model call.
    pub max_batch: usize,
    /// Longest a window waits for its batch to fill (ms).
    pub max_wait_ms: u64,
    /// Decoded samples queued between the consumer and the scorer.
    pub queue_capacity: usize,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait_ms: 5,
            queue_capacity: 8_192,
        }
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
    /// many partitions as the largest input topic.
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
            topic: "anomalyd-state".into(),
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

impl DaemonConfig {
    /// Reads, parses, resolves `${...}` references and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// Parses TOML text; `origin` names it in errors, `env` resolves `${VAR}`.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config: DaemonConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.resolve_references(origin, env)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Replaces `${VAR}` and `${file:PATH}` in the brokers and the Kafka properties.
    fn resolve_references(
        &mut self,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            message,
        };
        self.kafka.brokers =
            resolve(&self.kafka.brokers, env).map_err(|m| invalid("kafka.brokers".into(), m))?;
        for (table, properties) in [
            ("properties", &mut self.kafka.properties),
            ("consumer_properties", &mut self.kafka.consumer_properties),
            ("producer_properties", &mut self.kafka.producer_properties),
        ] {
            for (name, value) in properties.iter_mut() {
                *value = resolve(value, env)
                    .map_err(|m| invalid(format!("kafka.{table}.\"{name}\""), m))?;
            }
        }
        Ok(())
    }

    /// Checks values; the error names the key.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            message,
        };
        let kafka = &self.kafka;
        if kafka.brokers.trim().is_empty() {
            return Err(invalid(
                "kafka.brokers",
                "must name at least one broker".into(),
            ));
        }
        if kafka.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty".into()));
        }
        if kafka.input_topics.is_empty() || kafka.input_topics.iter().any(|t| t.is_empty()) {
            return Err(invalid(
                "kafka.input_topics",
                "must list at least one topic, none empty".into(),
            ));
        }
        let mut outputs = vec![
            ("kafka.alerts_topic", &kafka.alerts_topic),
            ("kafka.dead_letter_topic", &kafka.dead_letter_topic),
        ];
        if let Some(scores) = &kafka.scores_topic {
            outputs.push(("kafka.scores_topic", scores));
        }
        if self.state.checkpoints {
            outputs.push(("state.topic", &self.state.topic));
        }
        for (key, topic) in outputs {
            if topic.is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
            if kafka.input_topics.contains(topic) {
                return Err(invalid(
                    key,
                    format!("{topic:?} is also an input topic; that would feed the output back in"),
                ));
            }
        }
        if kafka.commit_interval_ms == 0 {
            return Err(invalid(
                "kafka.commit_interval_ms",
                "must be at least 1".into(),
            ));
        }
        for (table, properties) in kafka.property_tables() {
            for name in properties.keys() {
                if RESERVED_PROPERTIES.contains(&name.as_str()) {
                    return Err(invalid(
                        &format!("kafka.{table}.\"{name}\""),
                        "is set by anomalyd itself (see config/anomalyd.toml) and cannot be overridden"
                            .into(),
                    ));
                }
            }
        }
        let input = &self.input;
        for (key, field) in [
            ("input.entity_field", &input.entity_field),
            ("input.timestamp_field", &input.timestamp_field),
            ("input.values_field", &input.values_field),
        ] {
            if field.is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        if input.max_record_bytes == 0 {
            return Err(invalid(
                "input.max_record_bytes",
                "must be at least 1".into(),
            ));
        }
        parse_timestamp(&input.min_timestamp).map_err(|m| invalid("input.min_timestamp", m))?;
        if self.windows.stride == 0 {
            return Err(invalid("windows.stride", "must be at least 1".into()));
        }
        if self.windows.max_gap_ms == 0 {
            return Err(invalid("windows.max_gap_ms", "must be at least 1".into()));
        }
        if self.windows.entity_ttl_s == 0 {
            return Err(invalid("windows.entity_ttl_s", "must be at least 1".into()));
        }
        if self.windows.max_entities == 0 {
            return Err(invalid("windows.max_entities", "must be at least 1".into()));
        }
        if self.scoring.max_batch == 0 {
            return Err(invalid("scoring.max_batch", "must be at least 1".into()));
        }
        if self.scoring.queue_capacity == 0 {
            return Err(invalid(
                "scoring.queue_capacity",
                "must be at least 1".into(),
            ));
        }
        if self.admin.stall_timeout_s == 0 {
            return Err(invalid(
                "admin.stall_timeout_s",
                "must be at least 1".into(),
            ));
        }
        if self.state.checkpoints {
            let others = [&kafka.alerts_topic, &kafka.dead_letter_topic];
            if others.contains(&&self.state.topic)
                || kafka.scores_topic.as_ref() == Some(&self.state.topic)
            {
                return Err(invalid(
                    "state.topic",
                    format!("{:?} is also an output topic", self.state.topic),
                ));
            }
            if self.state.checkpoint_interval_ms == 0 {
                return Err(invalid(
                    "state.checkpoint_interval_ms",
                    "must be at least 1".into(),
                ));
            }
            if self.state.restore_timeout_s == 0 {
                return Err(invalid(
                    "state.restore_timeout_s",
                    "must be at least 1".into(),
                ));
            }
        }
        if self.shutdown.grace_period_s == 0 {
            return Err(invalid(
                "shutdown.grace_period_s",
                "must be at least 1".into(),
            ));
        }
        self.detector.validate().map_err(|message| {
            let key = message.split_whitespace().next().unwrap_or("").to_string();
            ConfigError::Invalid {
                path: origin.to_string(),
                key: format!("detector.{key}"),
                message,
            }
        })
    }

    /// The earliest accepted event time (epoch ms).
    pub fn min_timestamp_ms(&self) -> i64 {
        parse_timestamp(&self.input.min_timestamp).expect("validated")
    }

    /// A summary for `check-config` and the start-up log, secrets masked.
    pub fn describe(&self) -> String {
        let mut lines = vec![
            format!("brokers: {}", self.kafka.brokers),
            format!("group: {}", self.kafka.group_id),
            format!("input topics: {}", self.kafka.input_topics.join(", ")),
            format!(
                "outputs: alerts {}, scores {}, dead letters {}",
                self.kafka.alerts_topic,
                self.kafka.scores_topic.as_deref().unwrap_or("(off)"),
                self.kafka.dead_letter_topic
            ),
            if self.state.checkpoints {
                format!(
                    "entity state: checkpointed to {} every {} ms",
                    self.state.topic, self.state.checkpoint_interval_ms
                )
            } else {
                "entity state: not checkpointed (entities warm up again after a restart)".into()
            },
            format!(
                "model: {}",
                self.model
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "embedded default".into())
            ),
            format!(
                "windows: stride {}, max gap {} ms, entity TTL {} s, at most {} entities",
                self.windows.stride,
                self.windows.max_gap_ms,
                self.windows.entity_ttl_s,
                self.windows.max_entities
            ),
            format!("admin: http://{}", self.admin.listen),
        ];
        for (table, properties) in self.kafka.property_tables() {
            for (name, value) in properties {
                let shown = if is_secret_property(name) {
                    "********"
                } else {
                    value.as_str()
                };
                lines.push(format!("kafka.{table}.{name} = {shown}"));
            }
        }
        lines.join("\n")
    }
}

/// Resolves `${VAR}` (environment) and `${file:PATH}` (file contents, trimmed) in `text`.
fn resolve(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` reference".to_string())?;
        let reference = &after[..end];
        let value = match reference.strip_prefix("file:") {
            Some(path) => read_secret_file(path)?,
            None => env(reference)
                .ok_or_else(|| format!("environment variable {reference} is not set"))?,
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The most a `${file:PATH}` secret may hold: a password, a token or a PEM
/// bundle fits; `/dev/zero` or a mistyped log file does not fill memory.
const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a secret file (at most [`MAX_SECRET_FILE_BYTES`]), without its trailing newline.
fn read_secret_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read the secret file {path:?}: {e}");
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "the secret file {path:?} holds more than {MAX_SECRET_FILE_BYTES} bytes"
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the secret file {path:?} is not UTF-8 text"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kafka]
brokers = "localhost:9092"
input_topics = ["readings"]
"#;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::from_toml(text, "test.toml", &|name| {
            (name == "KAFKA_PASSWORD").then(|| "hunter2".to_string())
        })
    }

    #[test]
    fn shipped_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/anomalyd.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let config = parse(&text).unwrap();
        assert_eq!(config.detector, DetectorConfig::default());
        assert_eq!(config.windows.stride, WindowConfig::default().stride);
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.kafka.group_id, "anomalyd");
        assert_eq!(config.scoring.max_batch, 64);
        assert!(config.kafka.scores_topic.is_none());
    }

    #[test]
    fn unknown_key_is_named() {
        let error = parse(&format!("{MINIMAL}\n[windows]\nstrid = 4\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("strid"), "{error}");
    }

    #[test]
    fn invalid_value_is_named() {
        let error = parse(&format!("{MINIMAL}\n[windows]\nstride = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("windows.stride"), "{error}");
        let error = parse(&format!("{MINIMAL}\n[detector.alerts]\nthreshold = 3.0\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("detector.alerts.threshold"), "{error}");
    }

    #[test]
    fn reserved_properties_are_refused() {
        let error = parse(&format!(
            "{MINIMAL}\n[kafka.consumer_properties]\n\"enable.auto.offset.store\" = \"true\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("enable.auto.offset.store"), "{error}");
    }

    #[test]
    fn secrets_resolve_from_the_environment_and_are_masked() {
        let config = parse(&format!(
            "{MINIMAL}\n[kafka.properties]\n\"sasl.password\" = \"${{KAFKA_PASSWORD}}\"\n"
        ))
        .unwrap();
        assert_eq!(config.kafka.properties["sasl.password"], "hunter2");
        let shown = config.describe();
        assert!(!shown.contains("hunter2"), "{shown}");
        let error = parse(&format!(
            "{MINIMAL}\n[kafka.properties]\n\"sasl.password\" = \"${{MISSING}}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("sasl.password") && error.contains("MISSING"),
            "{error}"
        );
    }

    #[test]
    fn secret_files_are_read_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("password");
        std::fs::write(&good, "from-a-file\n").unwrap();
        let config = parse(&format!(
            "{MINIMAL}\n[kafka.properties]\n\"sasl.password\" = \"${{file:{}}}\"\n",
            good.display()
        ))
        .unwrap();
        assert_eq!(config.kafka.properties["sasl.password"], "from-a-file");
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'x'; 2 * 1024 * 1024]).unwrap();
        let error = parse(&format!(
            "{MINIMAL}\n[kafka.properties]\n\"sasl.password\" = \"${{file:{}}}\"\n",
            huge.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("sasl.password") && error.contains("more than 1048576 bytes"),
            "{error}"
        );
    }

    #[test]
    fn output_topic_may_not_be_an_input() {
        let error =
            parse("[kafka]\nbrokers = \"b:1\"\ninput_topics = [\"a\"]\nalerts_topic = \"a\"\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("kafka.alerts_topic"), "{error}");
    }
}
