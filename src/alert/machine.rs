//! The alert state machine of one entity: quiet → open → cooling → quiet.
//!
//! - **Quiet**: an observation is *high* when its calibrated score is at least
//!   `threshold`. An alert opens when `debounce_high` of the last
//!   `debounce_window` observations were high.
//! - **Open**: each high observation updates the alert (an `Updated` event is
//!   emitted only when the severity rises or the peak score grows by 0.05, so
//!   a long event is not a flood); `recovery` consecutive low observations
//!   resolve it.
//! - **Cooling**: for `cooldown` observations after resolving, a high
//!   observation re-opens *the same* alert (same id, an `Updated` event)
//!   instead of paging anew.
//!
//! Observations are counted per entity in arrival order; time is the event
//! time carried by each observation, never the wall clock.

use crate::settings::InvalidSetting;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;

/// Settings of the alert decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertPolicy {
    /// Calibrated score at or above which an observation is high (0.65: a tail of about 3 × 10^-7).
    pub threshold: f64,
    /// High observations among the last `debounce_window` needed to open an alert.
    pub debounce_high: usize,
    /// Observations the debounce looks back over.
    pub debounce_window: usize,
    /// Consecutive low observations that resolve an open alert.
    pub recovery: usize,
    /// Observations after resolving during which a new crossing re-opens the same alert.
    pub cooldown: usize,
    /// Calibrated score at or above which the alert is critical rather than a warning.
    pub critical_threshold: f64,
    /// Channels listed as the alert's evidence, largest contribution first.
    pub top_channels: usize,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            threshold: 0.65,
            debounce_high: 1,
            debounce_window: 1,
            recovery: 10,
            cooldown: 30,
            critical_threshold: 0.8,
            top_channels: 3,
        }
    }
}

impl AlertPolicy {
    /// Checks the settings; the error names the bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(InvalidSetting::new(
                "alerts.threshold",
                format!("must be in [0, 1], not {}", self.threshold),
            ));
        }
        if !(self.threshold..=1.0).contains(&self.critical_threshold) {
            return Err(InvalidSetting::new(
                "alerts.critical_threshold",
                format!(
                    "must be in [alerts.threshold, 1], not {}",
                    self.critical_threshold
                ),
            ));
        }
        if self.debounce_window == 0 || self.debounce_high == 0 {
            return Err(InvalidSetting::new(
                "alerts.debounce_high",
                "and alerts.debounce_window must be at least 1",
            ));
        }
        if self.debounce_high > self.debounce_window {
            return Err(InvalidSetting::new(
                "alerts.debounce_high",
                format!(
                    "({}) cannot exceed alerts.debounce_window ({})",
                    self.debounce_high, self.debounce_window
                ),
            ));
        }
        if self.recovery == 0 {
            return Err(InvalidSetting::new("alerts.recovery", "must be at least 1"));
        }
        Ok(())
    }
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Above the threshold.
    Warning,
    /// Above the critical threshold.
    Critical,
}

impl Severity {
    /// The name in messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One channel's part in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelEvidence {
    /// Channel name.
    pub channel: String,
    /// Its contribution to the raw score.
    pub contribution: f64,
    /// The newest value seen.
    pub actual: f64,
    /// What the model reconstructed for it.
    pub expected: f64,
}

/// An alert as users see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic id: see [`alert_id`].
    pub id: String,
    /// The entity.
    pub entity: String,
    /// The model version that scored it.
    pub model_version: String,
    /// Event time of the observation that opened it (epoch ms).
    pub started_ms: i64,
    /// Event time of the latest high observation.
    pub last_high_ms: i64,
    /// Event time at which it resolved, if it has.
    pub resolved_ms: Option<i64>,
    /// Current severity (never falls while open).
    pub severity: Severity,
    /// Latest calibrated score.
    pub score: f64,
    /// Highest calibrated score so far.
    pub peak_score: f64,
    /// High observations so far.
    pub high_observations: u64,
    /// Top channels at the peak.
    pub top_channels: Vec<ChannelEvidence>,
}

/// What an observation changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "alert", rename_all = "snake_case")]
pub enum AlertEvent {
    /// A new alert.
    Opened(Alert),
    /// An open alert rose in severity or peak, or a cooling alert re-opened.
    Updated(Alert),
    /// The alert resolved after the recovery period.
    Resolved(Alert),
}

impl AlertEvent {
    /// The alert the event is about.
    pub fn alert(&self) -> &Alert {
        match self {
            Self::Opened(a) | Self::Updated(a) | Self::Resolved(a) => a,
        }
    }
}

/// `sha256(entity, start, model version)`, 16 hex digits: the same event
/// scored by the same model gets the same id on every replica and replay.
pub fn alert_id(entity: &str, started_ms: i64, model_version: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(entity.as_bytes());
    hash.update([0]);
    hash.update(started_ms.to_be_bytes());
    hash.update([0]);
    hash.update(model_version.as_bytes());
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum State {
    Quiet { recent: VecDeque<bool> },
    // Boxed: most entities are quiet, and every entity's state is this big.
    Open { alert: Box<Alert>, low_run: usize },
    Cooling { alert: Box<Alert>, remaining: usize },
}

/// One entity's alert decisions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertMachine {
    entity: String,
    /// Shared by the entities of a daemon (see [`share_settings`](Self::share_settings)).
    model_version: Arc<str>,
    /// Shared like `model_version`.
    policy: Arc<AlertPolicy>,
    state: State,
}

impl AlertMachine {
    /// A quiet machine for `entity` scored by `model_version`.
    pub fn new(entity: &str, model_version: &str, policy: AlertPolicy) -> Self {
        Self {
            entity: entity.to_string(),
            model_version: model_version.into(),
            policy: Arc::new(policy),
            state: State::Quiet {
                recent: VecDeque::new(),
            },
        }
    }

    /// Takes `other`'s policy and model version where they are equal to its
    /// own, so that the entities of a daemon hold one copy of each.
    pub fn share_settings(&mut self, other: &AlertMachine) {
        if self.policy == other.policy {
            self.policy = Arc::clone(&other.policy);
        }
        if self.model_version == other.model_version {
            self.model_version = Arc::clone(&other.model_version);
        }
    }

    /// Takes `other`'s policy and model version (a restored machine follows
    /// the configured ones; an open alert stays open).
    pub fn adopt_settings(&mut self, other: &AlertMachine) {
        self.policy = Arc::clone(&other.policy);
        self.model_version = Arc::clone(&other.model_version);
    }

    /// The policy it decides with.
    pub fn policy(&self) -> &AlertPolicy {
        &self.policy
    }

    /// The model version new alerts name.
    pub fn model_version(&self) -> &str {
        &self.model_version
    }

    /// Names the model version of alerts opened from now on.
    pub fn set_model_version(&mut self, model_version: &str) {
        if *self.model_version != *model_version {
            self.model_version = model_version.into();
        }
    }

    /// The open alert, if any.
    pub fn current(&self) -> Option<&Alert> {
        match &self.state {
            State::Open { alert, .. } => Some(alert.as_ref()),
            _ => None,
        }
    }

    /// Takes one observation: its event time, calibrated score, whether the
    /// calibration is ready (a warming-up score is never high), and the
    /// channels' evidence (computed only when an alert needs it).
    pub fn observe(
        &mut self,
        timestamp_ms: i64,
        score: f64,
        ready: bool,
        evidence: impl FnOnce() -> Vec<ChannelEvidence>,
    ) -> Option<AlertEvent> {
        let high = ready && score >= self.policy.threshold;
        let severity = if score >= self.policy.critical_threshold {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let policy = &self.policy;
        match &mut self.state {
            State::Quiet { recent } => {
                recent.push_back(high);
                if recent.len() > policy.debounce_window {
                    recent.pop_front();
                }
                if recent.iter().filter(|&&h| h).count() < policy.debounce_high || !high {
                    return None;
                }
                Some(self.open(timestamp_ms, score, severity, evidence()))
            }
            State::Open { alert, low_run } => {
                alert.score = score;
                if high {
                    *low_run = 0;
                    let escalated = severity > alert.severity;
                    let grew = score >= alert.peak_score + 0.05;
                    record_high(alert, timestamp_ms, score, severity, evidence, policy);
                    return (escalated || grew).then(|| AlertEvent::Updated((**alert).clone()));
                }
                *low_run += 1;
                if *low_run < policy.recovery {
                    return None;
                }
                alert.resolved_ms = Some(timestamp_ms);
                let resolved = (**alert).clone();
                self.state = State::Cooling {
                    alert: Box::new(resolved.clone()),
                    remaining: policy.cooldown,
                };
                Some(AlertEvent::Resolved(resolved))
            }
            State::Cooling { alert, remaining } => {
                if high {
                    let mut alert = (**alert).clone();
                    alert.resolved_ms = None;
                    alert.score = score;
                    record_high(&mut alert, timestamp_ms, score, severity, evidence, policy);
                    self.state = State::Open {
                        alert: Box::new(alert.clone()),
                        low_run: 0,
                    };
                    return Some(AlertEvent::Updated(alert));
                }
                *remaining = remaining.saturating_sub(1);
                if *remaining == 0 {
                    self.state = State::Quiet {
                        recent: VecDeque::new(),
                    };
                }
                None
            }
        }
    }

    /// Opens an alert at this observation.
    fn open(
        &mut self,
        timestamp_ms: i64,
        score: f64,
        severity: Severity,
        evidence: Vec<ChannelEvidence>,
    ) -> AlertEvent {
        let alert = Alert {
            id: alert_id(&self.entity, timestamp_ms, &self.model_version),
            entity: self.entity.clone(),
            model_version: self.model_version.to_string(),
            started_ms: timestamp_ms,
            last_high_ms: timestamp_ms,
            resolved_ms: None,
            severity,
            score,
            peak_score: score,
            high_observations: 1,
            top_channels: top(evidence, self.policy.top_channels),
        };
        self.state = State::Open {
            alert: Box::new(alert.clone()),
            low_run: 0,
        };
        AlertEvent::Opened(alert)
    }
}

/// Folds one high observation into an alert: its time, count, severity, and
/// the peak with its evidence.
fn record_high(
    alert: &mut Alert,
    timestamp_ms: i64,
    score: f64,
    severity: Severity,
    evidence: impl FnOnce() -> Vec<ChannelEvidence>,
    policy: &AlertPolicy,
) {
    alert.last_high_ms = timestamp_ms;
    alert.high_observations += 1;
    alert.severity = alert.severity.max(severity);
    if score > alert.peak_score {
        alert.peak_score = score;
        alert.top_channels = top(evidence(), policy.top_channels);
    }
}

fn top(mut evidence: Vec<ChannelEvidence>, count: usize) -> Vec<ChannelEvidence> {
    evidence.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    evidence.truncate(count);
    evidence
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AlertPolicy {
        AlertPolicy {
            threshold: 0.45,
            debounce_high: 1,
            debounce_window: 1,
            recovery: 3,
            cooldown: 5,
            critical_threshold: 0.9,
            top_channels: 2,
        }
    }

    fn evidence() -> Vec<ChannelEvidence> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| ChannelEvidence {
                channel: name.to_string(),
                contribution: i as f64,
                actual: 1.0,
                expected: 0.0,
            })
            .collect()
    }

    /// Feeds scores at times 0, 1, 2, ... and returns the events by time.
    fn run(machine: &mut AlertMachine, scores: &[f64]) -> Vec<(i64, AlertEvent)> {
        scores
            .iter()
            .enumerate()
            .filter_map(|(t, &s)| {
                machine
                    .observe(t as i64, s, true, evidence)
                    .map(|e| (t as i64, e))
            })
            .collect()
    }

    fn kinds(events: &[(i64, AlertEvent)]) -> Vec<(i64, &'static str)> {
        events
            .iter()
            .map(|(t, e)| {
                let kind = match e {
                    AlertEvent::Opened(_) => "opened",
                    AlertEvent::Updated(_) => "updated",
                    AlertEvent::Resolved(_) => "resolved",
                };
                (*t, kind)
            })
            .collect()
    }

    #[test]
    fn an_alert_opens_updates_and_resolves_after_the_recovery_period() {
        let mut m = AlertMachine::new("pump-1", "v1", policy());
        let events = run(&mut m, &[0.1, 0.6, 0.7, 0.95, 0.2, 0.2, 0.2, 0.1]);
        assert_eq!(
            kinds(&events),
            vec![
                (1, "opened"),
                (2, "updated"),
                (3, "updated"),
                (6, "resolved")
            ]
        );
        let resolved = events[3].1.alert();
        assert_eq!(resolved.started_ms, 1);
        assert_eq!(resolved.last_high_ms, 3);
        assert_eq!(resolved.resolved_ms, Some(6));
        assert_eq!(resolved.severity, Severity::Critical);
        assert_eq!(resolved.peak_score, 0.95);
        assert_eq!(resolved.high_observations, 3);
        let channels: Vec<&str> = resolved
            .top_channels
            .iter()
            .map(|c| c.channel.as_str())
            .collect();
        assert_eq!(channels, ["c", "b"]);
    }

    #[test]
    fn a_short_dip_does_not_resolve() {
        let mut m = AlertMachine::new("e", "v1", policy());
        let events = run(&mut m, &[0.6, 0.1, 0.1, 0.6, 0.1, 0.1, 0.1]);
        assert_eq!(kinds(&events), vec![(0, "opened"), (6, "resolved")]);
    }

    #[test]
    fn debounce_needs_k_of_n_high_observations() {
        let mut m = AlertMachine::new(
            "e",
            "v1",
            AlertPolicy {
                debounce_high: 2,
                debounce_window: 3,
                ..policy()
            },
        );
        // One isolated high observation, then two within three.
        let events = run(&mut m, &[0.6, 0.1, 0.1, 0.1, 0.6, 0.1, 0.6]);
        assert_eq!(kinds(&events), vec![(6, "opened")]);
    }

    #[test]
    fn the_cooldown_reopens_the_same_alert_instead_of_paging_again() {
        let mut m = AlertMachine::new("e", "v1", policy());
        // Open at 0, resolve at 3, high again at 5 (within the 5-row cooldown).
        let events = run(&mut m, &[0.6, 0.1, 0.1, 0.1, 0.1, 0.7]);
        assert_eq!(
            kinds(&events),
            vec![(0, "opened"), (3, "resolved"), (5, "updated")]
        );
        assert_eq!(events[0].1.alert().id, events[2].1.alert().id);
        assert_eq!(events[2].1.alert().resolved_ms, None);
        // After the cooldown has passed, a crossing is a new alert.
        let mut m = AlertMachine::new("e", "v1", policy());
        let mut scores = vec![0.6, 0.1, 0.1, 0.1];
        scores.extend([0.1; 5]);
        scores.push(0.7);
        let events = run(&mut m, &scores);
        assert_eq!(
            kinds(&events),
            vec![(0, "opened"), (3, "resolved"), (9, "opened")]
        );
        assert_ne!(events[0].1.alert().id, events[2].1.alert().id);
    }

    #[test]
    fn warming_up_scores_never_alert() {
        let mut m = AlertMachine::new("e", "v1", policy());
        assert!(m.observe(0, 1.0, false, evidence).is_none());
        assert!(m.current().is_none());
    }

    #[test]
    fn ids_are_deterministic_and_depend_on_entity_start_and_model() {
        let id = alert_id("pump-1", 1_700_000_000_000, "sha256:abc");
        assert_eq!(id, alert_id("pump-1", 1_700_000_000_000, "sha256:abc"));
        assert_eq!(id.len(), 16);
        assert_ne!(id, alert_id("pump-2", 1_700_000_000_000, "sha256:abc"));
        assert_ne!(id, alert_id("pump-1", 1_700_000_000_001, "sha256:abc"));
        assert_ne!(id, alert_id("pump-1", 1_700_000_000_000, "sha256:abd"));
        // Replaying the same scores gives the same alerts.
        let scores = [0.1, 0.6, 0.7, 0.1, 0.1, 0.1];
        let a = run(&mut AlertMachine::new("e", "v1", policy()), &scores);
        let b = run(&mut AlertMachine::new("e", "v1", policy()), &scores);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_policies_name_the_key() {
        let bad = AlertPolicy {
            debounce_high: 3,
            debounce_window: 2,
            ..policy()
        };
        assert_eq!(bad.validate().unwrap_err().key, "alerts.debounce_high");
        let bad = AlertPolicy {
            threshold: 1.5,
            ..policy()
        };
        assert_eq!(bad.validate().unwrap_err().key, "alerts.threshold");
        assert!(policy().validate().is_ok());
    }
}
