//! Parquet rows, read as Arrow record batches. Numeric, boolean, string,
//! timestamp and date columns can be read; a column of another type can be
//! named only if the row decoder does not need it.

use super::{Cell, InputError, Next, Row};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Date64Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::ChunkReader;
use std::io::Read;

/// Rows per record batch.
const BATCH_ROWS: usize = 8192;

/// A Parquet reader and its current batch.
pub(super) struct ParquetRows {
    reader: ParquetRecordBatchReader,
    schema: SchemaRef,
    batch: Option<RecordBatch>,
    /// The next row of `batch`.
    index: usize,
}

impl ParquetRows {
    /// Opens a Parquet file where it is.
    pub(super) fn from_file(
        file: std::fs::File,
        name: &str,
    ) -> Result<(Self, Vec<String>), InputError> {
        Self::from_chunks(file, name)
    }

    /// Reads a whole stream into memory, then opens it.
    pub(super) fn from_reader(
        mut source: Box<dyn Read>,
        name: &str,
    ) -> Result<(Self, Vec<String>), InputError> {
        let mut bytes = Vec::new();
        source
            .read_to_end(&mut bytes)
            .map_err(|source| InputError::Io {
                name: name.to_string(),
                source,
            })?;
        Self::from_chunks(bytes::Bytes::from(bytes), name)
    }

    fn from_chunks<T: ChunkReader + 'static>(
        chunks: T,
        name: &str,
    ) -> Result<(Self, Vec<String>), InputError> {
        let format = |e: &dyn std::fmt::Display| InputError::Format {
            name: name.to_string(),
            message: format!("not a readable Parquet file: {e}"),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(chunks).map_err(|e| format(&e))?;
        let schema = builder.schema().clone();
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| format(&e))?;
        let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok((
            Self {
                reader,
                schema,
                batch: None,
                index: 0,
            },
            columns,
        ))
    }

    /// The column's type if this reader cannot read it.
    pub(super) fn unreadable_type(&self, column: usize) -> Option<String> {
        let data_type = self.schema.field(column).data_type();
        (!readable(data_type)).then(|| data_type.to_string())
    }

    pub(super) fn next(&mut self, name: &str, line: &mut usize) -> Result<Next<'_>, InputError> {
        while self
            .batch
            .as_ref()
            .is_none_or(|batch| self.index >= batch.num_rows())
        {
            match self.reader.next() {
                None => return Ok(Next::End),
                Some(Ok(batch)) => {
                    self.batch = Some(batch);
                    self.index = 0;
                }
                Some(Err(e)) => {
                    return Err(InputError::Format {
                        name: name.to_string(),
                        message: format!("after row {line}: {e}"),
                    })
                }
            }
        }
        let index = self.index;
        self.index += 1;
        *line += 1;
        Ok(Next::Row(Row::Parquet(
            self.batch.as_ref().expect("filled above"),
            index,
        )))
    }
}

fn readable(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Float32
            | Float64
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Boolean
            | Utf8
            | LargeUtf8
            | Utf8View
            | Timestamp(..)
            | Date32
            | Date64
            | Null
    )
}

fn downcast<T: 'static>(array: &ArrayRef) -> &T {
    array
        .as_any()
        .downcast_ref::<T>()
        .expect("the array type matches its data type")
}

fn text(s: &str) -> Cell<'_> {
    if s.trim().is_empty() {
        Cell::Missing
    } else {
        Cell::Text(s)
    }
}

/// The cell at `index` of `array`.
pub(super) fn cell(array: &ArrayRef, index: usize) -> Cell<'_> {
    if array.is_null(index) {
        return Cell::Missing;
    }
    macro_rules! number {
        ($t:ty) => {
            Cell::Number(downcast::<$t>(array).value(index) as f64)
        };
    }
    match array.data_type() {
        DataType::Float32 => number!(Float32Array),
        DataType::Float64 => number!(Float64Array),
        DataType::Int8 => number!(Int8Array),
        DataType::Int16 => number!(Int16Array),
        DataType::Int32 => number!(Int32Array),
        DataType::Int64 => number!(Int64Array),
        DataType::UInt8 => number!(UInt8Array),
        DataType::UInt16 => number!(UInt16Array),
        DataType::UInt32 => number!(UInt32Array),
        DataType::UInt64 => number!(UInt64Array),
        DataType::Boolean => Cell::Bool(downcast::<BooleanArray>(array).value(index)),
        DataType::Utf8 => text(downcast::<StringArray>(array).value(index)),
        DataType::LargeUtf8 => text(downcast::<LargeStringArray>(array).value(index)),
        DataType::Utf8View => text(downcast::<StringViewArray>(array).value(index)),
        DataType::Timestamp(unit, _) => Cell::TimeMs(match unit {
            TimeUnit::Second => downcast::<TimestampSecondArray>(array)
                .value(index)
                .saturating_mul(1000),
            TimeUnit::Millisecond => downcast::<TimestampMillisecondArray>(array).value(index),
            TimeUnit::Microsecond => {
                downcast::<TimestampMicrosecondArray>(array).value(index) / 1000
            }
            TimeUnit::Nanosecond => {
                downcast::<TimestampNanosecondArray>(array).value(index) / 1_000_000
            }
        }),
        DataType::Date32 => {
            Cell::TimeMs(downcast::<Date32Array>(array).value(index) as i64 * 86_400_000)
        }
        DataType::Date64 => Cell::TimeMs(downcast::<Date64Array>(array).value(index)),
        _ => Cell::Missing,
    }
}
