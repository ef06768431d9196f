//! SQL databases -> raw tables: `[sources.<name>]` in lake.toml, `lake extract sql [NAME ...]`.
//!
//! This first step reads PostgreSQL sources in full: one REPEATABLE READ, READ ONLY
//! transaction (one consistent snapshot), rows streamed into Arrow batches of `batch_rows`
//! through a bounded queue, so memory stays flat however large the table, and the target
//! replaced in one Delta commit.
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | boolean | Boolean |
//! | smallint, integer, bigint | Int16, Int32, Int64 |
//! | real, double precision | Float32, Float64 |
//! | numeric(p,s) | Decimal128(p,s) (p <= 38) |
//! | numeric (no precision), uuid, json, jsonb, enums, interval, inet, money | Utf8 (their text) |
//! | text, varchar, char, name | Utf8 |
//! | date | Date32 |
//! | timestamp | Timestamp(µs) |
//! | timestamptz | Timestamp(µs, UTC) |
//! | time | Utf8 (`13:14:15.5`; Delta has no time-of-day type) |
//! | bytea | Binary |
//! | arrays of integers, floats, booleans, text | List of Int64, Float64, Boolean, Utf8 |
//!
//! Any other type is an error naming the column, unless `casts = { col = "text" }` says how to
//! read it.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo};

use super::ExtractError;
use crate::config::{SourceMode, SourceSettings};
use crate::lake::write::{BatchSource, SourceError, WriteMode, write};
use crate::lake::{Lake, RAW, TableName};

/// What one source's extract did.
#[derive(Debug, Clone)]
pub struct SqlReport {
    /// The source's name.
    pub source: String,
    /// The raw table.
    pub table: TableName,
    /// Rows landed.
    pub rows: u64,
    /// The version committed.
    pub version: u64,
}

fn fail(source: &str, message: impl std::fmt::Display) -> ExtractError {
    ExtractError::Sql {
        name: source.to_string(),
        message: message.to_string(),
    }
}

/// The raw table a source lands in.
pub fn target(name: &str, src: &SourceSettings) -> Result<TableName, ExtractError> {
    let t = src
        .target
        .clone()
        .unwrap_or_else(|| format!("{RAW}.{name}"));
    let (schema, table) = t
        .split_once('.')
        .ok_or_else(|| fail(name, format!("target `{t}`: write schema.name")))?;
    TableName::new(schema, table).map_err(|e| fail(name, e))
}

/// Extracts one source into its raw table.
pub async fn extract(
    lake: &Lake,
    name: &str,
    src: &SourceSettings,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<SqlReport, ExtractError> {
    let table = target(name, src)?;
    if src.mode == SourceMode::Incremental {
        return Err(fail(
            name,
            "incremental mode is not built yet; use mode = \"full\"",
        ));
    }
    let url = src
        .url
        .as_ref()
        .map(|u| u.expose_secret().to_string())
        .ok_or_else(|| fail(name, "no `url`"))?;
    let redacted = crate::db::redact_url(&url);
    let scheme = url
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !matches!(scheme.as_str(), "postgres" | "postgresql") {
        return Err(fail(
            name,
            format!("{scheme}:// sources are not built yet; PostgreSQL is"),
        ));
    }
    let mut options = PgConnectOptions::from_str(&url)
        .map_err(|_| fail(name, format!("the URL {redacted} does not parse")))?;
    if let Some(p) = &src.password {
        options = options.password(p.expose_secret());
    }
    let pool: PgPool = crate::db::pool(options, 2)
        .await
        .map_err(|e| fail(name, format!("failed to connect to {redacted}: {e}")))?;
    let base = match (&src.table, &src.query) {
        (Some(t), None) => format!(
            "SELECT * FROM {}",
            t.split('.')
                .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(".")
        ),
        (None, Some(q)) => q.trim().trim_end_matches(';').to_string(),
        _ => return Err(fail(name, "give exactly one of `table` and `query`")),
    };
    let plan = plan(&pool, name, &base, src).await?;
    let source = Arc::new(PgSource {
        pool,
        sql: plan.sql,
        schema: plan.schema,
        decimals: plan.decimals,
        batch_rows: src.batch_rows.unwrap_or(8192).max(1) as usize,
        progress,
    });
    let metadata = vec![
        ("lake.command".to_string(), serde_json::json!("extract sql")),
        ("lake.source".to_string(), serde_json::json!(name)),
    ];
    let outcome = write(lake, &table, source, &WriteMode::Overwrite, &metadata)
        .await
        .map_err(|e| fail(name, e))?;
    Ok(SqlReport {
        source: name.to_string(),
        table,
        rows: outcome.rows_read,
        version: outcome.version,
    })
}

/// The SELECT lake runs, its Arrow schema, and the columns read as text and cast to decimals.
struct Plan {
    sql: String,
    schema: SchemaRef,
    decimals: Vec<Option<DataType>>,
}

async fn plan(
    pool: &PgPool,
    name: &str,
    base: &str,
    src: &SourceSettings,
) -> Result<Plan, ExtractError> {
    let wrapped = format!("SELECT * FROM ({base}) AS q");
    let described = pool
        .prepare(AssertSqlSafe(wrapped.clone()).into_sql_str())
        .await
        .map_err(|e| fail(name, format!("failed to read the columns: {e}")))?;
    let mut fields = Vec::new();
    let mut exprs = Vec::new();
    let mut decimals = Vec::new();
    for column in described.columns() {
        let col = column.name().to_string();
        let quoted = format!("q.\"{}\"", col.replace('"', "\"\""));
        let mut decimal = None;
        let (expr, data_type) = if let Some(cast) = src.casts.get(&col) {
            if !cast
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
            {
                return Err(fail(
                    name,
                    format!("casts.{col} = `{cast}` is not a type name"),
                ));
            }
            let t = match cast.to_ascii_lowercase().as_str() {
                "bigint" | "int8" => DataType::Int64,
                "double precision" | "float8" => DataType::Float64,
                "boolean" | "bool" => DataType::Boolean,
                _ => DataType::Utf8,
            };
            let sql_type = if t == DataType::Utf8 {
                "text"
            } else {
                cast.as_str()
            };
            (format!("{quoted}::{sql_type}"), t)
        } else {
            let type_name = column.type_info().name().to_ascii_uppercase();
            match type_name.as_str() {
                "BOOL" => (quoted.clone(), DataType::Boolean),
                "INT2" => (quoted.clone(), DataType::Int16),
                "INT4" => (quoted.clone(), DataType::Int32),
                "INT8" | "OID" => (format!("{quoted}::int8"), DataType::Int64),
                "FLOAT4" => (quoted.clone(), DataType::Float32),
                "FLOAT8" => (quoted.clone(), DataType::Float64),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
                    (format!("{quoted}::text"), DataType::Utf8)
                }
                "UUID" | "JSON" | "JSONB" | "INTERVAL" | "INET" | "CIDR" | "MONEY" | "XML" => {
                    (format!("{quoted}::text"), DataType::Utf8)
                }
                "NUMERIC" => {
                    let t = match numeric_typmod(pool, column).await {
                        Some((p, s)) if p <= 38 => DataType::Decimal128(p as u8, s as i8),
                        _ => DataType::Utf8,
                    };
                    if t != DataType::Utf8 {
                        decimal = Some(t.clone());
                    }
                    (format!("{quoted}::text"), t)
                }
                "DATE" => (quoted.clone(), DataType::Date32),
                "TIMESTAMP" => (
                    quoted.clone(),
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                ),
                "TIMESTAMPTZ" => (
                    quoted.clone(),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                ),
                // Delta has no time-of-day type: times land as their text, `13:14:15.5`.
                "TIME" | "TIMETZ" => (format!("{quoted}::text"), DataType::Utf8),
                "BYTEA" => (quoted.clone(), DataType::Binary),
                "BOOL[]" | "_BOOL" => (format!("{quoted}::bool[]"), list(DataType::Boolean)),
                "INT2[]" | "INT4[]" | "INT8[]" | "_INT2" | "_INT4" | "_INT8" => {
                    (format!("{quoted}::int8[]"), list(DataType::Int64))
                }
                "FLOAT4[]" | "FLOAT8[]" | "_FLOAT4" | "_FLOAT8" | "NUMERIC[]" | "_NUMERIC" => {
                    (format!("{quoted}::float8[]"), list(DataType::Float64))
                }
                "TEXT[]" | "VARCHAR[]" | "_TEXT" | "_VARCHAR" | "UUID[]" | "_UUID" => {
                    (format!("{quoted}::text[]"), list(DataType::Utf8))
                }
                _ if matches!(
                    column.type_info().kind(),
                    sqlx::postgres::PgTypeKind::Enum(_)
                ) =>
                {
                    (format!("{quoted}::text"), DataType::Utf8)
                }
                other => {
                    return Err(fail(
                        name,
                        format!(
                            "column `{col}` has type {other}, which lake does not map; add `casts = {{ {col} = \"text\" }}` to [sources.{name}]"
                        ),
                    ));
                }
            }
        };
        exprs.push(format!("{expr} AS \"{}\"", col.replace('"', "\"\"")));
        fields.push(Field::new(&col, data_type, true));
        decimals.push(decimal);
    }
    Ok(Plan {
        sql: format!("SELECT {} FROM ({base}) AS q", exprs.join(", ")),
        schema: Arc::new(Schema::new(fields)),
        decimals,
    })
}

fn list(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

/// numeric(p,s) of a column that comes straight from a table.
async fn numeric_typmod(pool: &PgPool, column: &sqlx::postgres::PgColumn) -> Option<(u32, u32)> {
    let (rel, att) = (column.relation_id()?, column.relation_attribute_no()?);
    let typmod: i32 = sqlx::query_scalar(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
    )
    .bind(rel)
    .bind(att)
    .fetch_one(pool)
    .await
    .ok()?;
    if typmod < 4 {
        return None;
    }
    let t = (typmod - 4) as u32;
    Some(((t >> 16) & 0xffff, t & 0xffff))
}

/// A PostgreSQL query as a write source: each stream is a fresh snapshot.
struct PgSource {
    pool: PgPool,
    sql: String,
    schema: SchemaRef,
    decimals: Vec<Option<DataType>>,
    batch_rows: usize,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
}

impl BatchSource for PgSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn stream(&self) -> BoxStream<'static, Result<RecordBatch, SourceError>> {
        // A reader task fills a queue of two batches: the database is read while the lake
        // writes, and memory holds at most a few batches.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, SourceError>>(2);
        let (pool, sql, schema, decimals, batch_rows, progress) = (
            self.pool.clone(),
            self.sql.clone(),
            self.schema.clone(),
            self.decimals.clone(),
            self.batch_rows,
            self.progress.clone(),
        );
        tokio::spawn(async move {
            let result = read(&pool, &sql, &schema, &decimals, batch_rows, &tx, &*progress).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        tokio_stream_from(rx)
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<RecordBatch, SourceError>>,
) -> BoxStream<'static, Result<RecordBatch, SourceError>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

async fn read(
    pool: &PgPool,
    sql: &str,
    schema: &SchemaRef,
    decimals: &[Option<DataType>],
    batch_rows: usize,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, SourceError>>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), SourceError> {
    // One consistent snapshot for the whole read; a transaction that is dropped on an error
    // rolls back.
    let mut snapshot = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mut rows = sqlx::query(AssertSqlSafe(sql.to_string())).fetch(&mut *snapshot);
    let mut builders = new_builders(schema);
    let mut in_batch = 0;
    let mut total = 0u64;
    while let Some(row) = rows.next().await {
        let row = row?;
        append(&row, schema, &mut builders)?;
        in_batch += 1;
        if in_batch == batch_rows {
            total += in_batch as u64;
            let batch = finish(schema, decimals, &mut builders)?;
            progress(total);
            if tx.send(Ok(batch)).await.is_err() {
                return Ok(());
            }
            in_batch = 0;
        }
    }
    drop(rows);
    if in_batch > 0 {
        total += in_batch as u64;
        let batch = finish(schema, decimals, &mut builders)?;
        progress(total);
        let _ = tx.send(Ok(batch)).await;
    }
    snapshot.commit().await?;
    Ok(())
}

fn new_builders(schema: &SchemaRef) -> Vec<Box<dyn ArrayBuilder>> {
    schema
        .fields()
        .iter()
        .map(|f| -> Box<dyn ArrayBuilder> {
            match f.data_type() {
                DataType::Boolean => Box::new(BooleanBuilder::new()),
                DataType::Int16 => Box::new(Int16Builder::new()),
                DataType::Int32 => Box::new(Int32Builder::new()),
                DataType::Int64 => Box::new(Int64Builder::new()),
                DataType::Float32 => Box::new(Float32Builder::new()),
                DataType::Float64 => Box::new(Float64Builder::new()),
                DataType::Date32 => Box::new(Date32Builder::new()),
                DataType::Timestamp(_, tz) => {
                    Box::new(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
                }
                DataType::Binary => Box::new(BinaryBuilder::new()),
                DataType::List(item) => match item.data_type() {
                    DataType::Boolean => Box::new(ListBuilder::new(BooleanBuilder::new())),
                    DataType::Int64 => Box::new(ListBuilder::new(Int64Builder::new())),
                    DataType::Float64 => Box::new(ListBuilder::new(Float64Builder::new())),
                    _ => Box::new(ListBuilder::new(StringBuilder::new())),
                },
                // Text, and decimals read as text.
                _ => Box::new(StringBuilder::new()),
            }
        })
        .collect()
}

fn append(
    row: &PgRow,
    schema: &SchemaRef,
    builders: &mut [Box<dyn ArrayBuilder>],
) -> Result<(), SourceError> {
    macro_rules! put {
        ($b:expr, $builder:ty, $t:ty, $i:expr) => {{
            let v: Option<$t> = row.try_get($i)?;
            $b.as_any_mut()
                .downcast_mut::<$builder>()
                .expect("builder matches the schema")
                .append_option(v);
        }};
    }
    macro_rules! put_list {
        ($b:expr, $inner:ty, $t:ty, $i:expr) => {{
            let v: Option<Vec<Option<$t>>> = row.try_get($i)?;
            let b = $b
                .as_any_mut()
                .downcast_mut::<ListBuilder<$inner>>()
                .expect("builder matches the schema");
            match v {
                Some(items) => {
                    for item in items {
                        b.values().append_option(item);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }};
    }
    for (i, (field, b)) in schema.fields().iter().zip(builders.iter_mut()).enumerate() {
        match field.data_type() {
            DataType::Boolean => put!(b, BooleanBuilder, bool, i),
            DataType::Int16 => put!(b, Int16Builder, i16, i),
            DataType::Int32 => put!(b, Int32Builder, i32, i),
            DataType::Int64 => put!(b, Int64Builder, i64, i),
            DataType::Float32 => put!(b, Float32Builder, f32, i),
            DataType::Float64 => put!(b, Float64Builder, f64, i),
            DataType::Date32 => {
                let v: Option<NaiveDate> = row.try_get(i)?;
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
                b.as_any_mut()
                    .downcast_mut::<Date32Builder>()
                    .expect("builder matches the schema")
                    .append_option(v.map(|d| (d - epoch).num_days() as i32));
            }
            DataType::Timestamp(_, tz) => {
                let micros = if tz.is_some() {
                    let v: Option<DateTime<Utc>> = row.try_get(i)?;
                    v.map(|t| t.timestamp_micros())
                } else {
                    let v: Option<NaiveDateTime> = row.try_get(i)?;
                    v.map(|t| t.and_utc().timestamp_micros())
                };
                b.as_any_mut()
                    .downcast_mut::<TimestampMicrosecondBuilder>()
                    .expect("builder matches the schema")
                    .append_option(micros);
            }
            DataType::Binary => put!(b, BinaryBuilder, Vec<u8>, i),
            DataType::List(item) => match item.data_type() {
                DataType::Boolean => put_list!(b, BooleanBuilder, bool, i),
                DataType::Int64 => put_list!(b, Int64Builder, i64, i),
                DataType::Float64 => put_list!(b, Float64Builder, f64, i),
                _ => put_list!(b, StringBuilder, String, i),
            },
            _ => put!(b, StringBuilder, String, i),
        }
    }
    Ok(())
}

fn finish(
    schema: &SchemaRef,
    decimals: &[Option<DataType>],
    builders: &mut [Box<dyn ArrayBuilder>],
) -> Result<RecordBatch, SourceError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(builders.len());
    for (b, decimal) in builders.iter_mut().zip(decimals) {
        let array = b.finish();
        columns.push(match decimal {
            // numeric read as its exact text, then parsed into the column's decimal type.
            Some(t) => arrow::compute::cast(&array, t)?,
            None => array,
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
