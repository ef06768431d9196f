//! Export: curated tables into the warehouse Power BI reads (PostgreSQL, MySQL/MariaDB, or the
//! embedded default SQLite).
//!
//! A table is loaded into a staging table and swapped in atomically, so readers see the whole
//! old table or the whole new one: a transactional drop-and-rename on PostgreSQL, one
//! `RENAME TABLE` of both on MySQL, one transaction on SQLite. Rows stream from the lake in
//! batches (COPY on PostgreSQL, multi-row INSERTs on MySQL, prepared INSERTs in one transaction
//! on SQLite), so memory stays bounded however large the table.

mod plan;
pub mod types;
mod warehouse;

pub use plan::{Planned, plan, target};
pub use types::Dialect;
pub use warehouse::{LoadMode, Target, Warehouse};

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::lake::write::{MemorySource, WriteMode, write};
use crate::lake::{INTERNAL, Lake, LakeError, TableName};

/// Errors from the export stage. None of them holds a password: URLs are shown redacted.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The warehouse URL or TLS settings are wrong.
    #[error("failed to configure the warehouse: {0}")]
    Config(String),
    /// The warehouse does not answer or refuses the login.
    #[error("failed to connect to the warehouse {warehouse}: {cause}")]
    Connect {
        /// The URL, password redacted.
        warehouse: String,
        /// Why.
        cause: sqlx::Error,
    },
    /// A statement failed while loading a table; the old table is untouched.
    #[error("failed to load {target} in the warehouse: {cause}; the table there is unchanged")]
    Load {
        /// The target table.
        target: String,
        /// Why.
        cause: sqlx::Error,
    },
    /// A value that cannot be sent as its column's type.
    #[error("failed to encode a value for {target}: {cause}; the table there is unchanged")]
    Encode {
        /// The target table.
        target: String,
        /// Why.
        cause: arrow::error::ArrowError,
    },
    /// A lake table could not be read.
    #[error("failed to read {table} for export: {cause}")]
    Read {
        /// The table.
        table: TableName,
        /// Why.
        cause: datafusion::error::DataFusionError,
    },
    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// A session over the lake does not open or plan.
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    /// A selector matches nothing, or the project does not load.
    #[error(transparent)]
    Selection(#[from] crate::transform::TransformError),
    /// A view was selected: it has no rows of its own to load.
    #[error("failed to export {0}: it is a view; make it a table to export it")]
    View(TableName),
    /// A model marked for export was never built.
    #[error("failed to export {0}: it is not built yet; run `lake run` first")]
    NotBuilt(TableName),
    /// Nothing matches.
    #[error("failed to export: no curated table matches; build models with `lake run` first")]
    NothingToExport,
}

/// A `Result` whose error is a [`ExportError`].
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// How one planned table's export ended.
#[derive(Debug)]
pub enum ExportOutcome {
    /// Loaded, upserted, or found in the warehouse at its current version already.
    Done(Exported),
    /// Not exported: its error-level tests failed in this run.
    HeldBack {
        /// The run whose tests failed.
        run_id: String,
    },
    /// Failed; the warehouse keeps its previous version.
    Failed(ExportError),
}

/// What an export did, table by table, in plan order.
#[derive(Debug, Default)]
pub struct ExportReport {
    /// Each planned table and how it ended.
    pub tables: Vec<(TableName, ExportOutcome)>,
}

impl ExportReport {
    fn matching(&self, f: impl Fn(&ExportOutcome) -> bool) -> Vec<&TableName> {
        self.tables
            .iter()
            .filter(|(_, o)| f(o))
            .map(|(t, _)| t)
            .collect()
    }

    /// Loaded or upserted.
    pub fn loaded(&self) -> Vec<&TableName> {
        self.matching(|o| matches!(o, ExportOutcome::Done(e) if !e.unchanged))
    }

    /// Already in the warehouse at their current version.
    pub fn unchanged(&self) -> Vec<&TableName> {
        self.matching(|o| matches!(o, ExportOutcome::Done(e) if e.unchanged))
    }

    /// Held back because their error-level tests failed.
    pub fn held_back(&self) -> Vec<&TableName> {
        self.matching(|o| matches!(o, ExportOutcome::HeldBack { .. }))
    }

    /// Failed to load.
    pub fn failed(&self) -> Vec<&TableName> {
        self.matching(|o| matches!(o, ExportOutcome::Failed(_)))
    }
}

/// Models whose latest run ended with failed error-level tests, with that run's id: the
/// export holds them back until a run passes.
pub async fn held_back(lake: &Arc<Lake>) -> Result<Vec<(TableName, String)>> {
    use crate::transform::run::Status;
    let runs = crate::transform::runs::table();
    let session = crate::query::LakeSession::new(lake.clone()).await?;
    if !session.tables().contains(&crate::transform::runs::table()) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT model, run_id FROM (SELECT model, run_id, status, row_number() OVER (PARTITION BY model ORDER BY finished_at DESC) AS r FROM _lake.runs WHERE model IS NOT NULL AND finished_at IS NOT NULL) WHERE r = 1 AND status = '{}'",
        Status::TestsFailed.name()
    );
    let batches = session
        .sql(&sql)
        .await?
        .collect()
        .await
        .map_err(|e| read_error(runs.clone(), e))?;
    let mut out = Vec::new();
    for b in batches {
        // Strings read back from Parquet may come as views.
        let text = |i: usize| {
            arrow::compute::cast(b.column(i), &DataType::Utf8)
                .map_err(|e| read_error(runs.clone(), e))
        };
        let (models, runs) = (text(0)?, text(1)?);
        for (model, run) in models
            .as_string::<i32>()
            .iter()
            .zip(runs.as_string::<i32>().iter())
        {
            if let (Some(model), Some(run)) = (model, run)
                && let Ok(model) = model.parse()
            {
                out.push((model, run.to_string()));
            }
        }
    }
    Ok(out)
}

fn read_error(table: TableName, e: impl Into<datafusion::error::DataFusionError>) -> ExportError {
    ExportError::Read {
        table,
        cause: e.into(),
    }
}

/// What one table's export did.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The lake table.
    pub table: TableName,
    /// Where it went.
    pub target: String,
    /// Rows loaded (none when unchanged).
    pub rows: Option<u64>,
    /// The lake version exported.
    pub version: u64,
    /// Time taken.
    pub duration: Duration,
    /// Nothing was loaded: the warehouse holds this version already.
    pub unchanged: bool,
    /// Only the rows new since the last export were upserted.
    pub upsert: bool,
    /// For a table that changed some rows: the rows whose key is gone, deleted.
    pub deleted: Option<u64>,
}

/// Column names, types and key, hashed: a change means the table is rebuilt through the
/// staging-and-swap path.
fn schema_hash(schema: &Schema, key: &[String]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for f in schema.fields() {
        h.update(f.name().as_bytes());
        h.update(b"\0");
        h.update(
            crate::lake::write::normalized_type(f.data_type())
                .to_string()
                .as_bytes(),
        );
        h.update(b"\n");
    }
    h.update(key.join(",").as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// What `_lake.exports` says of the last export of a table to a target.
struct LastExport {
    version: u64,
    shape: String,
}

/// Exports the table `name` at its current version to `target`, unless the warehouse holds
/// that version already (per `_lake.exports`). `progress` sees the rows read so far.
pub async fn export_table(
    lake: &Lake,
    warehouse: &Warehouse,
    name: &TableName,
    target: &Target,
    key: &[String],
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Exported> {
    let started = Instant::now();
    let table = lake.table(name, None, None).await?;
    let version = table.version().unwrap_or(0) as u64;
    let target_text = warehouse.describe(target);
    let last = last_exported(lake, name, &target_text, &warehouse.redacted()).await?;
    let exists = warehouse.exists(target).await?;
    let read_err = |e: datafusion::error::DataFusionError| ExportError::Read {
        table: name.clone(),
        cause: e.into(),
    };
    let ctx = lake.sessions().context(false)?;
    let schema: SchemaRef = Arc::new(
        ctx.read_table(
            crate::lake::scan::provider(&table, None)
                .await
                .map_err(read_err)?,
        )
        .map_err(read_err)?
        .schema()
        .as_arrow()
        .clone(),
    );
    let shape = schema_hash(&schema, key);
    if exists
        && last
            .as_ref()
            .is_some_and(|l| l.version == version && l.shape == shape)
    {
        return Ok(Exported {
            table: name.clone(),
            target: target_text,
            rows: None,
            version,
            duration: started.elapsed(),
            unchanged: true,
            upsert: false,
            deleted: None,
        });
    }
    // An incremental model whose table only gained rows since the last export, with the same
    // columns, is upserted with just those rows; anything else is reloaded whole and swapped.
    let mut diff_from = None;
    let since = match &last {
        Some(l) if exists && !key.is_empty() && l.shape == shape && l.version < version => {
            match crate::lake::changes::changes_since(name, &table, l.version, version).await? {
                crate::lake::changes::Changes::Added(files) => Some(files),
                why => {
                    // Rewritten (a table model rebuilt, or its touched groups replaced): the
                    // rows that differ from the version exported last, found by key.
                    tracing::info!(table = %name, "sending the rows that changed: {why}");
                    diff_from = Some(l.version);
                    None
                }
            }
        }
        _ => None,
    };
    let read = std::sync::atomic::AtomicU64::new(0);
    let batches = |df: datafusion::prelude::DataFrame| batches(df, name, &read, progress);
    let before = match diff_from {
        Some(from) => lake
            .table(name, Some(from), None)
            .await
            .ok()
            .map(|t| (from, t)),
        None => None,
    };
    // Rows upserted or loaded, rows deleted where the changes were sent, and the mode.
    let (rows, deleted, mode) = match before {
        Some((from, before)) => {
            let diff = crate::lake::changes::diff_since(name, &table, from, version).await?;
            let (changed, stale, gone) = differences(&ctx, &table, &before, &diff, key)
                .await
                .map_err(read_err)?;
            let deleted = gone.count().await.map_err(read_err)? as u64;
            let (rows, _) = warehouse
                .sync(
                    target,
                    &schema,
                    key,
                    batches(changed).await?,
                    batches(stale).await?,
                )
                .await?;
            (rows, Some(deleted), "changes")
        }
        None => {
            let upsert = since.is_some();
            let provider = crate::lake::scan::provider(&table, since.as_deref())
                .await
                .map_err(read_err)?;
            let df = ctx.read_table(provider).map_err(read_err)?;
            let (mode, name) = if upsert {
                (LoadMode::Upsert, "upsert")
            } else {
                (LoadMode::Replace, "replace")
            };
            let rows = warehouse
                .load(target, &schema, key, mode, batches(df).await?)
                .await?;
            (rows, None, name)
        }
    };
    let duration = started.elapsed();
    record(
        lake,
        &ExportRecord {
            table: name.to_string(),
            target: target_text.clone(),
            warehouse: warehouse.redacted(),
            rows: rows + deleted.unwrap_or(0),
            version,
            duration,
            at: Utc::now(),
            mode,
            shape,
        },
    )
    .await?;
    Ok(Exported {
        table: name.clone(),
        target: target_text,
        rows: Some(rows),
        version,
        duration,
        unchanged: false,
        upsert: mode != "replace",
        deleted,
    })
}

/// A query's rows on their way to the warehouse; `read` counts them for `progress`.
async fn batches<'a>(
    df: datafusion::prelude::DataFrame,
    name: &TableName,
    read: &'a std::sync::atomic::AtomicU64,
    progress: &'a (dyn Fn(u64) + Send + Sync),
) -> Result<warehouse::Batches<'a>> {
    let read_err = |e: datafusion::error::DataFusionError| ExportError::Read {
        table: name.clone(),
        cause: e.into(),
    };
    let stream = df.execute_stream().await.map_err(read_err)?;
    let name = name.clone();
    Ok(stream
        .map(move |b| {
            let b = b.map_err(|e| ExportError::Read {
                table: name.clone(),
                cause: e.into(),
            })?;
            let n = b.num_rows() as u64;
            progress(read.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n);
            Ok(b)
        })
        .boxed())
}

/// What a warehouse holding `before` needs to hold `after`: the rows of `after` that `before`
/// lacks as they are (new or changed); the keys of the rows of `before` that `after` lacks as
/// they are (changed or gone), deleted first, nulls matched, so that a row whose key holds a
/// null is replaced too; and the keys that are gone, to report. Where the log tells which
/// files the commits in between replaced (`diff`), only those and the files added are
/// compared: the files both versions share hold the same rows.
async fn differences(
    ctx: &datafusion::prelude::SessionContext,
    after: &deltalake::DeltaTable,
    before: &deltalake::DeltaTable,
    diff: &crate::lake::changes::Diff,
    key: &[String],
) -> Result<
    (
        datafusion::prelude::DataFrame,
        datafusion::prelude::DataFrame,
        datafusion::prelude::DataFrame,
    ),
    datafusion::error::DataFusionError,
> {
    let (added, removed) = match diff.incomplete {
        None => (Some(diff.added.clone()), Some(diff.removed_files(before))),
        Some(_) => (None, None),
    };
    let new = ctx.read_table(crate::lake::scan::provider(after, added.as_deref()).await?)?;
    let old = ctx.read_table(crate::lake::scan::provider(before, removed.as_deref()).await?)?;
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    let changed = new.clone().except(old.clone())?;
    let stale = old.clone().except(new.clone())?.select_columns(&keys)?;
    let gone = old
        .select_columns(&keys)?
        .except(new.select_columns(&keys)?)?;
    Ok((changed, stale, gone))
}

/// `_lake.exports`.
pub fn exports_table() -> TableName {
    TableName::new(INTERNAL, "exports").expect("a valid name")
}

struct ExportRecord {
    table: String,
    target: String,
    warehouse: String,
    rows: u64,
    version: u64,
    duration: Duration,
    at: DateTime<Utc>,
    mode: &'static str,
    shape: String,
}

async fn record(lake: &Lake, r: &ExportRecord) -> Result<(), LakeError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("warehouse", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("version", DataType::Int64, false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new(
            "exported_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("mode", DataType::Utf8, false),
        Field::new("schema_hash", DataType::Utf8, false),
    ]));
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v.to_string()])) };
    let int = |v: u64| -> ArrayRef { Arc::new(Int64Array::from(vec![v as i64])) };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            text(&r.table),
            text(&r.target),
            text(&r.warehouse),
            int(r.rows),
            int(r.version),
            int(r.duration.as_millis() as u64),
            Arc::new(
                TimestampMicrosecondArray::from(vec![r.at.timestamp_micros()]).with_timezone("UTC"),
            ),
            text(r.mode),
            text(&r.shape),
        ],
    )
    .map_err(|e| LakeError::Write {
        table: exports_table(),
        cause: Box::new(e),
    })?;
    let source = Arc::new(MemorySource {
        schema,
        batches: vec![batch],
    });
    write(lake, &exports_table(), source, &WriteMode::Append, &[]).await?;
    Ok(())
}

/// The lake version last exported from `table` to `target` on this warehouse, and its shape.
async fn last_exported(
    lake: &Lake,
    table: &TableName,
    target: &str,
    warehouse: &str,
) -> Result<Option<LastExport>> {
    let exports = match lake.table(&exports_table(), None, None).await {
        Ok(t) => t,
        Err(LakeError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let read_err = |e: datafusion::error::DataFusionError| ExportError::Read {
        table: exports_table(),
        cause: e.into(),
    };
    let ctx = lake.sessions().context(false)?;
    let provider = crate::lake::scan::provider(&exports, None)
        .await
        .map_err(read_err)?;
    // Records written before the schema hash existed have none: such a table reloads whole.
    let shape = if provider.schema().field_with_name("schema_hash").is_ok() {
        "schema_hash"
    } else {
        "CAST(NULL AS VARCHAR)"
    };
    ctx.register_table("exports", provider).map_err(read_err)?;
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let batches = ctx
        .sql(&format!(
            "SELECT version, {shape} FROM exports WHERE \"table\" = {} AND target = {} AND warehouse = {} ORDER BY exported_at DESC LIMIT 1",
            lit(&table.to_string()),
            lit(target),
            lit(warehouse)
        ))
        .await
        .map_err(read_err)?
        .collect()
        .await
        .map_err(read_err)?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let version = batch
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>();
    // Strings read back from Parquet may come as views.
    let shape =
        arrow::compute::cast(batch.column(1), &DataType::Utf8).map_err(|e| ExportError::Read {
            table: exports_table(),
            cause: e.into(),
        })?;
    let shape = shape.as_string::<i32>();
    Ok(Some(LastExport {
        version: version.value(0) as u64,
        shape: shape.value(0).to_string(),
    }))
}
