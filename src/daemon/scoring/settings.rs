//! What the scorer thread is built from: its sections of the daemon's
//! configuration, unpacked once.

use crate::daemon::config::{DaemonConfig, InputConfig, ScoringConfig, WindowConfig};
use crate::detect::DetectorConfig;
use std::time::Duration;

/// The scorer thread's settings.
#[derive(Debug, Clone)]
pub struct ScoringSettings {
    /// `[scoring]`: batches and model threads.
    pub scoring: ScoringConfig,
    /// `[windows]`: window assembly and entity bounds.
    pub windows: WindowConfig,
    /// `[detector]`: calibration and alert decisions.
    pub detector: DetectorConfig,
    /// `[input]`: how records read, to write a sample of a record in the
    /// batch form back as a record of its own (on the dead-letter topic).
    pub input: InputConfig,
    /// Where the outputs go.
    pub topics: OutputTopics,
    /// Entity checkpoints (`state.checkpoints`), if on.
    pub checkpoints: Option<CheckpointSettings>,
}

/// The topics of the scorer's outputs (`kafka.*_topic`).
#[derive(Debug, Clone)]
pub struct OutputTopics {
    /// Alert and gap events.
    pub alerts: String,
    /// Window scores, if wanted.
    pub scores: Option<String>,
    /// Samples out of order.
    pub dead_letter: String,
}

/// Where and how often entity checkpoints are written.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// `state.topic`.
    pub topic: String,
    /// `kafka.group_id`, written beside each checkpoint.
    pub group: String,
    /// `state.checkpoint_interval_ms`.
    pub every: Duration,
}

impl ScoringSettings {
    /// The scorer's sections of `config`.
    pub fn of(config: &DaemonConfig) -> Self {
        Self {
            scoring: config.scoring.clone(),
            windows: config.windows.clone(),
            detector: config.detector.clone(),
            input: config.input.clone(),
            topics: OutputTopics {
                alerts: config.kafka.alerts_topic.clone(),
                scores: config.kafka.scores_topic.clone(),
                dead_letter: config.kafka.dead_letter_topic.clone(),
            },
            checkpoints: config.state.checkpoints.then(|| CheckpointSettings {
                topic: config.state.topic.clone(),
                group: config.kafka.group_id.clone(),
                every: Duration::from_millis(config.state.checkpoint_interval_ms),
            }),
        }
    }
}
