//! Arrow types as warehouse columns, and Arrow values as what each database is sent.
//!
//! | Arrow | PostgreSQL | MySQL / MariaDB | SQLite |
//! |---|---|---|---|
//! | Boolean | boolean | BOOLEAN | INTEGER (0/1) |
//! | Int8, Int16 | smallint | SMALLINT | INTEGER |
//! | Int32 | integer | INT | INTEGER |
//! | Int64 | bigint | BIGINT | INTEGER |
//! | UInt8..UInt32 | bigint | BIGINT | INTEGER |
//! | UInt64 | numeric(20,0) | BIGINT UNSIGNED | INTEGER |
//! | Float16, Float32 | real | FLOAT | REAL |
//! | Float64 | double precision | DOUBLE | REAL |
//! | Decimal(p,s) | numeric(p,s) | DECIMAL(p,s) (p <= 65) | TEXT (exact digits) |
//! | Utf8, LargeUtf8, Utf8View | text | LONGTEXT (VARCHAR(255) for a key column) | TEXT |
//! | Binary, LargeBinary, FixedSizeBinary, BinaryView | bytea | LONGBLOB | BLOB |
//! | Date32, Date64 | date | DATE | TEXT `YYYY-MM-DD` |
//! | Timestamp with a time zone | timestamptz | DATETIME(6), in UTC | TEXT ISO 8601 `...Z` |
//! | Timestamp without | timestamp | DATETIME(6) | TEXT ISO 8601 |
//! | Time32, Time64 | time | TIME(6) | TEXT |
//! | List, LargeList, FixedSizeList, Struct, Map | jsonb | JSON | TEXT (JSON) |
//! | Dictionary(_, V) | as V | as V | as V |
//! | Null | text | LONGTEXT | TEXT |

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// The databases lake exports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL (and Amazon RDS / Aurora PostgreSQL).
    Postgres,
    /// MySQL and MariaDB (and Amazon RDS).
    MySql,
    /// SQLite, the embedded default.
    Sqlite,
}

impl Dialect {
    /// An identifier, quoted so any name works and none can inject SQL.
    pub fn quote(self, name: &str) -> String {
        match self {
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// The column type for an Arrow type; `key` for a column of the unique key (MySQL cannot
    /// index LONGTEXT).
    pub fn column_type(self, t: &DataType, key: bool) -> String {
        use DataType::*;
        let pick = |pg: &str, my: &str, lite: &str| {
            match self {
                Dialect::Postgres => pg,
                Dialect::MySql => my,
                Dialect::Sqlite => lite,
            }
            .to_string()
        };
        match t {
            Boolean => pick("boolean", "BOOLEAN", "INTEGER"),
            Int8 | Int16 => pick("smallint", "SMALLINT", "INTEGER"),
            Int32 => pick("integer", "INT", "INTEGER"),
            Int64 | UInt8 | UInt16 | UInt32 => pick("bigint", "BIGINT", "INTEGER"),
            UInt64 => pick("numeric(20,0)", "BIGINT UNSIGNED", "INTEGER"),
            Float16 | Float32 => pick("real", "FLOAT", "REAL"),
            Float64 => pick("double precision", "DOUBLE", "REAL"),
            Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => match self {
                Dialect::Postgres => format!("numeric({p},{s})"),
                Dialect::MySql if *p <= 65 => format!("DECIMAL({p},{s})"),
                Dialect::MySql => "LONGTEXT".into(),
                Dialect::Sqlite => "TEXT".into(),
            },
            Utf8 | LargeUtf8 | Utf8View | Null => match (self, key) {
                (Dialect::MySql, true) => "VARCHAR(255)".into(),
                _ => pick("text", "LONGTEXT", "TEXT"),
            },
            Binary | LargeBinary | FixedSizeBinary(_) | BinaryView => match (self, key) {
                (Dialect::MySql, true) => "VARBINARY(255)".into(),
                _ => pick("bytea", "LONGBLOB", "BLOB"),
            },
            Date32 | Date64 => pick("date", "DATE", "TEXT"),
            Timestamp(_, Some(_)) => pick("timestamptz", "DATETIME(6)", "TEXT"),
            Timestamp(_, None) => pick("timestamp", "DATETIME(6)", "TEXT"),
            Time32(_) | Time64(_) => pick("time", "TIME(6)", "TEXT"),
            Dictionary(_, v) => self.column_type(v, key),
            _ => pick("jsonb", "JSON", "TEXT"),
        }
    }
}

/// Whether a type goes to the warehouse as JSON text.
pub fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Struct(_)
            | DataType::Map(..)
            | DataType::Union(..)
    )
}

/// One value as text, as PostgreSQL's COPY text format and the other databases' string
/// parameters take it; `None` is NULL. Timestamps with a time zone are UTC with a `Z`.
pub struct TextColumn {
    values: Vec<Option<String>>,
}

impl TextColumn {
    /// The column's values as text. Nested values become JSON.
    pub fn new(array: &ArrayRef) -> Result<Self, arrow::error::ArrowError> {
        let array = for_text(array)?;
        if is_nested(array.data_type()) {
            return Ok(Self {
                values: json_values(&array)?,
            });
        }
        let options = text_options();
        let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
        let binary = is_binary(array.data_type());
        let values = (0..array.len())
            .map(|i| {
                if array.is_null(i) {
                    None
                } else if binary {
                    Some(hex::encode(binary_value(&array, i)))
                } else {
                    Some(formatter.value(i).to_string())
                }
            })
            .collect();
        Ok(Self { values })
    }

    /// The value of a row.
    pub fn get(&self, row: usize) -> Option<&str> {
        self.values[row].as_deref()
    }
}

/// Whether a type is one of the binary kinds.
pub fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::FixedSizeBinary(_)
            | DataType::BinaryView
    )
}

/// The values of a dictionary, decoded; any other array as it is.
pub fn decode_dictionary(array: &ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
    match array.data_type() {
        DataType::Dictionary(_, v) => arrow::compute::cast(array, v),
        _ => Ok(array.clone()),
    }
}

/// An array ready to be formatted as text: dictionaries decoded, and timestamps with a time
/// zone moved to an explicit UTC offset, which every database parses.
pub fn for_text(array: &ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
    let array = decode_dictionary(array)?;
    match array.data_type() {
        DataType::Timestamp(unit, Some(_)) => arrow::compute::cast(
            &array,
            &DataType::Timestamp(*unit, Some(Arc::from("+00:00"))),
        ),
        _ => Ok(array),
    }
}

/// How values are written as text: ISO 8601 times, UTC ones ending in `Z`.
pub fn text_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_display_error(true)
        .with_timestamp_format(Some("%Y-%m-%dT%H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.fZ"))
}

/// The bytes of a binary value.
pub fn binary_value(array: &ArrayRef, i: usize) -> Vec<u8> {
    match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().value(i).to_vec(),
        DataType::LargeBinary => array.as_binary::<i64>().value(i).to_vec(),
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().value(i).to_vec(),
        DataType::BinaryView => array.as_binary_view().value(i).to_vec(),
        _ => Vec::new(),
    }
}

/// Nested values as JSON text, through arrow's JSON writer (one object per row, the value
/// under one key).
fn json_values(array: &ArrayRef) -> Result<Vec<Option<String>>, arrow::error::ArrowError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "v",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![array.clone()])?;
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut out);
        writer.write(&batch)?;
        writer.finish()?;
    }
    let text =
        String::from_utf8(out).map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if array.is_null(i) {
                return None;
            }
            // `{"v":<value>}` -> `<value>`
            line.strip_prefix("{\"v\":")
                .and_then(|l| l.strip_suffix('}'))
                .map(String::from)
        })
        .collect())
}

/// Escapes a value for PostgreSQL's COPY text format.
pub fn copy_escape(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, ListArray, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::Int32Type;

    #[test]
    fn quoting() {
        assert_eq!(Dialect::Postgres.quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(Dialect::MySql.quote("a`b"), "`a``b`");
    }

    #[test]
    fn text_values() {
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None])
                .with_timezone("UTC"),
        );
        let c = TextColumn::new(&ts).unwrap();
        assert_eq!(c.get(0), Some("2023-11-14T22:13:20.123456Z"));
        assert_eq!(c.get(1), None);
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
        ]));
        let c = TextColumn::new(&list).unwrap();
        assert_eq!(c.get(0), Some("[1,null]"));
        assert_eq!(c.get(1), None);
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("a\tb"), Some("")]));
        let c = TextColumn::new(&s).unwrap();
        assert_eq!(c.get(1), Some(""));
        let mut out = Vec::new();
        copy_escape(&mut out, c.get(0).unwrap());
        assert_eq!(out, b"a\\tb");
        let i: ArrayRef = Arc::new(Int32Array::from(vec![7]));
        assert_eq!(TextColumn::new(&i).unwrap().get(0), Some("7"));
    }
}

/// A value as bound to a MySQL or SQLite parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any signed integer.
    Int(i64),
    /// An unsigned integer past i64.
    UInt(u64),
    /// A float.
    Float(f64),
    /// Text: strings, decimals, JSON, times.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A date.
    Date(chrono::NaiveDate),
    /// A timestamp, UTC when the column has a time zone.
    Timestamp(chrono::NaiveDateTime),
}

/// A column's values as cells.
pub fn cells(array: &ArrayRef) -> Result<Vec<Cell>, arrow::error::ArrowError> {
    use arrow::compute::cast;
    use arrow::datatypes::{
        Date32Type, Float64Type, Int64Type, TimestampMicrosecondType, UInt64Type,
    };
    let array = decode_dictionary(array)?;
    let nulls = |i: usize| array.is_null(i);
    let n = array.len();
    let out: Vec<Cell> = match array.data_type() {
        DataType::Null => vec![Cell::Null; n],
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        Cell::Null
                    } else {
                        Cell::Bool(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            let c = cast(&array, &DataType::Int64)?;
            let a = c.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        Cell::Null
                    } else {
                        Cell::Int(a.value(i))
                    }
                })
                .collect()
        }
        DataType::UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        Cell::Null
                    } else {
                        Cell::UInt(a.value(i))
                    }
                })
                .collect()
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let c = cast(&array, &DataType::Float64)?;
            let a = c.as_primitive::<Float64Type>();
            (0..n)
                .map(|i| {
                    if nulls(i) {
                        Cell::Null
                    } else {
                        Cell::Float(a.value(i))
                    }
                })
                .collect()
        }
        t if is_binary(t) => (0..n)
            .map(|i| {
                if nulls(i) {
                    Cell::Null
                } else {
                    Cell::Bytes(binary_value(&array, i))
                }
            })
            .collect(),
        DataType::Date32 | DataType::Date64 => {
            let c = cast(&array, &DataType::Date32)?;
            let a = c.as_primitive::<Date32Type>();
            (0..n)
                .map(|i| match a.value_as_date(i) {
                    Some(d) if !nulls(i) => Cell::Date(d),
                    _ => Cell::Null,
                })
                .collect()
        }
        DataType::Timestamp(_, tz) => {
            let c = cast(
                &array,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| Arc::from("UTC"))),
            )?;
            let a = c.as_primitive::<TimestampMicrosecondType>();
            (0..n)
                .map(
                    |i| match chrono::DateTime::from_timestamp_micros(a.value(i)) {
                        Some(t) if !nulls(i) => Cell::Timestamp(t.naive_utc()),
                        _ => Cell::Null,
                    },
                )
                .collect()
        }
        _ => {
            let text = TextColumn::new(&array)?;
            (0..n)
                .map(|i| match text.get(i) {
                    Some(t) => Cell::Text(t.to_string()),
                    None => Cell::Null,
                })
                .collect()
        }
    };
    Ok(out)
}
