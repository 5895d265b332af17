//! Where the sink hands its outputs: a librdkafka producer in the daemon,
//! memory in the in-memory pipeline tests. Everything else about an output
//! (holds, epochs, retries, refusals, delivery reports) is the sink's and
//! the same for both.

use super::delivery::DeliveryReports;
use super::Output;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use std::time::Duration;

/// A producer the sink can send through. It reports each output it
/// accepted, once, to the [`DeliveryReports`] it was built with: delivered
/// or failed with an error.
pub trait Transport: Send + Sync {
    /// Takes `output` for delivery, or gives it back with the reason.
    fn enqueue(&self, output: Box<Output>) -> Result<(), (KafkaError, Box<Output>)>;

    /// Waits up to `timeout` for every accepted output's report; whether
    /// none is outstanding.
    fn flush(&self, timeout: Duration) -> bool;

    /// The error behind a fatal state, if the producer is in one.
    fn fatal_cause(&self) -> Option<RDKafkaErrorCode>;
}

impl Transport for ThreadedProducer<DeliveryReports> {
    fn enqueue(&self, output: Box<Output>) -> Result<(), (KafkaError, Box<Output>)> {
        let mut headers = OwnedHeaders::new_with_capacity(output.headers.len());
        for (name, value) in &output.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            });
        }
        let topic = output.topic.clone();
        let payload = output.payload.clone();
        let key = output.key.clone();
        let partition = output.partition;
        let mut record = BaseRecord::with_opaque_to(&topic, output).headers(headers);
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        if let Some(key) = &key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.send(record)
            .map_err(|(error, record)| (error, record.delivery_opaque))
    }

    fn flush(&self, timeout: Duration) -> bool {
        Producer::flush(self, timeout).is_ok()
    }

    fn fatal_cause(&self) -> Option<RDKafkaErrorCode> {
        self.client().fatal_error().map(|(code, _)| code)
    }
}
