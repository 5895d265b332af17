//! A setting that fails its check: which key, and why.

/// A bad setting, named by its key relative to the settings checked
/// (`alerts.threshold`, `calibration.warm_up`, `range_follow`); the daemon's
/// config prefixes its section (`detector.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {message}")]
pub struct InvalidSetting {
    /// The key, e.g. `alerts.threshold`.
    pub key: String,
    /// What is wrong, worded to follow the key: "must be in [0, 1], not 3".
    pub message: String,
}

impl InvalidSetting {
    /// `key` fails its check: `message` says why.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
