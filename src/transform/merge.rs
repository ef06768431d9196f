//! Merging the delta: a table model whose groups come from one GROUP BY of decomposable
//! aggregates (`count`, `sum`, `min`, `max`, with or without `FILTER`) keeps that aggregate's
//! rows, one per group, in `_lake.state__<schema>__<name>`. A run that only added input rows
//! aggregates just those rows, combines them with the stored rows of the groups they touch
//! (counts and sums added, minima and maxima taken), and computes the model's rows of those
//! groups from the result. No history is read. This is how Databricks' Enzyme and Feldera
//! maintain aggregates; `count(DISTINCT)`, `avg` and medians do not combine, and such models
//! re-aggregate their touched groups instead.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, Projection, cast};
use datafusion::prelude::DataFrame;

use super::scope::Scope;
use crate::lake::{INTERNAL, TableName};

/// How one aggregate's stored and new values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    Sum,
    Min,
    Max,
}

/// A model whose rows are a row-wise function of one GROUP BY of decomposable aggregates.
#[derive(Debug, Clone)]
pub struct Mergeable {
    /// The aggregate, as the model's plan holds it.
    aggregate: Aggregate,
    combine: Vec<Combine>,
    /// For each scope column, its GROUP BY key's index.
    pub groups: Vec<usize>,
}

/// Whether the model of `plan` (unoptimized), kept by `scope`, can merge the delta; why not.
pub fn mergeable(plan: &LogicalPlan, scope: &Scope) -> Result<Mergeable, String> {
    // Down from the root through row-wise steps to the one aggregate, following each scope
    // column to its GROUP BY key.
    let names: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut positions: Vec<usize> = scope
        .columns
        .iter()
        .map(|c| {
            names
                .iter()
                .position(|n| n == c)
                .expect("a scope column is an output column")
        })
        .collect();
    // A window between the output and the aggregate reads other groups' rows.
    let mut node = plan;
    while !matches!(node, LogicalPlan::Aggregate(_)) {
        if matches!(node, LogicalPlan::Window(_)) {
            return Err("a window over the groups needs the other groups' rows".into());
        }
        match node.inputs().as_slice() {
            [only] => node = only,
            _ => break,
        }
    }
    let mut node = plan;
    let aggregate = loop {
        match node {
            LogicalPlan::Aggregate(a) => break a,
            LogicalPlan::Projection(p) => {
                for pos in &mut positions {
                    let mut e = &p.expr[*pos];
                    while let Expr::Alias(a) = e {
                        e = &a.expr;
                    }
                    let Expr::Column(c) = e else {
                        return Err("its group key is computed above the GROUP BY".into());
                    };
                    *pos = p
                        .input
                        .schema()
                        .index_of_column(c)
                        .map_err(|e| e.to_string())?;
                }
                node = &p.input;
            }
            LogicalPlan::Filter(f) => node = &f.input,
            LogicalPlan::SubqueryAlias(s) => node = &s.input,
            LogicalPlan::Sort(s) if s.fetch.is_none() => node = &s.input,
            LogicalPlan::Window(_) => {
                return Err("a window over the groups needs the other groups' rows".into());
            }
            other => {
                let display = other.display().to_string();
                let step = display.split(':').next().unwrap_or_default().to_string();
                return Err(format!("a {step} step above its GROUP BY"));
            }
        }
    };
    let n = aggregate.group_expr.len();
    if positions.iter().any(|p| *p >= n) {
        return Err("its group key is not a GROUP BY key".into());
    }
    let mut below_grouped = false;
    let _ = aggregate.input.apply(|p| {
        below_grouped |= matches!(
            p,
            LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Distinct(_)
        );
        Ok(TreeNodeRecursion::Continue)
    });
    if below_grouped {
        return Err("its rows are grouped twice".into());
    }
    let mut combine = Vec::new();
    for e in &aggregate.aggr_expr {
        let mut e = e;
        while let Expr::Alias(a) = e {
            e = &a.expr;
        }
        let Expr::AggregateFunction(f) = e else {
            return Err(format!("{e} does not merge"));
        };
        let name = f.func.name();
        if f.params.distinct {
            return Err(format!("{name}(DISTINCT …) does not merge"));
        }
        combine.push(match name {
            "count" | "sum" => Combine::Sum,
            "min" => Combine::Min,
            "max" => Combine::Max,
            other => return Err(format!("{other}() does not merge")),
        });
    }
    Ok(Mergeable {
        aggregate: aggregate.clone(),
        combine,
        groups: positions,
    })
}

/// A table model's strategy, with how its groups are recomputed: `groups by track_id,
/// merging new rows into its aggregates`, or `…, re-aggregated: count(DISTINCT …) does not
/// merge`.
pub fn describe(strategy: &super::scope::Strategy, plan: &LogicalPlan) -> String {
    match strategy {
        super::scope::Strategy::Groups(scope) => match mergeable(plan, scope) {
            Ok(_) => format!(
                "{}, merging new rows into its aggregates",
                strategy.describe()
            ),
            Err(why) => format!("{}, re-aggregated: {why}", strategy.describe()),
        },
        super::scope::Strategy::Full(_) => strategy.describe(),
    }
}

/// Where a model's aggregate rows are kept.
pub fn state_table(model: &TableName) -> TableName {
    let name = format!("state__{}__{}", model.schema(), model.name());
    let name = if name.len() > 63 {
        use sha2::Digest;
        let h = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..6]);
        format!("{}_{h}", &name[..50])
    } else {
        name
    };
    TableName::new(INTERNAL, &name).expect("a valid name")
}

impl Mergeable {
    /// The stored column of the `i`-th output of the aggregate: `__g0`, …, then `__a0`, ….
    pub fn column(&self, i: usize) -> String {
        let n = self.aggregate.group_expr.len();
        if i < n {
            format!("__g{i}")
        } else {
            format!("__a{}", i - n)
        }
    }

    /// The aggregate of `plan` (the model's plan in another session: over new rows only,
    /// say), as stored columns.
    pub fn state_of(
        &self,
        state: &datafusion::execution::SessionState,
        plan: &LogicalPlan,
    ) -> Result<DataFrame> {
        let mut found = None;
        plan.apply(|p| {
            if let LogicalPlan::Aggregate(a) = p {
                found = Some(a.clone());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let aggregate = found.ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("the model has no aggregate".into())
        })?;
        let schema = aggregate.schema.clone();
        let exprs: Vec<Expr> = (0..schema.fields().len())
            .map(|i| Expr::Column(Column::from(schema.qualified_field(i))).alias(self.column(i)))
            .collect();
        DataFrame::new(state.clone(), LogicalPlan::Aggregate(aggregate)).select(exprs)
    }

    /// Stored rows and new rows' aggregates (both as stored columns) combined, one per group.
    pub fn combine(&self, stored: DataFrame, delta: DataFrame) -> Result<DataFrame> {
        let n = self.aggregate.group_expr.len();
        let both = stored.union(delta)?;
        let groups: Vec<Expr> = (0..n)
            .map(|i| Expr::Column(Column::new_unqualified(self.column(i))))
            .collect();
        let schema = both.schema().clone();
        let aggs: Vec<Expr> = self
            .combine
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let name = self.column(n + j);
                let e = Expr::Column(Column::new_unqualified(&name));
                let combined = match c {
                    Combine::Sum => sum(e.clone()),
                    Combine::Min => min(e.clone()),
                    Combine::Max => max(e.clone()),
                };
                // A sum of counts stays the count's type.
                let ty = e
                    .get_type(&schema)
                    .unwrap_or(arrow::datatypes::DataType::Int64);
                cast(combined, ty).alias(name)
            })
            .collect();
        both.aggregate(groups, aggs)
    }

    /// The model's plan with its aggregate replaced by `state` (stored columns): the model's
    /// rows of the groups `state` holds.
    pub fn over(&self, plan: &LogicalPlan, state: LogicalPlan) -> Result<LogicalPlan> {
        let schema = self.aggregate.schema.clone();
        let exprs: Vec<Expr> = (0..schema.fields().len())
            .map(|i| {
                let (qualifier, field) = schema.qualified_field(i);
                cast(
                    Expr::Column(Column::new_unqualified(self.column(i))),
                    field.data_type().clone(),
                )
                .alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        let replacement = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(state))?);
        // The topmost aggregate, as in `mergeable` and `state_of`: the plan may come from
        // another session, over other scans.
        let mut replacement = Some(replacement);
        let rewritten = plan.clone().transform_down(|p| match p {
            LogicalPlan::Aggregate(_) if replacement.is_some() => Ok(Transformed::new(
                replacement.take().expect("once"),
                true,
                TreeNodeRecursion::Jump,
            )),
            other => Ok(Transformed::no(other)),
        })?;
        if replacement.is_some() {
            return Err(datafusion::error::DataFusionError::Plan(
                "the model has no aggregate".into(),
            ));
        }
        Ok(rewritten.data)
    }

    /// `__g<i>` for each scope column, to filter stored rows by the touched groups.
    pub fn scope_columns(&self) -> Vec<Expr> {
        self.groups
            .iter()
            .map(|g| Expr::Column(Column::new_unqualified(self.column(*g))))
            .collect()
    }
}
