//! The daemon (`anomalyd run`, and `anomalyd demo` on an embedded broker):
//! Kafka records → per-entity windows → micro-batched scoring → calibration
//! and alert decisions → alerts, scores and dead letters on Kafka, metrics on
//! HTTP.
//!
//! Threads: the consumer ([`source`]) decodes and commits; the scorer
//! ([`scoring`]) owns all entity state and calls the model; librdkafka's threads
//! deliver ([`sinks`]); a small tokio runtime serves the admin listener
//! ([`admin`]) and the signal handlers ([`Daemon::handle_signals`]); the reloader loads new models.
//! The [`ledger`] ties them together: no offset is committed before
//! everything derived from it is acknowledged.

// The pipeline, stage by stage: records in, per-entity windows, the model
// and decisions, outputs out; checkpoints beside them, the ledger under
// them, the admin listener over them.
pub mod source;

pub mod entities;

pub mod scoring;

pub mod sinks;

pub mod state;

pub mod ledger;

pub mod admin;

// Across the stages.
pub mod clients;
pub mod config;
mod error;
pub mod failure;
#[cfg(test)]
mod memory_pipeline;
mod signals;
pub mod throttle;

use crate::serve::Scorer;
use admin::health::Health;
use admin::metrics::Metrics;
use config::DaemonConfig;
use crossbeam_channel::{Receiver, Sender};
pub use error::DaemonError;
use failure::{Fatal, FatalKind, Stop};
use ledger::Ledger;
use rdkafka::consumer::{BaseConsumer, Consumer};
use scoring::{ScoringSettings, ScoringWorker, Work};
use sinks::{Sink, SinkSettings};
use source::{ConsumerEvents, ConsumerLoop};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// Asks a running daemon to stop or to reload its model; cheap to clone.
#[derive(Clone)]
pub struct Controller {
    stop: Arc<Stop>,
    reload: Sender<()>,
}

impl Controller {
    /// Starts a graceful shutdown (idempotent): the daemon ends within
    /// `shutdown.grace_period_s` from the first call, whatever is stuck.
    pub fn shutdown(&self) {
        self.stop.begin();
    }

    /// Reloads the model from `model.path`.
    pub fn reload(&self) {
        let _ = self.reload.try_send(());
    }
}

/// A running daemon.
pub struct Daemon {
    /// Where the admin listener is bound.
    pub admin_address: SocketAddr,
    /// The daemon's metrics (the demo reads them for its summary).
    pub metrics: Metrics,
    /// The daemon's readiness.
    pub health: Arc<Health>,
    controller: Controller,
    runtime: tokio::runtime::Runtime,
    admin_stop: watch::Sender<bool>,
    stop: Arc<Stop>,
    sink: Arc<Sink>,
    consumer: JoinHandle<bool>,
    scorer: JoinHandle<()>,
    reloader: JoinHandle<()>,
}

/// Binds the admin listener (`admin.listen`) and serves it on a one-thread
/// runtime; the sender stops it.
fn start_admin(
    config: &DaemonConfig,
    metrics: &Metrics,
    health: &Arc<Health>,
) -> Result<(tokio::runtime::Runtime, SocketAddr, watch::Sender<bool>), DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("anomalyd-admin")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let address = config.admin.listen;
    let listen = |error| DaemonError::Listen { address, error };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(address))
        .map_err(listen)?;
    let admin_address = listener.local_addr().map_err(listen)?;
    let (admin_stop, admin_stopped) = watch::channel(false);
    runtime.spawn(admin::serve(
        listener,
        admin::AdminState {
            metrics: metrics.clone(),
            health: health.clone(),
        },
        admin_stopped,
    ));
    Ok((runtime, admin_address, admin_stop))
}

/// The group consumer, subscribed to `kafka.input_topics`.
fn subscribe(
    config: &DaemonConfig,
    events: ConsumerEvents,
) -> Result<BaseConsumer<ConsumerEvents>, DaemonError> {
    let consumer: BaseConsumer<ConsumerEvents> = clients::consumer_config(config)
        .create_with_context(events)
        .map_err(DaemonError::kafka("create the Kafka consumer"))?;
    let topics: Vec<&str> = config
        .kafka
        .input_topics
        .iter()
        .map(String::as_str)
        .collect();
    consumer
        .subscribe(&topics)
        .map_err(DaemonError::kafka("subscribe to kafka.input_topics"))?;
    Ok(consumer)
}

/// The two producers (alerts alone, the rest batched) behind one sink.
fn create_sink(
    config: &DaemonConfig,
    metrics: &Metrics,
    health: &Arc<Health>,
    stop: &Arc<Stop>,
) -> Result<Arc<Sink>, DaemonError> {
    let settings = SinkSettings {
        bulk: clients::producer_config(config),
        alerts: clients::alerts_producer_config(config),
        dead_letter_topic: config.kafka.dead_letter_topic.clone(),
    };
    let sink = Sink::new(
        settings,
        Ledger::default(),
        metrics.clone(),
        health.clone(),
        stop.clone(),
    )
    .map_err(DaemonError::kafka("create the Kafka producers"))?;
    Ok(Arc::new(sink))
}

/// Where assigned partitions' checkpoints are read from, when checkpoints are on.
fn restore_settings(config: &DaemonConfig) -> Option<source::RestoreSettings> {
    config.state.checkpoints.then(|| source::RestoreSettings {
        client: state::restore_config(config),
        topic: config.state.topic.clone(),
        group: config.kafka.group_id.clone(),
        timeout: Duration::from_secs(config.state.restore_timeout_s),
    })
}

/// The thread that reloads `model.path` when asked.
fn spawn_reloader(
    config: &DaemonConfig,
    current: &Arc<Scorer>,
    requests: Receiver<()>,
    work: &Sender<Work>,
    metrics: &Metrics,
    stop: &Arc<Stop>,
) -> std::io::Result<JoinHandle<()>> {
    let (work, metrics, stop) = (work.clone(), metrics.clone(), stop.clone());
    let (path, current) = (config.model.path.clone(), current.clone());
    std::thread::Builder::new()
        .name("anomalyd-reloader".into())
        .spawn(move || reload_loop(path, current, requests, work, metrics, stop))
}

impl Daemon {
    /// Connects to Kafka, binds the admin listener and starts consuming.
    /// `scorer` is the loaded, checked model.
    pub fn start(config: DaemonConfig, scorer: Scorer) -> Result<Self, DaemonError> {
        let metrics = Metrics::new();
        let health = Arc::new(Health::new(Duration::from_secs(
            config.admin.stall_timeout_s,
        )));
        let scorer = Arc::new(scorer);
        metrics.set_model_version(scorer.model_version());
        health.set_model_loaded();
        let (runtime, admin_address, admin_stop) = start_admin(&config, &metrics, &health)?;
        let grace = Duration::from_secs(config.shutdown.grace_period_s);
        let stop = Arc::new(Stop::new(grace));
        let sink = create_sink(&config, &metrics, &health, &stop)?;
        if config.state.checkpoints {
            state::ensure_topic(&config, &runtime)
                .map_err(|error| Fatal::new(FatalKind::Topic, error.to_string()))?;
        }
        let (work_messages, samples_per_send) =
            source::work_queue_shape(config.scoring.queue_capacity);
        let (work_tx, work_rx) = crossbeam_channel::bounded(work_messages);
        let events = ConsumerEvents::new(
            work_tx.clone(),
            sink.clone(),
            metrics.clone(),
            health.clone(),
            grace,
            restore_settings(&config),
            samples_per_send,
        );
        let consumer = subscribe(&config, events)?;
        let worker = ScoringWorker::new(
            ScoringSettings::of(&config),
            scorer.clone(),
            sink.clone(),
            metrics.clone(),
            health.clone(),
        );
        let scorer_thread = std::thread::Builder::new()
            .name("anomalyd-scorer".into())
            .spawn(move || worker.run(work_rx))
            .map_err(DaemonError::thread("scorer"))?;
        let (reload_tx, reload_rx) = crossbeam_channel::bounded(1);
        let reloader = spawn_reloader(&config, &scorer, reload_rx, &work_tx, &metrics, &stop)
            .map_err(DaemonError::thread("reloader"))?;
        let sink_handle = sink.clone();
        let consumer_loop = ConsumerLoop {
            consumer,
            intake: source::Intake::new(
                &config.input,
                &scorer.metadata().channels,
                sink.clone(),
                metrics.clone(),
            ),
            work: work_tx,
            sink,
            metrics: metrics.clone(),
            health: health.clone(),
            commit_interval: Duration::from_millis(config.kafka.commit_interval_ms),
            grace,
        };
        let consumer_thread = std::thread::Builder::new()
            .name("anomalyd-consumer".into())
            .spawn(move || consumer_loop.run())
            .map_err(DaemonError::thread("consumer"))?;
        spawn_watchdog(stop.clone(), Arc::downgrade(&sink_handle))
            .map_err(DaemonError::thread("watchdog"))?;
        tracing::info!(admin = %admin_address, model_version = scorer.model_version(), "anomalyd is running");
        Ok(Self {
            admin_address,
            metrics,
            health,
            controller: Controller {
                stop: stop.clone(),
                reload: reload_tx,
            },
            stop,
            runtime,
            admin_stop,
            sink: sink_handle,
            consumer: consumer_thread,
            scorer: scorer_thread,
            reloader,
        })
    }

    /// A handle to stop the daemon or reload its model.
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// The runtime that serves the admin listener (for signal handlers).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Waits until the daemon has shut down (after [`Controller::shutdown`]
    /// or a fatal error). `Ok` when everything in flight was finished and
    /// committed; else the [`Fatal`] error that stopped it, or one of kind
    /// [`FatalKind::DrainIncomplete`] when the grace period ran out first.
    pub fn wait(self) -> Result<(), DaemonError> {
        let finished = self
            .consumer
            .join()
            .map_err(|_| DaemonError::Panicked("consumer"))?;
        self.scorer
            .join()
            .map_err(|_| DaemonError::Panicked("scorer"))?;
        drop(self.controller);
        let _ = self.reloader.join();
        self.admin_stop.send_replace(true);
        self.runtime.shutdown_timeout(Duration::from_millis(500));
        self.stop.end();
        match fatal_with_cause(&self.stop, &self.sink) {
            Some(fatal) => Err(fatal.into()),
            None if finished => Ok(()),
            None => Err(Fatal::new(
                FatalKind::DrainIncomplete,
                "the grace period ended before everything in flight was finished; \
                 what was not acknowledged was not committed and is read again at the next start",
            )
            .into()),
        }
    }
}

/// The fatal error that stopped the daemon, if one did, with its kind from
/// the producer's own cause where librdkafka reported only `_FATAL` (an
/// authorisation refused behind it exits 77, not 70).
fn fatal_with_cause(stop: &Stop, sink: &Sink) -> Option<Fatal> {
    let mut fatal = stop.fatal()?;
    if let Some(cause) = sink.fatal_cause() {
        if let failure::ErrorClass::Fatal(kind) = failure::classify(cause) {
            fatal.kind = kind;
            fatal.message = format!("{} ({cause:?})", fatal.message);
        }
    }
    Some(fatal)
}

/// Ends the process with [`FatalKind::DrainIncomplete`]'s exit code if it is
/// still running when a stop's deadline passes: whatever is stuck (a
/// librdkafka call, a blocked callback), a stop ends in time. Nothing
/// unacknowledged has been committed, so nothing is lost.
fn spawn_watchdog(stop: Arc<Stop>, sink: std::sync::Weak<Sink>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("anomalyd-watchdog".into())
        .spawn(move || {
            let deadline = loop {
                if let Some(deadline) = stop.deadline() {
                    break deadline;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
            if stop.ended() {
                return;
            }
            let fatal = match sink.upgrade() {
                Some(sink) => fatal_with_cause(&stop, &sink),
                None => stop.fatal(),
            };
            let code = fatal
                .map_or(FatalKind::DrainIncomplete, |fatal| fatal.kind)
                .exit_code();
            tracing::error!(exit_code = code, "the stop's deadline passed with the daemon still running: exiting now; records not committed are read again at the next start");
            std::process::exit(code.into());
        })?;
    Ok(())
}

/// Loads, checks and warms a new model on each request; a model that fails
/// is refused and the old one keeps serving.
fn reload_loop(
    path: Option<std::path::PathBuf>,
    mut current: Arc<Scorer>,
    requests: Receiver<()>,
    work: Sender<Work>,
    metrics: Metrics,
    shutdown: Arc<Stop>,
) {
    loop {
        match requests.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if shutdown.begun() {
                    return;
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
        let candidate = match load_candidate(path.as_deref(), &current) {
            Ok(candidate) => candidate,
            Err(why) => {
                metrics.model_reloads.with_label_values(&["refused"]).inc();
                tracing::error!(reason = %why, "model reload refused; the current model keeps serving");
                continue;
            }
        };
        let candidate = Arc::new(candidate);
        if work.send(Work::UseModel(candidate.clone())).is_err() {
            return;
        }
        metrics.model_reloads.with_label_values(&["ok"]).inc();
        metrics.set_model_version(candidate.model_version());
        tracing::info!(
            from = current.model_version(),
            to = candidate.model_version(),
            "model reloaded"
        );
        current = candidate;
    }
}

/// Loads the model at `path` and checks it against `current`: the same
/// channels and window, and a finite score for a typical window (which
/// also warms it, so that the first real batch does not pay for that).
fn load_candidate(path: Option<&std::path::Path>, current: &Scorer) -> Result<Scorer, String> {
    let Some(path) = path else {
        return Err("model.path is not set (the embedded model cannot be reloaded)".into());
    };
    let candidate = Scorer::load(path).map_err(|error| format!("{error}"))?;
    let (old, new) = (current.metadata(), candidate.metadata());
    if old.channels != new.channels || old.window_len != new.window_len {
        return Err(format!(
            "{} has channels {:?} and window {}, the serving model {:?} and {}; restart to change the shape",
            path.display(),
            new.channels,
            new.window_len,
            old.channels,
            old.window_len
        ));
    }
    let probe = crate::window::Window {
        start_ms: 0,
        end_ms: 0,
        values: new
            .normalisation
            .iter()
            .flat_map(|n| std::iter::repeat_n(n.center, new.window_len))
            .collect(),
    };
    let scores = candidate
        .score_windows(std::slice::from_ref(&probe))
        .map_err(|error| format!("{error}"))?;
    if !scores.iter().all(|s| s.score.is_finite()) {
        return Err(format!("{} scores a typical window as NaN", path.display()));
    }
    Ok(candidate)
}
