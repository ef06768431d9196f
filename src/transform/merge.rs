//! Merging the delta: a table model whose groups come from one GROUP BY of decomposable
//! aggregates (`count`, `sum`, `min`, `max`, with or without `FILTER`) keeps that aggregate's
//! rows, one per group, in `_lake.state__<schema>__<name>`. A run that only added input rows
//! aggregates just those rows, combines them with the stored rows of the groups they touch
//! (counts and sums added, minima and maxima taken), and computes the model's rows of those
//! groups from the result. No history is read. This is how Databricks' Enzyme and Feldera
//! maintain aggregates; `count(DISTINCT)`, `avg` and medians do not combine, and such models
//! re-aggregate their touched groups instead.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, LogicalPlan, Projection, cast, lit, when,
};
use datafusion::prelude::DataFrame;

use super::scope::Scope;
use crate::lake::{INTERNAL, TableName};

/// How one aggregate's stored and new values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    Count,
    Sum,
    Min,
    Max,
}

/// The stored column counting each group's rows.
const ROWS: &str = "__n";

/// A model whose rows are a row-wise function of one GROUP BY of decomposable aggregates.
#[derive(Debug, Clone)]
pub struct Mergeable {
    /// The aggregate, as the model's plan holds it.
    aggregate: Aggregate,
    combine: Vec<Combine>,
    /// For each scope column, its GROUP BY key's index.
    pub groups: Vec<usize>,
    /// Whether removed rows can be taken out of the stored aggregates (no floating-point sum).
    pub retracts: bool,
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
            "count" => Combine::Count,
            "sum" => Combine::Sum,
            "min" => Combine::Min,
            "max" => Combine::Max,
            other => return Err(format!("{other}() does not merge")),
        });
    }
    // A floating-point sum does not come back exactly when values are taken away again.
    let fields = aggregate.schema.fields();
    let retracts = combine
        .iter()
        .enumerate()
        .all(|(j, c)| *c != Combine::Sum || !fields[n + j].data_type().is_floating());
    Ok(Mergeable {
        aggregate: aggregate.clone(),
        combine,
        groups: positions,
        retracts,
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
        super::scope::Strategy::Shrinks(_) | super::scope::Strategy::Full(_) => strategy.describe(),
    }
}

/// The stored column counting the values the `j`-th aggregate (a sum) added up.
fn summed(j: usize) -> String {
    format!("__c{j}")
}

/// The column of [`Mergeable::retract`]'s result telling whether a group came out exact.
pub const EXACT: &str = "__lake_exact";

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
        let width = aggregate.schema.fields().len();
        // Beside the model's aggregates: each group's rows, and for each sum the values it
        // added up, so that removed rows can be taken out and an emptied group or sum told.
        let mut aggr_expr = aggregate.aggr_expr.clone();
        aggr_expr.push(count(lit(1)).alias(ROWS));
        for (j, c) in self.combine.iter().enumerate() {
            if *c != Combine::Sum {
                continue;
            }
            let mut e = &aggregate.aggr_expr[j];
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            let Expr::AggregateFunction(f) = e else {
                unreachable!("mergeable checked every aggregate");
            };
            let p = &f.params;
            aggr_expr.push(
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    count_udaf(),
                    p.args.clone(),
                    false,
                    p.filter.clone(),
                    Vec::new(),
                    None,
                ))
                .alias(summed(j)),
            );
        }
        let extended = Aggregate::try_new(
            aggregate.input.clone(),
            aggregate.group_expr.clone(),
            aggr_expr,
        )?;
        let schema = extended.schema.clone();
        let mut exprs: Vec<Expr> = (0..width)
            .map(|i| Expr::Column(Column::from(schema.qualified_field(i))).alias(self.column(i)))
            .collect();
        exprs.extend(
            (width..schema.fields().len())
                .map(|i| Expr::Column(Column::from(schema.qualified_field(i)))),
        );
        DataFrame::new(state.clone(), LogicalPlan::Aggregate(extended)).select(exprs)
    }

    /// The stored columns after the model's own: the rows, then each sum's summed values.
    fn hidden(&self) -> Vec<String> {
        let mut out = vec![ROWS.to_string()];
        out.extend(
            self.combine
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == Combine::Sum)
                .map(|(j, _)| summed(j)),
        );
        out
    }

    /// Whether stored aggregates in `schema` have every column this model keeps (an older
    /// lake kept no row counts).
    pub fn stored_in(&self, schema: &arrow::datatypes::Schema) -> bool {
        let n = self.aggregate.schema.fields().len();
        (0..n)
            .map(|i| self.column(i))
            .chain(self.hidden())
            .all(|c| schema.field_with_name(&c).is_ok())
    }

    /// The stored rows of the touched groups with the new rows' aggregates added and the
    /// removed rows' taken out (all as stored columns), one per group that still has rows,
    /// and a column `__lake_exact` that is false for a group whose minimum or maximum may
    /// have been one of the removed values (it must be re-aggregated).
    pub fn retract(
        &self,
        stored: DataFrame,
        added: DataFrame,
        removed: DataFrame,
    ) -> Result<DataFrame> {
        let n = self.aggregate.group_expr.len();
        // Which rows each came from: 0 stored, 1 added, -1 removed.
        const SOURCE: &str = "__lake_source";
        let tag = |df: DataFrame, source: i64| -> Result<DataFrame> {
            let mut exprs: Vec<Expr> = df
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            exprs.push(lit(source).alias(SOURCE));
            df.select(exprs)
        };
        let all = tag(stored, 0)?
            .union(tag(added, 1)?)?
            .union(tag(removed, -1)?)?;
        let schema = all.schema().clone();
        let source = Expr::Column(Column::new_unqualified(SOURCE));
        let column = |name: &str| Expr::Column(Column::new_unqualified(name));
        let from = |e: Expr, which: i64| {
            when(source.clone().eq(lit(which)), e)
                .end()
                .expect("a CASE with a branch")
        };
        // Counts and sums: the stored and added ones summed, the removed ones subtracted.
        let signed = |name: &str| -> Expr {
            let e = column(name);
            let ty = e
                .get_type(&schema)
                .unwrap_or(arrow::datatypes::DataType::Int64);
            let sign = when(source.clone().eq(lit(-1)), lit(-1))
                .otherwise(lit(1))
                .expect("a CASE with ELSE");
            cast(sum(e * cast(sign, ty.clone())), ty)
        };
        let mut aggs: Vec<Expr> = Vec::new();
        let mut exact: Vec<Expr> = Vec::new();
        for (j, c) in self.combine.iter().enumerate() {
            let name = self.column(n + j);
            let e = column(&name);
            aggs.push(
                match c {
                    Combine::Count | Combine::Sum => signed(&name),
                    Combine::Min | Combine::Max => {
                        let kept = |e: Expr| from(e.clone(), 0);
                        let (s, a, r) = (kept(e.clone()), from(e.clone(), 1), from(e.clone(), -1));
                        let pick = |x: Expr| if *c == Combine::Min { min(x) } else { max(x) };
                        let (s, a, r) = (pick(s), pick(a), pick(r));
                        // A removed extreme other than the stored one leaves it; new rows
                        // at or past it replace it. Otherwise the group is read again.
                        exact.push(if *c == Combine::Min {
                            r.clone()
                                .is_null()
                                .or(r.clone().gt(s.clone()))
                                .or(a.clone().lt_eq(s.clone()))
                        } else {
                            r.clone()
                                .is_null()
                                .or(r.clone().lt(s.clone()))
                                .or(a.clone().gt_eq(s.clone()))
                        });
                        let both = when(source.clone().not_eq(lit(-1)), e.clone())
                            .end()
                            .expect("a CASE with a branch");
                        pick(both)
                    }
                }
                .alias(name),
            );
        }
        for h in self.hidden() {
            aggs.push(signed(&h).alias(h));
        }
        // Rows removed from a group that was not stored: the stored rows are not what the
        // inputs held.
        exact.push(signed(ROWS).gt_eq(lit(0i64)));
        let exact = exact.into_iter().reduce(Expr::and).expect("the row check");
        aggs.push(exact.alias("__lake_exact_"));
        let groups: Vec<Expr> = (0..n).map(|i| column(&self.column(i))).collect();
        let grouped = all.aggregate(groups, aggs)?;
        // A sum of no values is null, whatever the arithmetic left; a group with no rows left
        // is gone.
        let mut exprs: Vec<Expr> = Vec::new();
        for i in 0..n {
            exprs.push(column(&self.column(i)));
        }
        for (j, c) in self.combine.iter().enumerate() {
            let name = self.column(n + j);
            exprs.push(match c {
                Combine::Sum => when(column(&summed(j)).eq(lit(0i64)), lit(ScalarValue::Null))
                    .otherwise(column(&name))?
                    .alias(name),
                _ => column(&name),
            });
        }
        for h in self.hidden() {
            exprs.push(column(&h));
        }
        exprs.push(Expr::IsTrue(Box::new(column("__lake_exact_"))).alias(EXACT));
        let exact = Expr::IsTrue(Box::new(column("__lake_exact_")));
        grouped
            .filter(column(ROWS).gt(lit(0i64)).or(!exact))?
            .select(exprs)
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
                    Combine::Count | Combine::Sum => sum(e.clone()),
                    Combine::Min => min(e.clone()),
                    Combine::Max => max(e.clone()),
                };
                // A sum of counts stays the count's type.
                let ty = e
                    .get_type(&schema)
                    .unwrap_or(arrow::datatypes::DataType::Int64);
                cast(combined, ty).alias(name)
            })
            .chain(self.hidden().into_iter().map(|h| {
                cast(
                    sum(Expr::Column(Column::new_unqualified(&h))),
                    arrow::datatypes::DataType::Int64,
                )
                .alias(h)
            }))
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
