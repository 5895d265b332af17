//! Liveness and readiness, as `/healthz` and `/readyz` report them.
//!
//! Ready means: a model is loaded, partitions are assigned, a broker is up,
//! the consumer loop and the scorer made progress within
//! `admin.stall_timeout_s`, outputs waiting for the broker were acknowledged
//! within that time too, and no shutdown is under way.
//!
//! Whether a broker is up comes from the statistics of both Kafka clients.
//! The consumer's arrive only when its thread polls, so they go stale while
//! it waits on a full scorer queue; the producers' arrive from their own
//! threads. But an idle producer does not reconnect after an outage
//! (librdkafka connects on demand), so a producer's "no broker up" counts
//! only while it has outputs to deliver: then it is trying to connect.

use rdkafka::statistics::Statistics;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Which Kafka client's statistics report on the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaClient {
    /// The input consumer.
    Consumer,
    /// The bulk output producer (scores, dead letters, checkpoints).
    Producer,
    /// The alerts producer (alert and gap events).
    AlertsProducer,
}

/// Whether the statistics show any broker of the cluster (not a bootstrap
/// address) up.
pub fn any_broker_up(statistics: &Statistics) -> bool {
    statistics
        .brokers
        .values()
        .any(|broker| broker.nodeid >= 0 && broker.state == "UP")
}

/// Shared health state; every field is updated lock-free by its owner.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    stall_timeout: Duration,
    model_loaded: AtomicBool,
    assigned_partitions: AtomicI64,
    /// As each client sees it (indexed by [`KafkaClient`]): -1 unknown (no
    /// statistics yet), 0 no broker up, 1 some broker up.
    broker_up: [AtomicI64; 3],
    consumer_beat_ms: AtomicU64,
    scorer_beat_ms: AtomicU64,
    /// Outputs handed to the producers and not yet acknowledged.
    awaiting_delivery: AtomicI64,
    /// The same by producer (indexed by [`KafkaClient`]; the consumer's
    /// stays 0).
    awaiting_by_client: [AtomicI64; 3],
    /// When an output was last acknowledged (or the first one sent).
    delivery_beat_ms: AtomicU64,
    shutting_down: AtomicBool,
}

impl Health {
    /// Health with the given stall timeout; nothing is ready yet.
    pub fn new(stall_timeout: Duration) -> Self {
        Self {
            started: Instant::now(),
            stall_timeout,
            model_loaded: AtomicBool::new(false),
            assigned_partitions: AtomicI64::new(0),
            broker_up: [AtomicI64::new(-1), AtomicI64::new(-1), AtomicI64::new(-1)],
            consumer_beat_ms: AtomicU64::new(0),
            scorer_beat_ms: AtomicU64::new(0),
            awaiting_delivery: AtomicI64::new(0),
            awaiting_by_client: [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)],
            delivery_beat_ms: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The model is loaded and serving.
    pub fn set_model_loaded(&self) {
        self.model_loaded.store(true, Ordering::Relaxed);
    }

    /// The number of assigned input partitions.
    pub fn set_assigned_partitions(&self, count: usize) {
        self.assigned_partitions
            .store(count as i64, Ordering::Relaxed);
    }

    /// Whether any broker is up, from `client`'s statistics.
    pub fn set_broker_up(&self, client: KafkaClient, up: bool) {
        self.broker_up[client as usize].store(up as i64, Ordering::Relaxed);
    }

    /// The consumer loop went round once.
    pub fn consumer_beat(&self) {
        self.consumer_beat_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// The scorer loop went round once.
    pub fn scorer_beat(&self) {
        self.scorer_beat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// An output was handed to `producer`.
    pub fn output_sent(&self, producer: KafkaClient) {
        self.awaiting_by_client[producer as usize].fetch_add(1, Ordering::Relaxed);
        if self.awaiting_delivery.fetch_add(1, Ordering::Relaxed) == 0 {
            // Nothing was waiting: the wait starts now.
            self.delivery_beat_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The broker acknowledged an output of `producer`.
    pub fn output_delivered(&self, producer: KafkaClient) {
        self.awaiting_by_client[producer as usize].fetch_sub(1, Ordering::Relaxed);
        self.awaiting_delivery.fetch_sub(1, Ordering::Relaxed);
        self.delivery_beat_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// A shutdown started: no longer ready.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready, else every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.shutting_down.load(Ordering::Relaxed) {
            reasons.push("shutting down".to_string());
        }
        if !self.model_loaded.load(Ordering::Relaxed) {
            reasons.push("no model loaded".to_string());
        }
        if self.assigned_partitions.load(Ordering::Relaxed) <= 0 {
            reasons.push("no input partitions assigned".to_string());
        }
        let waiting = self.awaiting_delivery.load(Ordering::Relaxed);
        for (client, name) in [
            (KafkaClient::Consumer, "consumer"),
            (KafkaClient::Producer, "producer"),
            (KafkaClient::AlertsProducer, "alerts producer"),
        ] {
            let counts = client == KafkaClient::Consumer
                || self.awaiting_by_client[client as usize].load(Ordering::Relaxed) > 0;
            if counts && self.broker_up[client as usize].load(Ordering::Relaxed) == 0 {
                reasons.push(format!("no broker is up (as the {name} sees it)"));
            }
        }
        let now = self.now_ms();
        let limit = self.stall_timeout.as_millis() as u64;
        for (name, beat) in [
            ("consumer", &self.consumer_beat_ms),
            ("scorer", &self.scorer_beat_ms),
        ] {
            let age = now.saturating_sub(beat.load(Ordering::Relaxed));
            if age > limit {
                reasons.push(format!("{name} made no progress for {} ms", age));
            }
        }
        let age = now.saturating_sub(self.delivery_beat_ms.load(Ordering::Relaxed));
        if waiting > 0 && age > limit {
            reasons.push(format!(
                "{waiting} outputs wait for the broker; none was acknowledged for {age} ms"
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_the_broker_does_not_acknowledge_make_it_not_ready() {
        let health = Health::new(Duration::from_millis(30));
        health.set_model_loaded();
        health.set_assigned_partitions(1);
        health.output_sent(KafkaClient::Producer);
        health.output_sent(KafkaClient::AlertsProducer);
        health.output_delivered(KafkaClient::Producer);
        std::thread::sleep(Duration::from_millis(60));
        health.consumer_beat();
        health.scorer_beat();
        let reasons = health.readiness().unwrap_err();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].starts_with("1 outputs wait for the broker"),
            "{reasons:?}"
        );
        health.output_delivered(KafkaClient::AlertsProducer);
        assert!(health.readiness().is_ok());
    }

    #[test]
    fn ready_only_when_everything_holds() {
        let health = Health::new(Duration::from_secs(60));
        let reasons = health.readiness().unwrap_err();
        assert!(reasons.iter().any(|r| r.contains("model")));
        assert!(reasons.iter().any(|r| r.contains("partitions")));
        health.set_model_loaded();
        health.set_assigned_partitions(3);
        health.consumer_beat();
        health.scorer_beat();
        assert!(health.readiness().is_ok());
        health.set_broker_up(KafkaClient::Consumer, false);
        assert!(health.readiness().is_err());
        health.set_broker_up(KafkaClient::Consumer, true);
        assert!(health.readiness().is_ok());
        // An idle producer's view does not count: it does not reconnect
        // until it has something to send.
        health.set_broker_up(KafkaClient::Producer, false);
        health.set_broker_up(KafkaClient::AlertsProducer, false);
        assert!(health.readiness().is_ok());
        // With outputs to deliver it does, and only that producer's.
        for (producer, name) in [
            (KafkaClient::AlertsProducer, "alerts producer"),
            (KafkaClient::Producer, "producer"),
        ] {
            health.output_sent(producer);
            assert_eq!(
                health.readiness().unwrap_err(),
                vec![format!("no broker is up (as the {name} sees it)")]
            );
            health.set_broker_up(producer, true);
            assert!(health.readiness().is_ok());
            health.output_delivered(producer);
        }
        health.set_shutting_down();
        assert_eq!(
            health.readiness().unwrap_err(),
            vec!["shutting down".to_string()]
        );
    }
}
