//! The librdkafka client configurations of the daemon, built in one place so
//! that `anomalyd check-config` validates exactly what `anomalyd run` uses,
//! without connecting to anything.

use super::config::DaemonConfig;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// The consumer's configuration: defaults, then the configured properties,
/// then what the delivery guarantee requires (which cannot be overridden).
pub fn consumer_config(config: &DaemonConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        // librdkafka's default (1,000 ms) stops fetching a partition for a
        // whole second whenever the prefetch queue is full, i.e. whenever
        // the daemon is the slower side: a backlog then drains in bursts, and
        // records wait seconds. 10 ms made a decode-only consumer 5.5× faster
        // and took the daemon's p99 latency from seconds to milliseconds
        // (BENCHMARKS.md, end to end).
        .set("fetch.queue.backoff.ms", "10");
    apply(&mut client, &config.kafka.properties);
    apply(&mut client, &config.kafka.consumer_properties);
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    client
}

/// Room for a dead letter's key and headers beside the record it carries.
pub const DEAD_LETTER_HEADROOM: usize = 64 * 1024;

/// The smallest `message.max.bytes` a producer may have: the daemon's own
/// outputs (a checkpoint is about 4 KB for 4 channels × 64 samples, more for
/// larger models; an alert with its contributions under 2 KB) must fit.
pub const MIN_MESSAGE_MAX_BYTES: usize = 64 * 1024;

/// The producers' default `message.max.bytes`: a record of up to
/// `input.max_record_bytes` that is set aside fits as it is, with its key
/// and headers (librdkafka's own default, 1,000,000, is smaller than the
/// default `max_record_bytes`, 1 MiB: every record set aside for its size
/// would be refused). A broker or topic with a smaller limit refuses some;
/// those go to the dead-letter topic as a reference (docs/reliability.md).
pub fn default_message_max_bytes(config: &DaemonConfig) -> usize {
    (config.input.max_record_bytes + DEAD_LETTER_HEADROOM).max(1_000_000)
}

/// The bulk producer's configuration (scores, dead letters, checkpoints):
/// defaults, the configured properties, then an idempotent producer with
/// `acks=all`.
pub fn producer_config(config: &DaemonConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set(
            "message.max.bytes",
            default_message_max_bytes(config).to_string(),
        )
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // Readiness reads the brokers' state from these (admin/health.rs).
        .set("statistics.interval.ms", "1000");
    apply(&mut client, &config.kafka.properties);
    apply(&mut client, &config.kafka.producer_properties);
    delivery_guarantee(&mut client, config);
    client
}

/// The alerts producer's configuration (alert and gap events): the bulk
/// producer's, except that it sends each event at once (`linger.ms = 0`,
/// whatever `kafka.producer_properties` say);
/// `kafka.alerts_producer_properties` come last and may change that too.
///
/// Alert events are few and urgent: batching them for 5 ms saved nothing and
/// added 5 ms to every alert (BENCHMARKS.md, section 3), while the scores,
/// thousands per second, need the batches.
pub fn alerts_producer_config(config: &DaemonConfig) -> ClientConfig {
    let mut client = producer_config(config);
    client.set("linger.ms", "0");
    apply(&mut client, &config.kafka.alerts_producer_properties);
    delivery_guarantee(&mut client, config);
    client
}

/// Sets each of `properties` on `client`, overriding what is there.
fn apply(client: &mut ClientConfig, properties: &std::collections::BTreeMap<String, String>) {
    for (name, value) in properties {
        client.set(name, value);
    }
}

/// What every producer of the daemon must be: on the configured brokers,
/// idempotent, acknowledged by all in-sync replicas.
fn delivery_guarantee(client: &mut ClientConfig, config: &DaemonConfig) {
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
}

/// Why the Kafka client settings were refused (`clients::check`).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// librdkafka refuses a client's settings.
    #[error("the Kafka {client} settings: {error}")]
    Client {
        /// Which client ("consumer", "producer", "alerts producer").
        client: &'static str,
        /// librdkafka's error, secrets removed.
        error: ClientError,
    },
    /// A producer's `message.max.bytes` is too small for the daemon's own outputs.
    #[error(
        "kafka.{table}.\"message.max.bytes\" (or kafka.properties) = {limit} is too small \
         for the daemon's own outputs (checkpoints, alerts, references to records set \
         aside): at least {MIN_MESSAGE_MAX_BYTES}"
    )]
    MessageMaxBytes {
        /// The producer's table in `kafka`.
        table: &'static str,
        /// The limit set.
        limit: usize,
    },
}

/// Checks every client configuration with librdkafka itself (unknown
/// properties, bad values, features missing from this build) without
/// creating a client.
pub fn check(config: &DaemonConfig) -> Result<(), SettingsError> {
    for (client, settings) in [
        ("consumer", consumer_config(config)),
        ("producer", producer_config(config)),
        ("alerts producer", alerts_producer_config(config)),
    ] {
        settings
            .create_native_config()
            .map_err(|error| SettingsError::Client {
                client,
                error: without_secrets(error),
            })?;
    }
    for (table, client) in [
        ("producer_properties", producer_config(config)),
        ("alerts_producer_properties", alerts_producer_config(config)),
    ] {
        let limit = client
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1_000_000);
        if limit < MIN_MESSAGE_MAX_BYTES {
            return Err(SettingsError::MessageMaxBytes { table, limit });
        }
    }
    Ok(())
}

/// A Kafka client error fit to print: librdkafka's configuration errors
/// repeat the offending property's value, which may be a password.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A property librdkafka refuses, its value masked.
    #[error("property {key:?}: {description}")]
    Setting {
        /// The property.
        key: String,
        /// librdkafka's description, without the value.
        description: String,
    },
    /// Any other client error.
    #[error(transparent)]
    Kafka(KafkaError),
}

/// `error` with the values of refused properties masked.
pub fn without_secrets(error: KafkaError) -> ClientError {
    match error {
        KafkaError::ClientConfig(_, description, key, value) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, "********")
            };
            ClientError::Setting { key, description }
        }
        other => ClientError::Kafka(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> DaemonConfig {
        let text = format!("[kafka]\nbrokers = \"b:1\"\ninput_topics = [\"in\"]\n{extra}");
        DaemonConfig::from_toml(&text, "test", &|_| None).unwrap()
    }

    #[test]
    fn reserved_settings_win_and_passthrough_reaches_the_client() {
        let config = config("[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n");
        let consumer = consumer_config(&config);
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(
            producer_config(&config).get("enable.idempotence"),
            Some("true")
        );
        assert!(check(&config).is_ok());
    }

    #[test]
    fn alerts_go_out_at_once_unless_their_own_table_says_otherwise() {
        let config = config(
            "[kafka.properties]\n\"statistics.interval.ms\" = \"500\"\n\
             [kafka.producer_properties]\n\"linger.ms\" = \"20\"\n\"batch.num.messages\" = \"500\"\n",
        );
        let bulk = producer_config(&config);
        let alerts = alerts_producer_config(&config);
        assert_eq!(bulk.get("linger.ms"), Some("20"));
        assert_eq!(bulk.get("statistics.interval.ms"), Some("500"));
        assert_eq!(alerts.get("linger.ms"), Some("0"));
        // Everything else the producers share.
        assert_eq!(alerts.get("statistics.interval.ms"), Some("500"));
        assert_eq!(alerts.get("batch.num.messages"), Some("500"));
        for client in [&bulk, &alerts] {
            assert_eq!(client.get("enable.idempotence"), Some("true"));
            assert_eq!(client.get("acks"), Some("all"));
            assert_eq!(client.get("bootstrap.servers"), Some("b:1"));
        }

        let config =
            super::tests::config("[kafka.alerts_producer_properties]\n\"linger.ms\" = \"2\"\n");
        assert_eq!(alerts_producer_config(&config).get("linger.ms"), Some("2"));
        assert_eq!(producer_config(&config).get("linger.ms"), Some("5"));
        assert!(check(&config).is_ok());

        let bad =
            super::tests::config("[kafka.alerts_producer_properties]\n\"linger.msec\" = \"2\"\n");
        let error = format!("{:#}", check(&bad).unwrap_err());
        assert!(
            error.contains("alerts producer") && error.contains("linger.msec"),
            "{error}"
        );
    }

    #[test]
    fn producers_take_a_record_set_aside_for_its_size_and_refuse_tiny_limits() {
        let config = config("");
        let limit: usize = producer_config(&config)
            .get("message.max.bytes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(limit >= config.input.max_record_bytes + DEAD_LETTER_HEADROOM);
        let alerts = alerts_producer_config(&config);
        assert_eq!(alerts.get("message.max.bytes"), Some(&*limit.to_string()));
        let larger = super::tests::config("[input]\nmax_record_bytes = 4000000\n");
        assert_eq!(
            producer_config(&larger).get("message.max.bytes"),
            Some(&*(4_000_000 + DEAD_LETTER_HEADROOM).to_string())
        );
        assert!(check(&larger).is_ok());
        let tiny = super::tests::config(
            "[kafka.producer_properties]\n\"message.max.bytes\" = \"20000\"\n",
        );
        let error = format!("{:#}", check(&tiny).unwrap_err());
        assert!(
            error.contains("producer_properties") && error.contains("message.max.bytes"),
            "{error}"
        );
    }

    #[test]
    fn librdkafka_rejections_name_the_property_but_not_the_value() {
        let config = config("[kafka.properties]\n\"sasl.passwrd\" = \"hunter2\"\n");
        let error = format!("{:#}", check(&config).unwrap_err());
        assert!(error.contains("sasl.passwrd"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
