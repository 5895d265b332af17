//! The state topic: created when missing (compacted, as many partitions as
//! the largest input topic), refused when it has too few partitions.

use crate::daemon::clients::{producer_config, without_secrets, ClientError};
use crate::daemon::config::DaemonConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::time::Duration;

/// Why the state topic cannot take the checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum StateTopicError {
    /// The admin client could not be made or could not read the topics.
    #[error("cannot {doing}: {error}")]
    Kafka {
        /// What failed.
        doing: &'static str,
        /// The client's error, secrets removed.
        error: ClientError,
    },
    /// Fewer partitions than the largest input topic.
    #[error(
        "the state topic {topic} has {have} partitions, the input topic {input} {needed}: \
         give state.topic at least as many partitions as the largest input topic"
    )]
    TooFewPartitions {
        /// The state topic.
        topic: String,
        /// Its partitions.
        have: i32,
        /// The largest input topic.
        input: String,
        /// Its partitions.
        needed: i32,
    },
    /// Missing, and the broker would not create it.
    #[error(
        "cannot create the state topic {topic}: {why}; create it with {needed} \
         partitions and cleanup.policy=compact, or set state.checkpoints = false"
    )]
    NotCreated {
        /// The state topic.
        topic: String,
        /// The broker's answer.
        why: String,
        /// The partitions it needs.
        needed: i32,
    },
}

/// Makes sure the state topic can take a checkpoint for every input
/// partition: creates it (compacted, as many partitions as the largest input
/// topic) if it is missing, and refuses one with fewer partitions. Input
/// topics that do not exist yet are checked again on assignment.
pub fn ensure_topic(
    config: &DaemonConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), StateTopicError> {
    let kafka = |doing| {
        move |error| StateTopicError::Kafka {
            doing,
            error: without_secrets(error),
        }
    };
    let topic = &config.state.topic;
    // Not idempotent: an admin client produces nothing, and would otherwise
    // ask for a producer id of its own.
    let mut client = producer_config(config);
    client.remove("enable.idempotence");
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(kafka("create the Kafka admin client"))?;
    // All topics: asking for one by name could make the broker auto-create it.
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka("read the cluster's topics"))?;
    let partitions_of = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
    };
    let largest_input = config
        .kafka
        .input_topics
        .iter()
        .filter_map(|t| partitions_of(t).map(|n| (n, t)))
        .max();
    let Some((needed, input)) = largest_input else {
        tracing::warn!(state_topic = %topic, "no input topic exists yet; the state topic is checked when partitions are assigned");
        return Ok(());
    };
    match partitions_of(topic) {
        Some(have) if have < needed => Err(StateTopicError::TooFewPartitions {
            topic: topic.clone(),
            have,
            input: input.clone(),
            needed,
        }),
        Some(_) => Ok(()),
        None => {
            let new = NewTopic::new(topic, needed, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact");
            let options = AdminOptions::new()
                .request_timeout(Some(Duration::from_secs(15)))
                .operation_timeout(Some(Duration::from_secs(15)));
            let cannot = |why: String| StateTopicError::NotCreated {
                topic: topic.clone(),
                why,
                needed,
            };
            let results = runtime
                .block_on(admin.create_topics([&new], &options))
                .map_err(|e| cannot(e.to_string()))?;
            for result in results {
                match result {
                    Ok(_) => {
                        tracing::info!(state_topic = %topic, partitions = needed, "created the state topic (compacted)")
                    }
                    Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(cannot(code.to_string())),
                }
            }
            Ok(())
        }
    }
}
