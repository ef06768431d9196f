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
//!   schema adapter.
//!
//! A table with deletion vectors or column mapping takes delta-rs's provider instead, with a
//! debug log line. Time travel is the caller's: the snapshot given is the version read.

use std::sync::Arc;

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
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use object_store::ObjectStore;

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
    /// The files' statistics merged.
    statistics: Statistics,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
}

impl LakeScan {
    /// The scan, or `None` when the table uses a feature only delta-rs reads.
    pub fn try_new(table: &DeltaTable, only: Option<&[Add]>) -> Result<Option<Self>> {
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
        let schema = Arc::new(Schema::new(
            state
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
                .collect::<Vec<FieldRef>>(),
        ));
        let partitions = metadata.partition_columns().to_vec();
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
                .map(|f| partition_value(values.get(f.name()).cloned().flatten(), f.data_type()))
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
        }
        let statistics = table_statistics(&files, &scan_schema);
        Ok(Some(Self {
            schema,
            file_schema,
            partition_cols,
            scan_schema,
            scan_index,
            files,
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
        let groups = FileGroup::new(self.files.clone()).split_files(partitions);
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
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

/// The files' statistics merged: rows and bytes summed, bounds widened.
fn table_statistics(files: &[PartitionedFile], schema: &Schema) -> Statistics {
    let stats: Option<Vec<&Statistics>> = files.iter().map(|f| f.statistics.as_deref()).collect();
    match stats {
        Some(stats) if !stats.is_empty() => Statistics::try_merge_iter(stats, schema)
            .unwrap_or_else(|_| Statistics::new_unknown(schema)),
        _ => Statistics::new_unknown(schema),
    }
}
