//! The output topics' messages as the pipeline test compares them: by
//! content, fractional numbers to rounding.

use crate::daemon::ledger::SourceOffset;
use crate::daemon::sinks::memory::Log;
use crate::daemon::sinks::OutputKind;
use std::collections::BTreeMap;

/// A message on an output topic, as a consumer of it sees it.
pub(super) type Message = (
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Vec<u8>)>,
);

/// Messages by their skeleton: a JSON payload's numbers that are not
/// integers are taken out and kept beside it. A window's raw score is the
/// same to about 1e-6 (relative) in a batch of any size, but not to the
/// bit (tract's kernels differ by batch size), so a replay that batches
/// windows differently gives the same messages up to those digits.
#[derive(Default)]
pub(super) struct Messages(BTreeMap<Message, Vec<Vec<f64>>>);

impl Messages {
    pub(super) fn of<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Self {
        let mut all = Self::default();
        for message in messages {
            let (skeleton, numbers) = skeleton(message);
            all.0.entry(skeleton).or_default().push(numbers);
        }
        all
    }

    /// Whether `message` is here, its numbers equal to rounding.
    pub(super) fn contains(&self, message: &Message) -> bool {
        let (skeleton, numbers) = skeleton(message);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 + 1e-4 * a.abs().max(b.abs());
        self.0.get(&skeleton).is_some_and(|all| {
            all.iter()
                .any(|other| other.iter().zip(&numbers).all(|(&a, &b)| close(a, b)))
        })
    }
}

/// `message` with its payload's fractional numbers replaced by 0, and
/// those numbers in order.
fn skeleton(message: &Message) -> (Message, Vec<f64>) {
    fn strip(value: &mut serde_json::Value, numbers: &mut Vec<f64>) {
        match value {
            serde_json::Value::Number(n) if n.is_f64() => {
                numbers.push(n.as_f64().unwrap_or(f64::NAN));
                *value = 0.into();
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip(v, numbers)),
            serde_json::Value::Object(fields) => {
                fields.values_mut().for_each(|v| strip(v, numbers))
            }
            _ => {}
        }
    }
    let mut numbers = Vec::new();
    let mut skeleton = message.clone();
    if let Some(payload) = &message.2 {
        if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(payload) {
            strip(&mut value, &mut numbers);
            skeleton.2 = Some(value.to_string().into_bytes());
        }
    }
    (skeleton, numbers)
}

/// A message's payload, for failure messages.
pub(super) fn shown(message: &Message) -> String {
    format!(
        "{}: {}",
        message.0,
        String::from_utf8_lossy(message.2.as_deref().unwrap_or_default())
    )
}

/// The alerts, scores and dead letters in `log`, as messages, with the
/// input offset each derives from.
pub(super) fn outputs_of(log: &Log) -> Vec<(SourceOffset, Message)> {
    let log = log.lock().unwrap();
    log.iter()
        .filter(|output| output.kind != OutputKind::State)
        .map(|output| {
            assert_eq!(output.sources.len(), 1, "an output derives from one record");
            let message = (
                output.topic.clone(),
                output.key.clone(),
                output.payload.clone(),
                output.headers.clone(),
            );
            (output.sources[0].clone(), message)
        })
        .collect()
}
