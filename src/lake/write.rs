//! Writing a source into a table in one Delta commit: append, overwrite or merge, with new
//! columns added and incompatible type changes refused before anything is written.
//!
//! A write that loses a commit race (another writer created the table, or changed it in a way
//! Delta cannot reconcile) is retried from the start against the new version, re-reading its
//! source. Parquet files of a failed attempt are never referenced by the log, so readers never
//! see them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, RecordBatch, UInt64Array, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::Column;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::functions_nested::expr_fn::array_has;
use datafusion::logical_expr::{Expr, lit, when};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::DeltaOperation;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::layout::{self, Layout};
use super::{Lake, LakeError, TableName, quote_ident};

/// Boxed error from a source, kept intact so the user sees the file and line.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// How many times a write is tried when it loses a commit race.
const MAX_ATTEMPTS: usize = 8;
/// The column that numbers incoming rows, so a merge keeps the last row of each key.
const ORDINAL: &str = "__lake_ordinal";
/// An optional column of a merge's input: per row, the list of columns whose values the source
/// did not send. A matched row keeps its stored value of those columns (a field Spotify stopped
/// sending is not a statement that the value became null); a column that is sent, null
/// included, is overwritten. New rows take what was sent. The column itself is never written.
pub const ABSENT: &str = "__lake_absent";

/// How a write treats the rows already in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Add the rows.
    Append,
    /// Replace all rows.
    Overwrite,
    /// Upsert on these key columns; within the input, the last row of a key wins.
    Merge(Vec<String>),
    /// Insert the rows whose key is not in the table yet and leave the rest alone: for facts
    /// that never change, such as plays. Within the input, the last row of a key wins.
    InsertNew(Vec<String>),
    /// Add rows the caller has checked against the table as it was at `version` (none of
    /// their keys was there): appended, without reading the table, when nothing was committed
    /// since; otherwise written as `otherwise` (a merge or an insert of new keys), so that a
    /// writer that landed the same keys meanwhile causes no duplicates. Within the input, keys
    /// must be unique.
    AppendChecked {
        /// The version the caller checked; `None` when the table did not exist.
        version: Option<u64>,
        /// The write to fall back to.
        otherwise: Box<WriteMode>,
    },
    /// Replace the rows that match the predicate, such as one playlist's or one day's rows;
    /// every incoming row must match it.
    Replace(Expr),
    /// Replace all rows and the schema, partitioned by these columns: a model's table, whose
    /// columns follow its SELECT even when a column's type changes.
    Rebuild(Vec<String>),
    /// Replace these files (their paths as the log names them) with the rows: the caller
    /// gives the rows of those files it keeps, and its own. The other files stay as they are,
    /// so the write costs the files it replaces, not the table. Where lake does not lay out
    /// the table's files itself (no sort key, partitions, new columns), the other files'
    /// rows are read and the table written anew, to the same effect.
    ReplaceFiles(Vec<String>),
}

impl WriteMode {
    /// The key columns of a merge or an insert of new keys.
    pub fn keys(&self) -> Option<&[String]> {
        match self {
            WriteMode::Merge(keys) | WriteMode::InsertNew(keys) => Some(keys),
            WriteMode::AppendChecked { otherwise, .. } => otherwise.keys(),
            _ => None,
        }
    }

    /// What this write does to `table` as it is now: an [`WriteMode::AppendChecked`] is an
    /// append (that must commit right after `version`) or its fallback.
    fn against(&self, table: &DeltaTable) -> (WriteMode, bool) {
        match self {
            WriteMode::AppendChecked { version, otherwise } => {
                if version.is_some() && table.version() == *version {
                    (WriteMode::Append, true)
                } else {
                    ((**otherwise).clone(), false)
                }
            }
            other => (other.clone(), false),
        }
    }
}

/// Something that can produce its batches, more than once if a write has to retry.
pub trait BatchSource: Send + Sync {
    /// The schema of every batch.
    fn schema(&self) -> SchemaRef;
    /// A fresh stream of all batches.
    fn stream(&self) -> BoxStream<'static, Result<RecordBatch, SourceError>>;
    /// Whether the source never yields two rows with the same merge key, so a merge need not
    /// dedupe its input (which holds the whole input in memory).
    fn keys_unique(&self) -> bool {
        false
    }
}

/// Batches held in memory: for small writes such as lake's own records.
#[derive(Debug, Clone)]
pub struct MemorySource {
    /// Their schema.
    pub schema: SchemaRef,
    /// The batches.
    pub batches: Vec<RecordBatch>,
}

impl BatchSource for MemorySource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn stream(&self) -> BoxStream<'static, Result<RecordBatch, SourceError>> {
        futures::stream::iter(self.batches.clone().into_iter().map(Ok)).boxed()
    }
}

/// What a write did.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The version it committed.
    pub version: u64,
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows inserted and updated, for a merge.
    pub merged: Option<(u64, u64)>,
    /// Columns added to the table.
    pub added_columns: Vec<String>,
    /// Whether the table was created.
    pub created: bool,
    /// Attempts taken, 1 unless a commit race was lost.
    pub attempts: usize,
}

/// Writes `source` into `name` as one commit.
pub async fn write(
    lake: &Lake,
    name: &TableName,
    source: Arc<dyn BatchSource>,
    mode: &WriteMode,
    metadata: &[(String, serde_json::Value)],
) -> Result<WriteOutcome, LakeError> {
    write_laid_out(lake, name, source, mode, metadata, &Layout::default()).await
}

/// Writes `source` into `name` as one commit, its rows laid out by `layout`: sorted by its
/// key, in files cut at the key's boundaries ([`super::layout`]) where the write adds or
/// replaces whole files of an unpartitioned table; otherwise sorted, in files delta-rs cuts.
/// A merge keeps delta-rs's order.
pub async fn write_laid_out(
    lake: &Lake,
    name: &TableName,
    source: Arc<dyn BatchSource>,
    mode: &WriteMode,
    metadata: &[(String, serde_json::Value)],
    layout: &Layout,
) -> Result<WriteOutcome, LakeError> {
    let write_err = |source: SourceError| LakeError::Write {
        table: name.clone(),
        cause: source,
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let table = lake.table_or_new(name).await?;
        let (mode, exact) = &mode.against(&table);
        let existing = table.snapshot().ok().map(|s| s.snapshot().arrow_schema());
        let plan = plan_columns(name, existing.as_deref(), &source.schema(), mode)?;
        // A table keeps its sort key: a write that names none sorts by the key of the
        // table's files (a rebuild follows its model alone).
        let inherited;
        let layout = if layout.sort_by.is_empty() && !matches!(mode, WriteMode::Rebuild(_)) {
            inherited = Layout {
                sort_by: layout::table_sort_key(&table)
                    .filter(|key| key.iter().all(|c| plan.target.field_with_name(c).is_ok()))
                    .unwrap_or_default(),
                keys: match layout.keys.is_empty() {
                    true => layout::table_keys(&table),
                    false => layout.keys.clone(),
                },
                span: layout.span.or_else(|| layout::table_span(&table)),
                ..layout.clone()
            };
            &inherited
        } else {
            layout
        };
        if let Some(missing) = layout
            .sort_by
            .iter()
            .find(|c| plan.target.field_with_name(c).is_err())
        {
            return Err(write_err(
                format!("the sort key column `{missing}` is not among the columns").into(),
            ));
        }

        let failure: Arc<Mutex<Option<SourceError>>> = Arc::default();
        let rows = Arc::new(AtomicU64::new(0));
        let merge_keys = mode.keys().map(<[String]>::to_vec);
        let input = Arc::new(Input {
            schema: plan.target.clone(),
            source: source.clone(),
            executions: AtomicU64::new(0),
            failure: failure.clone(),
            rows: rows.clone(),
            keys: merge_keys,
        });
        // Delta's writer plans through its own planner, so the source lives in a Delta session.
        let ctx = lake.sessions().delta_context()?;
        let provider = StreamingTable::try_new(input.schema().clone(), vec![input as _])
            .map_err(|e| write_err(e.into()))?;
        ctx.register_table("__lake_source", Arc::new(provider))
            .map_err(|e| write_err(e.into()))?;
        let mut commit = CommitProperties::default().with_metadata(metadata.iter().cloned());
        if *exact {
            // Only right after the version the keys were checked at; else the next attempt
            // inserts by key.
            commit = commit.with_max_retries(0);
        }

        let created = existing.is_none();
        let result = run(
            &ctx,
            table,
            &plan,
            mode,
            created,
            source.keys_unique(),
            commit,
            layout,
        )
        .await;
        if let Some(err) = failure.lock().expect("poisoned").take() {
            return Err(write_err(err));
        }
        match result {
            Ok((version, merged)) => {
                return Ok(WriteOutcome {
                    version,
                    rows_read: rows.load(Ordering::Relaxed),
                    merged,
                    added_columns: plan.added,
                    created,
                    attempts: attempt,
                });
            }
            Err(e) if is_conflict(&e) && attempt < MAX_ATTEMPTS => {
                tracing::info!(table = %name, attempt, "lost a commit race, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
            }
            Err(e) => return Err(write_err(Box::new(e))),
        }
    }
    unreachable!("the last attempt returns")
}

/// Runs one attempt of a write; gives the version committed and, for a merge, the rows
/// inserted and updated.
#[allow(clippy::too_many_arguments)]
async fn run(
    ctx: &SessionContext,
    table: DeltaTable,
    plan: &ColumnPlan,
    mode: &WriteMode,
    creating: bool,
    keys_unique: bool,
    commit: CommitProperties,
    layout: &Layout,
) -> Result<(u64, Option<(u64, u64)>), DeltaTableError> {
    let keys = mode.keys();
    let df = match keys {
        Some(_) if keys_unique => ctx.table("__lake_source").await?.drop_columns(&[ORDINAL])?,
        Some(keys) => {
            // The last row of each key wins within the batch.
            let cols: Vec<String> = plan
                .target
                .fields()
                .iter()
                .map(|f| quote_ident(f.name()))
                .filter(|c| c != &quote_ident(ORDINAL))
                .collect();
            let partition: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
            let sql = format!(
                "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {part} ORDER BY {ord} DESC) AS __lake_rank FROM __lake_source) WHERE __lake_rank = 1",
                cols = cols.join(", "),
                part = partition.join(", "),
                ord = quote_ident(ORDINAL),
            );
            ctx.sql(&sql).await?
        }
        None => ctx.table("__lake_source").await?,
    };
    let state = Arc::new(ctx.state());
    let absent = df.schema().has_column_with_unqualified_name(ABSENT);
    match (mode, keys) {
        (WriteMode::Merge(_) | WriteMode::InsertNew(_), Some(keys)) if !creating => {
            let predicate = keys
                .iter()
                .map(|k| qualified("target", k).eq(qualified("source", k)))
                .reduce(Expr::and)
                .expect("merge has a key");
            let columns: Vec<String> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|c| c != ABSENT)
                .collect();
            let mut builder = table
                .merge(df, predicate)
                .with_source_alias("source")
                .with_target_alias("target")
                .with_merge_schema(!plan.added.is_empty())
                .with_session_state(state)
                .with_commit_properties(commit);
            if !layout.keys.is_empty() {
                builder =
                    builder.with_writer_properties(super::keys::writer_properties(&layout.keys));
            }
            if matches!(mode, WriteMode::Merge(_)) {
                builder = builder.when_matched_update(|mut update| {
                    for c in &columns {
                        let sent = qualified("source", c);
                        let value = if absent && !keys.contains(c) {
                            // The stored value stays where the source did not send one.
                            when(
                                array_has(qualified("source", ABSENT), lit(c.as_str())),
                                qualified("target", c),
                            )
                            .otherwise(sent)
                            .expect("a CASE with an ELSE")
                        } else {
                            sent
                        };
                        update = update.update(Column::from_name(c), value);
                    }
                    update
                })?;
            }
            let (table, metrics) = builder
                .when_not_matched_insert(|mut insert| {
                    for c in &columns {
                        insert = insert.set(Column::from_name(c), qualified("source", c));
                    }
                    insert
                })?
                .await?;
            let merged = (
                metrics.num_target_rows_inserted as u64,
                metrics.num_target_rows_updated as u64,
            );
            Ok((table.version().unwrap_or(0), Some(merged)))
        }
        _ => {
            let df = if absent {
                df.drop_columns(&[ABSENT])?
            } else {
                df
            };
            let laid_out = !layout.sort_by.is_empty() && whole_files(&table, plan, mode, creating);
            let df = match mode {
                WriteMode::ReplaceFiles(paths) if !laid_out && !creating => {
                    // The table's other rows, written anew with the input.
                    let others: Vec<Add> = super::changes::files(&table)
                        .into_iter()
                        .filter(|a| !paths.contains(&a.path))
                        .collect();
                    let columns: Vec<Expr> = df
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| Expr::Column(Column::new_unqualified(f.name())))
                        .collect();
                    let provider = super::scan::provider(&table, Some(&others)).await?;
                    df.union(ctx.read_table(provider)?.select(columns)?)?
                }
                _ => df,
            };
            let df = if layout.sort_by.is_empty() {
                df
            } else {
                // DataFusion's sort spills under the lake's memory limit.
                df.sort(layout.sort_exprs())?
            };
            if laid_out {
                return write_sorted(ctx, table, df, mode, creating, commit, layout).await;
            }
            let save = match mode {
                WriteMode::Overwrite | WriteMode::Rebuild(_) => SaveMode::Overwrite,
                WriteMode::ReplaceFiles(_) if !creating => SaveMode::Overwrite,
                WriteMode::Replace(_) if !creating => SaveMode::Overwrite,
                _ => SaveMode::Append,
            };
            let mut builder = table
                .write(vec![])
                .with_input_plan(df.logical_plan().clone())
                .with_session_state(state)
                .with_save_mode(save)
                .with_commit_properties(commit);
            if !layout.keys.is_empty() {
                builder =
                    builder.with_writer_properties(super::keys::writer_properties(&layout.keys));
            }
            if let WriteMode::Replace(predicate) = mode
                && !creating
            {
                builder = builder.with_replace_where(predicate.clone());
            }
            if let WriteMode::Rebuild(partition_by) = mode {
                // Always given, so a model that drops `partition_by` drops the partitioning.
                builder = builder.with_partition_columns(partition_by.clone());
                if !creating {
                    builder = builder.with_schema_mode(SchemaMode::Overwrite);
                }
            } else if !plan.added.is_empty() && !creating {
                builder = builder.with_schema_mode(SchemaMode::Merge);
            }
            let table = builder.await?;
            Ok((table.version().unwrap_or(0), None))
        }
    }
}

/// Whether a write adds or replaces whole files of an unpartitioned table and keeps its
/// schema, so that lake can write the files itself, cut at the sort key's boundaries.
fn whole_files(table: &DeltaTable, plan: &ColumnPlan, mode: &WriteMode, creating: bool) -> bool {
    let partitioned = match mode {
        WriteMode::Rebuild(partition_by) => !partition_by.is_empty(),
        _ => false,
    } || table
        .snapshot()
        .is_ok_and(|s| !s.metadata().partition_columns().is_empty());
    if partitioned {
        return false;
    }
    // Creating the table, every write adds all its rows (a merge's included).
    if creating {
        return true;
    }
    match mode {
        WriteMode::Append | WriteMode::Overwrite | WriteMode::ReplaceFiles(_) => {
            plan.added.is_empty()
        }
        // A rebuild that keeps the table's columns and types.
        WriteMode::Rebuild(_) => table.snapshot().is_ok_and(|s| {
            let stored = s.snapshot().arrow_schema();
            stored.fields().len() == plan.target.fields().len()
                && stored
                    .fields()
                    .iter()
                    .zip(plan.target.fields())
                    .all(|(a, b)| {
                        a.name() == b.name() && normalize(a.data_type()) == normalize(b.data_type())
                    })
        }),
        _ => false,
    }
}

/// Writes the sorted rows of `df` as new files cut at the key's boundaries, and commits them:
/// added to the table, or replacing all its files, or creating it.
#[allow(clippy::too_many_arguments)]
async fn write_sorted(
    ctx: &SessionContext,
    table: DeltaTable,
    df: datafusion::dataframe::DataFrame,
    mode: &WriteMode,
    creating: bool,
    commit: CommitProperties,
    layout: &Layout,
) -> Result<(u64, Option<(u64, u64)>), DeltaTableError> {
    // The rows' columns: the plan's, less lake's own (a merge's row numbers).
    let columns = layout::file_schema(df.schema().as_arrow());
    let physical = df.create_physical_plan().await?;
    let rows = datafusion::physical_plan::execute_stream(physical, ctx.task_ctx())?;
    let adds = layout::write_sorted_files(&table, rows, layout).await?;
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    if creating {
        let schema: StructType = columns.as_ref().try_into_kernel()?;
        let created = CreateBuilder::new()
            .with_log_store(table.log_store())
            .with_columns(schema.fields().cloned())
            .with_actions(actions)
            .with_commit_properties(commit)
            .await
            .map_err(|e| match e {
                // Another writer created the table first: the next attempt writes into it.
                DeltaTableError::GenericError { source }
                    if source.to_string().contains("already exists") =>
                {
                    DeltaTableError::VersionAlreadyExists(0)
                }
                e => e,
            })?;
        return Ok((created.version().unwrap_or(0), None));
    }
    let overwrite = match mode {
        WriteMode::Append => false,
        WriteMode::ReplaceFiles(paths) => !paths.is_empty(),
        _ => true,
    };
    match mode {
        WriteMode::ReplaceFiles(paths) => actions.extend(layout::remove_files(&table, paths)?),
        WriteMode::Append => {}
        _ => actions.extend(layout::remove_all(&table, true)?),
    }
    let operation = DeltaOperation::Write {
        mode: if overwrite {
            SaveMode::Overwrite
        } else {
            SaveMode::Append
        },
        partition_by: None,
        predicate: None,
    };
    let version = layout::commit_actions(&table, actions, operation, commit).await?;
    Ok((version, None))
}

fn qualified(relation: &str, column: &str) -> Expr {
    Expr::Column(Column::new(Some(relation), column))
}

/// Whether an error means another writer got there first, so a fresh attempt may succeed.
fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// The columns a write produces.
#[derive(Debug)]
struct ColumnPlan {
    /// The schema batches are cast to before they reach Delta.
    target: SchemaRef,
    /// Columns the table did not have.
    added: Vec<String>,
}

/// Decides the written schema, refusing incompatible types before anything is written.
fn plan_columns(
    name: &TableName,
    table: Option<&Schema>,
    incoming: &Schema,
    mode: &WriteMode,
) -> Result<ColumnPlan, LakeError> {
    if let Some(keys) = mode.keys() {
        for key in keys {
            if incoming.field_with_name(key).is_err() {
                return Err(LakeError::MergeKey {
                    table: name.clone(),
                    why: format!("the input has no key column `{key}`"),
                });
            }
            if let Some(t) = table
                && t.field_with_name(key).is_err()
            {
                return Err(LakeError::MergeKey {
                    table: name.clone(),
                    why: format!("the table has no key column `{key}`"),
                });
            }
        }
    }
    let mut fields: Vec<Field> = Vec::new();
    let mut added = Vec::new();
    // A rebuild takes the incoming schema whole.
    let table = table.filter(|_| !matches!(mode, WriteMode::Rebuild(_)));
    if let Some(table) = table {
        for tf in table.fields() {
            match incoming.field_with_name(tf.name()) {
                Ok(inf) => {
                    if !compatible(tf.data_type(), inf.data_type()) {
                        return Err(LakeError::IncompatibleType {
                            table: name.clone(),
                            column: tf.name().clone(),
                            table_type: tf.data_type().to_string(),
                            incoming_type: inf.data_type().to_string(),
                        });
                    }
                    fields.push(Field::new(tf.name(), tf.data_type().clone(), true));
                }
                // A merge leaves columns the input lacks alone; other writes fill them with nulls.
                Err(_) if mode.keys().is_some() => {}
                Err(_) => fields.push(Field::new(tf.name(), tf.data_type().clone(), true)),
            }
        }
    }
    for inf in incoming.fields() {
        if inf.name() == ABSENT {
            continue;
        }
        if table.is_some_and(|t| t.field_with_name(inf.name()).is_ok()) {
            continue;
        }
        if table.is_some() {
            added.push(inf.name().clone());
        }
        fields.push(Field::new(inf.name(), storable(inf.data_type()), true));
    }
    if let Ok(absent) = incoming.field_with_name(ABSENT) {
        if !matches!(mode, WriteMode::Merge(_)) {
            return Err(LakeError::MergeKey {
                table: name.clone(),
                why: format!("`{ABSENT}` is only for a merge"),
            });
        }
        fields.push(absent.clone());
    }
    if mode.keys().is_some() {
        fields.push(Field::new(ORDINAL, DataType::UInt64, false));
    }
    Ok(ColumnPlan {
        target: Arc::new(Schema::new(fields)),
        added,
    })
}

/// The type Delta stores for an Arrow type.
fn storable(t: &DataType) -> DataType {
    use DataType::*;
    match t {
        Null => Utf8,
        UInt8 => Int16,
        UInt16 => Int32,
        UInt32 | UInt64 => Int64,
        Float16 => Float32,
        Date64 => Date32,
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into())),
        // Partition columns read back from Delta come dictionary-encoded.
        Dictionary(_, value) => storable(value),
        List(f) | LargeList(f) => List(Arc::new(Field::new(
            "element",
            storable(f.data_type()),
            true,
        ))),
        Struct(fields) => Struct(
            fields
                .iter()
                .map(|f| Field::new(f.name(), storable(f.data_type()), true))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The same type, ignoring representation: string and binary flavours, timestamp units,
/// list field names and nullability.
pub fn normalized_type(t: &DataType) -> DataType {
    normalize(t)
}

fn normalize(t: &DataType) -> DataType {
    use DataType::*;
    match t {
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView => Binary,
        Dictionary(_, value) => normalize(value),
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into())),
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) => {
            List(Arc::new(Field::new("item", normalize(f.data_type()), true)))
        }
        Struct(fields) => Struct(
            fields
                .iter()
                .map(|f| Field::new(f.name(), normalize(f.data_type()), true))
                .collect(),
        ),
        other => storable(other),
    }
}

/// Whether incoming values of type `incoming` can go into a column of type `table` without loss
/// of meaning: the same type, a wider number, or any scalar into a string column.
pub fn compatible(table: &DataType, incoming: &DataType) -> bool {
    use DataType::*;
    let (t, i) = (normalize(table), normalize(incoming));
    let width = |d: &DataType| match d {
        Int8 => 1,
        Int16 => 2,
        Int32 => 4,
        Int64 => 8,
        _ => 0,
    };
    t == i
        || i == Null
        || (t.is_integer() && i.is_integer() && width(&t) >= width(&i))
        || (t == Float64 && (i.is_integer() || i == Float32))
        || (t == Utf8 && (i.is_numeric() || i.is_temporal() || i == Boolean))
}

/// The source as a DataFusion partition. Each execution re-reads the source (a merge reads it
/// twice). Batches are cast to the target schema, numbered for a merge, and checked for null
/// keys; the source's own error is kept so the user sees it rather than DataFusion's wrapping.
struct Input {
    schema: SchemaRef,
    source: Arc<dyn BatchSource>,
    executions: AtomicU64,
    failure: Arc<Mutex<Option<SourceError>>>,
    rows: Arc<AtomicU64>,
    keys: Option<Vec<String>>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for Input {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        // Rows are counted on the first reading only.
        let first = self.executions.fetch_add(1, Ordering::Relaxed) == 0;
        let failure = self.failure.clone();
        let rows = self.rows.clone();
        let keys = self.keys.clone();
        let target = schema.clone();
        let mut seen = 0u64;
        let stream = self.source.stream().map(move |batch| {
            let converted = batch.and_then(|b| {
                let start = seen;
                seen += b.num_rows() as u64;
                if first {
                    rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                }
                to_target(&b, &target, start, keys.as_deref())
            });
            converted.map_err(|e| {
                let message = e.to_string();
                failure.lock().expect("poisoned").get_or_insert(e);
                DataFusionError::Execution(message)
            })
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

fn to_target(
    batch: &RecordBatch,
    target: &SchemaRef,
    start: u64,
    keys: Option<&[String]>,
) -> Result<RecordBatch, SourceError> {
    if let Some(keys) = keys {
        for key in keys {
            if let Some(col) = batch.column_by_name(key)
                && col.null_count() > 0
            {
                let row = (0..col.len()).find(|i| col.is_null(*i)).unwrap_or(0) as u64 + start + 1;
                return Err(format!("key column `{key}` is null in input row {row}").into());
            }
        }
    }
    let n = batch.num_rows();
    let columns = target
        .fields()
        .iter()
        .map(|field| {
            if field.name() == ORDINAL {
                return Ok(Arc::new(UInt64Array::from_iter_values(start..start + n as u64)) as _);
            }
            match batch.column_by_name(field.name()) {
                None => Ok(new_null_array(field.data_type(), n)),
                Some(col) if col.data_type() == field.data_type() => Ok(col.clone()),
                Some(col) => cast(col, field.data_type()).map_err(|e| {
                    SourceError::from(format!("failed to convert column `{}`: {e}", field.name()))
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;

    #[test]
    fn compatibility() {
        assert!(compatible(&Int64, &Int32));
        assert!(!compatible(&Int32, &Int64));
        assert!(compatible(&Float64, &Int64));
        assert!(compatible(&Utf8View, &Utf8));
        assert!(compatible(&Utf8, &Date32));
        assert!(!compatible(&Date32, &Utf8));
        assert!(!compatible(&Int64, &Utf8));
        assert!(compatible(
            &Timestamp(TimeUnit::Microsecond, None),
            &Timestamp(TimeUnit::Second, None)
        ));
        assert!(!compatible(
            &Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            &Timestamp(TimeUnit::Second, None)
        ));
    }
}
