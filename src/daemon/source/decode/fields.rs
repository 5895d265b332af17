//! One pass over a record's JSON that keeps only the fields the decoder
//! reads (entity, timestamp, the model's channels) and skips the rest
//! without building a JSON tree: the daemon's consumer decodes every record,
//! and a whole `serde_json::Value` per record was most of that work.
//!
//! The result is what a `serde_json::Value` parse followed by field lookups
//! would see: a field given twice counts with its last value, and the whole
//! payload must still be valid JSON. A record of up to 8 channels whose
//! entity is at most 23 bytes is read without a heap allocation (the
//! entity is stored inline, the channels' values on the stack).

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use smallvec::{smallvec, SmallVec};
use smol_str::SmolStr;
use std::borrow::Cow;
use std::fmt;

/// Channels read without a heap allocation; more spill to the heap.
pub const INLINE_CHANNELS: usize = 8;

/// Which fields to keep.
pub struct FieldNames<'n> {
    /// The entity field, or `None` when the entity comes from the key.
    pub entity: Option<&'n str>,
    /// The timestamp field.
    pub timestamp: &'n str,
    /// The object field that holds the channels.
    pub values: &'n str,
    /// The record's name of each model channel, in the model's order.
    pub channels: &'n [String],
}

/// The fields of one record that was a JSON object.
#[derive(Debug, Default)]
pub struct RecordFields {
    /// The entity field's value, if present.
    pub entity: Option<EntityField>,
    /// The timestamp field's value, if present.
    pub timestamp: Option<Value>,
    /// The values field, if present.
    pub values: Option<ValuesField>,
}

/// The entity field of a record.
#[derive(Debug)]
pub enum EntityField {
    /// A string (inline up to 23 bytes).
    Text(SmolStr),
    /// Any other JSON value, kept to be quoted in the rejection.
    Other(Value),
}

/// The values field of a record.
#[derive(Debug)]
pub enum ValuesField {
    /// Present but not an object.
    NotObject,
    /// An object: each model channel's value.
    Channels(SmallVec<[ChannelValue; INLINE_CHANNELS]>),
}

/// One model channel's value in a record: 16 bytes, so that a record's
/// channels stay small on the stack (they are moved a few times per record).
#[derive(Debug, Clone, Default)]
pub enum ChannelValue {
    /// Absent, or `null`.
    #[default]
    Missing,
    /// A number.
    Number(f64),
    /// A string some producers write for a non-finite float (`"NaN"`, `"inf"`).
    NonFiniteWord,
    /// An array: one value per sample of a record in the batch form
    /// (docs/daemon.md, "Input records"); boxed, so the enum stays small.
    Many(Box<Vec<ChannelValue>>),
    /// Anything else, kept to be quoted in the rejection (boxed: rare).
    Other(Box<Value>),
}

impl<'de> Deserialize<'de> for ChannelValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChannelVisitor;
        impl<'de> Visitor<'de> for ChannelVisitor {
            type Value = ChannelValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ChannelValue::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ChannelValue::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ChannelValue::Number(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ChannelValue::Missing)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(if super::is_non_finite_word(v) {
                    ChannelValue::NonFiniteWord
                } else {
                    ChannelValue::Other(Box::new(Value::String(v.to_owned())))
                })
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ChannelValue::Other(Box::new(Value::Bool(v))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(value) = seq.next_element()? {
                    values.push(value);
                }
                Ok(ChannelValue::Many(Box::new(values)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map))
                    .map(|v| ChannelValue::Other(Box::new(v)))
            }
        }
        deserializer.deserialize_any(ChannelVisitor)
    }
}

/// Reads `text`: `Ok(None)` if it is JSON but not an object, an error if it
/// is not JSON.
pub fn read_fields(
    text: &str,
    names: &FieldNames<'_>,
) -> Result<Option<RecordFields>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let fields = read_fields_from(&mut deserializer, names)?;
    deserializer.end()?;
    Ok(fields)
}

/// [`read_fields`] from any serde deserializer (the decoding bench runs it
/// on other JSON parsers); the caller checks that nothing follows.
pub fn read_fields_from<'de, D: Deserializer<'de>>(
    deserializer: D,
    names: &FieldNames<'_>,
) -> Result<Option<RecordFields>, D::Error> {
    RecordSeed(names).deserialize(deserializer)
}

/// An object key, borrowed from the record unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for EntityField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntityVisitor;
        impl<'de> Visitor<'de> for EntityVisitor {
            type Value = EntityField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(EntityField::Text(SmolStr::new(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(EntityField::Other(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(EntityField::Other(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(EntityField::Other(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(EntityField::Other(v.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(EntityField::Other(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(EntityField::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(EntityField::Other)
            }
        }
        deserializer.deserialize_any(EntityVisitor)
    }
}

/// Implements the visitor methods of every JSON value but an object, to
/// consume it and answer `$value`.
macro_rules! anything_but_an_object {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
}

/// The whole record.
struct RecordSeed<'a, 'n>(&'a FieldNames<'n>);

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_> {
    type Value = Option<RecordFields>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, '_> {
    type Value = Option<RecordFields>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    anything_but_an_object!(None);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let names = self.0;
        let mut fields = RecordFields::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if names.entity == Some(&*key) {
                fields.entity = Some(map.next_value()?);
            } else if key == names.timestamp {
                fields.timestamp = Some(map.next_value()?);
            } else if key == names.values {
                fields.values = Some(map.next_value_seed(ValuesSeed(names.channels))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some(fields))
    }
}

/// The values field.
struct ValuesSeed<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = ValuesField;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed<'_> {
    type Value = ValuesField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    anything_but_an_object!(ValuesField::NotObject);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let channels = self.0;
        let mut found: SmallVec<[ChannelValue; INLINE_CHANNELS]> =
            smallvec![ChannelValue::Missing; channels.len()];
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let mut wanted = channels.iter().enumerate().filter(|(_, c)| **c == key);
            let Some((first, _)) = wanted.next() else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value: ChannelValue = map.next_value()?;
            // Two model channels may read the same record channel.
            for (index, _) in wanted {
                found[index] = value.clone();
            }
            found[first] = value;
        }
        Ok(ValuesField::Channels(found))
    }
}
