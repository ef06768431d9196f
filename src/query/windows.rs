//! Running sums and counts, and `lag`, over sorted partitions a batch at a time.
//!
//! DataFusion 55's `BoundedWindowAggExec` streams a window over input sorted by its partition
//! key, but it evaluates each frame row by row: for every row it slices the argument arrays,
//! feeds the slice to the accumulator and builds a `ScalarValue`, and `lag` builds one per row
//! too. Over the 10 M plays of `bench/run`, that was 4.4 s of compute for the sessions query's
//! two windows. This physical rule replaces such an operator, when every window in it is one
//! of these and its input arrives sorted by the partition key (DataFusion's `Sorted` mode),
//! by [`BatchWindowExec`], which computes a batch's results in one pass and emits them with
//! the batch:
//! - `sum` of a 64-bit integer and `count`, framed `ROWS BETWEEN UNBOUNDED PRECEDING AND
//!   CURRENT ROW`, with no FILTER and no DISTINCT: the running total, carried from batch to
//!   batch while the partition goes on (integer sums wrap, as DataFusion's do);
//! - `lag(x[, n[, default]])` without IGNORE NULLS: the value `n` rows before in the
//!   partition, the last `n` values carried between batches.
//!
//! The operator keeps the replaced one's properties and input requirements, so the plan
//! around it does not change. Anything else (floating-point sums, whose rounding depends on
//! the order of additions; RANGE frames, where peers share a value) stays DataFusion's.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, PrimitiveArray, RecordBatch, UInt64Array,
};
use arrow::compute::SortOptions;
use arrow::datatypes::{ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Int64Type, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, StandardWindowExpr, WindowExpr};
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    InputDistributionRequirements, InputOrderMode, PlanProperties, ReplaceChildrenOptions,
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
    /// The argument.
    arg: Arc<dyn PhysicalExpr>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A running count of non-null values.
    Count,
    /// A running sum, of this integer type.
    Sum(DataType),
    /// The value this many rows before, or the default.
    Lag(usize, ScalarValue),
}

/// The batch form of `expr`, where it has one.
fn op(expr: &Arc<dyn WindowExpr>) -> Option<Op> {
    if let Some(plain) = expr.as_any().downcast_ref::<PlainAggregateWindowExpr>() {
        running(plain)
    } else if let Some(standard) = expr.as_any().downcast_ref::<StandardWindowExpr>() {
        lag(standard)
    } else {
        None
    }
}

/// A running sum or count, for a frame from the partition's start to the current row.
fn running(expr: &PlainAggregateWindowExpr) -> Option<Op> {
    let frame = expr.get_window_frame();
    let from_start = frame.units == WindowFrameUnits::Rows
        && frame.start_bound.is_unbounded()
        && matches!(frame.end_bound, WindowFrameBound::CurrentRow);
    let aggregate = expr.get_aggregate_expr();
    // DataFusion keeps a FILTER clause in the window expression, behind a trait it does not
    // export; its debug text, whose last field is the filter, tells.
    let filtered = !format!("{expr:?}").ends_with("filter: None }");
    if !from_start || filtered || aggregate.is_distinct() {
        return None;
    }
    let [arg] = aggregate.expressions().try_into().ok()?;
    let out = aggregate.field().data_type().clone();
    let kind = match aggregate.fun().name() {
        "count" if out == DataType::Int64 => Kind::Count,
        // The argument's type is the sum's, once DataFusion has coerced it.
        "sum" if matches!(out, DataType::Int64 | DataType::UInt64) => Kind::Sum(out),
        _ => return None,
    };
    Some(Op { arg, kind })
}

/// `lag` over whole rows, without IGNORE NULLS.
fn lag(expr: &StandardWindowExpr) -> Option<Op> {
    let function = expr.get_standard_func_expr();
    let udf = function.as_any().downcast_ref::<WindowUDFExpr>()?;
    if udf.fun().name() != "lag" {
        return None;
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
    let arg = Arc::clone(udf.args().first()?);
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
            carries: self.ops.iter().map(|op| Carry::new(&op.kind)).collect(),
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
}

/// What one window carries from a batch to the next, for the partition in progress.
enum Carry {
    Count(i64),
    SumI64(Option<i64>),
    SumU64(Option<u64>),
    /// The partition's last values, at most the offset.
    Lag(Option<ArrayRef>),
}

impl Carry {
    fn new(kind: &Kind) -> Self {
        match kind {
            Kind::Count => Carry::Count(0),
            Kind::Sum(DataType::UInt64) => Carry::SumU64(None),
            Kind::Sum(_) => Carry::SumI64(None),
            Kind::Lag(..) => Carry::Lag(None),
        }
    }
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
            let values = op.arg.evaluate(&batch)?.into_array(rows)?;
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
    match (kind, carry) {
        (Kind::Count, Carry::Count(total)) => {
            let mut counts = Vec::with_capacity(values.len());
            for (i, run) in runs.iter().enumerate() {
                if i > 0 || !goes_on {
                    *total = 0;
                }
                for row in run.clone() {
                    *total += i64::from(values.is_valid(row));
                    counts.push(*total);
                }
            }
            Ok(Arc::new(Int64Array::from(counts)))
        }
        (Kind::Sum(_), Carry::SumI64(total)) => Ok(Arc::new(running_sum::<Int64Type>(
            values, runs, goes_on, total,
        )?)),
        (Kind::Sum(_), Carry::SumU64(total)) => Ok(Arc::new(running_sum::<UInt64Type>(
            values, runs, goes_on, total,
        )?)),
        (Kind::Lag(offset, default), Carry::Lag(tail)) => {
            let (out, rest) = shift(values, runs, goes_on, tail.take(), *offset, default)?;
            *tail = Some(rest);
            Ok(out)
        }
        (kind, _) => internal_err!("window state does not match {kind:?}"),
    }
}

/// Running sums over `runs`, from `total` for the first when `goes_on`; `total` is left
/// holding the last.
fn running_sum<T: ArrowPrimitiveType>(
    values: &ArrayRef,
    runs: &[std::ops::Range<usize>],
    goes_on: bool,
    total: &mut Option<T::Native>,
) -> Result<PrimitiveArray<T>> {
    let Some(values) = values.as_primitive_opt::<T>() else {
        return internal_err!("running sum of {}", values.data_type());
    };
    let mut out = Vec::with_capacity(values.len());
    for (i, run) in runs.iter().enumerate() {
        if i > 0 || !goes_on {
            *total = None;
        }
        for row in run.clone() {
            if values.is_valid(row) {
                let v = values.value(row);
                *total = Some(total.map_or(v, |t| t.add_wrapping(v)));
            }
            out.push(*total);
        }
    }
    Ok(out.into_iter().collect())
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
        CAST(t AS BIGINT UNSIGNED) AS u \
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

    /// Each window in a query of its own: DataFusion plans a query's windows with one operator
    /// when they share partitioning and order, and one it cannot bound would take them all.
    const WINDOWS: &[&str] = &[
        "sum(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        "sum(u) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        "count(x) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        "count(*) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        "sum(x) OVER (ORDER BY k, t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        "lag(x) OVER (PARTITION BY k ORDER BY t)",
        "lag(x, 3, -1) OVER (PARTITION BY k ORDER BY t)",
        "lag(x, 2) OVER (ORDER BY k, t)",
        "lag(x) IGNORE NULLS OVER (PARTITION BY k ORDER BY t)",
        "sum(x) OVER (PARTITION BY k ORDER BY t)",
        "sum(CAST(x AS DOUBLE)) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        "lead(x) OVER (PARTITION BY k ORDER BY t)",
        "sum(x) FILTER (WHERE t % 2 = 0) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
    ];

    /// The batch forms the rule put in a plan.
    fn kinds(plan: &Arc<dyn ExecutionPlan>) -> Vec<Kind> {
        let mut kinds = Vec::new();
        plan.apply(|node| {
            if let Some(exec) = node.downcast_ref::<BatchWindowExec>() {
                kinds.extend(exec.ops.iter().map(|op| op.kind.clone()));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        kinds
    }

    #[tokio::test]
    async fn answers_as_datafusion_does_and_takes_integer_totals_and_lag_only() {
        let (fast, plain) = sessions();
        let mut taken = Vec::new();
        for window in WINDOWS {
            let sql = format!("SELECT k, t, x, {window} AS w FROM rows ORDER BY k, t");
            let (ours, plan) = answer(&fast, &sql).await;
            let (theirs, _) = answer(&plain, &sql).await;
            assert_eq!(ours, theirs, "{window}");
            taken.push(kinds(&plan));
        }
        let i64 = || Kind::Sum(DataType::Int64);
        assert_eq!(
            taken,
            vec![
                vec![i64()],
                vec![Kind::Sum(DataType::UInt64)],
                vec![Kind::Count],
                vec![Kind::Count],
                vec![i64()],
                vec![Kind::Lag(1, ScalarValue::Int64(None))],
                vec![Kind::Lag(3, ScalarValue::Int64(Some(-1)))],
                vec![Kind::Lag(2, ScalarValue::Int64(None))],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![],
            ]
        );
    }
}
