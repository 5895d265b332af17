//! Alert decisions per entity: a small state machine turns calibrated scores
//! into alerts that open, update, resolve and stay quiet through a cooldown.
//!
//! Shared by `anomalyd eval nab` and the daemon, so the benchmark measures the
//! decisions users get.

mod machine;

pub use machine::{
    alert_id, Alert, AlertEvent, AlertMachine, AlertPolicy, ChannelEvidence, Severity,
};
