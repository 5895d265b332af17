//! The record decoder: one Kafka record (payload and key) → its [`Sample`]s
//! in the model's channel order, or a [`Rejection`] with a reason from a
//! fixed set.
//!
//! Record formats (docs/daemon.md, "Input records"): the single form
//! `{"entity": "pump-7", "ts": "2026-01-01T00:00:00Z" | 1767225600000, "values": {"<channel>": <number>}}`,
//! and the batch form, several samples of one entity, where `ts` and every
//! channel are arrays of one length:
//! `{"entity": "pump-7", "ts": [1767225600000, 1767225660000], "values": {"<channel>": [1.5, 1.7]}}`.
//! Field names and the channel mapping come from `[input]`; the entity may
//! come from the record key instead. Channels the model does not use are ignored.

pub mod fields;

use crate::daemon::config::{EntitySource, InputConfig};
use crate::series::timestamp::parse_timestamp;
pub use fields::INLINE_CHANNELS;
use fields::{read_fields, ChannelValue, EntityField, FieldNames, RecordFields, ValuesField};
use serde_json::Value;
use smallvec::SmallVec;
use smol_str::SmolStr;

/// One decoded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The entity the sample belongs to (inline up to 23 bytes).
    pub entity: SmolStr,
    /// Event time, epoch ms.
    pub timestamp_ms: i64,
    /// Values in the model's channel order, all finite (inline up to 8).
    pub values: SmallVec<[f32; INLINE_CHANNELS]>,
}

/// A record's samples: one in the single form, without a heap allocation;
/// several in the batch form.
pub type Samples = SmallVec<[Sample; 1]>;

/// Why a record was set aside. The set is fixed, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Larger than `input.max_record_bytes`.
    TooLarge,
    /// No payload at all.
    EmptyPayload,
    /// Payload is not UTF-8.
    NotUtf8,
    /// Not JSON, or not a JSON object.
    BadJson,
    /// No usable entity (missing, empty, not a string; or no UTF-8 key).
    MissingEntity,
    /// Timestamp missing or unreadable.
    BadTimestamp,
    /// Timestamp before `input.min_timestamp` or too far in the future.
    TimestampOutOfRange,
    /// The values object is missing, or a model channel is missing or null.
    MissingChannel,
    /// A model channel's value is not a number.
    NonNumeric,
    /// A model channel's value is NaN or infinite (as a number or a string such as "NaN").
    NonFinite,
    /// At or before the entity's latest event time (out of order or duplicated).
    OutOfOrder,
}

impl RejectReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [RejectReason; 11] = [
        Self::TooLarge,
        Self::EmptyPayload,
        Self::NotUtf8,
        Self::BadJson,
        Self::MissingEntity,
        Self::BadTimestamp,
        Self::TimestampOutOfRange,
        Self::MissingChannel,
        Self::NonNumeric,
        Self::NonFinite,
        Self::OutOfOrder,
    ];

    /// The reason as it appears in the dead-letter header and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::EmptyPayload => "empty_payload",
            Self::NotUtf8 => "not_utf8",
            Self::BadJson => "bad_json",
            Self::MissingEntity => "missing_entity",
            Self::BadTimestamp => "bad_timestamp",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
            Self::MissingChannel => "missing_channel",
            Self::NonNumeric => "non_numeric",
            Self::NonFinite => "non_finite",
            Self::OutOfOrder => "out_of_order",
        }
    }
}

/// A record that was set aside, with a human-readable detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The reason (fixed set).
    pub reason: RejectReason,
    /// What exactly was wrong (bounded length; never used as a metric label).
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > 200 {
            let mut end = 200;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        Self { reason, detail }
    }
}

/// Decodes records for one model.
#[derive(Debug, Clone)]
pub struct Decoder {
    entity_from: EntitySource,
    entity_field: String,
    timestamp_field: String,
    values_field: String,
    /// For each model channel, its name in the records.
    record_channels: Vec<String>,
    max_record_bytes: usize,
    min_timestamp_ms: i64,
    max_future_ms: i64,
}

impl Decoder {
    /// A decoder for a model with `model_channels`, reading records as `input` says.
    pub fn new(input: &InputConfig, min_timestamp_ms: i64, model_channels: &[String]) -> Self {
        Self {
            entity_from: input.entity_from,
            entity_field: input.entity_field.clone(),
            timestamp_field: input.timestamp_field.clone(),
            values_field: input.values_field.clone(),
            record_channels: model_channels
                .iter()
                .map(|c| input.channels.get(c).cloned().unwrap_or_else(|| c.clone()))
                .collect(),
            max_record_bytes: input.max_record_bytes,
            min_timestamp_ms,
            max_future_ms: (input.max_future_s as i64).saturating_mul(1000),
        }
    }

    /// Decodes one record into its samples (one, or several in the batch
    /// form); `now_ms` is the wall clock, used only to refuse absurd future
    /// times.
    pub fn decode(
        &self,
        payload: Option<&[u8]>,
        key: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<Samples, Rejection> {
        let text = self.text(payload)?;
        let fields = read_fields(text, &self.field_names())
            .map_err(|e| Rejection::new(RejectReason::BadJson, format!("not JSON: {e}")))?;
        self.decode_fields(fields, key, now_ms)
    }

    /// The fields [`decode`](Self::decode) reads.
    pub fn field_names(&self) -> FieldNames<'_> {
        FieldNames {
            entity: (self.entity_from == EntitySource::Field).then_some(self.entity_field.as_str()),
            timestamp: &self.timestamp_field,
            values: &self.values_field,
            channels: &self.record_channels,
        }
    }

    /// The samples of a record's fields (`None`: the record was JSON but
    /// not an object), or why it is set aside. A timestamp that is an array
    /// makes the record one in the batch form.
    pub fn decode_fields(
        &self,
        fields: Option<RecordFields>,
        key: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<Samples, Rejection> {
        let fields = fields.ok_or_else(|| {
            Rejection::new(RejectReason::BadJson, "the record is not a JSON object")
        })?;
        let entity = self.entity(fields.entity, key)?;
        if let Some(Value::Array(timestamps)) = &fields.timestamp {
            return self.batch(entity, timestamps, fields.values.as_ref(), now_ms);
        }
        Ok(smallvec::smallvec![Sample {
            entity,
            timestamp_ms: self.timestamp(fields.timestamp.as_ref(), now_ms)?,
            values: self.values(fields.values.as_ref())?,
        }])
    }

    /// `sample` as a record in the single form that this decoder reads
    /// back as the same sample (the entity field left out when the entity
    /// comes from the record key).
    pub fn single_record(&self, sample: &Sample) -> Vec<u8> {
        use serde::ser::{SerializeMap, Serializer};
        /// The channels as an object, each value as its shortest `f32` text.
        struct Channels<'a>(&'a [String], &'a [f32]);
        impl serde::Serialize for Channels<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().zip(self.1))
            }
        }
        let mut out = Vec::with_capacity(128);
        let mut serializer = serde_json::Serializer::new(&mut out);
        let written = (|| {
            let mut record = serializer.serialize_map(None)?;
            if self.entity_from == EntitySource::Field {
                record.serialize_entry(&self.entity_field, sample.entity.as_str())?;
            }
            record.serialize_entry(&self.timestamp_field, &sample.timestamp_ms)?;
            record.serialize_entry(
                &self.values_field,
                &Channels(&self.record_channels, &sample.values),
            )?;
            record.end()
        })();
        written.expect("writing JSON to memory does not fail");
        out
    }

    /// The payload as text: present, within `input.max_record_bytes`, UTF-8.
    fn text<'a>(&self, payload: Option<&'a [u8]>) -> Result<&'a str, Rejection> {
        use RejectReason::*;
        let payload = payload.unwrap_or_default();
        if payload.is_empty() {
            return Err(Rejection::new(EmptyPayload, "the record has no payload"));
        }
        if payload.len() > self.max_record_bytes {
            return Err(Rejection::new(
                TooLarge,
                format!(
                    "{} bytes, more than input.max_record_bytes = {}",
                    payload.len(),
                    self.max_record_bytes
                ),
            ));
        }
        std::str::from_utf8(payload)
            .map_err(|e| Rejection::new(NotUtf8, format!("payload is not UTF-8: {e}")))
    }

    /// The entity, from its field or from the record key.
    fn entity(&self, field: Option<EntityField>, key: Option<&[u8]>) -> Result<SmolStr, Rejection> {
        use RejectReason::*;
        Ok(match self.entity_from {
            EntitySource::Field => match field {
                Some(EntityField::Text(s)) if !s.is_empty() => s,
                Some(EntityField::Text(_)) => {
                    return Err(Rejection::new(
                        MissingEntity,
                        format!("field {:?} is empty", self.entity_field),
                    ))
                }
                Some(EntityField::Other(other)) => {
                    return Err(Rejection::new(
                        MissingEntity,
                        format!("field {:?} is not a string: {other}", self.entity_field),
                    ))
                }
                None => {
                    return Err(Rejection::new(
                        MissingEntity,
                        format!("no field {:?}", self.entity_field),
                    ))
                }
            },
            EntitySource::Key => match key.map(std::str::from_utf8) {
                Some(Ok(k)) if !k.is_empty() => SmolStr::new(k),
                Some(Ok(_)) | None => {
                    return Err(Rejection::new(
                        MissingEntity,
                        "the record key is missing or empty",
                    ))
                }
                Some(Err(_)) => {
                    return Err(Rejection::new(MissingEntity, "the record key is not UTF-8"))
                }
            },
        })
    }

    /// The event time (epoch ms), within the accepted range.
    fn timestamp(&self, field: Option<&Value>, now_ms: i64) -> Result<i64, Rejection> {
        use RejectReason::*;
        let timestamp_ms = match field {
            Some(Value::String(s)) => parse_timestamp(s).map_err(|m| {
                Rejection::new(BadTimestamp, format!("{}: {m}", self.timestamp_field))
            })?,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(ms) => ms,
                None => match n.as_f64() {
                    Some(ms) if ms.is_finite() && ms.abs() < 9.0e15 => ms.round() as i64,
                    _ => {
                        return Err(Rejection::new(
                            BadTimestamp,
                            format!("{}: {n} is not epoch milliseconds", self.timestamp_field),
                        ))
                    }
                },
            },
            Some(other) => {
                return Err(Rejection::new(
                    BadTimestamp,
                    format!(
                        "{}: {other} is neither a string nor a number",
                        self.timestamp_field
                    ),
                ))
            }
            None => {
                return Err(Rejection::new(
                    BadTimestamp,
                    format!("no field {:?}", self.timestamp_field),
                ))
            }
        };
        if timestamp_ms < self.min_timestamp_ms
            || timestamp_ms > now_ms.saturating_add(self.max_future_ms)
        {
            return Err(Rejection::new(
                TimestampOutOfRange,
                format!(
                    "{} = {timestamp_ms} ms is outside the accepted range (input.min_timestamp, input.max_future_s)",
                    self.timestamp_field
                ),
            ));
        }
        Ok(timestamp_ms)
    }

    /// Each channel's value, finite as a 32-bit float.
    fn values(
        &self,
        field: Option<&ValuesField>,
    ) -> Result<SmallVec<[f32; INLINE_CHANNELS]>, Rejection> {
        let values = self.channels(field)?;
        let mut out = SmallVec::with_capacity(self.record_channels.len());
        for (channel, value) in self.record_channels.iter().zip(values) {
            out.push(number(channel, value, None)?);
        }
        Ok(out)
    }

    /// The values field's channels, or a rejection if it is not an object.
    fn channels<'f>(
        &self,
        field: Option<&'f ValuesField>,
    ) -> Result<&'f [ChannelValue], Rejection> {
        match field {
            Some(ValuesField::Channels(values)) => Ok(values),
            _ => Err(Rejection::new(
                RejectReason::MissingChannel,
                format!("no object field {:?}", self.values_field),
            )),
        }
    }

    /// The samples of a record in the batch form: one per element of the
    /// timestamp array, each channel an array as long. Any bad element
    /// rejects the whole record, naming the sample.
    fn batch(
        &self,
        entity: SmolStr,
        timestamps: &[Value],
        values: Option<&ValuesField>,
        now_ms: i64,
    ) -> Result<Samples, Rejection> {
        use RejectReason::*;
        if timestamps.is_empty() {
            return Err(Rejection::new(
                BadTimestamp,
                format!("{} is an empty array", self.timestamp_field),
            ));
        }
        let count = timestamps.len();
        // As in the single form, the times are checked before the values.
        let times = timestamps
            .iter()
            .enumerate()
            .map(|(index, timestamp)| {
                self.timestamp(Some(timestamp), now_ms)
                    .map_err(|r| Rejection::new(r.reason, format!("sample {index}: {}", r.detail)))
            })
            .collect::<Result<Vec<i64>, Rejection>>()?;
        let channels = self.channels(values)?;
        let mut columns = SmallVec::<[&[ChannelValue]; INLINE_CHANNELS]>::new();
        for (channel, value) in self.record_channels.iter().zip(channels) {
            match value {
                ChannelValue::Many(column) if column.len() == count => columns.push(column),
                ChannelValue::Many(column) => {
                    return Err(Rejection::new(
                        MissingChannel,
                        format!(
                            "channel {channel:?} has {} values for {count} timestamps",
                            column.len()
                        ),
                    ))
                }
                ChannelValue::Missing => {
                    return Err(Rejection::new(
                        MissingChannel,
                        format!("channel {channel:?} is missing"),
                    ))
                }
                _ => {
                    return Err(Rejection::new(
                        NonNumeric,
                        format!(
                            "channel {channel:?} is not an array, while {} is one",
                            self.timestamp_field
                        ),
                    ))
                }
            }
        }
        let mut samples = Samples::with_capacity(count);
        for (index, timestamp_ms) in times.into_iter().enumerate() {
            let mut row = SmallVec::with_capacity(columns.len());
            for (channel, column) in self.record_channels.iter().zip(&columns) {
                row.push(number(channel, &column[index], Some(index))?);
            }
            samples.push(Sample {
                entity: entity.clone(),
                timestamp_ms,
                values: row,
            });
        }
        Ok(samples)
    }
}

/// One channel's value of one sample (`index`: its place in a batch
/// record), finite as a 32-bit float.
fn number(channel: &str, value: &ChannelValue, index: Option<usize>) -> Result<f32, Rejection> {
    use RejectReason::*;
    // Only on a rejection: the batch form checks every value.
    let at = || index.map(|i| format!("sample {i}: ")).unwrap_or_default();
    let value = match value {
        ChannelValue::Missing => {
            return Err(Rejection::new(
                MissingChannel,
                format!("{}channel {channel:?} is missing", at()),
            ))
        }
        ChannelValue::Number(n) => *n,
        ChannelValue::NonFiniteWord => f64::NAN,
        ChannelValue::Many(_) if index.is_none() => {
            return Err(Rejection::new(
                NonNumeric,
                format!("channel {channel:?} is an array, while the timestamp is not (an array of samples needs an array of timestamps)"),
            ))
        }
        ChannelValue::Many(_) => {
            return Err(Rejection::new(
                NonNumeric,
                format!("{}channel {channel:?} is not a number: an array", at()),
            ))
        }
        ChannelValue::Other(other) => {
            return Err(Rejection::new(
                NonNumeric,
                format!("{}channel {channel:?} is not a number: {other}", at()),
            ))
        }
    };
    let single = value as f32;
    if !single.is_finite() {
        return Err(Rejection::new(
            NonFinite,
            format!(
                "{}channel {channel:?} is not finite (as a 32-bit float)",
                at()
            ),
        ));
    }
    Ok(single)
}

/// Strings some producers write for non-finite floats.
fn is_non_finite_word(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "nan" | "inf" | "+inf" | "-inf" | "infinity" | "+infinity" | "-infinity"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    impl Decoder {
        /// [`Decoder::decode`] of a record that carries one sample.
        fn decode_one(
            &self,
            payload: Option<&[u8]>,
            key: Option<&[u8]>,
            now_ms: i64,
        ) -> Result<Sample, Rejection> {
            self.decode(payload, key, now_ms).map(|mut samples| {
                assert_eq!(samples.len(), 1, "one sample");
                samples.pop().expect("one sample")
            })
        }
    }

    fn decoder() -> Decoder {
        let mut input = InputConfig::default();
        input.channels.insert("temperature".into(), "temp_c".into());
        input.max_record_bytes = 400;
        Decoder::new(
            &input,
            parse_timestamp(&input.min_timestamp).unwrap(),
            &["temperature".to_string(), "pressure".to_string()],
        )
    }

    fn reason(payload: &[u8]) -> RejectReason {
        decoder()
            .decode_one(Some(payload), None, NOW)
            .unwrap_err()
            .reason
    }

    #[test]
    fn decodes_both_timestamp_forms_and_maps_channels() {
        let a = decoder()
            .decode_one(
                Some(br#"{"entity":"p1","ts":"2026-01-01T00:00:00Z","values":{"temp_c":1.5,"pressure":2,"extra":"x"}}"#),
                None,
                NOW,
            )
            .unwrap();
        assert_eq!(a.entity, "p1");
        assert_eq!(a.timestamp_ms, 1_767_225_600_000);
        assert_eq!(a.values.as_slice(), [1.5, 2.0]);
        let b = decoder()
            .decode_one(
                Some(br#"{"entity":"p1","ts":1767225600000,"values":{"temp_c":1.5,"pressure":2}}"#),
                None,
                NOW,
            )
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn every_malformed_class_has_its_reason() {
        use RejectReason::*;
        assert_eq!(reason(b""), EmptyPayload);
        assert_eq!(reason(&[b'{'; 500]), TooLarge);
        assert_eq!(reason(b"\xff\xfe{}"), NotUtf8);
        assert_eq!(reason(b"{not json"), BadJson);
        assert_eq!(reason(b"[1,2]"), BadJson);
        assert_eq!(
            reason(br#"{"ts":1767225600000,"values":{}}"#),
            MissingEntity
        );
        assert_eq!(
            reason(br#"{"entity":7,"ts":1767225600000,"values":{}}"#),
            MissingEntity
        );
        assert_eq!(reason(br#"{"entity":"p","values":{}}"#), BadTimestamp);
        assert_eq!(
            reason(br#"{"entity":"p","ts":"yesterday","values":{}}"#),
            BadTimestamp
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":5,"values":{}}"#),
            TimestampOutOfRange
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":4000000000000,"values":{}}"#),
            TimestampOutOfRange
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":1767225600000}"#),
            MissingChannel
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":1767225600000,"values":{"temp_c":1}}"#),
            MissingChannel
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":1767225600000,"values":{"temp_c":1,"pressure":null}}"#),
            MissingChannel
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":1767225600000,"values":{"temp_c":"hot","pressure":1}}"#),
            NonNumeric
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":1767225600000,"values":{"temp_c":"NaN","pressure":1}}"#),
            NonFinite
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":1767225600000,"values":{"temp_c":1e300,"pressure":1}}"#),
            NonFinite
        );
    }

    #[test]
    fn wrong_types_infinities_and_foreign_channels_are_refused_with_a_reason() {
        use RejectReason::*;
        let record = |values: &str| {
            format!(r#"{{"entity":"p","ts":1767225600000,"values":{values}}}"#).into_bytes()
        };
        // Values of the wrong type, or no values at all.
        assert_eq!(reason(&record("[1, 2]")), MissingChannel);
        assert_eq!(reason(&record("7")), MissingChannel);
        assert_eq!(reason(&record("{}")), MissingChannel);
        assert_eq!(
            reason(&record(r#"{"temp_c":true,"pressure":1}"#)),
            NonNumeric
        );
        assert_eq!(
            reason(&record(r#"{"temp_c":[1],"pressure":1}"#)),
            NonNumeric
        );
        assert_eq!(
            reason(&record(r#"{"temp_c":{"v":1},"pressure":1}"#)),
            NonNumeric
        );
        assert_eq!(
            reason(br#"{"entity":"p","ts":true,"values":{}}"#),
            BadTimestamp
        );
        // An array of times is the batch form; each must be a time.
        assert_eq!(
            reason(br#"{"entity":"p","ts":[true],"values":{}}"#),
            BadTimestamp
        );
        assert_eq!(
            reason(br#"{"entity":"","ts":1767225600000,"values":{}}"#),
            MissingEntity
        );
        // Infinities, as strings or as numbers beyond f32.
        for value in [r#""inf""#, r#""-Infinity""#, "-1e39", "1e39"] {
            let payload = record(&format!(r#"{{"temp_c":{value},"pressure":1}}"#));
            assert_eq!(reason(&payload), NonFinite, "{value}");
        }
        // A record written for a model with other channels names what is missing.
        let foreign = decoder()
            .decode_one(Some(&record(r#"{"rpm":1200,"torque":31}"#)), None, NOW)
            .unwrap_err();
        assert_eq!(foreign.reason, MissingChannel);
        assert!(foreign.detail.contains("temp_c"), "{}", foreign.detail);
        // Extra channels beside the model's are ignored.
        let extra = decoder()
            .decode_one(
                Some(&record(r#"{"temp_c":1,"pressure":2,"rpm":1200}"#)),
                None,
                NOW,
            )
            .unwrap();
        assert_eq!(extra.values.as_slice(), [1.0, 2.0]);
    }

    #[test]
    fn entity_can_come_from_the_key() {
        let input = InputConfig {
            entity_from: EntitySource::Key,
            ..Default::default()
        };
        let decoder = Decoder::new(&input, 0, &["a".to_string()]);
        let payload = br#"{"ts":1767225600000,"values":{"a":1}}"#;
        let sample = decoder
            .decode_one(Some(payload), Some(b"pump-7"), NOW)
            .unwrap();
        assert_eq!(sample.entity, "pump-7");
        let missing = decoder.decode_one(Some(payload), None, NOW).unwrap_err();
        assert_eq!(missing.reason, RejectReason::MissingEntity);
    }

    #[test]
    fn reads_records_as_a_json_object_parse_would() {
        let decode = |payload: &str| decoder().decode_one(Some(payload.as_bytes()), None, NOW);
        let ok = |payload: &str| decode(payload).unwrap_or_else(|e| panic!("{payload}: {e:?}"));
        let reason = |payload: &str| decode(payload).unwrap_err().reason;
        // A field given twice counts with its last value.
        let sample = ok(
            r#"{"entity":7,"ts":"x","values":3,"entity":"p1","ts":1767225600000,"values":{"temp_c":1,"pressure":2,"temp_c":5}}"#,
        );
        assert_eq!(sample.entity, "p1");
        assert_eq!(sample.values.as_slice(), [5.0, 2.0]);
        assert_eq!(
            reason(
                r#"{"entity":"p1","ts":1767225600000,"values":{"temp_c":1,"pressure":2},"values":[]}"#
            ),
            RejectReason::MissingChannel
        );
        // Escaped keys are the same keys; nested look-alikes are not the fields.
        let sample = ok(
            r#"{"ent\u0069ty":"p\"2","ts":1767225600000,"values":{"temp\u005fc":1,"pressure":2,"x":{"temp_c":9}},"other":{"entity":"no"}}"#,
        );
        assert_eq!(sample.entity, "p\"2");
        assert_eq!(sample.values.as_slice(), [1.0, 2.0]);
        // The whole payload must be one JSON value; a non-object is named.
        let good = r#"{"entity":"p1","ts":1767225600000,"values":{"temp_c":1,"pressure":2}}"#;
        assert_eq!(reason(&format!("{good} x")), RejectReason::BadJson);
        assert_eq!(reason(&format!("{good}{good}")), RejectReason::BadJson);
        assert_eq!(
            reason(r#"{"entity":"p1","values":{"temp_c":[1,}}"#),
            RejectReason::BadJson
        );
        for not_object in ["[1,{\"a\":2}]", "\"text\"", "3", "null", "true"] {
            let rejection = decode(not_object).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::BadJson, "{not_object}");
            assert!(
                rejection.detail.contains("not a JSON object"),
                "{not_object}"
            );
        }
        // Two model channels may read one record channel.
        let mut input = InputConfig::default();
        input.channels.insert("a".into(), "shared".into());
        input.channels.insert("b".into(), "shared".into());
        let decoder = Decoder::new(&input, 0, &["a".to_string(), "b".to_string()]);
        let sample = decoder
            .decode_one(
                Some(br#"{"entity":"p","ts":1767225600000,"values":{"shared":4}}"#),
                None,
                NOW,
            )
            .unwrap();
        assert_eq!(sample.values.as_slice(), [4.0, 4.0]);
    }

    #[test]
    fn details_are_bounded() {
        let long = format!(
            r#"{{"entity":"p","ts":"{}","values":{{}}}}"#,
            "x".repeat(300)
        );
        let input = InputConfig {
            max_record_bytes: 10_000,
            ..Default::default()
        };
        let decoder = Decoder::new(&input, 0, &["a".to_string()]);
        let rejection = decoder
            .decode_one(Some(long.as_bytes()), None, NOW)
            .unwrap_err();
        assert!(rejection.detail.len() <= 204, "{}", rejection.detail.len());
    }

    /// The one sample of a record in the single form.
    fn one(decoder: &Decoder, payload: &[u8], key: Option<&[u8]>) -> Sample {
        let mut samples = decoder.decode(Some(payload), key, NOW).unwrap();
        assert_eq!(samples.len(), 1);
        samples.pop().unwrap()
    }

    #[test]
    fn a_record_in_the_batch_form_is_its_samples_one_by_one() {
        let batch = decoder()
            .decode(
                Some(br#"{"entity":"p1","ts":[1767225600000,"2026-01-01T00:01:00Z",1767225720000],"values":{"temp_c":[1.5,2,"NaN "],"pressure":[3,4,5],"extra":"x"}}"#),
                None,
                NOW,
            );
        let rejection = batch.unwrap_err();
        assert_eq!(rejection.reason, RejectReason::NonFinite);
        assert!(
            rejection.detail.starts_with("sample 2: "),
            "{}",
            rejection.detail
        );

        let batch = decoder()
            .decode(
                Some(br#"{"entity":"p1","ts":[1767225600000,"2026-01-01T00:01:00Z",1767225720000],"values":{"temp_c":[1.5,2,2.5],"pressure":[3,4,5],"extra":"x"}}"#),
                None,
                NOW,
            )
            .unwrap();
        let singles: Vec<Sample> = [
            br#"{"entity":"p1","ts":1767225600000,"values":{"temp_c":1.5,"pressure":3}}"#
                .as_slice(),
            br#"{"entity":"p1","ts":1767225660000,"values":{"temp_c":2,"pressure":4}}"#,
            br#"{"entity":"p1","ts":1767225720000,"values":{"temp_c":2.5,"pressure":5}}"#,
        ]
        .iter()
        .map(|r| one(&decoder(), r, None))
        .collect();
        assert_eq!(batch.as_slice(), singles.as_slice());
    }

    #[test]
    fn a_bad_sample_sets_its_whole_batch_record_aside_and_is_named() {
        use RejectReason::*;
        let cases: [(&[u8], RejectReason, &str); 8] = [
            (br#"{"entity":"p","ts":[],"values":{"temp_c":[],"pressure":[]}}"#, BadTimestamp, "empty array"),
            (br#"{"entity":"p","ts":[1767225600000,"soon"],"values":{"temp_c":[1,2],"pressure":[1,2]}}"#, BadTimestamp, "sample 1: "),
            (br#"{"entity":"p","ts":[1767225600000,5],"values":{"temp_c":[1,2],"pressure":[1,2]}}"#, TimestampOutOfRange, "sample 1: "),
            (br#"{"entity":"p","ts":[1767225600000,1767225660000],"values":{"temp_c":[1,2],"pressure":[1]}}"#, MissingChannel, "1 values for 2 timestamps"),
            (br#"{"entity":"p","ts":[1767225600000,1767225660000],"values":{"temp_c":[1,null],"pressure":[1,2]}}"#, MissingChannel, "sample 1: "),
            (br#"{"entity":"p","ts":[1767225600000,1767225660000],"values":{"temp_c":[1,2],"pressure":7}}"#, NonNumeric, "not an array"),
            (br#"{"entity":"p","ts":[1767225600000,1767225660000],"values":{"temp_c":[1,[2]],"pressure":[1,2]}}"#, NonNumeric, "sample 1: "),
            // An array of values needs an array of timestamps.
            (br#"{"entity":"p","ts":1767225600000,"values":{"temp_c":[1,2],"pressure":[1,2]}}"#, NonNumeric, "array of timestamps"),
        ];
        for (payload, reason, detail) in cases {
            let rejection = decoder().decode(Some(payload), None, NOW).unwrap_err();
            let text = String::from_utf8_lossy(payload);
            assert_eq!(rejection.reason, reason, "{text}: {}", rejection.detail);
            assert!(
                rejection.detail.contains(detail),
                "{text}: {}",
                rejection.detail
            );
        }
    }

    #[test]
    fn a_sample_written_back_as_a_record_reads_as_itself() {
        let by_field = decoder();
        let mut input = InputConfig {
            entity_from: EntitySource::Key,
            ..Default::default()
        };
        input.values_field = "v".into();
        input.channels.insert("temperature".into(), "temp_c".into());
        let by_key = Decoder::new(
            &input,
            0,
            &["temperature".to_string(), "pressure".to_string()],
        );
        let sample = Sample {
            entity: "pump \"7\"".into(),
            timestamp_ms: 1_767_225_600_123,
            values: smallvec::smallvec![0.1, -3.25e-7],
        };
        let record = by_field.single_record(&sample);
        assert_eq!(
            std::str::from_utf8(&record).unwrap(),
            r#"{"entity":"pump \"7\"","ts":1767225600123,"values":{"temp_c":0.1,"pressure":-3.25e-7}}"#
        );
        assert_eq!(one(&by_field, &record, None), sample);
        let record = by_key.single_record(&sample);
        let key = sample.entity.as_bytes();
        assert_eq!(one(&by_key, &record, Some(key)), sample);
    }
}
