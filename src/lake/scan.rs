//! lake's own scan of a Delta table: a DataFusion Parquet scan built from the pinned
//! snapshot's add actions and their statistics.
//!
//! delta-rs 1.1's provider plans every read through delta-kernel: one file group for all
//! files, then a per-batch transform above the Parquet reader. Most of lake's tables need none
//! of that: no deletion vectors, no column mapping. For those, [`provider`] gives DataFusion
//! the files directly:
//! - file groups it may split by byte range, so two cores read a three-file table in parallel;
//! - per-file statistics (rows, and each column's min, max and nulls from the add's stats),
//!   with which DataFusion prunes files and row groups by a query's filters and plans joins;
//! - partition values as partition columns, pruned the same way;
//! - columns a file lacks (added later) read as nulls, and types widened, by DataFusion's
//!   schema adapter;
//! - for a sorted table ([`super::layout`]) whose files form one run (all tagged with the same
//!   key, none overlapping another on its first column), the files in key order, the order as
//!   the scan's output ordering, and groups of adjacent files as a Range partitioning on the
//!   key's first column: windows and aggregates over the key need no sort or repartition.
//!
//! A table with deletion vectors or column mapping takes delta-rs's provider instead, with a
//! debug log line. Time travel is the caller's: the snapshot given is the version read.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    LexOrdering, Partitioning, PhysicalExpr, PhysicalSortExpr, RangePartitioning, SplitPoint,
};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use object_store::ObjectStore;

use super::layout;

/// The provider for reading `table` (all its files, or `only` these), lake's own where it can.
pub async fn provider(table: &DeltaTable, only: Option<&[Add]>) -> Result<Arc<dyn TableProvider>> {
    match LakeScan::try_new(table, only)? {
        Some(scan) => Ok(Arc::new(scan)),
        None => {
            let builder = table.table_provider();
            let builder = match only {
                Some(adds) => builder.with_file_selection(
                    deltalake::delta_datafusion::FileSelection::from_adds(adds.to_vec()),
                ),
                None => builder,
            };
            Ok(builder.await?)
        }
    }
}

/// The column [`provider_with_files`] adds: the path of the file each row is stored in, as
/// the table's log names it.
pub const FILE_COLUMN: &str = "__lake_file";

/// lake's scan of `table` (all its files, or `only` these), with one more column,
/// [`FILE_COLUMN`]; `None` for a table only delta-rs reads.
pub fn provider_with_files(
    table: &DeltaTable,
    only: Option<&[Add]>,
) -> Result<Option<Arc<dyn TableProvider>>> {
    Ok(LakeScan::try_new_with(table, only, true)?.map(|s| Arc::new(s) as Arc<dyn TableProvider>))
}

/// A scan over a fixed set of a table's files.
#[derive(Debug)]
pub struct LakeScan {
    /// The table's columns, in the table's order.
    schema: SchemaRef,
    /// The columns stored in the files.
    file_schema: SchemaRef,
    /// Partition columns, after the file's in DataFusion's numbering.
    partition_cols: Vec<FieldRef>,
    /// File columns followed by partition columns: what DataFusion's scan numbers.
    scan_schema: SchemaRef,
    /// For each table column, its index in the scan schema.
    scan_index: Vec<usize>,
    files: Vec<PartitionedFile>,
    /// When every file is sorted by the same key and no two overlap on its leading column:
    /// the key's columns in the scan schema; the files are then in key order.
    sorted: Option<Vec<usize>>,
    /// The files' statistics merged.
    statistics: Statistics,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
}

impl LakeScan {
    /// The scan, or `None` when the table uses a feature only delta-rs reads.
    pub fn try_new(table: &DeltaTable, only: Option<&[Add]>) -> Result<Option<Self>> {
        Self::try_new_with(table, only, false)
    }

    /// The scan, with the [`FILE_COLUMN`] after the table's own columns when `file_column`.
    fn try_new_with(
        table: &DeltaTable,
        only: Option<&[Add]>,
        file_column: bool,
    ) -> Result<Option<Self>> {
        let Ok(state) = table.snapshot() else {
            return Ok(None);
        };
        let metadata = state.metadata();
        let mapping = metadata
            .configuration()
            .get("delta.columnMapping.mode")
            .is_some_and(|m| m != "none");
        if mapping {
            tracing::debug!("column mapping: reading with delta-rs's provider");
            return Ok(None);
        }
        // Strings and binaries as views, as DataFusion's Parquet reader and delta-rs's
        // provider give them by default.
        let mut fields = state
            .snapshot()
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => {
                    Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
                }
                DataType::Binary | DataType::LargeBinary => {
                    Arc::new(f.as_ref().clone().with_data_type(DataType::BinaryView))
                }
                _ => f.clone(),
            })
            .collect::<Vec<FieldRef>>();
        let mut partitions = metadata.partition_columns().to_vec();
        if file_column {
            // A partition column to DataFusion: one value per file.
            fields.push(Arc::new(arrow::datatypes::Field::new(
                FILE_COLUMN,
                DataType::Utf8,
                false,
            )));
            partitions.push(FILE_COLUMN.to_string());
        }
        let schema = Arc::new(Schema::new(fields));
        let file_fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !partitions.contains(f.name()))
            .cloned()
            .collect();
        let partition_cols: Vec<FieldRef> = partitions
            .iter()
            .filter_map(|p| schema.field_with_name(p).ok())
            .map(|f| Arc::new(f.clone()))
            .collect();
        let file_schema = Arc::new(Schema::new(file_fields));
        let scan_schema = Arc::new(Schema::new(
            file_schema
                .fields()
                .iter()
                .chain(partition_cols.iter())
                .cloned()
                .collect::<Vec<FieldRef>>(),
        ));
        let scan_index = schema
            .fields()
            .iter()
            .map(|f| scan_schema.index_of(f.name()).expect("every column"))
            .collect();

        // The files: the selection given, else every file of the snapshot.
        let wanted: Option<std::collections::HashSet<String>> = only.map(|adds| {
            // The log's text is URL-encoded; an add may carry it either way.
            adds.iter()
                .flat_map(|a| {
                    let decoded = percent_encoding::percent_decode_str(&a.path)
                        .decode_utf8_lossy()
                        .into_owned();
                    [a.path.clone(), decoded]
                })
                .collect()
        });
        let mut files = Vec::new();
        // The sort key every file so far carries; `None` once one differs or has none.
        let mut key: Option<Option<Vec<String>>> = None;
        for view in state.log_data().iter() {
            if view.deletion_vector_descriptor().is_some() {
                tracing::debug!("deletion vectors: reading with delta-rs's provider");
                return Ok(None);
            }
            if let Some(w) = &wanted
                && !w.contains(view.path().as_ref())
                && !w.contains(view.object_store_path().as_ref())
            {
                continue;
            }
            let values = view.partition_values_map();
            let partition_values = partition_cols
                .iter()
                .map(|f| match f.name().as_str() {
                    FILE_COLUMN if file_column => {
                        Ok(ScalarValue::Utf8(Some(view.path().to_string())))
                    }
                    _ => partition_value(values.get(f.name()).cloned().flatten(), f.data_type()),
                })
                .collect::<Result<Vec<_>>>()?;
            let size = view.size().max(0) as u64;
            let stats = statistics(
                view.stats().as_deref(),
                &file_schema,
                &partition_values,
                size,
            );
            let mut file = PartitionedFile::new("", size).with_statistics(Arc::new(stats));
            // The store path as the log gives it, already encoded: not re-parsed from text.
            file.object_meta.location = view.object_store_path();
            file.partition_values = partition_values;
            files.push(file);
            let this = layout::file_sort_key(&view);
            key = Some(match key {
                None => this,
                Some(k) if k == this => k,
                Some(_) => None,
            });
        }
        let statistics = table_statistics(&files, &scan_schema);
        let sorted = key
            .flatten()
            .and_then(|key| in_key_order(&mut files, &key, &scan_schema));
        Ok(Some(Self {
            schema,
            file_schema,
            partition_cols,
            scan_schema,
            scan_index,
            files,
            sorted,
            statistics,
            store_url: table.log_store().object_store_url(),
            store: table.log_store().object_store(None),
        }))
    }
}

/// A partition value as Delta writes it: text, or null.
fn partition_value(value: Option<String>, t: &DataType) -> Result<ScalarValue> {
    match value {
        None => ScalarValue::try_from(t),
        Some(v) => match t {
            // Delta writes `2026-01-01 12:00:00` (or with fractions, or ISO with a zone).
            DataType::Timestamp(_, _) => {
                let parsed = ScalarValue::Utf8(Some(v.replace(' ', "T")));
                parsed.cast_to(t)
            }
            _ => ScalarValue::try_from_string(v, t),
        },
    }
}

/// A file's statistics from its add action's stats JSON: rows, and per column min, max and
/// null count where the JSON has them. Bounds are inexact: Delta may truncate strings, and a
/// checkpoint rounds timestamps to milliseconds.
fn statistics(
    json: Option<&str>,
    file_schema: &Schema,
    partition_values: &[ScalarValue],
    size: u64,
) -> Statistics {
    let parsed: Option<serde_json::Value> = json.and_then(|j| serde_json::from_str(j).ok());
    let get = |kind: &str, name: &str| parsed.as_ref().and_then(|p| p.get(kind)?.get(name));
    let rows = parsed
        .as_ref()
        .and_then(|p| p.get("numRecords")?.as_u64())
        .map(|n| n as usize);
    let mut columns: Vec<ColumnStatistics> = file_schema
        .fields()
        .iter()
        .map(|f| {
            let bound = |kind: &str| {
                get(kind, f.name())
                    .and_then(|v| scalar(v, f.data_type(), kind == "maxValues"))
                    .map_or(Precision::Absent, Precision::Inexact)
            };
            let nulls = get("nullCount", f.name())
                .and_then(serde_json::Value::as_u64)
                .map_or(Precision::Absent, |n| Precision::Exact(n as usize));
            ColumnStatistics {
                null_count: nulls,
                min_value: bound("minValues"),
                max_value: bound("maxValues"),
                ..ColumnStatistics::new_unknown()
            }
        })
        .collect();
    for v in partition_values {
        let nulls = if v.is_null() { rows } else { Some(0) };
        columns.push(ColumnStatistics {
            null_count: nulls.map_or(Precision::Absent, Precision::Exact),
            min_value: Precision::Exact(v.clone()),
            max_value: Precision::Exact(v.clone()),
            distinct_count: Precision::Exact(1),
            ..ColumnStatistics::new_unknown()
        });
    }
    Statistics {
        num_rows: rows.map_or(Precision::Absent, Precision::Exact),
        total_byte_size: Precision::Inexact(size as usize),
        column_statistics: columns,
    }
}

/// A stats value as the column's type. A string bound of 32 characters or more may be a
/// truncated prefix, which bounds nothing from above; timestamps widen by a millisecond.
fn scalar(v: &serde_json::Value, t: &DataType, upper: bool) -> Option<ScalarValue> {
    use DataType::*;
    let s = match (v, t) {
        (serde_json::Value::String(s), Utf8 | LargeUtf8 | Utf8View) => {
            if upper && s.chars().count() >= 32 {
                return None;
            }
            return ScalarValue::Utf8(Some(s.clone())).cast_to(t).ok();
        }
        (serde_json::Value::String(s), Timestamp(unit, _)) => {
            let value = ScalarValue::Utf8(Some(s.clone()))
                .cast_to(&Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
                .ok()?;
            let ScalarValue::TimestampMicrosecond(Some(us), _) = value else {
                return None;
            };
            let us = if upper { us + 1_000 } else { us - 1_000 };
            let us = ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()));
            return match unit {
                TimeUnit::Microsecond | TimeUnit::Nanosecond | TimeUnit::Millisecond => {
                    us.cast_to(t).ok()
                }
                TimeUnit::Second => None,
            };
        }
        (serde_json::Value::String(s), _) => s.clone(),
        (serde_json::Value::Number(n), _) => n.to_string(),
        (serde_json::Value::Bool(b), Boolean) => return Some(ScalarValue::Boolean(Some(*b))),
        _ => return None,
    };
    match t {
        Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Float32
        | Float64
        | Date32
        | Decimal128(_, _) => ScalarValue::try_from_string(s, t).ok(),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for LakeScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to prune files and row groups; DataFusion still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        state
            .runtime_env()
            .register_object_store(self.store_url.as_ref(), self.store.clone());
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_cols.clone())
            .build();
        let mut source = ParquetSource::new(table_schema).with_table_parquet_options(
            datafusion::config::TableParquetOptions {
                global: state.config_options().execution.parquet.clone(),
                ..Default::default()
            },
        );
        // Filters as a predicate over the table's columns in scan order, for pruning.
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(self.scan_schema.as_ref().clone())?;
            if let Ok(physical) = state.create_physical_expr(predicate, &df_schema) {
                source = source.with_predicate(physical);
            }
        }
        let projection: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| self.scan_index[i]).collect(),
            None => self.scan_index.clone(),
        };
        let partitions = state.config_options().execution.target_partitions.max(1);
        let (groups, ordering, partitioning) = match &self.sorted {
            Some(key) => self.key_ranges(key, partitions)?,
            None => (
                FileGroup::new(self.files.clone()).split_files(partitions),
                vec![],
                None,
            ),
        };
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_output_ordering(ordering)
            .with_output_partitioning(partitioning)
            .with_statistics(self.statistics.clone())
            .with_projection_indices(Some(projection))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    fn statistics(&self) -> Option<Statistics> {
        // In table order, as the schema is.
        let mut s = self.statistics.clone();
        s.column_statistics = self
            .scan_index
            .iter()
            .map(|&i| s.column_statistics[i].clone())
            .collect();
        Some(s)
    }
}

impl LakeScan {
    /// Whether the files are one run sorted by the table's key, declared to DataFusion.
    pub fn key_ordered(&self) -> bool {
        self.sorted.is_some()
    }

    /// The files in at most `partitions` groups of adjacent key ranges, balanced by size; the
    /// key's order; and the ranges as DataFusion's Range partitioning on the leading column.
    fn key_ranges(
        &self,
        key: &[usize],
        partitions: usize,
    ) -> Result<(Vec<FileGroup>, Vec<LexOrdering>, Option<Partitioning>)> {
        let column = |i: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(Column::new(self.scan_schema.field(i).name(), i))
        };
        let ascending = SortOptions {
            descending: false,
            nulls_first: false,
        };
        let ordering = LexOrdering::new(
            key.iter()
                .map(|&i| PhysicalSortExpr::new(column(i), ascending)),
        );
        let leading = LexOrdering::new([PhysicalSortExpr::new(column(key[0]), ascending)]);
        // Contiguous runs of files, each about an equal share of the bytes.
        let total: u64 = self.files.iter().map(|f| f.object_meta.size).sum();
        let groups_wanted = partitions.min(self.files.len()).max(1) as u64;
        let mut groups: Vec<Vec<PartitionedFile>> = vec![vec![]];
        let mut so_far = 0u64;
        for file in &self.files {
            let boundary = total * groups.len() as u64 / groups_wanted;
            if so_far >= boundary && !groups.last().expect("one group").is_empty() {
                groups.push(vec![]);
            }
            so_far += file.object_meta.size;
            groups.last_mut().expect("one group").push(file.clone());
        }
        let split_points = groups[1..]
            .iter()
            .map(|g| {
                let stats = g[0]
                    .statistics
                    .as_deref()
                    .expect("sorted files have statistics");
                let min = stats.column_statistics[key[0]]
                    .min_value
                    .get_value()
                    .cloned();
                SplitPoint::new(vec![min.expect("sorted files have bounds")])
            })
            .collect::<Vec<_>>();
        let partitioning = match (split_points.is_empty(), leading) {
            (false, Some(leading)) => Some(Partitioning::Range(RangePartitioning::try_new(
                leading,
                split_points,
            )?)),
            _ => None,
        };
        Ok((
            groups.into_iter().map(FileGroup::new).collect(),
            ordering.into_iter().collect(),
            partitioning,
        ))
    }
}

/// Puts `files`, each sorted by `key`, in key order, when their statistics show that no two
/// overlap on the key's leading column and only the last holds its nulls (nulls sort last).
/// Gives the key's columns in `schema`, or `None` (files untouched in effect) when the files
/// cannot be shown to be one sorted run.
fn in_key_order(
    files: &mut [PartitionedFile],
    key: &[String],
    schema: &Schema,
) -> Option<Vec<usize>> {
    let indices: Vec<usize> = key
        .iter()
        .map(|c| schema.index_of(c).ok())
        .collect::<Option<_>>()?;
    let leading = *indices.first()?;
    let bounds = |f: &PartitionedFile, i: usize| -> Option<(ScalarValue, ScalarValue, usize)> {
        let c = &f.statistics.as_deref()?.column_statistics[i];
        Some((
            c.min_value.get_value()?.clone(),
            c.max_value.get_value()?.clone(),
            *c.null_count.get_value()?,
        ))
    };
    // DataFusion checks each group's order from the bounds of every key column.
    for f in files.iter() {
        for &i in &indices {
            bounds(f, i)?;
        }
    }
    let mut order: Vec<(ScalarValue, usize)> = files
        .iter()
        .enumerate()
        .map(|(n, f)| Some((bounds(f, leading)?.0, n)))
        .collect::<Option<_>>()?;
    order.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let ordered: Vec<PartitionedFile> = order.iter().map(|(_, n)| files[*n].clone()).collect();
    for pair in ordered.windows(2) {
        let (_, max, nulls) = bounds(&pair[0], leading)?;
        let (next_min, _, _) = bounds(&pair[1], leading)?;
        if nulls > 0 || max.partial_cmp(&next_min) != Some(std::cmp::Ordering::Less) {
            return None;
        }
    }
    files.clone_from_slice(&ordered);
    Some(indices)
}

/// The files' statistics merged: rows and bytes summed, bounds widened.
fn table_statistics(files: &[PartitionedFile], schema: &Schema) -> Statistics {
    let stats: Option<Vec<&Statistics>> = files.iter().map(|f| f.statistics.as_deref()).collect();
    match stats {
        Some(stats) if !stats.is_empty() => Statistics::try_merge_iter(stats, schema)
            .unwrap_or_else(|_| Statistics::new_unknown(schema)),
        _ => Statistics::new_unknown(schema),
    }
}
