//! The daemon's configuration: one strict TOML file (unknown keys are errors),
//! every key documented in `config/anomalyd.toml`, `${VAR}` and
//! `${file:PATH}` references for secrets, Kafka client properties passed through.

mod secrets;
mod sections;

pub use sections::*;

use crate::detect::DetectorConfig;
use crate::series::timestamp::parse_timestamp;
use secrets::resolve;
use serde::Deserialize;
use std::path::Path;

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

    /// Reads and validates a config file without resolving its `${...}`
    /// references: for offline detection, which uses only its detector,
    /// window and model settings and needs none of the Kafka secrets.
    pub fn load_unresolved(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut config: DaemonConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.resolve_defaults();
        config.validate(&origin)?;
        Ok(config)
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
        config.resolve_defaults();
        config.validate(origin)?;
        Ok(config)
    }

    /// Fills in the defaults that depend on other keys: `state.topic` is
    /// the group's own, `<group_id>-state`, unless set.
    fn resolve_defaults(&mut self) {
        self.state.topic = self
            .state
            .topic_setting
            .clone()
            .unwrap_or_else(|| format!("{}-state", self.kafka.group_id));
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
        for (table, properties) in self.kafka.property_tables_mut() {
            for (name, value) in properties.iter_mut() {
                *value = resolve(value, env)
                    .map_err(|m| invalid(format!("kafka.{table}.\"{name}\""), m))?;
            }
        }
        Ok(())
    }

    /// Checks values; the error names the key.
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |(key, message): Problem| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            message,
        };
        self.check_topics().map_err(invalid)?;
        self.check_counts().map_err(invalid)?;
        self.check_input().map_err(invalid)?;
        self.detector
            .validate()
            .map_err(|error| invalid((format!("detector.{}", error.key), error.to_string())))
    }

    /// The brokers, the group, the topics (no output is an input) and the
    /// client properties anomalyd sets itself.
    fn check_topics(&self) -> Result<(), Problem> {
        let kafka = &self.kafka;
        if kafka.brokers.trim().is_empty() {
            return problem("kafka.brokers", "must name at least one broker");
        }
        if kafka.group_id.trim().is_empty() {
            return problem("kafka.group_id", "must not be empty");
        }
        if kafka.input_topics.is_empty() || kafka.input_topics.iter().any(|t| t.is_empty()) {
            return problem(
                "kafka.input_topics",
                "must list at least one topic, none empty",
            );
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
        for &(key, topic) in &outputs {
            if topic.is_empty() {
                return problem(key, "must not be empty");
            }
            if kafka.input_topics.contains(topic) {
                return problem(
                    key,
                    format!("{topic:?} is also an input topic; that would feed the output back in"),
                );
            }
        }
        let state = &self.state.topic;
        if let Some((other, _)) = outputs
            .iter()
            .find(|&&(key, topic)| key != "state.topic" && topic == state)
            .filter(|_| self.state.checkpoints)
        {
            return problem(
                "state.topic",
                format!("{state:?} is also an output topic ({other})"),
            );
        }
        for (table, properties) in kafka.property_tables() {
            if let Some(name) = properties
                .keys()
                .find(|name| RESERVED_PROPERTIES.contains(&name.as_str()))
            {
                return problem(
                    format!("kafka.{table}.\"{name}\""),
                    "is set by anomalyd itself (see config/anomalyd.toml) and cannot be overridden",
                );
            }
        }
        Ok(())
    }

    /// Every count, interval and limit that must be at least 1.
    fn check_counts(&self) -> Result<(), Problem> {
        let mut counts = vec![
            ("kafka.commit_interval_ms", self.kafka.commit_interval_ms),
            ("input.max_record_bytes", self.input.max_record_bytes as u64),
            ("windows.max_gap_ms", self.windows.max_gap_ms),
            ("windows.entity_ttl_s", self.windows.entity_ttl_s),
            ("windows.max_entities", self.windows.max_entities as u64),
            ("scoring.max_batch", self.scoring.max_batch as u64),
            ("scoring.queue_capacity", self.scoring.queue_capacity as u64),
            ("admin.stall_timeout_s", self.admin.stall_timeout_s),
            ("shutdown.grace_period_s", self.shutdown.grace_period_s),
        ];
        if self.state.checkpoints {
            counts.push((
                "state.checkpoint_interval_ms",
                self.state.checkpoint_interval_ms,
            ));
            counts.push(("state.restore_timeout_s", self.state.restore_timeout_s));
        }
        if let Some((key, _)) = counts.into_iter().find(|&(_, value)| value == 0) {
            return problem(key, "must be at least 1");
        }
        if u32::try_from(self.windows.stride).is_err() || self.windows.stride == 0 {
            return problem(
                "windows.stride",
                format!("must be between 1 and {}", u32::MAX),
            );
        }
        if let ModelThreads::Count(count) = self.scoring.threads {
            if !(1..=64).contains(&count) {
                return problem(
                    "scoring.threads",
                    format!("must be between 1 and 64 (or \"auto\"), not {count}"),
                );
            }
        }
        Ok(())
    }

    /// The record's field names and the earliest accepted event time.
    fn check_input(&self) -> Result<(), Problem> {
        let input = &self.input;
        for (key, field) in [
            ("input.entity_field", &input.entity_field),
            ("input.timestamp_field", &input.timestamp_field),
            ("input.values_field", &input.values_field),
        ] {
            if field.is_empty() {
                return problem(key, "must not be empty");
            }
        }
        parse_timestamp(&input.min_timestamp)
            .map_err(|m| ("input.min_timestamp".to_string(), m))?;
        Ok(())
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
                    "entity state: checkpointed to {}{} every {} ms",
                    self.state.topic,
                    if self.state.topic_setting.is_none() {
                        " (the group's own: <group_id>-state)"
                    } else {
                        ""
                    },
                    self.state.checkpoint_interval_ms
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

/// A bad value: its key and what is wrong with it.
type Problem = (String, String);

fn problem(key: impl Into<String>, message: impl Into<String>) -> Result<(), Problem> {
    Err((key.into(), message.into()))
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
        assert_eq!(config.scoring.threads, ScoringConfig::default().threads);
    }

    #[test]
    fn model_threads_follow_the_cores_unless_counted() {
        assert_eq!(ScoringConfig::default().threads, ModelThreads::Auto);
        let auto = parse(&format!("{MINIMAL}\n[scoring]\nthreads = \"auto\"\n")).unwrap();
        assert_eq!(auto.scoring.threads, ModelThreads::Auto);
        let three = parse(&format!("{MINIMAL}\n[scoring]\nthreads = 3\n")).unwrap();
        assert_eq!(three.scoring.threads, ModelThreads::Count(3));
        // (max_batch, cores) → threads: one per core, at least 8 windows
        // each in a full batch, at least one.
        for ((max_batch, cores), threads) in
            [((64, 1), 1), ((64, 2), 2), ((64, 32), 8), ((4, 4), 1)]
        {
            assert_eq!(ModelThreads::Auto.resolve(max_batch, cores), threads);
        }
        assert_eq!(ModelThreads::Count(3).resolve(64, 1), 3);
    }

    #[test]
    fn each_group_has_its_own_state_topic_unless_one_is_set() {
        assert_eq!(parse(MINIMAL).unwrap().state.topic, "anomalyd-state");
        let group = format!("{MINIMAL}group_id = \"replay\"\n");
        assert_eq!(parse(&group).unwrap().state.topic, "replay-state");
        let set = format!("{group}[state]\ntopic = \"shared\"\n");
        assert_eq!(parse(&set).unwrap().state.topic, "shared");
        let empty = format!("{group}[state]\ntopic = \"\"\n");
        assert!(parse(&empty)
            .unwrap_err()
            .to_string()
            .contains("state.topic"));
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
        for stride in [0u64, 1 << 32] {
            let error = parse(&format!("{MINIMAL}\n[windows]\nstride = {stride}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("windows.stride"), "{error}");
        }
        let error = parse(&format!("{MINIMAL}\n[detector.alerts]\nthreshold = 3.0\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("detector.alerts.threshold"), "{error}");
        for threads in [0, 65] {
            let error = parse(&format!("{MINIMAL}\n[scoring]\nthreads = {threads}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("scoring.threads"), "{error}");
        }
        // Not a count nor "auto": toml quotes the line, the message says what fits.
        for threads in ["-1", "\"all\""] {
            let error = parse(&format!("{MINIMAL}\n[scoring]\nthreads = {threads}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("threads = {threads}")), "{error}");
            assert!(
                error.contains("a thread count (1 to 64) or \"auto\""),
                "{error}"
            );
        }
        for (table, key) in [
            ("kafka", "commit_interval_ms"),
            ("input", "max_record_bytes"),
            ("windows", "max_gap_ms"),
            ("windows", "entity_ttl_s"),
            ("windows", "max_entities"),
            ("scoring", "max_batch"),
            ("scoring", "queue_capacity"),
            ("admin", "stall_timeout_s"),
            ("shutdown", "grace_period_s"),
            ("state", "checkpoint_interval_ms"),
            ("state", "restore_timeout_s"),
        ] {
            let text = if table == "kafka" {
                format!("{MINIMAL}{key} = 0\n")
            } else {
                format!("{MINIMAL}\n[{table}]\n{key} = 0\n")
            };
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(&format!("{table}.{key}")), "{error}");
            assert!(error.contains("at least 1"), "{error}");
        }
        let shared = format!("{MINIMAL}\n[state]\ntopic = \"anomalyd-alerts\"\n");
        let error = parse(&shared).unwrap_err().to_string();
        assert!(error.contains("state.topic"), "{error}");
        assert!(error.contains("also an output topic"), "{error}");
    }

    #[test]
    fn reserved_properties_are_refused() {
        let error = parse(&format!(
            "{MINIMAL}\n[kafka.consumer_properties]\n\"enable.auto.offset.store\" = \"true\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("enable.auto.offset.store"), "{error}");
        let error = parse(&format!(
            "{MINIMAL}\n[kafka.alerts_producer_properties]\n\"acks\" = \"1\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("kafka.alerts_producer_properties.\"acks\""),
            "{error}"
        );
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
