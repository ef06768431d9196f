//! A table's layout: its rows sorted by the table's key, in files cut where the leading key
//! changes.
//!
//! delta-rs's writer cuts files by size, anywhere in the rows, so one listener's plays can
//! straddle two files. lake writes a sorted table itself instead: one Parquet file at a time,
//! through delta-rs's file writer, closing the file at the first change of the leading key
//! after it reaches the target size (rows without a leading key, which sort last, stay in the
//! last file with one). Files of one write then cover disjoint ranges of the
//! leading key, and each add action carries the key in its [`SORTED_BY`] tag. lake's scan
//! ([`super::scan`]) reads the tags and the files' statistics back: where every file is sorted
//! by the same key and no two overlap on its leading column, it tells DataFusion the order and
//! the key ranges, and windows and aggregates over the key need no sort and no repartition.
//!
//! A file without the tag (written by delta-rs's own writer or by a merge, or by another Delta
//! writer) is just unsorted; `lake maintain` sorts the table again.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaResult, DeltaTable, DeltaTableError};
use futures::StreamExt;

/// The add-action tag of a file lake wrote sorted: the sort key, as a JSON array of column
/// names.
pub const SORTED_BY: &str = "lake.sortedBy";
/// The size a sorted write aims each file at, unless the table says otherwise. Small enough
/// that a few million rows make several files, so the files spread over the cores.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 32 * 1024 * 1024;

/// The add-action tag of a file that holds rows of one span of the sort key's leading column:
/// `day`, `month` or `year`.
pub const FILES_BY: &str = "lake.filesBy";

/// A span of time no file crosses (`files_by` in a model's header): as Apache Iceberg's
/// hidden partitioning by `days(ts)`, `months(ts)` or `years(ts)`, without partition columns.
/// Recent rows then sit in files of their own, and a recompute of them replaces those files
/// only, whatever the history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSpan {
    /// A calendar day (UTC).
    Day,
    /// A calendar month (UTC).
    Month,
    /// A calendar year (UTC).
    Year,
}

impl FileSpan {
    /// The name, as the header and the tag write it.
    pub fn name(self) -> &'static str {
        match self {
            FileSpan::Day => "day",
            FileSpan::Month => "month",
            FileSpan::Year => "year",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [FileSpan::Day, FileSpan::Month, FileSpan::Year]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// Each value's span, as a number (null for a null); an error for a column that is not a
    /// date or a timestamp.
    fn of(self, column: &dyn Array, name: &str) -> DeltaResult<Vec<Option<i64>>> {
        use arrow::array::AsArray;
        use chrono::Datelike;
        match column.data_type() {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {}
            t => {
                return Err(DeltaTableError::Generic(format!(
                    "files_by = \"{}\" needs a date or timestamp column first in sort_by; `{name}` is {t}",
                    self.name()
                )));
            }
        }
        let days = cast(column, &DataType::Date32)?;
        let days = days.as_primitive::<arrow::datatypes::Date32Type>();
        Ok(days
            .iter()
            .map(|d| {
                let d = d?;
                let date = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)?;
                Some(match self {
                    FileSpan::Day => d as i64,
                    FileSpan::Month => date.year() as i64 * 12 + date.month0() as i64,
                    FileSpan::Year => date.year() as i64,
                })
            })
            .collect())
    }
}

/// How a write lays out a table's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The sort key: ascending, nulls last. Empty for the input's own order.
    pub sort_by: Vec<String>,
    /// The size files aim at; [`DEFAULT_TARGET_FILE_SIZE`] when `None`.
    pub target_file_size: Option<u64>,
    /// Columns looked up by value (a merge's key): each file holds a bloom filter of each,
    /// for [`super::keys::holds_any`], and says so in its [`super::keys::KEYS_TAG`] tag.
    pub keys: Vec<String>,
    /// A span of the leading sort column no file crosses.
    pub span: Option<FileSpan>,
}

impl Layout {
    /// Rows sorted by these columns, in files of the default size.
    pub fn sorted_by(columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Layout {
            sort_by: columns.into_iter().map(Into::into).collect(),
            target_file_size: None,
            keys: Vec::new(),
            span: None,
        }
    }

    /// The same layout, with no file crossing a span of the leading column.
    pub fn with_span(mut self, span: Option<FileSpan>) -> Self {
        self.span = span;
        self
    }

    /// The same layout, with a bloom filter of each of these columns in every file.
    pub fn with_keys(mut self, keys: &[String]) -> Self {
        self.keys = keys.to_vec();
        self
    }

    /// The key as DataFusion's sort: each column ascending, nulls last.
    pub fn sort_exprs(&self) -> Vec<datafusion::logical_expr::SortExpr> {
        self.sort_by
            .iter()
            .map(|c| datafusion::prelude::ident(c).sort(true, false))
            .collect()
    }

    /// The value of the [`SORTED_BY`] tag for this key.
    pub fn tag(&self) -> String {
        serde_json::to_string(&self.sort_by).expect("strings serialize")
    }

    /// The key a file's tag names.
    pub fn from_tag(tag: &str) -> Option<Vec<String>> {
        serde_json::from_str(tag).ok()
    }
}

/// The sort key `table`'s files were written with, when one is: the key of its tagged files
/// (the last written, if they differ). Untagged files are left out.
pub fn table_sort_key(table: &DeltaTable) -> Option<Vec<String>> {
    let state = table.snapshot().ok()?;
    let mut key = None;
    for view in state.log_data().iter() {
        if let Some(k) = file_sort_key(&view) {
            key = Some(k);
        }
    }
    key
}

/// The sort key of one file, from its tag.
pub fn file_sort_key(view: &deltalake::kernel::LogicalFileView) -> Option<Vec<String>> {
    // The only public way to a file's tags in delta-rs 1.1.
    #[allow(deprecated)]
    let add = view.add_action();
    let tag = add.tags?.get(SORTED_BY)?.clone()?;
    Layout::from_tag(&tag)
}

/// The value of a tag of `table`'s files: that of the last file that has it.
fn table_tag(table: &DeltaTable, tag: &str) -> Option<String> {
    let state = table.snapshot().ok()?;
    let mut value = None;
    for view in state.log_data().iter() {
        #[allow(deprecated)]
        let add = view.add_action();
        if let Some(v) = add.tags.and_then(|t| t.get(tag).cloned().flatten()) {
            value = Some(v);
        }
    }
    value
}

/// The columns the files of `table` hold bloom filters of, from their tags.
pub fn table_keys(table: &DeltaTable) -> Vec<String> {
    table_tag(table, super::keys::KEYS_TAG)
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The span no file of `table` crosses, from their tags.
pub fn table_span(table: &DeltaTable) -> Option<FileSpan> {
    table_tag(table, FILES_BY).and_then(|t| FileSpan::from_name(&t))
}

/// Strings and binaries as Delta's plain types: the files are read by every Delta reader,
/// not only DataFusion.
pub fn file_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let t = match f.data_type() {
                    DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                    DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                    t => t.clone(),
                };
                Field::new(f.name(), t, f.is_nullable()).with_metadata(f.metadata().clone())
            })
            .collect::<Vec<_>>(),
    ))
}

/// Writes `rows`, already sorted by `layout.sort_by`, into new Parquet files of `table`
/// (an unpartitioned one). A file is closed at the first change of the leading key once it
/// reaches the target size, so no two files share a leading-key value. Returns the files'
/// add actions, tagged with the key; nothing is committed.
pub async fn write_sorted_files(
    table: &DeltaTable,
    mut rows: SendableRecordBatchStream,
    layout: &Layout,
) -> DeltaResult<Vec<Add>> {
    let schema = file_schema(&rows.schema());
    let leading = layout
        .sort_by
        .first()
        .ok_or_else(|| DeltaTableError::Generic("a sorted write needs a key".into()))?;
    let leading = schema.index_of(leading)?;
    let converter = RowConverter::new(vec![SortField::new(
        schema.field(leading).data_type().clone(),
    )])?;
    let target = layout
        .target_file_size
        .unwrap_or(DEFAULT_TARGET_FILE_SIZE)
        .max(1);
    // Statistics as the table asks for them (delta.dataSkippingNumIndexedCols and
    // delta.dataSkippingStatsColumns), as delta-rs's writer does.
    let (indexed, stats_columns) = match table.snapshot() {
        Ok(state) => {
            let props = state.snapshot().table_properties();
            (
                props.data_skipping_num_indexed_cols.unwrap_or_default(),
                props
                    .data_skipping_stats_columns
                    .as_ref()
                    .map(|cols| cols.iter().map(ToString::to_string).collect()),
            )
        }
        Err(_) => (Default::default(), None),
    };
    let config = WriterConfig::new(
        schema.clone(),
        vec![],
        Some(super::keys::writer_properties(&layout.keys)),
        // One file per writer: lake decides where files end.
        None,
        None,
        indexed,
        stats_columns,
    );
    let store = table.log_store().object_store(None);
    let mut files = Files {
        new: move || DeltaWriter::new(store.clone(), config.clone()),
        open: None,
        encoding: std::collections::VecDeque::new(),
        adds: Vec::new(),
        bytes: 0.0,
        ratio: 0.25,
        parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut last: Option<OwnedRow> = None;
    // The span of the open file's rows, with `files_by`.
    let mut file_span: Option<i64> = None;
    let leading_name = schema.field(leading).name().clone();
    while let Some(batch) = rows.next().await {
        let mut batch = conform(batch?, &schema)?;
        if batch.num_rows() == 0 {
            continue;
        }
        let per_row = batch.get_array_memory_size() as f64 / batch.num_rows() as f64;
        loop {
            let n = batch.num_rows();
            let room = (target as f64 / files.ratio - files.bytes) / per_row;
            let keys = converter.convert_columns(&[batch.column(leading).clone()])?;
            let cut = if room >= n as f64 {
                None
            } else {
                // An empty file takes at least one row.
                let from = if files.bytes == 0.0 { 1 } else { 0 };
                first_change(
                    &keys,
                    batch.column(leading).as_ref(),
                    last.as_ref(),
                    (room.max(0.0) as usize).max(from),
                )
            };
            // No file crosses a span: the first row of another span than the file's starts a
            // new file (rows without a key stay, as they do with a size cut).
            let span = match layout.span {
                Some(span) => {
                    let spans = span.of(batch.column(leading).as_ref(), &leading_name)?;
                    let current = file_span.or_else(|| spans.iter().flatten().next().copied());
                    file_span = current;
                    let change =
                        current.and_then(|c| spans.iter().position(|v| v.is_some_and(|v| v != c)));
                    change
                }
                None => None,
            };
            let cut = match (cut, span) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match cut {
                None => {
                    files.write(&batch, per_row).await?;
                    last = Some(keys.row(n - 1).owned());
                    break;
                }
                Some(at) => {
                    if at > 0 {
                        files.write(&batch.slice(0, at), per_row).await?;
                    }
                    files.close().await?;
                    last = None;
                    file_span = None;
                    batch = batch.slice(at, n - at);
                }
            }
        }
    }
    let adds = files.finish().await?;
    let tag = layout.tag();
    let keys = (!layout.keys.is_empty())
        .then(|| serde_json::to_string(&layout.keys).expect("strings serialize"));
    let span = layout.span.map(FileSpan::name);
    Ok(adds
        .into_iter()
        .map(|mut add| {
            let tags = add.tags.get_or_insert_with(Default::default);
            tags.insert(SORTED_BY.to_string(), Some(tag.clone()));
            if let Some(keys) = &keys {
                tags.insert(super::keys::KEYS_TAG.to_string(), Some(keys.clone()));
            }
            if let Some(span) = span {
                tags.insert(FILES_BY.to_string(), Some(span.to_string()));
            }
            add
        })
        .collect())
}

/// The first row at or after `from` whose key differs from the row before it (for row 0, from
/// `last`, the file's last row so far), and is not null: the rows without a key stay in the
/// file of the last key, so that every file has bounds and the files stay one run.
fn first_change(
    keys: &Rows,
    leading: &dyn Array,
    last: Option<&OwnedRow>,
    from: usize,
) -> Option<usize> {
    (from..keys.num_rows()).find(|&i| {
        leading.is_valid(i)
            && match i {
                0 => last.is_some_and(|l| l.row() != keys.row(0)),
                i => keys.row(i) != keys.row(i - 1),
            }
    })
}

/// A batch in the files' schema: view types cast to plain ones.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> DeltaResult<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.with_schema(schema.clone())?);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The files of a sorted write. Each file is encoded by a task of its own, fed through a
/// short channel, so the Parquet encoding of one file runs beside the merge that produces the
/// next one's rows; at most `parallel` files are being encoded at once.
struct Files<F: Fn() -> DeltaWriter> {
    new: F,
    /// The file being filled: its channel, and its task.
    open: Option<(tokio::sync::mpsc::Sender<RecordBatch>, FileTask)>,
    /// Files closed whose tasks may still be encoding, oldest first, with their Arrow bytes.
    encoding: std::collections::VecDeque<(FileTask, f64)>,
    adds: Vec<Add>,
    /// Arrow bytes sent to the open file.
    bytes: f64,
    /// Parquet bytes per Arrow byte, learnt from the files finished so far.
    ratio: f64,
    parallel: usize,
}

type FileTask = tokio::task::JoinHandle<DeltaResult<Vec<Add>>>;

impl<F: Fn() -> DeltaWriter> Files<F> {
    async fn write(&mut self, batch: &RecordBatch, per_row: f64) -> DeltaResult<()> {
        if self.open.is_none() {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
            let mut writer = (self.new)();
            let task = tokio::spawn(async move {
                while let Some(batch) = rx.recv().await {
                    writer.write(&batch).await?;
                }
                writer.close().await
            });
            self.open = Some((tx, task));
        }
        let (tx, _) = self.open.as_ref().expect("opened above");
        if tx.send(batch.clone()).await.is_err() {
            // The task stopped early: it failed, and says why.
            let (_, task) = self.open.take().expect("opened above");
            return Err(joined(task.await)
                .err()
                .unwrap_or_else(|| DeltaTableError::Generic("a file writer stopped".into())));
        }
        self.bytes += per_row * batch.num_rows() as f64;
        Ok(())
    }

    /// Closes the open file; its task finishes encoding it in the background.
    async fn close(&mut self) -> DeltaResult<()> {
        if let Some((tx, task)) = self.open.take() {
            drop(tx);
            self.encoding.push_back((task, self.bytes));
            while self.encoding.len() >= self.parallel {
                self.finish_oldest().await?;
            }
        }
        self.bytes = 0.0;
        Ok(())
    }

    async fn finish_oldest(&mut self) -> DeltaResult<()> {
        if let Some((task, bytes)) = self.encoding.pop_front() {
            let adds = joined(task.await)?;
            let written: i64 = adds.iter().map(|a| a.size).sum();
            if bytes > 0.0 && written > 0 {
                self.ratio = (written as f64 / bytes).clamp(0.01, 4.0);
            }
            self.adds.extend(adds);
        }
        Ok(())
    }

    /// Closes the open file and waits for every file; gives their add actions in the order
    /// the files were written.
    async fn finish(mut self) -> DeltaResult<Vec<Add>> {
        self.close().await?;
        while !self.encoding.is_empty() {
            self.finish_oldest().await?;
        }
        Ok(std::mem::take(&mut self.adds))
    }
}

impl<F: Fn() -> DeltaWriter> Drop for Files<F> {
    /// A write that failed stops encoding the files nobody will commit.
    fn drop(&mut self) {
        if let Some((_, task)) = &self.open {
            task.abort();
        }
        for (task, _) in &self.encoding {
            task.abort();
        }
    }
}

fn joined(result: Result<DeltaResult<Vec<Add>>, tokio::task::JoinError>) -> DeltaResult<Vec<Add>> {
    result.map_err(|e| DeltaTableError::Generic(format!("a file writer failed: {e}")))?
}

/// How far a table's files follow its sort key, for `lake describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortState {
    /// The key.
    pub key: Vec<String>,
    /// Files written sorted by it, of all the table's files.
    pub sorted_files: usize,
    /// All the table's files.
    pub files: usize,
    /// Whether the files form one sorted run, which lake's scan declares to DataFusion.
    pub one_run: bool,
}

/// The table's sort key and how far its files follow it; `None` for a table without one.
pub fn sort_state(table: &DeltaTable) -> DeltaResult<Option<SortState>> {
    let keys: Vec<Option<Vec<String>>> = table
        .snapshot()?
        .log_data()
        .iter()
        .map(|view| file_sort_key(&view))
        .collect();
    // The key of the last tagged file, as table_sort_key gives it.
    let Some(key) = keys.iter().rev().flatten().next().cloned() else {
        return Ok(None);
    };
    let sorted_files = keys.iter().filter(|k| k.as_ref() == Some(&key)).count();
    let one_run = super::scan::LakeScan::try_new(table, None)?.is_some_and(|s| s.key_ordered());
    Ok(Some(SortState {
        key,
        sorted_files,
        files: keys.len(),
        one_run,
    }))
}

/// Rewrites every file of `table` sorted by `key`, cut at its boundaries, in one commit that
/// changes no rows (an OPTIMIZE in the log). Rows appended meanwhile by another writer stay,
/// in their own files. Gives the files removed and added, and the version committed.
pub async fn sort_again(
    table: &DeltaTable,
    ctx: &datafusion::prelude::SessionContext,
    layout: &Layout,
    commit: CommitProperties,
) -> DeltaResult<(usize, usize, u64)> {
    let removes = remove_all(table, false)?;
    let provider = super::scan::provider(table, None).await?;
    let df = ctx.read_table(provider)?.sort(layout.sort_exprs())?;
    let rows = datafusion::physical_plan::execute_stream(
        df.create_physical_plan().await?,
        ctx.task_ctx(),
    )?;
    let adds = write_sorted_files(table, rows, layout).await?;
    let (removed, added) = (removes.len(), adds.len());
    let mut actions = removes;
    actions.extend(adds.into_iter().map(|mut a| {
        a.data_change = false;
        Action::Add(a)
    }));
    let operation = DeltaOperation::Optimize {
        predicate: None,
        target_size: layout.target_file_size.unwrap_or(DEFAULT_TARGET_FILE_SIZE) as i64,
    };
    let version = commit_actions(table, actions, operation, commit).await?;
    Ok((removed, added, version))
}

/// A remove action for every file of `table`.
pub fn remove_all(table: &DeltaTable, data_change: bool) -> DeltaResult<Vec<Action>> {
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .map(|f| Action::Remove(f.remove_action(data_change)))
        .collect())
}

/// A remove action for each of these files of `table` (paths as its log names them); an
/// error when one is no longer in the table, as when another writer replaced it meanwhile.
pub fn remove_files(table: &DeltaTable, paths: &[String]) -> DeltaResult<Vec<Action>> {
    let wanted: std::collections::HashSet<&str> = paths.iter().map(String::as_str).collect();
    let removes: Vec<Action> = table
        .snapshot()?
        .log_data()
        .iter()
        .filter(|f| wanted.contains(f.path().as_ref()))
        .map(|f| Action::Remove(f.remove_action(true)))
        .collect();
    if removes.len() != wanted.len() {
        return Err(DeltaTableError::Generic(format!(
            "{} of the files to replace are no longer in the table",
            wanted.len() - removes.len()
        )));
    }
    Ok(removes)
}

/// Commits `actions` (files lake wrote, and the files they replace) on top of the version
/// `table` holds; gives the version committed.
pub async fn commit_actions(
    table: &DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
    commit: CommitProperties,
) -> DeltaResult<u64> {
    let committed = CommitBuilder::from(commit)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    Ok(committed.version())
}
