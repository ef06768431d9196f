//! Running aggregates, `row_number` and `lag` over sorted partitions, a batch at a time.
//!
//! DataFusion 55's `BoundedWindowAggExec` streams a window over input sorted by its partition
//! key, but it evaluates each frame row by row: for every row it slices the argument arrays,
//! feeds the slice to the accumulator and builds a `ScalarValue`; `row_number` and `lag`
//! build one per row too. Over the 10 M plays of `bench/run`, that was 4.4 s of compute for
//! the sessions query's two windows. This physical rule replaces such an operator, when every
//! window in it is one of these and its input arrives sorted by the partition key
//! (DataFusion's `Sorted` mode), by [`BatchWindowExec`], which computes a batch's results in
//! one pass and emits them with the batch:
//! - `count`, `sum` of 64-bit integers (wrapping, as DataFusion's does), and `min` and `max`
//!   of integers, dates and timestamps, framed `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT
//!   ROW` or `AND n PRECEDING`, with no FILTER and no DISTINCT: the running value, carried
//!   from batch to batch while the partition goes on, shifted by `n` rows for the latter;
//! - `row_number()`;
//! - `lag(x[, n[, default]])` without IGNORE NULLS: the value `n` rows before in the
//!   partition, the last `n` values carried between batches.
//!
//! The operator keeps the replaced one's properties and input requirements, so the plan
//! around it does not change. Anything else (floating-point aggregates, whose rounding and
//! NaN order are DataFusion's to define; RANGE and GROUPS frames, where peers share a value;
//! sliding frames) stays DataFusion's.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, NullArray, PrimitiveArray, RecordBatch,
    UInt64Array,
};
use arrow::compute::SortOptions;
use arrow::datatypes::{
    ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Date32Type, Date64Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt32Type, UInt64Type,
};
use datafusion::common::Statistics;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, StandardWindowExpr, WindowExpr};
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    InputDistributionRequirements, InputOrderMode, PlanProperties, ReplaceChildrenOptions,
    StatisticsArgs,
};
use futures::StreamExt;

/// The rule; see the module's documentation.
#[derive(Debug, Default)]
pub struct BatchWindows;

impl PhysicalOptimizerRule for BatchWindows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<BoundedWindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            if !matches!(exec.input_order_mode, InputOrderMode::Sorted) {
                return Ok(Transformed::no(node));
            }
            let partition_by = exec.window_expr()[0].partition_by();
            let same_partitions = exec.window_expr().iter().all(|e| {
                e.partition_by().len() == partition_by.len()
                    && e.partition_by()
                        .iter()
                        .zip(partition_by)
                        .all(|(a, b)| a.eq(b))
            });
            let ops: Option<Vec<Op>> = exec.window_expr().iter().map(op).collect();
            match ops {
                Some(ops) if same_partitions => {
                    let new = BatchWindowExec {
                        partition_by: partition_by.to_vec(),
                        ops,
                        input: Arc::clone(exec.input()),
                        window: Arc::clone(&node),
                        metrics: ExecutionPlanMetricsSet::new(),
                    };
                    Ok(Transformed::yes(Arc::new(new) as Arc<dyn ExecutionPlan>))
                }
                _ => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "lake_batch_windows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// One window, as the batch operator computes it.
#[derive(Debug, Clone)]
struct Op {
    /// The argument; `row_number()` reads none.
    arg: Option<Arc<dyn PhysicalExpr>>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// An aggregate over the partition's rows up to `behind` rows before the current one
    /// (`ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` for 0, `AND n PRECEDING` for n),
    /// which is `empty` while that frame holds no rows.
    Running {
        aggregate: Aggregate,
        behind: usize,
        empty: ScalarValue,
    },
    /// The value this many rows before, or the default.
    Lag(usize, ScalarValue),
    /// The row's number in its partition, from 1.
    RowNumber,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    /// Of non-null values.
    Count,
    /// Of 64-bit integers, wrapping as DataFusion's do.
    Sum,
    Min,
    Max,
}

/// The batch form of `expr`, where it has one.
fn op(expr: &Arc<dyn WindowExpr>) -> Option<Op> {
    if let Some(plain) = expr.as_any().downcast_ref::<PlainAggregateWindowExpr>() {
        running_aggregate(plain)
    } else if let Some(standard) = expr.as_any().downcast_ref::<StandardWindowExpr>() {
        standard_function(standard)
    } else {
        None
    }
}

/// Types whose running minimum and maximum the operator computes: integers, dates and
/// timestamps (floating point's NaN ordering stays DataFusion's).
fn ordered_integers(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int32
            | DataType::Int64
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
    )
}

/// A running aggregate, for a frame from the partition's start to the current row or to a
/// number of rows before it.
fn running_aggregate(expr: &PlainAggregateWindowExpr) -> Option<Op> {
    let frame = expr.get_window_frame();
    let behind = match &frame.end_bound {
        WindowFrameBound::CurrentRow => 0,
        WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n))) if *n > 0 => {
            usize::try_from(*n).ok()?
        }
        _ => return None,
    };
    let aggregate = expr.get_aggregate_expr();
    // DataFusion keeps a FILTER clause in the window expression, behind a trait it does not
    // export; its debug text, whose last field is the filter, tells.
    let filtered = !format!("{expr:?}").ends_with("filter: None }");
    if frame.units != WindowFrameUnits::Rows
        || !frame.start_bound.is_unbounded()
        || filtered
        || aggregate.is_distinct()
        || behind >= 1 << 30
    {
        return None;
    }
    let [arg] = aggregate.expressions().try_into().ok()?;
    let out = aggregate.field().data_type().clone();
    // The argument's type is the aggregate's, once DataFusion has coerced it.
    let aggregate_kind = match aggregate.fun().name() {
        "count" if out == DataType::Int64 => Aggregate::Count,
        "sum" if matches!(out, DataType::Int64 | DataType::UInt64) => Aggregate::Sum,
        "min" if ordered_integers(&out) => Aggregate::Min,
        "max" if ordered_integers(&out) => Aggregate::Max,
        _ => return None,
    };
    let empty = aggregate.default_value(&out).ok()?;
    Some(Op {
        arg: Some(arg),
        kind: Kind::Running {
            aggregate: aggregate_kind,
            behind,
            empty,
        },
    })
}

/// `row_number()`, or `lag` over whole rows without IGNORE NULLS.
fn standard_function(expr: &StandardWindowExpr) -> Option<Op> {
    let function = expr.get_standard_func_expr();
    let udf = function.as_any().downcast_ref::<WindowUDFExpr>()?;
    match udf.fun().name() {
        "row_number" if function.field().ok()?.data_type() == &DataType::UInt64 => {
            return Some(Op {
                arg: None,
                kind: Kind::RowNumber,
            });
        }
        "lag" => {}
        _ => return None,
    }
    let literal = |i: usize| -> Option<Option<ScalarValue>> {
        match udf.args().get(i) {
            None => Some(None),
            Some(e) => Some(Some(e.downcast_ref::<Literal>()?.value().clone())),
        }
    };
    let offset = match literal(1)? {
        None => 1,
        Some(ScalarValue::Int64(Some(n))) if n > 0 => usize::try_from(n).ok()?,
        Some(_) => return None,
    };
    let out = function.field().ok()?.data_type().clone();
    let default = match literal(2)? {
        None => ScalarValue::try_from(&out).ok()?,
        Some(v) => v.cast_to(&out).ok()?,
    };
    let arg = Some(Arc::clone(udf.args().first()?));
    // lag reads the `offset` rows before the current one; with IGNORE NULLS, which DataFusion
    // does not show, it reads back to the partition's start (its `get_range`).
    let evaluator = function.create_evaluator().ok()?;
    const FAR: usize = 1 << 30;
    let range = evaluator.get_range(FAR, FAR + 1).ok()?;
    (offset < FAR && range == (FAR - offset..FAR + 1)).then_some(Op {
        arg,
        kind: Kind::Lag(offset, default),
    })
}

/// Windows over input sorted by their partition key, computed a batch at a time; see the
/// module's documentation.
#[derive(Debug)]
pub struct BatchWindowExec {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    ops: Vec<Op>,
    input: Arc<dyn ExecutionPlan>,
    /// DataFusion's operator this one replaces: its properties and requirements are this
    /// one's.
    window: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for BatchWindowExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BatchWindowExec: ")?;
        self.window.fmt_as(t, f)
    }
}

impl ExecutionPlan for BatchWindowExec {
    fn name(&self) -> &str {
        "BatchWindowExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.window.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.window.apply_expressions(f)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.window.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.window.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| datafusion::error::DataFusionError::Internal("one input".into()))?;
        let window =
            Arc::clone(&self.window).replace_children(vec![Arc::clone(&input)], options)?;
        Ok(Arc::new(Self {
            partition_by: self.partition_by.clone(),
            ops: self.ops.clone(),
            input,
            window,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = self.schema();
        let mut state = Running {
            partition_by: self.partition_by.clone(),
            carries: self.ops.iter().map(|_| Carry::default()).collect(),
            ops: self.ops.clone(),
            last_key: None,
            schema: Arc::clone(&schema),
            metrics: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = input.map(move |batch| state.next(batch?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.window.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.window.statistics_from_inputs(input_stats, args)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}

/// What one window carries from a batch to the next, for the partition in progress.
#[derive(Default)]
struct Carry {
    /// The running value at the last row, as a one-row array.
    last: Option<ArrayRef>,
    /// The last values (at most as many as the window looks back) of what is shifted.
    tail: Option<ArrayRef>,
}

/// One stream's state.
struct Running {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    ops: Vec<Op>,
    carries: Vec<Carry>,
    /// The partition key of the last row seen, as one-row arrays; `None` before the first.
    last_key: Option<Vec<ArrayRef>>,
    schema: arrow::datatypes::SchemaRef,
    metrics: BaselineMetrics,
}

impl Running {
    fn next(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let timer = self.metrics.elapsed_compute().timer();
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let keys = self
            .partition_by
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let runs = if keys.is_empty() {
            vec![0..rows]
        } else {
            arrow::compute::partition(&keys)?.ranges()
        };
        // Whether the first run goes on with the partition of the last batch's last row.
        let goes_on = match &self.last_key {
            None => false,
            Some(last) => last.iter().zip(&keys).try_fold(true, |same, (l, k)| {
                let cmp =
                    arrow::array::make_comparator(l.as_ref(), k.as_ref(), SortOptions::default())?;
                Ok::<_, arrow::error::ArrowError>(same && cmp(0, 0) == Ordering::Equal)
            })?,
        };
        let mut columns = batch.columns().to_vec();
        for (op, carry) in self.ops.iter().zip(self.carries.iter_mut()) {
            let values = match &op.arg {
                Some(arg) => arg.evaluate(&batch)?.into_array(rows)?,
                None => Arc::new(NullArray::new(rows)),
            };
            columns.push(compute(&op.kind, &values, &runs, goes_on, carry)?);
        }
        self.last_key = Some(keys.iter().map(|k| k.slice(rows - 1, 1)).collect());
        let out = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        timer.done();
        self.metrics.record_output(out.num_rows());
        Ok(out)
    }
}

/// One window's results for a batch whose partitions are `runs`; the first goes on from
/// the last batch when `goes_on`.
fn compute(
    kind: &Kind,
    values: &ArrayRef,
    runs: &[std::ops::Range<usize>],
    goes_on: bool,
    carry: &mut Carry,
) -> Result<ArrayRef> {
    let last = carry.last.take().filter(|_| goes_on);
    let (running, behind, empty): (ArrayRef, usize, &ScalarValue) = match kind {
        Kind::Lag(offset, default) => {
            let (out, tail) = shift(values, runs, goes_on, carry.tail.take(), *offset, default)?;
            carry.tail = Some(tail);
            return Ok(out);
        }
        Kind::RowNumber => {
            let mut n = last.map_or(0, |l| l.as_primitive::<UInt64Type>().value(0));
            let mut numbers = Vec::with_capacity(values.len());
            for (i, run) in runs.iter().enumerate() {
                if i > 0 {
                    n = 0;
                }
                numbers.extend((n + 1)..=(n + run.len() as u64));
                n += run.len() as u64;
            }
            (Arc::new(UInt64Array::from(numbers)), 0, &ScalarValue::Null)
        }
        Kind::Running {
            aggregate: Aggregate::Count,
            behind,
            empty,
        } => {
            let mut total = last.map_or(0, |l| l.as_primitive::<Int64Type>().value(0));
            let mut counts = Vec::with_capacity(values.len());
            for (i, run) in runs.iter().enumerate() {
                if i > 0 {
                    total = 0;
                }
                for row in run.clone() {
                    total += i64::from(values.is_valid(row));
                    counts.push(total);
                }
            }
            (Arc::new(Int64Array::from(counts)), *behind, empty)
        }
        Kind::Running {
            aggregate,
            behind,
            empty,
        } => {
            macro_rules! typed {
                ($t:ty) => {
                    Arc::new(running::<$t>(values, runs, last.as_ref(), *aggregate)?) as ArrayRef
                };
            }
            let running = match values.data_type() {
                DataType::Int32 => typed!(Int32Type),
                DataType::Int64 => typed!(Int64Type),
                DataType::UInt32 => typed!(UInt32Type),
                DataType::UInt64 => typed!(UInt64Type),
                DataType::Date32 => typed!(Date32Type),
                DataType::Date64 => typed!(Date64Type),
                DataType::Timestamp(TimeUnit::Second, _) => typed!(TimestampSecondType),
                DataType::Timestamp(TimeUnit::Millisecond, _) => typed!(TimestampMillisecondType),
                DataType::Timestamp(TimeUnit::Microsecond, _) => typed!(TimestampMicrosecondType),
                DataType::Timestamp(TimeUnit::Nanosecond, _) => typed!(TimestampNanosecondType),
                t => return internal_err!("running {aggregate:?} of {t}"),
            };
            (running, *behind, empty)
        }
    };
    carry.last = Some(running.slice(running.len() - 1, 1));
    if behind == 0 {
        return Ok(running);
    }
    // A frame ending `behind` rows back holds what the running value held that many rows
    // before: the running values shifted, `empty` before the partition's first.
    let (out, tail) = shift(&running, runs, goes_on, carry.tail.take(), behind, empty)?;
    carry.tail = Some(tail);
    Ok(out)
}

/// A running sum, minimum or maximum over `runs`; the first run goes on from `last`, the
/// running value at the last batch's last row, where given.
fn running<T: ArrowPrimitiveType>(
    values: &ArrayRef,
    runs: &[std::ops::Range<usize>],
    last: Option<&ArrayRef>,
    aggregate: Aggregate,
) -> Result<PrimitiveArray<T>> {
    let Some(values) = values.as_primitive_opt::<T>() else {
        return internal_err!("running {aggregate:?} of {}", values.data_type());
    };
    let mut total: Option<T::Native> = last
        .and_then(|l| l.as_primitive_opt::<T>())
        .and_then(|l| l.is_valid(0).then(|| l.value(0)));
    let step = |t: T::Native, v: T::Native| match aggregate {
        Aggregate::Min if v.is_lt(t) => v,
        Aggregate::Max if v.is_gt(t) => v,
        Aggregate::Min | Aggregate::Max => t,
        Aggregate::Sum | Aggregate::Count => t.add_wrapping(v),
    };
    let mut out = Vec::with_capacity(values.len());
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            total = None;
        }
        for row in run.clone() {
            if values.is_valid(row) {
                let v = values.value(row);
                total = Some(total.map_or(v, |t| step(t, v)));
            }
            out.push(total);
        }
    }
    Ok(PrimitiveArray::<T>::from_iter(out).with_data_type(values.data_type().clone()))
}

/// `lag` by `offset` over `runs`; `tail` holds the last values (at most `offset`) of the
/// partition the first run goes on with when `goes_on`. Gives the results and the new tail.
fn shift(
    values: &ArrayRef,
    runs: &[std::ops::Range<usize>],
    goes_on: bool,
    tail: Option<ArrayRef>,
    offset: usize,
    default: &ScalarValue,
) -> Result<(ArrayRef, ArrayRef)> {
    let tail = tail.filter(|_| goes_on).filter(|t| !t.is_empty());
    let (all, before) = match &tail {
        Some(t) => (
            arrow::compute::concat(&[t.as_ref(), values.as_ref()])?,
            t.len(),
        ),
        None => (Arc::clone(values), 0),
    };
    // For each row, the row `offset` before it in `all`, where that is in its partition.
    let mut from = Vec::with_capacity(values.len());
    for (i, run) in runs.iter().enumerate() {
        let start = if i == 0 { 0 } else { before + run.start };
        for row in run.clone() {
            let at = before + row;
            from.push((at >= start + offset).then(|| (at - offset) as u64));
        }
    }
    let from = UInt64Array::from(from);
    let mut out = arrow::compute::take(all.as_ref(), &from, None)?;
    if !default.is_null() {
        let found = BooleanArray::from_iter(from.iter().map(|f| Some(f.is_some())));
        out = arrow::compute::kernels::zip::zip(&found, &out, &default.to_scalar()?)?;
    }
    let last = runs
        .last()
        .map_or(0, |r| if runs.len() == 1 { 0 } else { before + r.start });
    let keep = (all.len() - last).min(offset);
    Ok((out, all.slice(all.len() - keep, keep)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// A session with the rule, and one without, over the same rows in small batches, so that
    /// partitions span batches.
    fn sessions() -> (SessionContext, SessionContext) {
        let config = || {
            SessionConfig::new()
                .with_batch_size(7)
                .with_target_partitions(2)
        };
        let plain = SessionContext::new_with_config(config());
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config())
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(BatchWindows))
            .build();
        (SessionContext::new_with_state(state), plain)
    }

    const ROWS: &str = "SELECT CAST(k AS VARCHAR) AS k, t, \
        CASE WHEN t % 5 = 0 THEN NULL ELSE t % 3 END AS x, \
        CAST(t AS BIGINT UNSIGNED) AS u, \
        CASE WHEN t % 7 = 0 THEN NULL \
             ELSE arrow_cast(t * 7919 % 1000 * 1000000, 'Timestamp(Microsecond, Some(\"UTC\"))') END AS ts \
        FROM (SELECT value % 4 AS k, value AS t FROM generate_series(1, 500)) \
        WHERE NOT (k = 3 AND t > 40) ORDER BY k, t";

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, Arc<dyn ExecutionPlan>) {
        ctx.sql(&format!("CREATE OR REPLACE TABLE rows AS {ROWS}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.clone().create_physical_plan().await.unwrap();
        let batches = frame.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (text, plan)
    }

    /// Each window in a query of its own, and what the rule should make of it: DataFusion
    /// plans a query's windows with one operator when they share partitioning and order, and
    /// one the rule does not take would keep them all.
    const WINDOWS: &[(&str, &[&str])] = &[
        (
            "sum(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
            &["Sum"],
        ),
        (
            "sum(u) OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING)",
            &["Sum"],
        ),
        (
            "count(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
            &["Count"],
        ),
        (
            "count(*) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
            &["Count"],
        ),
        (
            "sum(x) OVER (ORDER BY k, t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
            &["Sum"],
        ),
        (
            "sum(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND 3 PRECEDING)",
            &["Sum<3"],
        ),
        (
            "count(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING)",
            &["Count<2"],
        ),
        (
            "min(x) OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING)",
            &["Min"],
        ),
        (
            "max(ts) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)",
            &["Max<1"],
        ),
        (
            "min(ts) OVER (ORDER BY k, t ROWS UNBOUNDED PRECEDING)",
            &["Min"],
        ),
        (
            "row_number() OVER (PARTITION BY k ORDER BY t)",
            &["RowNumber"],
        ),
        ("row_number() OVER (ORDER BY t DESC)", &["RowNumber"]),
        ("lag(x) OVER (PARTITION BY k ORDER BY t)", &["lag 1 NULL"]),
        (
            "lag(x, 3, -1) OVER (PARTITION BY k ORDER BY t)",
            &["lag 3 -1"],
        ),
        ("lag(x, 2) OVER (ORDER BY k, t)", &["lag 2 NULL"]),
        ("lag(ts) OVER (PARTITION BY k ORDER BY t)", &["lag 1 NULL"]),
        ("lag(x) IGNORE NULLS OVER (PARTITION BY k ORDER BY t)", &[]),
        ("sum(x) OVER (PARTITION BY k ORDER BY t)", &[]),
        (
            "max(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)",
            &[],
        ),
        (
            "sum(CAST(x AS DOUBLE)) OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING)",
            &[],
        ),
        (
            "max(CAST(x AS DOUBLE)) OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING)",
            &[],
        ),
        ("lead(x) OVER (PARTITION BY k ORDER BY t)", &[]),
        (
            "sum(x) FILTER (WHERE t % 2 = 0) OVER (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING)",
            &[],
        ),
    ];

    /// The windows the rule put in a plan's batch operators, in short.
    fn taken(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
        let mut taken = Vec::new();
        plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<BatchWindowExec>() {
                // The replaced operator's statistics: as many rows out as in.
                let stats = datafusion::physical_plan::StatisticsContext::new()
                    .compute(node.as_ref(), &StatisticsArgs::new())
                    .unwrap();
                assert!(stats.num_rows.get_value().is_some(), "{stats:?}");
                taken.extend(exec.ops.iter().map(|op| match &op.kind {
                    Kind::Running {
                        aggregate,
                        behind: 0,
                        ..
                    } => format!("{aggregate:?}"),
                    Kind::Running {
                        aggregate, behind, ..
                    } => format!("{aggregate:?}<{behind}"),
                    Kind::Lag(n, default) => format!("lag {n} {default}"),
                    Kind::RowNumber => "RowNumber".into(),
                }));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        taken
    }

    /// The answers equal DataFusion's own over partitions that span batches (of 7 rows),
    /// with nulls, a partition ending early and a window over all rows.
    #[tokio::test]
    async fn answers_as_datafusion_does_and_takes_only_what_it_computes() {
        let (fast, plain) = sessions();
        for (window, expected) in WINDOWS {
            let sql = format!("SELECT k, t, x, ts, {window} AS w FROM rows ORDER BY k, t");
            let (ours, plan) = answer(&fast, &sql).await;
            let (theirs, _) = answer(&plain, &sql).await;
            assert_eq!(ours, theirs, "{window}");
            assert_eq!(taken(&plan), *expected, "{window}");
        }
    }
}
