//! An in-memory broker for the pipeline tests: outputs wait in flight until
//! the test acknowledges or fails each one, through the same delivery
//! reports as a Kafka producer's; acknowledged outputs land in a log that
//! stands for the output topics and outlives a crash.

use super::delivery::DeliveryReports;
use super::transport::Transport;
use super::{Output, OutputKind};
use crate::daemon::ledger::{abandon_all, Hold, SourceOffset};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The output topics: every acknowledged output, in order.
pub type Log = Arc<Mutex<Vec<Landed>>>;

/// An output as the broker stored it.
#[derive(Debug, Clone)]
pub struct Landed {
    /// Which output.
    pub kind: OutputKind,
    /// Topic.
    pub topic: String,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The input offsets it held.
    pub sources: Vec<SourceOffset>,
}

impl Landed {
    fn of(output: &Output) -> Self {
        Self {
            kind: output.kind,
            topic: output.topic.clone(),
            key: output.key.clone(),
            payload: output.payload.clone(),
            headers: output.headers.clone(),
            sources: output.holds.iter().map(|h| h.source().clone()).collect(),
        }
    }
}

/// One life's producers: their reports and the outputs in flight.
pub struct MemoryBroker {
    reports: Mutex<Vec<Arc<DeliveryReports>>>,
    /// (which transport, output), in the order they were accepted.
    in_flight: Mutex<Vec<(usize, Box<Output>)>>,
    /// Per input record, its alerts, scores and dead letters accepted and
    /// not yet acknowledged (in flight or waiting to be sent again).
    unacknowledged: Mutex<BTreeMap<SourceOffset, usize>>,
    log: Log,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    /// A broker whose acknowledged outputs go to `log`.
    pub fn new(log: Log) -> Arc<Self> {
        Arc::new(Self {
            reports: Mutex::new(Vec::new()),
            in_flight: Mutex::new(Vec::new()),
            unacknowledged: Mutex::new(BTreeMap::new()),
            log,
        })
    }

    /// A transport that reports to `reports` (for [`super::SinkParts::build`]).
    pub fn transport(self: &Arc<Self>, reports: DeliveryReports) -> Box<dyn Transport> {
        let mut all = lock(&self.reports);
        all.push(Arc::new(reports));
        Box::new(MemoryTransport {
            broker: self.clone(),
            index: all.len() - 1,
        })
    }

    /// Outputs accepted and not yet acknowledged or failed.
    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// Acknowledges the output in flight at `pick` (modulo their number):
    /// it lands in the log, then its report runs.
    pub fn acknowledge(&self, pick: usize) {
        let Some((index, output)) = self.take(pick) else {
            return;
        };
        lock(&self.log).push(Landed::of(&output));
        if output.kind != OutputKind::State {
            let mut unacknowledged = lock(&self.unacknowledged);
            for source in output.holds.iter().map(Hold::source) {
                if let Some(count) = unacknowledged.get_mut(source) {
                    *count -= 1;
                    if *count == 0 {
                        unacknowledged.remove(source);
                    }
                }
            }
        }
        let reports = lock(&self.reports)[index].clone();
        reports.delivered(output);
    }

    /// Fails the output in flight at `pick` (among those of `kind`, if
    /// given) with `error`.
    pub fn fail(&self, pick: usize, kind: Option<OutputKind>, error: RDKafkaErrorCode) {
        let Some((index, output)) = self.take_of(pick, kind) else {
            return;
        };
        let reports = lock(&self.reports)[index].clone();
        reports.failed(&KafkaError::MessageProduction(error), output);
    }

    /// Acknowledges everything in flight, in order.
    pub fn acknowledge_all(&self) {
        while self.in_flight() > 0 {
            self.acknowledge(0);
        }
    }

    /// The input records with an alert, score or dead letter accepted and
    /// not yet acknowledged: in flight, or failed and waiting to be sent
    /// again (the sink keeps those).
    pub fn unacknowledged(&self) -> Vec<SourceOffset> {
        lock(&self.unacknowledged).keys().cloned().collect()
    }

    /// A crash: the outputs in flight at the positions `landed` says land in
    /// the log without a report (the broker had them); the rest are lost.
    /// Their holds die with the process.
    pub fn crash(&self, landed: impl Fn(usize) -> bool) {
        let in_flight = std::mem::take(&mut *lock(&self.in_flight));
        let mut log = lock(&self.log);
        for (position, (_, output)) in in_flight.into_iter().enumerate() {
            if landed(position) {
                log.push(Landed::of(&output));
            }
            abandon_all(output.holds);
        }
    }

    fn take(&self, pick: usize) -> Option<(usize, Box<Output>)> {
        self.take_of(pick, None)
    }

    fn take_of(&self, pick: usize, kind: Option<OutputKind>) -> Option<(usize, Box<Output>)> {
        let mut in_flight = lock(&self.in_flight);
        let of_kind: Vec<usize> = (0..in_flight.len())
            .filter(|&i| kind.is_none_or(|kind| in_flight[i].1.kind == kind))
            .collect();
        if of_kind.is_empty() {
            return None;
        }
        Some(in_flight.remove(of_kind[pick % of_kind.len()]))
    }
}

/// One producer of a [`MemoryBroker`].
struct MemoryTransport {
    broker: Arc<MemoryBroker>,
    index: usize,
}

impl Transport for MemoryTransport {
    fn enqueue(&self, output: Box<Output>) -> Result<(), (KafkaError, Box<Output>)> {
        // Counted once, when first sent: a failed output stays unacknowledged
        // while it waits to be sent again.
        if output.kind != OutputKind::State && output.attempts == 0 {
            let mut unacknowledged = lock(&self.broker.unacknowledged);
            for source in output.holds.iter().map(Hold::source) {
                *unacknowledged.entry(source.clone()).or_insert(0) += 1;
            }
        }
        lock(&self.broker.in_flight).push((self.index, output));
        Ok(())
    }

    fn flush(&self, _timeout: Duration) -> bool {
        !lock(&self.broker.in_flight)
            .iter()
            .any(|(index, _)| *index == self.index)
    }

    fn fatal_cause(&self) -> Option<RDKafkaErrorCode> {
        None
    }
}
