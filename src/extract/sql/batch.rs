//! Rows into Arrow batches: the builders a driver fills a value at a time, the queue of two
//! batches between the reader task and the lake, and a source's query as a write source.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder,
    Int64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
    new_null_array,
};
use arrow::compute::CastOptions;
use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{Driver, Item, Kind, SqlColumn};
use crate::lake::write::{BatchSource, SourceError};

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
pub(crate) struct SqlSource {
    pub(super) driver: Arc<dyn Driver>,
    pub(super) sql: String,
    pub(super) cols: Arc<[SqlColumn]>,
    pub(super) schema: SchemaRef,
    pub(super) batch_rows: usize,
    pub(super) progress: Arc<dyn Fn(u64) + Send + Sync>,
    /// Whether the database has said the merge keys are unique in what is read.
    pub(super) keys_unique: bool,
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
pub(crate) async fn read_all(
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

/// Sends every row of `sql`, read on `conn` (a snapshot the caller holds), to `sink`; false
/// when the reader went away and reading stopped.
pub(crate) async fn send_rows<DB>(
    conn: &mut DB::Connection,
    sql: &str,
    sink: &mut Sink,
) -> Result<bool, SourceError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'r> bool: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> f64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> &'r str: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> &'r [u8]: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> NaiveDate: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> NaiveDateTime: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
{
    let mut rows = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql.to_string())).fetch(&mut *conn);
    while let Some(row) = rows.next().await {
        append_sqlx(&row?, sink.row())?;
        if !sink.end_row().await? {
            return Ok(false);
        }
    }
    Ok(true)
}
