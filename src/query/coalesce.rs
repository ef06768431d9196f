//! `coalesce(x, …)` of a column that holds no nulls is the column itself.
//!
//! Analysts write `GROUP BY coalesce(username, 'unknown')` to be safe. To DataFusion the call
//! hides the column: it cannot tell that the result still follows the table's order, so an
//! aggregate grouped by it hashes every group at once where it could stream them in order.
//! This rule reads the scanned tables' statistics (lake's scan gives each column's exact null
//! count from the Delta log) and, where a column has no nulls in the version read, replaces
//! the call by its first argument, under the call's name. A window or an aggregate over the
//! table's sort key then sees the key. Null counts pass through filters, sorts, limits,
//! aliases and projections of columns; anything else (a join, a union) ends what is known.

use std::collections::HashSet;

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule; see the module's documentation.
#[derive(Debug, Default)]
pub struct NullFreeCoalesce;

impl OptimizerRule for NullFreeCoalesce {
    fn name(&self) -> &str {
        "lake_null_free_coalesce"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        Ok(rewrite(plan)?.0)
    }
}

/// Rewrites `plan` from its leaves up; gives it with the columns of its output that hold no
/// nulls.
fn rewrite(plan: LogicalPlan) -> Result<(Transformed<LogicalPlan>, HashSet<Column>)> {
    let mut inputs = Vec::new();
    let plan = plan.map_children(|child| {
        let (child, free) = rewrite(child)?;
        inputs.push(free);
        Ok(child)
    })?;
    let children_changed = plan.transformed;
    let plan = plan.data;
    let free_in = match inputs.as_slice() {
        [one] => one.clone(),
        _ => HashSet::new(),
    };
    let plan = if !free_in.is_empty()
        && matches!(
            plan,
            LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Sort(_)
        ) {
        super::rewrite_expressions(plan, |e| Ok(simplify(e, &free_in)))?
    } else {
        Transformed::no(plan)
    };
    let changed = children_changed || plan.transformed;
    let mut plan = plan.data;
    if changed {
        plan = plan.recompute_schema()?;
    }
    let free = null_free(&plan, &free_in);
    Ok((
        Transformed::new(plan, changed, TreeNodeRecursion::Continue),
        free,
    ))
}

/// `coalesce(x, …)` as `x` where `x` is a column (or a cast of one) that holds no nulls.
fn simplify(e: Expr, free: &HashSet<Column>) -> Transformed<Expr> {
    let column = |arg: &Expr| match arg {
        Expr::Column(c) => Some(c.clone()),
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Column(c) => Some(c.clone()),
            _ => None,
        },
        _ => None,
    };
    match e {
        Expr::ScalarFunction(call)
            if call.func.name() == "coalesce"
                && call
                    .args
                    .first()
                    .and_then(column)
                    .is_some_and(|c| free.contains(&c)) =>
        {
            Transformed::yes(call.args.into_iter().next().expect("checked above"))
        }
        e => Transformed::no(e),
    }
}

/// The output columns of `plan` that hold no nulls, given those of its one input.
fn null_free(plan: &LogicalPlan, input: &HashSet<Column>) -> HashSet<Column> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(stats) = source_as_provider(&scan.source)
                .ok()
                .and_then(|p| p.statistics())
            else {
                return HashSet::new();
            };
            let schema = scan.source.schema();
            if stats.column_statistics.len() != schema.fields().len() {
                return HashSet::new();
            }
            let indices: Vec<usize> = match &scan.projection {
                Some(p) => p.clone(),
                None => (0..schema.fields().len()).collect(),
            };
            indices
                .into_iter()
                .filter(|&i| stats.column_statistics[i].null_count == Precision::Exact(0))
                .map(|i| Column::new(Some(scan.table_name.clone()), schema.field(i).name()))
                .collect()
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_) => input.clone(),
        LogicalPlan::SubqueryAlias(alias) => {
            let from = alias.input.schema().columns();
            let to = plan.schema().columns();
            from.into_iter()
                .zip(to)
                .filter(|(f, _)| input.contains(f))
                .map(|(_, t)| t)
                .collect()
        }
        LogicalPlan::Projection(projection) => {
            let to = plan.schema().columns();
            projection
                .expr
                .iter()
                .zip(to)
                .filter(|(e, _)| {
                    let e = match e {
                        Expr::Alias(alias) => alias.expr.as_ref(),
                        e => e,
                    };
                    matches!(e, Expr::Column(c) if input.contains(c))
                })
                .map(|(_, t)| t)
                .collect()
        }
        _ => HashSet::new(),
    }
}
