//! A record's first steps, the same in the consumer loop and in the
//! in-memory pipeline tests: hold its offset (once per sample it carries),
//! decode it, and set a malformed one aside on the dead-letter topic.

use crate::daemon::admin::metrics::Metrics;
use crate::daemon::config::InputConfig;
use crate::daemon::ledger::{Hold, SourceOffset};
use crate::daemon::sinks::{dead_letter, Sink};
use crate::daemon::source::decode::{Decoder, Sample};
use smallvec::SmallVec;
use std::sync::Arc;

/// Takes records in: holds, decodes, sets aside.
pub struct Intake {
    /// Record decoder.
    pub decoder: Decoder,
    /// Where dead letters go; its ledger holds the offsets.
    pub sink: Arc<Sink>,
    /// Metrics.
    pub metrics: Metrics,
    /// `kafka.dead_letter_topic`.
    pub dead_letter_topic: String,
}

impl Intake {
    /// The intake of records read as `input` says, for a model with
    /// `model_channels`, setting aside to `sink`'s dead-letter topic.
    pub fn new(
        input: &InputConfig,
        model_channels: &[String],
        sink: Arc<Sink>,
        metrics: Metrics,
    ) -> Self {
        Self {
            decoder: Decoder::new(input, input.min_timestamp_ms(), model_channels),
            dead_letter_topic: sink.dead_letter_topic().to_string(),
            sink,
            metrics,
        }
    }

    /// Holds `source` and decodes its record (`now_ms`: the wall clock, for
    /// records without a timestamp). A malformed record is sent to the
    /// dead-letter topic, which takes over its hold, and gives `None`; each
    /// sample comes with a hold of its own, for the scorer to give back.
    pub fn take(
        &self,
        source: SourceOffset,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        now_ms: i64,
    ) -> Option<Taken> {
        self.metrics.records_consumed.inc();
        let hold = self.sink.ledger().hold(source);
        match self.decoder.decode(payload, key, now_ms) {
            Ok(samples) => {
                self.metrics.records_decoded.inc();
                self.metrics.samples_decoded.inc_by(samples.len() as u64);
                let more = self.sink.ledger().hold_more(&hold, samples.len() - 1);
                Some(
                    samples
                        .into_iter()
                        .zip(std::iter::once(hold).chain(more))
                        .collect(),
                )
            }
            Err(rejection) => {
                self.metrics
                    .records_rejected
                    .with_label_values(&[rejection.reason.as_str()])
                    .inc();
                tracing::debug!(reason = rejection.reason.as_str(), detail = %rejection.detail, offset = hold.source().offset, "record set aside");
                let output = dead_letter(
                    &self.dead_letter_topic,
                    hold,
                    key.map(<[u8]>::to_vec),
                    payload.map(<[u8]>::to_vec).unwrap_or_default(),
                    rejection.reason,
                    &rejection.detail,
                );
                self.sink.send(Box::new(output));
                None
            }
        }
    }
}

/// A record's samples, each with a hold of the record's offset: one without
/// a heap allocation in the single form.
pub type Taken = SmallVec<[(Sample, Hold); 1]>;
