//! The demo's live view: a plain Kafka consumer of the alerts topic that
//! prints each alert event as it arrives, the way an on-call tool would see them.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An alert event as read back from the topic.
#[derive(Debug, Clone, Deserialize)]
pub struct SeenEvent {
    /// opened, updated, resolved or gap.
    pub event: String,
    /// The entity.
    pub entity: String,
    /// Alert id (absent on gap events).
    #[serde(default)]
    pub alert_id: Option<String>,
    /// When the alert opened (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Calibrated score.
    #[serde(default)]
    pub calibrated_score: Option<f64>,
    /// Window end.
    #[serde(default)]
    pub window_end: Option<String>,
    /// Top channels.
    #[serde(default)]
    pub top_channels: Vec<SeenChannel>,
}

/// One channel of an alert.
#[derive(Debug, Clone, Deserialize)]
pub struct SeenChannel {
    /// Name.
    pub channel: String,
    /// Newest value.
    pub actual: f64,
    /// Reconstructed value.
    pub expected: f64,
}

/// Reads the alerts topic on a thread and prints every event.
pub struct AlertView {
    events: Arc<Mutex<Vec<SeenEvent>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl AlertView {
    /// Starts reading `topic` from the beginning.
    pub fn start(brokers: &str, topic: &str) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "anomalyd-demo-view")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[topic])?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let events = events.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut quiet_since = Instant::now();
                loop {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) => {
                            quiet_since = Instant::now();
                            let Some(payload) = message.payload() else {
                                continue;
                            };
                            match serde_json::from_slice::<SeenEvent>(payload) {
                                Ok(event) => {
                                    print_event(&event);
                                    events.lock().unwrap().push(event);
                                }
                                Err(error) => eprintln!("  (unreadable alert message: {error})"),
                            }
                        }
                        Some(Err(error)) => eprintln!("  (alert view: {error})"),
                        None => {}
                    }
                    // After the stop request, read until the topic is quiet.
                    if stop.load(Ordering::Relaxed)
                        && quiet_since.elapsed() > Duration::from_secs(2)
                    {
                        return;
                    }
                }
            })
        };
        Ok(Self {
            events,
            stop,
            thread,
        })
    }

    /// Reads what is left, then returns every event seen.
    pub fn finish(self) -> Vec<SeenEvent> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        Arc::try_unwrap(self.events)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|shared| shared.lock().unwrap().clone())
    }
}

fn print_event(event: &SeenEvent) {
    let when = event.window_end.as_deref().unwrap_or("");
    match event.event.as_str() {
        "opened" | "updated" => {
            let channels: Vec<String> = event
                .top_channels
                .iter()
                .take(2)
                .map(|c| format!("{} {:.2} (expected {:.2})", c.channel, c.actual, c.expected))
                .collect();
            println!(
                "  {:<8} {:<10} {:<8} score {:.2}  at {}  {}",
                event.event.to_uppercase(),
                event.entity,
                event.severity.as_deref().unwrap_or(""),
                event.calibrated_score.unwrap_or(0.0),
                when,
                channels.join(", ")
            );
        }
        "resolved" => println!(
            "  {:<8} {:<10} {:<8}             at {}",
            "RESOLVED", event.entity, "", when
        ),
        other => println!("  {:<8} {:<10}", other.to_uppercase(), event.entity),
    }
}
