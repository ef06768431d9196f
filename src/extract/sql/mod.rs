//! SQL databases -> raw tables: `[sources.<name>]` in lake.toml, `lake extract sql [NAME ...]`.
//!
//! Each source is a table or a query on PostgreSQL, MySQL/MariaDB, SQLite or SQL Server. A
//! driver module per database plans the columns (the SELECT expression that reads each one and
//! its Arrow type) and streams rows inside one consistent snapshot; everything else is shared:
//! Arrow batches of `batch_rows` built here and sent through a queue of two, so memory stays
//! flat however large the table, and one Delta commit per extract.
//!
//! - `mode = "full"` replaces the target in one commit.
//! - `mode = "incremental"` reads the rows whose cursor is at or past the saved cursor minus
//!   the lookback and merges them on the primary key. The new cursor (the largest value, read
//!   before the rows) is saved in the metadata of the same commit as the rows, so a crash before
//!   the commit leaves the old cursor and the next run reads the rows again: a rerun, never a
//!   gap. The merge absorbs what is read twice.
//! - `--detect-deletes` reads the source's keys and marks rows whose key is gone: their
//!   `_deleted_at` is set, in a second commit.
//!
//! The type map, for every database, is in the README ("SQL sources").

mod mssql;
mod mysql;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Array, Date32Builder,
    Float64Builder, Int64Array, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder, new_null_array,
};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::ExtractError;
use crate::config::{SourceMode, SourceSettings};
use crate::lake::write::{BatchSource, MemorySource, SourceError, WriteMode, write};
use crate::lake::{Lake, RAW, TableName};

/// The column an incremental target gains: when lake saw the row's key vanish at the source.
pub const DELETED_AT: &str = "_deleted_at";
/// The commit metadata key that holds an incremental source's cursor.
pub const SOURCE_CURSOR_KEY: &str = "lake.cursor";

/// What one source's extract did.
#[derive(Debug, Clone)]
pub struct SqlReport {
    /// The source's name.
    pub source: String,
    /// The raw table.
    pub table: TableName,
    /// Rows read and landed.
    pub rows: u64,
    /// The version committed last, or `None` when nothing was committed.
    pub version: Option<u64>,
    /// For an incremental source: the cursor before and after.
    pub cursor: Option<(Option<String>, Option<String>)>,
    /// For `--detect-deletes`: rows newly marked deleted.
    pub deleted: Option<u64>,
}

/// One line: `crm -> raw.crm version 3: 120 rows, cursor start -> 2024-01-02`.
impl std::fmt::Display for SqlReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(
                f,
                "{} -> {} version {v}: {} rows",
                self.source, self.table, self.rows
            )?,
            None => write!(
                f,
                "{} -> {}: no new rows, nothing committed",
                self.source, self.table
            )?,
        }
        if let Some((before, after)) = &self.cursor {
            let shown = |c: &Option<String>| c.clone().unwrap_or_else(|| "start".into());
            write!(f, ", cursor {} -> {}", shown(before), shown(after))?;
        }
        if let Some(d) = self.deleted {
            write!(f, ", {d} newly deleted at the source")?;
        }
        Ok(())
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct SqlOptions {
    /// Compare keys and mark rows deleted at the source.
    pub detect_deletes: bool,
    /// The folder a relative SQLite path is resolved against.
    pub project_dir: std::path::PathBuf,
}

pub(crate) fn fail(source: &str, message: impl std::fmt::Display) -> ExtractError {
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

/// How a value is read from the database. Integers are read as 64 bits and floats as doubles,
/// then cast to the column's Arrow type, which keeps the source's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int,
    Float,
    /// Text, and anything read as its text: decimals (then cast), json, uuid, times.
    Text,
    Bytes,
    Date,
    /// A timestamp without a time zone.
    Timestamp,
    /// A point in time, read in UTC.
    TimestampUtc,
    /// A PostgreSQL array.
    List(Item),
}

/// The element of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Bool,
    Int,
    Float,
    Text,
}

impl Kind {
    /// The Arrow type the value is read into.
    fn read_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::List(item) => list(match item {
                Item::Bool => DataType::Boolean,
                Item::Int => DataType::Int64,
                Item::Float => DataType::Float64,
                Item::Text => DataType::Utf8,
            }),
        }
    }

    /// The kind a configured cast reads: `casts = { col = "text" }`.
    fn of_cast(cast: &str) -> Kind {
        match cast.to_ascii_lowercase().as_str() {
            "bigint" | "int8" | "int" | "integer" | "signed" => Kind::Int,
            "double precision" | "float8" | "double" | "float" | "real" => Kind::Float,
            "boolean" | "bool" => Kind::Bool,
            _ => Kind::Text,
        }
    }
}

pub(crate) fn list(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

/// One column of a source: how it is selected, read and typed.
#[derive(Debug, Clone)]
pub(crate) struct SqlColumn {
    /// Its name in the result.
    pub name: String,
    /// How it is read.
    pub kind: Kind,
    /// Its type in the lake.
    pub arrow: DataType,
    /// The expression that selects it from the source's result, aliased `q`.
    pub expr: String,
}

impl SqlColumn {
    pub fn new(name: &str, kind: Kind, arrow: DataType, expr: String) -> Self {
        SqlColumn {
            name: name.to_string(),
            kind,
            arrow,
            expr,
        }
    }

    /// A column read as it is, with the type it is read in.
    pub fn plain(name: &str, kind: Kind, expr: String) -> Self {
        SqlColumn::new(name, kind, kind.read_type(), expr)
    }
}

/// What a database module does; the rest of the extract is shared.
#[async_trait::async_trait]
pub(crate) trait Driver: Send + Sync + 'static {
    /// An identifier, quoted.
    fn quote(&self, ident: &str) -> String {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }

    /// `expr` cast to the SQL type `sql_type`, the way this database writes it.
    fn cast(&self, expr: &str, sql_type: &str) -> String {
        format!("CAST({expr} AS {sql_type})")
    }

    /// This database's name for a text type, for `casts = { col = "text" }`.
    fn text_type(&self) -> &'static str;

    /// The columns of `base` (a SELECT): each with its type's name and, where lake maps the
    /// type, how to read it (an expression over `q`). Configured casts are applied after.
    async fn plan(&self, base: &str) -> Result<Vec<Planned>, String>;

    /// `expr` read as text, for `casts = { col = "text" }` on a column of type `type_name`.
    fn text_of(&self, expr: &str, _type_name: &str) -> String {
        self.cast(expr, self.text_type())
    }

    /// Runs `sql` inside one snapshot and sends every row to `sink`.
    async fn read(&self, sql: &str, sink: &mut Sink) -> Result<(), SourceError>;

    /// A literal of a timestamp, `micros` after the epoch, for the cursor's WHERE.
    fn timestamp_literal(&self, micros: i64, utc: bool) -> String {
        let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
        if utc {
            format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00:00"))
        } else {
            format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
        }
    }

    /// `sql` limited to its first row.
    fn first_row(&self, sql: &str) -> String {
        format!("{sql} LIMIT 1")
    }

    /// `SELECT exprs FROM (base) AS q [WHERE filter]`.
    fn select(&self, exprs: &str, base: &str, filter: Option<&str>) -> String {
        match filter {
            Some(f) => format!("SELECT {exprs} FROM ({base}) AS q WHERE {f}"),
            None => format!("SELECT {exprs} FROM ({base}) AS q"),
        }
    }
}

/// A column as a database describes it.
pub(crate) struct Planned {
    /// Its name in the result.
    pub name: String,
    /// The database's name for its type.
    pub type_name: String,
    /// How lake reads it, or `None` for a type lake does not map.
    pub col: Option<SqlColumn>,
}

impl Planned {
    pub fn mapped(type_name: &str, col: SqlColumn) -> Self {
        Planned {
            name: col.name.clone(),
            type_name: type_name.to_string(),
            col: Some(col),
        }
    }

    pub fn unmapped(name: &str, type_name: &str) -> Self {
        Planned {
            name: name.to_string(),
            type_name: type_name.to_string(),
            col: None,
        }
    }
}

/// The columns of source `source`: as the driver reads them, or as `casts` say. A type lake
/// does not map, without a cast, is an error naming the column and the cast to add.
fn apply_casts(
    driver: &dyn Driver,
    source: &str,
    planned: Vec<Planned>,
    casts: &BTreeMap<String, String>,
) -> Result<Vec<SqlColumn>, String> {
    planned
        .into_iter()
        .map(|p| match (casts.get(&p.name), &p.col) {
            (Some(cast), _) => cast_col(driver, &p, cast),
            (None, Some(col)) => Ok(col.clone()),
            (None, None) => Err(format!(
                "column `{0}` has type {1}, which lake does not map; add `casts = {{ {0} = \"text\" }}` to [sources.{source}]",
                p.name, p.type_name
            )),
        })
        .collect()
}

/// A configured cast, or an error if the cast is not a plain type name.
fn cast_col(driver: &dyn Driver, p: &Planned, cast: &str) -> Result<SqlColumn, String> {
    if !cast
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
    {
        return Err(format!("casts.{} = `{cast}` is not a type name", p.name));
    }
    let expr = format!("q.{}", driver.quote(&p.name));
    let kind = Kind::of_cast(cast);
    let read = if kind == Kind::Text {
        driver.text_of(&expr, &p.type_name)
    } else {
        driver.cast(&expr, cast)
    };
    Ok(SqlColumn::plain(&p.name, kind, read))
}

/// Arrow builders for one batch, filled a value at a time by a driver.
pub(crate) struct Batcher {
    cols: Arc<[SqlColumn]>,
    schema: SchemaRef,
    builders: Vec<Box<dyn ArrayBuilder>>,
}

macro_rules! builder {
    ($self:ident, $i:expr, $t:ty) => {
        $self.builders[$i]
            .as_any_mut()
            .downcast_mut::<$t>()
            .expect("the builder matches the column's kind")
    };
}

impl Batcher {
    fn new(cols: Arc<[SqlColumn]>, schema: SchemaRef) -> Self {
        let builders = cols.iter().map(|c| new_builder(c.kind)).collect();
        Batcher {
            cols,
            schema,
            builders,
        }
    }

    /// The columns being read.
    pub fn cols(&self) -> &[SqlColumn] {
        &self.cols
    }

    pub fn bool(&mut self, i: usize, v: Option<bool>) {
        builder!(self, i, BooleanBuilder).append_option(v);
    }

    pub fn int(&mut self, i: usize, v: Option<i64>) {
        builder!(self, i, Int64Builder).append_option(v);
    }

    pub fn float(&mut self, i: usize, v: Option<f64>) {
        builder!(self, i, Float64Builder).append_option(v);
    }

    pub fn text(&mut self, i: usize, v: Option<&str>) {
        builder!(self, i, StringBuilder).append_option(v);
    }

    pub fn bytes(&mut self, i: usize, v: Option<&[u8]>) {
        builder!(self, i, BinaryBuilder).append_option(v);
    }

    pub fn date(&mut self, i: usize, v: Option<NaiveDate>) {
        builder!(self, i, Date32Builder).append_option(v.map(|d| d.to_epoch_days()));
    }

    /// A timestamp, in microseconds after the epoch.
    pub fn timestamp(&mut self, i: usize, v: Option<i64>) {
        builder!(self, i, TimestampMicrosecondBuilder).append_option(v);
    }

    /// A list (a PostgreSQL array) into a column of `ListBuilder<B>`.
    pub fn list<B, T>(&mut self, i: usize, v: Option<Vec<Option<T>>>)
    where
        B: ArrayBuilder + Extend<Option<T>>,
    {
        let b = builder!(self, i, ListBuilder<B>);
        match v {
            Some(items) => {
                b.values().extend(items);
                b.append(true);
            }
            None => b.append(false),
        }
    }

    /// The batch so far, each column cast from how it was read to its type in the lake; a
    /// value that does not fit (text that is not a decimal of the column's scale) is an error
    /// naming the column, never a silent null.
    fn finish(&mut self) -> Result<RecordBatch, SourceError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let mut rows = 0;
        for (b, col) in self.builders.iter_mut().zip(self.cols.iter()) {
            let array = b.finish();
            rows = array.len();
            columns.push(if array.data_type() == &col.arrow {
                array
            } else {
                let options = CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(&array, &col.arrow, &options).map_err(|e| {
                    format!(
                        "column `{}`: a value does not fit {}: {e}",
                        col.name, col.arrow
                    )
                })?
            });
        }
        // Columns lake adds (`_deleted_at`) are null for rows read from the source.
        for field in &self.schema.fields()[self.cols.len()..] {
            columns.push(new_null_array(field.data_type(), rows));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn new_builder(kind: Kind) -> Box<dyn ArrayBuilder> {
    match kind {
        Kind::Bool => Box::new(BooleanBuilder::new()),
        Kind::Int => Box::new(Int64Builder::new()),
        Kind::Float => Box::new(Float64Builder::new()),
        Kind::Text => Box::new(StringBuilder::new()),
        Kind::Bytes => Box::new(BinaryBuilder::new()),
        Kind::Date => Box::new(Date32Builder::new()),
        Kind::Timestamp => Box::new(TimestampMicrosecondBuilder::new()),
        Kind::TimestampUtc => Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        Kind::List(Item::Bool) => Box::new(ListBuilder::new(BooleanBuilder::new())),
        Kind::List(Item::Int) => Box::new(ListBuilder::new(Int64Builder::new())),
        Kind::List(Item::Float) => Box::new(ListBuilder::new(Float64Builder::new())),
        Kind::List(Item::Text) => Box::new(ListBuilder::new(StringBuilder::new())),
    }
}

/// Where a driver sends rows: a batch is sent every `batch_rows` rows.
pub(crate) struct Sink {
    batcher: Batcher,
    tx: tokio::sync::mpsc::Sender<Result<RecordBatch, SourceError>>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
    batch_rows: usize,
    in_batch: usize,
    total: u64,
}

impl Sink {
    /// The builders of the current row.
    pub fn row(&mut self) -> &mut Batcher {
        &mut self.batcher
    }

    /// Ends a row; false when the reader is gone and reading should stop.
    pub async fn end_row(&mut self) -> Result<bool, SourceError> {
        self.in_batch += 1;
        if self.in_batch < self.batch_rows {
            return Ok(true);
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Result<bool, SourceError> {
        if self.in_batch == 0 {
            return Ok(true);
        }
        let batch = self.batcher.finish()?;
        self.total += self.in_batch as u64;
        self.in_batch = 0;
        (self.progress)(self.total);
        Ok(self.tx.send(Ok(batch)).await.is_ok())
    }
}

/// Appends one sqlx row: every column but lists, which only PostgreSQL has and reads itself.
pub(crate) fn append_sqlx<'r, R>(row: &'r R, b: &mut Batcher) -> Result<(), SourceError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    NaiveDate: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    NaiveDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let cols = b.cols.clone();
    for (i, col) in cols.iter().enumerate() {
        let named = |e: sqlx::Error| -> SourceError {
            format!("failed to read column `{}`: {e}", col.name).into()
        };
        match col.kind {
            Kind::Bool => b.bool(i, row.try_get(i).map_err(named)?),
            Kind::Int => b.int(i, row.try_get(i).map_err(named)?),
            Kind::Float => b.float(i, row.try_get(i).map_err(named)?),
            Kind::Text => b.text(i, row.try_get(i).map_err(named)?),
            Kind::Bytes => b.bytes(i, row.try_get(i).map_err(named)?),
            Kind::Date => b.date(i, row.try_get(i).map_err(named)?),
            Kind::Timestamp => {
                let v: Option<NaiveDateTime> = row.try_get(i).map_err(named)?;
                b.timestamp(i, v.map(|t| t.and_utc().timestamp_micros()));
            }
            Kind::TimestampUtc => {
                let v: Option<DateTime<Utc>> = row.try_get(i).map_err(named)?;
                b.timestamp(i, v.map(|t| t.timestamp_micros()));
            }
            Kind::List(_) => {}
        }
    }
    Ok(())
}

/// A source's query as a write source: each stream reads a fresh snapshot.
struct SqlSource {
    driver: Arc<dyn Driver>,
    sql: String,
    cols: Arc<[SqlColumn]>,
    schema: SchemaRef,
    batch_rows: usize,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
    /// Whether the database has said the merge keys are unique in what is read.
    keys_unique: bool,
}

impl BatchSource for SqlSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn keys_unique(&self) -> bool {
        self.keys_unique
    }

    fn stream(&self) -> BoxStream<'static, Result<RecordBatch, SourceError>> {
        // A reader task fills a queue of two batches: the database is read while the lake
        // writes, and memory holds at most a few batches.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, SourceError>>(2);
        let mut sink = Sink {
            batcher: Batcher::new(self.cols.clone(), self.schema.clone()),
            tx,
            progress: self.progress.clone(),
            batch_rows: self.batch_rows,
            in_batch: 0,
            total: 0,
        };
        let (driver, sql) = (self.driver.clone(), self.sql.clone());
        tokio::spawn(async move {
            let result = match driver.read(&sql, &mut sink).await {
                Ok(()) => sink.flush().await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let _ = sink.tx.send(Err(e)).await;
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}

/// Reads a small query whole: the cursor's maximum, the source's keys.
async fn read_all(
    driver: &Arc<dyn Driver>,
    sql: String,
    cols: Vec<SqlColumn>,
) -> Result<Vec<RecordBatch>, SourceError> {
    let cols: Arc<[SqlColumn]> = cols.into();
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(&c.name, c.arrow.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let source = SqlSource {
        driver: driver.clone(),
        sql,
        cols,
        schema,
        batch_rows: 65536,
        progress: Arc::new(|_| {}),
        keys_unique: false,
    };
    source
        .stream()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// An incremental source's position, saved with the commit that landed the rows up to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceCursor {
    /// The cursor column.
    pub column: String,
    /// Its largest value read: an integer, days after the epoch for a date, or microseconds
    /// after the epoch for a timestamp.
    pub value: i64,
    /// How to read `value`.
    pub kind: CursorKind,
}

/// What a cursor's value counts; saved as `int`, `date`, `timestamp` or `timestamptz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CursorKind {
    /// An increasing integer.
    Int,
    /// Days after the epoch.
    Date,
    /// Microseconds after the epoch, without a time zone.
    Timestamp,
    /// Microseconds after the epoch, in UTC.
    Timestamptz,
}

impl SourceCursor {
    fn of(col: &SqlColumn, value: i64) -> Option<SourceCursor> {
        let kind = match col.kind {
            Kind::Int => CursorKind::Int,
            Kind::Date => CursorKind::Date,
            Kind::Timestamp => CursorKind::Timestamp,
            Kind::TimestampUtc => CursorKind::Timestamptz,
            _ => return None,
        };
        Some(SourceCursor {
            column: col.name.clone(),
            value,
            kind,
        })
    }

    /// For messages: `2024-01-01 12:00:00 UTC`, `1234`.
    pub fn display(&self) -> String {
        match self.kind {
            CursorKind::Int => self.value.to_string(),
            CursorKind::Date => date_of(self.value),
            CursorKind::Timestamp | CursorKind::Timestamptz => {
                let t = DateTime::from_timestamp_micros(self.value).unwrap_or_default();
                let s = t.format("%Y-%m-%d %H:%M:%S%.f").to_string();
                if self.kind == CursorKind::Timestamptz {
                    s + " UTC"
                } else {
                    s
                }
            }
        }
    }

    /// The literal of `value`, in this cursor's unit, as `driver` writes it.
    fn literal(&self, driver: &dyn Driver, value: i64) -> String {
        match self.kind {
            CursorKind::Int => value.to_string(),
            CursorKind::Date => format!("'{}'", date_of(value)),
            CursorKind::Timestamp => driver.timestamp_literal(value, false),
            CursorKind::Timestamptz => driver.timestamp_literal(value, true),
        }
    }

    /// The WHERE that reads from `self` minus `lookback`.
    fn filter(&self, driver: &dyn Driver, col: &SqlColumn, lookback: i64) -> String {
        let from = self.literal(driver, self.value.saturating_sub(lookback));
        format!("{} >= {from}", col.expr)
    }
}

/// `2024-01-01`, `days` after the epoch.
fn date_of(days: i64) -> String {
    i32::try_from(days)
        .ok()
        .and_then(NaiveDate::from_epoch_days)
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// The lookback in the cursor's unit: `2h` for a timestamp (microseconds), `3d` for a date
/// (days), a number for an integer.
fn lookback(name: &str, text: Option<&str>, kind: Kind) -> Result<i64, ExtractError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let bad = |why: &str| fail(name, format!("lookback = \"{text}\": {why}"));
    match kind {
        Kind::Int => text
            .parse::<i64>()
            .map_err(|_| bad("an integer cursor takes a number of ids")),
        Kind::Date | Kind::Timestamp | Kind::TimestampUtc => {
            let d = humantime::parse_duration(text)
                .map_err(|e| bad(&format!("{e}; write it as 30s, 15m, 2h or 1d")))?;
            let micros = i64::try_from(d.as_micros()).map_err(|_| bad("too long"))?;
            Ok(if kind == Kind::Date {
                (micros + 86_399_999_999) / 86_400_000_000
            } else {
                micros
            })
        }
        _ => Err(bad("the cursor is not a number, date or timestamp")),
    }
}

/// The cursor saved by the latest of this source's commits to its table, if any.
async fn saved_cursor(
    lake: &Lake,
    table: &TableName,
    name: &str,
) -> Result<Option<SourceCursor>, ExtractError> {
    use futures::TryStreamExt;
    let Ok(t) = lake.table(table, None, None).await else {
        return Ok(None);
    };
    // Maintenance commits (OPTIMIZE, VACUUM) carry no cursor: look back past them.
    let commits: Vec<_> = t
        .history(Some(100))
        .try_collect()
        .await
        .map_err(|e| fail(name, format!("failed to read the history of {table}: {e}")))?;
    for c in commits {
        if let Some(v) = c.info.get(SOURCE_CURSOR_KEY) {
            let cursor: SourceCursor = serde_json::from_value(v.clone()).map_err(|e| {
                fail(
                    name,
                    format!("failed to read the cursor saved in {table}: {e}"),
                )
            })?;
            return Ok(Some(cursor));
        }
    }
    Ok(None)
}

fn driver_for(
    name: &str,
    src: &SourceSettings,
    project_dir: &std::path::Path,
) -> Result<(Arc<dyn Driver>, String), ExtractError> {
    let url = src
        .url
        .as_ref()
        .map(|u| u.expose_secret().to_string())
        .ok_or_else(|| fail(name, "no `url`"))?;
    let password = src.password.as_ref().map(|p| p.expose_secret().to_string());
    let redacted = crate::db::redact_url(&url);
    let scheme = url
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let driver: Arc<dyn Driver> = match scheme.as_str() {
        "postgres" | "postgresql" => Arc::new(postgres::Postgres::new(&url, password)),
        "mysql" | "mariadb" => Arc::new(mysql::Mysql::new(&url, password)),
        "sqlite" => Arc::new(sqlite::Sqlite::new(&url, project_dir)),
        "mssql" | "sqlserver" => Arc::new(mssql::Mssql::new(&url, password)),
        other => {
            return Err(fail(
                name,
                format!(
                    "`{other}://` is not a SQL source lake reads; use postgres://, mysql://, sqlite:// or mssql://"
                ),
            ));
        }
    };
    Ok((driver, redacted))
}

/// Extracts one source into its raw table.
pub async fn extract(
    lake: &Lake,
    name: &str,
    src: &SourceSettings,
    options: SqlOptions,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<SqlReport, ExtractError> {
    let table = target(name, src)?;
    let (driver, redacted) = driver_for(name, src, &options.project_dir)?;
    let base = match (&src.table, &src.query) {
        (Some(t), None) => format!(
            "SELECT * FROM {}",
            t.split('.')
                .map(|p| driver.quote(p))
                .collect::<Vec<_>>()
                .join(".")
        ),
        (None, Some(q)) => q.trim().trim_end_matches(';').to_string(),
        _ => return Err(fail(name, "give exactly one of `table` and `query`")),
    };
    let what = match &src.table {
        Some(t) => format!("table {t}"),
        None => "the query".to_string(),
    };
    let cols = match driver.plan(&base).await {
        Ok(planned) => apply_casts(&*driver, name, planned, &src.casts),
        Err(e) => Err(e),
    }
    .map_err(|e| fail(name, format!("{e} (at {redacted}, reading {what})")))?;
    let col = |c: &str, role: &str| -> Result<SqlColumn, ExtractError> {
        cols.iter().find(|x| x.name == c).cloned().ok_or_else(|| {
            let names: Vec<&str> = cols.iter().map(|x| x.name.as_str()).collect();
            fail(
                name,
                format!(
                    "the {role} column `{c}` is not a column of {what}; its columns are: {}",
                    names.join(", ")
                ),
            )
        })
    };
    let mut fields: Vec<Field> = cols
        .iter()
        .map(|c| Field::new(&c.name, c.arrow.clone(), true))
        .collect();
    let exprs = cols
        .iter()
        .map(|c| format!("{} AS {}", c.expr, driver.quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let batch_rows = src.batch_rows.unwrap_or(8192).max(1) as usize;
    let mut metadata = vec![
        ("lake.command".to_string(), serde_json::json!("extract sql")),
        ("lake.source".to_string(), serde_json::json!(name)),
    ];

    if src.mode == SourceMode::Full {
        let schema = Arc::new(Schema::new(fields));
        let source = Arc::new(SqlSource {
            driver: driver.clone(),
            sql: driver.select(&exprs, &base, None),
            cols: cols.into(),
            schema,
            batch_rows,
            progress,
            keys_unique: false,
        });
        // The table mirrors the source: its rows and its columns, even when a column's type
        // changed or a column was dropped at the source.
        let outcome = write(lake, &table, source, &WriteMode::Rebuild(vec![]), &metadata)
            .await
            .map_err(|e| fail(name, e))?;
        return Ok(SqlReport {
            source: name.to_string(),
            table,
            rows: outcome.rows_read,
            version: Some(outcome.version),
            cursor: None,
            deleted: None,
        });
    }

    // Incremental.
    let cursor_col = col(
        src.cursor
            .as_deref()
            .ok_or_else(|| fail(name, "mode = \"incremental\" needs `cursor`"))?,
        "cursor",
    )?;
    if src.primary_key.is_empty() {
        return Err(fail(
            name,
            "mode = \"incremental\" needs `primary_key`, the columns the merge matches on",
        ));
    }
    let keys: Vec<SqlColumn> = src
        .primary_key
        .iter()
        .map(|k| col(k, "primary key"))
        .collect::<Result<_, _>>()?;
    let lookback = lookback(name, src.lookback.as_deref(), cursor_col.kind)?;
    if SourceCursor::of(&cursor_col, 0).is_none() {
        return Err(fail(
            name,
            format!(
                "the cursor column `{}` is {}; a cursor must be an integer, a date or a timestamp",
                cursor_col.name, cursor_col.arrow
            ),
        ));
    }
    let before = saved_cursor(lake, &table, name).await?;
    if let Some(b) = &before
        && b.column != cursor_col.name
    {
        return Err(fail(
            name,
            format!(
                "{table} was read with cursor `{}`, not `{}`; run it once with mode = \"full\" to start over",
                b.column, cursor_col.name
            ),
        ));
    }
    let filter = before
        .as_ref()
        .map(|c| c.filter(&*driver, &cursor_col, lookback));
    // The new cursor is read before the rows: every row up to it is then in the read, and a row
    // that commits later with a smaller value is what the lookback is for.
    let max_sql = driver.select(
        &format!("MAX({}) AS {}", cursor_col.expr, driver.quote("m")),
        &base,
        filter.as_deref(),
    );
    let max_col = SqlColumn::plain("m", cursor_col.kind, String::new());
    let max = read_all(&driver, max_sql, vec![max_col])
        .await
        .map_err(|e| {
            fail(
                name,
                format!("failed to read the largest `{}`: {e}", cursor_col.name),
            )
        })?;
    // Never backwards: when the rows at the saved cursor are gone, it stays where it was.
    let after = max_value(&max)
        .map(|v| before.as_ref().map_or(v, |b| v.max(b.value)))
        .and_then(|v| SourceCursor::of(&cursor_col, v));
    let mut report = SqlReport {
        source: name.to_string(),
        table: table.clone(),
        rows: 0,
        version: None,
        cursor: Some((
            before.as_ref().map(SourceCursor::display),
            after
                .as_ref()
                .or(before.as_ref())
                .map(SourceCursor::display),
        )),
        deleted: None,
    };
    let saved = after.clone().or(before.clone());
    // A cursor that has not moved, with no lookback to re-read, means nothing new: the rows at
    // the cursor itself were read last time.
    let nothing_new = lookback == 0 && before.is_some() && after == before;
    if let Some(after) = after.as_ref().filter(|_| !nothing_new) {
        fields.push(Field::new(DELETED_AT, Kind::TimestampUtc.read_type(), true));
        let schema = Arc::new(Schema::new(fields.clone()));
        metadata.push((
            SOURCE_CURSOR_KEY.to_string(),
            serde_json::to_value(after).expect("json"),
        ));
        // The database checks that the key is unique in what is read, so the merge need not
        // dedupe (which would hold the whole read in memory), and a key that is not one is an
        // error, not rows silently dropped.
        unique_keys(&driver, name, &base, &keys, filter.as_deref()).await?;
        let source = Arc::new(SqlSource {
            driver: driver.clone(),
            sql: driver.select(&exprs, &base, filter.as_deref()),
            cols: cols.clone().into(),
            schema,
            batch_rows,
            progress,
            keys_unique: true,
        });
        let outcome = write(
            lake,
            &table,
            source,
            &WriteMode::Merge(src.primary_key.clone()),
            &metadata,
        )
        .await
        .map_err(|e| fail(name, e))?;
        report.rows = outcome.rows_read;
        report.version = Some(outcome.version);
    }
    if options.detect_deletes && lake.table(&table, None, None).await.is_ok() {
        let (deleted, version) =
            mark_deleted(lake, &driver, name, &table, &base, &keys, saved.as_ref())
                .await
                .map_err(|e| match (e, report.version) {
                    // Say what did land.
                    (ExtractError::Sql { name, message }, Some(v)) => ExtractError::Sql {
                        name,
                        message: format!("{message}; the rows read landed as version {v}"),
                    },
                    (e, _) => e,
                })?;
        report.deleted = Some(deleted);
        if version.is_some() {
            report.version = version;
        }
    }
    Ok(report)
}

fn max_value(batches: &[RecordBatch]) -> Option<i64> {
    let column = batches.first()?.column(0);
    if column.is_null(0) {
        return None;
    }
    let any = column.as_any();
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        Some(a.value(0))
    } else if let Some(a) = any.downcast_ref::<Date32Array>() {
        Some(a.value(0) as i64)
    } else {
        any.downcast_ref::<TimestampMicrosecondArray>()
            .map(|a| a.value(0))
    }
}

/// Fails, naming a repeated key, unless `keys` are unique among the rows `filter` selects.
async fn unique_keys(
    driver: &Arc<dyn Driver>,
    name: &str,
    base: &str,
    keys: &[SqlColumn],
    filter: Option<&str>,
) -> Result<(), ExtractError> {
    let selected: Vec<String> = keys
        .iter()
        .map(|k| format!("{} AS {}", k.expr, driver.quote(&k.name)))
        .collect();
    let grouped: Vec<&str> = keys.iter().map(|k| k.expr.as_str()).collect();
    let sql = driver.first_row(&format!(
        "{} GROUP BY {} HAVING COUNT(*) > 1",
        driver.select(&selected.join(", "), base, filter),
        grouped.join(", ")
    ));
    let repeated = read_all(driver, sql, keys.to_vec())
        .await
        .map_err(|e| fail(name, format!("failed to check the primary key: {e}")))?;
    let Some(batch) = repeated.iter().find(|b| b.num_rows() > 0) else {
        return Ok(());
    };
    let example = keys
        .iter()
        .zip(batch.columns())
        .map(|(k, c)| {
            let v = arrow::util::display::array_value_to_string(c, 0).unwrap_or_default();
            format!("{} = {v}", k.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(fail(
        name,
        format!(
            "the primary key ({}) is not unique at the source: {example} is on more than one row; set `primary_key` to the columns that identify a row",
            keys.iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Reads the source's keys and marks the table's rows whose key is gone: their `_deleted_at`
/// becomes now, in one merge commit that keeps the cursor. Returns how many were marked.
async fn mark_deleted(
    lake: &Lake,
    driver: &Arc<dyn Driver>,
    name: &str,
    table: &TableName,
    base: &str,
    keys: &[SqlColumn],
    cursor: Option<&SourceCursor>,
) -> Result<(u64, Option<u64>), ExtractError> {
    let exprs = keys
        .iter()
        .map(|k| format!("{} AS {}", k.expr, driver.quote(&k.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let source_keys = read_all(driver, driver.select(&exprs, base, None), keys.to_vec())
        .await
        .map_err(|e| fail(name, format!("failed to read the keys: {e}")))?;
    let session = crate::query::LakeSession::new(Arc::new(lake.clone()))
        .await
        .map_err(|e| fail(name, e))?;
    let ctx = session.context();
    let schema = Arc::new(Schema::new(
        keys.iter()
            .map(|k| Field::new(&k.name, k.arrow.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let mem = datafusion::datasource::MemTable::try_new(schema, vec![source_keys])
        .map_err(|e| fail(name, e))?;
    ctx.register_table("__lake_source_keys", Arc::new(mem))
        .map_err(|e| fail(name, e))?;
    let on = keys
        .iter()
        .map(|k| format!("k.\"{0}\" = t.\"{0}\"", k.name.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!(
        "SELECT * EXCLUDE (\"{DELETED_AT}\") FROM {table} AS t WHERE t.\"{DELETED_AT}\" IS NULL AND NOT EXISTS (SELECT 1 FROM __lake_source_keys AS k WHERE {on})"
    );
    let df = session.sql(&sql).await.map_err(|e| fail(name, e))?;
    let gone = df.collect().await.map_err(|e| fail(name, e))?;
    let count: usize = gone.iter().map(RecordBatch::num_rows).sum();
    if count == 0 {
        return Ok((0, None));
    }
    // The rows as they are, with `_deleted_at` set to now.
    let now = Utc::now().timestamp_micros();
    let mut fields: Vec<Field> = gone[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(DELETED_AT, Kind::TimestampUtc.read_type(), true));
    let schema = Arc::new(Schema::new(fields));
    let batches = gone
        .into_iter()
        .map(|b| {
            let mut columns = b.columns().to_vec();
            columns.push(Arc::new(
                TimestampMicrosecondArray::from(vec![now; b.num_rows()]).with_timezone("UTC"),
            ));
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(name, e))?;
    let mut metadata = vec![
        (
            "lake.command".to_string(),
            serde_json::json!("extract sql --detect-deletes"),
        ),
        ("lake.source".to_string(), serde_json::json!(name)),
    ];
    if let Some(c) = cursor {
        metadata.push((
            SOURCE_CURSOR_KEY.to_string(),
            serde_json::to_value(c).expect("json"),
        ));
    }
    let key_names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    let outcome = write(
        lake,
        table,
        Arc::new(MemorySource { schema, batches }),
        &WriteMode::Merge(key_names),
        &metadata,
    )
    .await
    .map_err(|e| fail(name, e))?;
    Ok((count as u64, Some(outcome.version)))
}
