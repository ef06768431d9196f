//! Group-scoped runs of table models: which groups the input rows committed since the last
//! run touch, and the input filters that recompute just those groups.
//!
//! The touched groups are the key values of the rows each input gained (its added files)
//! and lost (the files a delete, overwrite or merge removed, read as they were at the last
//! run). Compaction changes no rows and touches nothing. The model then runs over its inputs
//! filtered to those keys, and its rows of those groups are replaced in one commit.

use std::collections::BTreeMap;

use arrow::array::Array;
use arrow::array::RecordBatch;
use datafusion::common::Column;
use datafusion::functions_aggregate::expr_fn::{count, min};
use datafusion::logical_expr::Expr;
use datafusion::prelude::DataFrame;
use deltalake::DeltaTable;
use deltalake::kernel::Add;

use super::TransformError;
use super::inputs::{Inputs, ModelCursor};
use super::scope::{Scope, Touched};
use crate::lake::changes::diff_since;
use crate::lake::{Lake, TableName};

/// A rewrite that removed more than this share of the rows the groups come from costs about
/// as much to scope as to rebuild: the model is rebuilt instead.
const REWRITE_SHARE: f64 = 0.25;

/// What a group-scoped run does.
#[derive(Debug)]
pub enum Decision {
    /// Rebuild in full, and why.
    Full(String),
    /// The inputs' rows are as they were (only compacted): nothing to do.
    Unchanged,
    /// Recompute these groups.
    Recompute(Recompute),
}

/// The groups a run recomputes, and how to read their rows.
#[derive(Debug)]
pub struct Recompute {
    /// The touched groups.
    pub touched: Touched,
    /// For each input the groups come from, the filter to its touched rows.
    pub filters: BTreeMap<TableName, Expr>,
    /// Rows read to find the touched groups.
    pub rows_read: u64,
    /// Whether rows were removed too (not only added).
    pub removed: bool,
    /// For each input the groups come from, the files it gained (none when unchanged): its
    /// new rows.
    pub added: BTreeMap<TableName, Vec<Add>>,
    /// For each input the groups come from, the files it lost (none when unchanged), as they
    /// were at the version in `lost_at`, the one the last run read: its removed rows.
    pub lost: BTreeMap<TableName, Vec<Add>>,
    /// The versions the last run read.
    pub lost_at: BTreeMap<TableName, u64>,
    /// The touched key tuples, one per row (columns `__lake_key<i>`), with `recompute_from`
    /// each one's earliest changed value (`__lake_from`).
    pub keys: Vec<RecordBatch>,
    /// With `recompute_from`: whether every changed row has a value of that column (a group
    /// can then be cut at its earliest one).
    pub from_known: bool,
}

/// Works out which groups of a model of `scope` the commits since `previous` touch, from the
/// inputs as `inputs` opened them.
pub async fn decide(
    lake: &Lake,
    inputs: &Inputs,
    scope: &Scope,
    previous: &ModelCursor,
) -> Result<Decision, TransformError> {
    let ctx = &inputs.ctx;
    let mut parts: Vec<DataFrame> = Vec::new();
    let mut removed_rows = 0u64;
    let mut source_rows = 0u64;
    let mut rows_read = 0u64;
    let mut added: BTreeMap<TableName, Vec<Add>> = BTreeMap::new();
    let mut lost: BTreeMap<TableName, Vec<Add>> = BTreeMap::new();
    let mut lost_at: BTreeMap<TableName, u64> = BTreeMap::new();
    let mut schemas: BTreeMap<TableName, arrow::datatypes::SchemaRef> = BTreeMap::new();
    for read in &inputs.reads {
        let Some(version) = read.version else {
            continue;
        };
        let table = &read.table;
        let Some(&last) = previous.inputs.get(&table.to_string()) else {
            return Ok(Decision::Full(format!("the last run did not read {table}")));
        };
        let Some(exprs) = scope.keys.get(table) else {
            if last == version {
                continue;
            }
            return Ok(Decision::Full(format!(
                "{table} changed, and is read in full (joined, or in a subquery)"
            )));
        };
        let delta = lake.table(table, Some(version), None).await?;
        if let Ok(state) = delta.snapshot() {
            schemas.insert(table.clone(), state.snapshot().arrow_schema());
        }
        source_rows += rows_of(&delta);
        added.insert(table.clone(), Vec::new());
        lost.insert(table.clone(), Vec::new());
        lost_at.insert(table.clone(), last);
        if last == version {
            continue;
        }
        if last > version {
            return Ok(Decision::Full(format!(
                "{table} is at v{version}, before v{last} that the last run read"
            )));
        }
        let diff = diff_since(table, &delta, last, version).await?;
        if let Some(why) = diff.incomplete {
            return Ok(Decision::Full(format!("{table}: {why}")));
        }
        let keys = |df: DataFrame| -> Result<DataFrame, datafusion::error::DataFusionError> {
            let mut select: Vec<Expr> = exprs
                .iter()
                .enumerate()
                .map(|(i, e)| e.clone().alias(key_column(i)))
                .collect();
            if let Some(from) = &scope.from {
                select.push(Expr::Column(Column::new_unqualified(from)).alias(FROM));
            }
            df.select(select)
        };
        let err = |e| super::inputs::sql_error(table, e);
        added.insert(table.clone(), diff.added.clone());
        if !diff.added.is_empty() {
            rows_read += diff.added.iter().map(add_rows).sum::<u64>();
            let provider = crate::lake::scan::provider(&delta, Some(&diff.added))
                .await
                .map_err(err)?;
            parts.push(keys(ctx.read_table(provider).map_err(err)?).map_err(err)?);
        }
        if !diff.removed.is_empty() {
            let before = lake.table(table, Some(last), None).await?;
            let removed = diff.removed_files(&before);
            let rows: u64 = removed.iter().map(add_rows).sum();
            removed_rows += rows;
            rows_read += rows;
            let provider = crate::lake::scan::provider(&before, Some(&removed))
                .await
                .map_err(err)?;
            parts.push(keys(ctx.read_table(provider).map_err(err)?).map_err(err)?);
            lost.insert(table.clone(), removed);
            if let Some((v, op)) = &diff.rewrite {
                tracing::debug!(table = %table, "v{v} ({op}) removed {rows} rows");
            }
        }
    }
    if removed_rows as f64 > REWRITE_SHARE * source_rows.max(1) as f64 {
        return Ok(Decision::Full(format!(
            "an input was rewritten ({removed_rows} of {source_rows} rows removed or changed): its dependents are rebuilt in full"
        )));
    }
    let Some(all) = parts
        .into_iter()
        .reduce(|a, b| a.union(b).expect("same key columns"))
    else {
        return Ok(Decision::Unchanged);
    };
    let first = scope.keys.keys().next().expect("a scope has inputs");
    let fail = |message: String| TransformError::Input {
        table: first.clone(),
        message: format!("failed to read the touched groups: {message}"),
    };
    let n = scope.columns.len();
    let batches = async {
        match &scope.from {
            // One row per touched group, with its changed rows' earliest value and how many
            // have none.
            Some(_) => {
                let groups: Vec<Expr> = (0..n)
                    .map(|i| Expr::Column(Column::new_unqualified(key_column(i))))
                    .collect();
                let from = Expr::Column(Column::new_unqualified(FROM));
                all.aggregate(
                    groups,
                    vec![
                        min(from.clone()).alias(FROM),
                        count(from).alias("__lake_known"),
                        count(datafusion::logical_expr::lit(1)).alias("__lake_rows"),
                    ],
                )?
                .collect()
                .await
            }
            None => all.distinct()?.collect().await,
        }
    }
    .await
    .map_err(|e| fail(e.to_string()))?;
    let touched = Touched::from_batches(&batches, n).map_err(fail)?;
    if touched.is_empty() {
        return Ok(Decision::Unchanged);
    }
    let from_known =
        scope.from.is_some() && every_known(&batches, n).map_err(|e| fail(e.to_string()))?;
    // The keys, and with `recompute_from` each group's earliest value.
    let width = if scope.from.is_some() { n + 1 } else { n };
    let keys: Vec<RecordBatch> = batches
        .iter()
        .map(|b| b.project(&(0..width).collect::<Vec<_>>()))
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let filters = scope
        .keys
        .iter()
        .map(|(t, exprs)| {
            let listed = touched.predicate(exprs);
            let range = schemas.get(t).and_then(|s| touched.ranges(exprs, s));
            (t.clone(), range.map_or(listed.clone(), |r| r.and(listed)))
        })
        .collect();
    Ok(Decision::Recompute(Recompute {
        touched,
        filters,
        rows_read,
        removed: removed_rows > 0,
        added,
        lost,
        lost_at,
        keys,
        from_known,
    }))
}

/// The column of the changed rows holding their `recompute_from` value.
pub const FROM: &str = "__lake_from";

/// The column of the changed rows holding the `i`-th key.
pub fn key_column(i: usize) -> String {
    format!("__lake_key{i}")
}

/// Whether every touched group's changed rows all have a `recompute_from` value: the count
/// of values (column `n + 1`) is the count of rows (`n + 2`).
fn every_known(
    batches: &[RecordBatch],
    n: usize,
) -> Result<bool, datafusion::error::DataFusionError> {
    for batch in batches {
        let same = arrow::compute::kernels::cmp::eq(batch.column(n + 1), batch.column(n + 2))?;
        if same.null_count() > 0 || same.false_count() > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Rows in `table`, from the log's statistics.
pub(crate) fn rows_of(table: &DeltaTable) -> u64 {
    let Ok(state) = table.snapshot() else {
        return 0;
    };
    state
        .log_data()
        .iter()
        .map(|f| f.num_records().unwrap_or(0) as u64)
        .sum()
}

/// An added file's rows, from its statistics.
fn add_rows(add: &Add) -> u64 {
    add.get_stats()
        .ok()
        .flatten()
        .map(|s| s.num_records.max(0) as u64)
        .unwrap_or(0)
}
