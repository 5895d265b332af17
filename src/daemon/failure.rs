//! What the daemon does with an error: retry it (transient), set the record
//! aside as a reference (its content is refused), or stop with an exit code
//! a supervisor acts on (fatal). docs/reliability.md, "Error classes", has
//! the table; `classify` is its code.

use super::ledger::Ledger;
use super::throttle::Throttle;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Why the daemon stopped, or could not start, for good: each kind has its
/// exit code (sysexits.h), so that systemd's `RestartPreventExitStatus=` and
/// Kubernetes' back-off can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalKind {
    /// The configuration was refused (64, EX_USAGE).
    Config,
    /// The model could not be loaded or checked at start (65, EX_DATAERR).
    Model,
    /// The state topic (or an output topic) cannot be used: too few
    /// partitions, cannot be created or read, or refuses even a small
    /// reference record (69, EX_UNAVAILABLE).
    Topic,
    /// librdkafka declared a client unusable, for example an idempotent
    /// producer fenced or out of sequence (70, EX_SOFTWARE).
    Kafka,
    /// The grace period ended before everything in flight was finished:
    /// what was not acknowledged was not committed and is read again at the
    /// next start (75, EX_TEMPFAIL).
    DrainIncomplete,
    /// The cluster refused authentication or authorisation (77, EX_NOPERM).
    Auth,
}

impl FatalKind {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Config => 64,
            Self::Model => 65,
            Self::Topic => 69,
            Self::Kafka => 70,
            Self::DrainIncomplete => 75,
            Self::Auth => 77,
        }
    }
}

/// An error the daemon stops on, with the exit code of its kind.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    /// Which kind.
    pub kind: FatalKind,
    /// What happened, for the log and stderr.
    pub message: String,
}

impl Fatal {
    /// A fatal error of `kind`.
    pub fn new(kind: FatalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What to do with a failed Kafka operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again after a bounded back-off.
    Transient,
    /// The broker or the producer refuses this record's content (too large,
    /// invalid): sending it again cannot succeed.
    Refused,
    /// The daemon cannot go on.
    Fatal(FatalKind),
}

/// The class of a librdkafka error code.
pub fn classify(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        C::Fatal | C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch => {
            ErrorClass::Fatal(FatalKind::Kafka)
        }
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::DelegationTokenAuthorizationFailed => ErrorClass::Fatal(FatalKind::Auth),
        C::MessageSizeTooLarge
        | C::MessageBatchTooLarge
        | C::InvalidRecord
        | C::InvalidTimestamp => ErrorClass::Refused,
        _ => ErrorClass::Transient,
    }
}

/// The class of a Kafka error (errors without a code are transient).
pub fn classify_error(error: &KafkaError) -> ErrorClass {
    error
        .rdkafka_error_code()
        .map_or(ErrorClass::Transient, classify)
}

/// What a Kafka client reported (its error callback, or an error polled):
/// a fatal error begins the stop; others are logged, at most once per
/// `throttle`'s period, with their count.
pub fn report_client_error(
    stop: &Stop,
    throttle: &Throttle,
    client: &str,
    error: &KafkaError,
    reason: &str,
) {
    match classify_error(error) {
        ErrorClass::Fatal(kind) => stop.fail(Fatal::new(
            kind,
            format!("the Kafka {client}: {error}: {reason}"),
        )),
        _ => {
            if let Some(count) = throttle.count(1, Instant::now()) {
                tracing::warn!(client, %error, reason, errors = count, "Kafka client errors");
            }
        }
    }
}

/// The back-off before the `attempt`-th retry (1-based): 100 ms, doubling,
/// at most 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(6);
    Duration::from_millis(100 << exponent).min(Duration::from_secs(5))
}

/// The daemon's stop: the first fatal error, and the deadline by which
/// everything must have ended once a stop began (SIGTERM or a fatal error).
/// Every wait in the daemon asks it whether to give up.
#[derive(Debug)]
pub struct Stop {
    grace: Duration,
    deadline: OnceLock<Instant>,
    fatal: Mutex<Option<Fatal>>,
    ended: AtomicBool,
    /// The ledger closed when the stop begins ([`Ledger::close`]).
    ledger: OnceLock<Ledger>,
}

impl Stop {
    /// A stop that, once begun, allows `grace` to finish.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            deadline: OnceLock::new(),
            fatal: Mutex::new(None),
            ended: AtomicBool::new(false),
            ledger: OnceLock::new(),
        }
    }

    /// Closes `ledger` when the stop begins (at once if it has): from then
    /// on, unfinished work is given up and its holds may be dropped.
    pub fn closes(&self, ledger: &Ledger) {
        let _ = self.ledger.set(ledger.clone());
        if self.begun() {
            ledger.close();
        }
    }

    /// Begins the stop (idempotent): the deadline is `grace` from the first call.
    pub fn begin(&self) -> Instant {
        let deadline = *self.deadline.get_or_init(|| Instant::now() + self.grace);
        if let Some(ledger) = self.ledger.get() {
            ledger.close();
        }
        deadline
    }

    /// Records a fatal error (the first one is kept) and begins the stop.
    pub fn fail(&self, fatal: Fatal) {
        {
            let mut slot = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                tracing::error!(kind = ?fatal.kind, exit_code = fatal.kind.exit_code(), error = %fatal.message, "fatal error: stopping");
                *slot = Some(fatal);
            }
        }
        self.begin();
    }

    /// Whether a stop has begun.
    pub fn begun(&self) -> bool {
        self.deadline.get().is_some()
    }

    /// The deadline, once a stop has begun.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// When draining must end, once a stop has begun: a little before the
    /// deadline (a quarter of the grace period, at most 2 s), which leaves
    /// time to commit what was finished and leave the group.
    pub fn drain_deadline(&self) -> Option<Instant> {
        let reserve = (self.grace / 4).min(Duration::from_secs(2));
        self.deadline().map(|deadline| deadline - reserve)
    }

    /// Whether the stop's drain deadline has passed: waits give up.
    pub fn overdue(&self) -> bool {
        self.drain_deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// The daemon's threads have all ended (the watchdog stands down).
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Whether [`Stop::end`] was called.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// The fatal error, if one stopped the daemon.
    pub fn fatal(&self) -> Option<Fatal> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fall_into_their_classes() {
        use RDKafkaErrorCode as C;
        for code in [
            C::RequestTimedOut,
            C::NotEnoughReplicas,
            C::NotLeaderForPartition,
            C::MessageTimedOut,
            C::BrokerTransportFailure,
            C::UnknownTopicOrPartition,
        ] {
            assert_eq!(classify(code), ErrorClass::Transient, "{code:?}");
        }
        for code in [
            C::MessageSizeTooLarge,
            C::InvalidRecord,
            C::MessageBatchTooLarge,
        ] {
            assert_eq!(classify(code), ErrorClass::Refused, "{code:?}");
        }
        for code in [
            C::SaslAuthenticationFailed,
            C::TopicAuthorizationFailed,
            C::Authentication,
        ] {
            assert_eq!(
                classify(code),
                ErrorClass::Fatal(FatalKind::Auth),
                "{code:?}"
            );
        }
        for code in [C::Fatal, C::ProducerFenced] {
            assert_eq!(
                classify(code),
                ErrorClass::Fatal(FatalKind::Kafka),
                "{code:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_a_bound() {
        let waits: Vec<u64> = (1..=9).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn exit_codes_are_distinct_and_outside_the_usual_ones() {
        let kinds = [
            FatalKind::Config,
            FatalKind::Model,
            FatalKind::Topic,
            FatalKind::Kafka,
            FatalKind::DrainIncomplete,
            FatalKind::Auth,
        ];
        let codes: std::collections::BTreeSet<u8> = kinds.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes.len(), kinds.len());
        assert!(codes.iter().all(|&c| c > 2));
    }

    #[test]
    fn the_first_fatal_error_is_kept_and_begins_the_stop() {
        let stop = Stop::new(Duration::from_secs(20));
        assert!(!stop.begun() && !stop.overdue());
        stop.fail(Fatal::new(FatalKind::Auth, "refused"));
        stop.fail(Fatal::new(FatalKind::Kafka, "later"));
        assert!(stop.begun() && !stop.overdue());
        assert_eq!(stop.fatal().unwrap().kind, FatalKind::Auth);
        let zero = Stop::new(Duration::ZERO);
        zero.begin();
        assert!(zero.overdue());
    }
}
