//! Grouped `count(DISTINCT x)` in memory proportional to the distinct (group, x) pairs.
//!
//! DataFusion 55 gives every group of a grouped `count(DISTINCT x)` a hash set of its own,
//! which costs far more than the values themselves when groups are many (2.3 GB for a million
//! plays' sessions). Its `SingleDistinctToGroupBy` rule avoids that only when every aggregate
//! is distinct on one column or a plain sum, min or max: no `count(*)`, no `FILTER`. This rule
//! covers what analysts write, in two ways:
//!
//! - the distinct values become a group key of an inner aggregate, and the outer one counts
//!   them. The other aggregates ride along as partial results combined outside (count as a
//!   sum of counts; sum, min and max as themselves), and a `FILTER` on a distinct count
//!   becomes `CASE WHEN filter THEN x END` in the key. One pass over the input;
//! - each further distinct column (or one beside aggregates that do not combine, such as
//!   `avg` or `median`) is counted in a branch of its own, `GROUP BY group, x` then
//!   `GROUP BY group`, and joined back on the group keys, nulls equal.
//!
//! Both aggregate by keys, which DataFusion spills to disk, instead of holding sets per group.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, NullEquality, Result, TableReference};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, JoinType, LogicalPlan, LogicalPlanBuilder, cast, lit, when,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::coalesce;

/// The rule; see the module's documentation.
#[derive(Debug, Default)]
pub struct DistinctToGroupBy;

impl OptimizerRule for DistinctToGroupBy {
    fn name(&self) -> &str {
        "lake_distinct_to_group_by"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite(agg)? {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// One aggregate of the original, as the rewrite sees it.
enum Part<'a> {
    /// `count(DISTINCT arg) [FILTER (WHERE filter)]`.
    Distinct {
        arg: &'a Expr,
        filter: Option<&'a Expr>,
    },
    /// Any other aggregate.
    Plain(&'a AggregateFunction),
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn qualified(relation: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(TableReference::bare(relation)), name))
}

fn aggregate(func: Arc<datafusion::logical_expr::AggregateUDF>, args: Vec<Expr>) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        func,
        args,
        false,
        None,
        vec![],
        None,
    ))
}

/// How a plain aggregate's partial results combine, where they do: the combining function.
fn combiner(f: &AggregateFunction) -> Option<Arc<datafusion::logical_expr::AggregateUDF>> {
    if !f.params.order_by.is_empty() || f.params.null_treatment.is_some() {
        return None;
    }
    match f.func.name() {
        "count" => Some(sum_udaf()),
        "sum" | "min" | "max" => Some(f.func.clone()),
        _ => None,
    }
}

fn rewrite(agg: &Aggregate) -> Result<Option<LogicalPlan>> {
    if agg.group_expr.is_empty()
        || matches!(agg.group_expr.first(), Some(Expr::GroupingSet(_)))
        || agg.schema.fields().len() != agg.group_expr.len() + agg.aggr_expr.len()
    {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(agg.aggr_expr.len());
    for e in &agg.aggr_expr {
        let e = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(f) = e else {
            return Ok(None);
        };
        if f.params.distinct {
            if f.func.name() != "count" || f.params.args.len() != 1 || !f.params.order_by.is_empty()
            {
                return Ok(None);
            }
            parts.push(Part::Distinct {
                arg: &f.params.args[0],
                filter: f.params.filter.as_deref(),
            });
        } else {
            parts.push(Part::Plain(f));
        }
    }
    // The first distinct count's column and filter: the key of the base's inner aggregate.
    let Some(first) = parts.iter().find_map(|p| match p {
        Part::Distinct { arg, filter } => Some((*arg, *filter)),
        Part::Plain(_) => None,
    }) else {
        return Ok(None);
    };
    let groups = agg.group_expr.len();
    let g = |i: usize| format!("__lake_g{i}");
    let group_aliases: Vec<Expr> = agg
        .group_expr
        .iter()
        .enumerate()
        .map(|(i, e)| e.clone().alias(g(i)))
        .collect();

    // The base: one pass, with the first distinct count's values as a key when the plain
    // aggregates combine; otherwise the plain aggregates alone.
    let combine = parts.iter().all(|p| match p {
        Part::Plain(f) => combiner(f).is_some(),
        Part::Distinct { .. } => true,
    });
    let in_base = |p: &Part| match p {
        Part::Plain(_) => true,
        Part::Distinct { arg, filter } => combine && (*arg, *filter) == first,
    };
    let out = |i: usize| format!("__lake_o{i}");
    let base = if combine {
        // Inner: GROUP BY the groups and the values counted; outer: count those values, and
        // combine the partial aggregates.
        let key = match first.1 {
            Some(f) => when(f.clone(), first.0.clone()).end()?,
            None => first.0.clone(),
        };
        let mut inner_aggr = Vec::new();
        let mut outer_aggr = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            match p {
                Part::Distinct { .. } if in_base(p) => {
                    outer_aggr
                        .push(aggregate(count_udaf(), vec![column("__lake_v")]).alias(out(i)));
                }
                Part::Distinct { .. } => {}
                Part::Plain(f) => {
                    let partial = format!("__lake_p{i}");
                    inner_aggr.push(Expr::AggregateFunction((*f).clone()).alias(&partial));
                    let func = combiner(f).expect("checked above");
                    outer_aggr.push(aggregate(func, vec![column(&partial)]).alias(out(i)));
                }
            }
        }
        let inner_group = group_aliases.iter().cloned().chain([key.alias("__lake_v")]);
        LogicalPlanBuilder::from(agg.input.as_ref().clone())
            .aggregate(inner_group, inner_aggr)?
            .aggregate((0..groups).map(|i| column(&g(i))), outer_aggr)?
    } else {
        let plain = parts.iter().enumerate().filter_map(|(i, p)| match p {
            Part::Plain(f) => Some(Expr::AggregateFunction((*f).clone()).alias(out(i))),
            Part::Distinct { .. } => None,
        });
        LogicalPlanBuilder::from(agg.input.as_ref().clone())
            .aggregate(group_aliases.clone(), plain.collect::<Vec<_>>())?
    };
    let mut plan = base.alias("__lake_base")?;

    // A branch per (column, filter) of the other distinct counts, joined on the groups.
    let mut branches: Vec<(&Expr, Option<&Expr>)> = Vec::new();
    let mut from = Vec::with_capacity(parts.len());
    for p in &parts {
        if in_base(p) {
            from.push(None);
            continue;
        }
        let Part::Distinct { arg, filter } = p else {
            unreachable!("plain aggregates are in the base")
        };
        let b = match branches.iter().position(|b| *b == (*arg, *filter)) {
            Some(b) => b,
            None => {
                branches.push((arg, *filter));
                branches.len() - 1
            }
        };
        from.push(Some(b));
    }
    for (b, (arg, filter)) in branches.iter().enumerate() {
        let keep = match filter {
            Some(f) => (*arg).clone().is_not_null().and((*f).clone()),
            None => (*arg).clone().is_not_null(),
        };
        let name = format!("__lake_d{b}");
        let branch = LogicalPlanBuilder::from(agg.input.as_ref().clone())
            .filter(keep)?
            .aggregate(
                group_aliases
                    .iter()
                    .cloned()
                    .chain([(*arg).clone().alias("__lake_v")]),
                Vec::<Expr>::new(),
            )?
            .aggregate(
                (0..groups).map(|i| column(&g(i))),
                [aggregate(count_udaf(), vec![lit(1i64)]).alias("__lake_n")],
            )?
            .alias(&name)?
            .build()?;
        let left: Vec<Column> = (0..groups)
            .map(|i| Column::new(Some(TableReference::bare("__lake_base")), g(i)))
            .collect();
        let right: Vec<Column> = (0..groups)
            .map(|i| Column::new(Some(TableReference::bare(name.as_str())), g(i)))
            .collect();
        plan = plan.join_detailed(
            branch,
            JoinType::Left,
            (left, right),
            None,
            NullEquality::NullEqualsNull,
        )?;
    }

    // The original's columns, names, qualifiers and types.
    let joined = plan.build()?;
    let mut select = Vec::with_capacity(agg.schema.fields().len());
    for (idx, (relation, field)) in agg.schema.iter().enumerate() {
        let e = if idx < groups {
            qualified("__lake_base", &g(idx))
        } else {
            let i = idx - groups;
            let e = match (&parts[i], from[i]) {
                (_, Some(b)) => qualified(&format!("__lake_d{b}"), "__lake_n"),
                _ => qualified("__lake_base", &out(i)),
            };
            let counts = matches!(parts[i], Part::Distinct { .. })
                || matches!(parts[i], Part::Plain(f) if f.func.name() == "count");
            let e = if counts {
                coalesce(vec![e, lit(0i64)])
            } else {
                e
            };
            if e.get_type(joined.schema())? == *field.data_type() {
                e
            } else {
                cast(e, field.data_type().clone())
            }
        };
        select.push(e.alias_qualified(relation.cloned(), field.name()));
    }
    Ok(Some(
        LogicalPlanBuilder::from(joined).project(select)?.build()?,
    ))
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{Expr, LogicalPlan};
    use datafusion::prelude::SessionContext;

    use crate::config::QuerySettings;
    use crate::lake::Sessions;

    /// Rows with nulls in the groups and the values, and values shared between groups.
    const ROWS: &str = "SELECT * FROM (VALUES \
        (1, 'a', 10, 1.5, true), (1, 'a', 10, 2.5, false), (1, 'b', 20, NULL, true), \
        (1, NULL, 30, 4.0, NULL), (2, 'a', NULL, 1.0, true), (2, 'c', 10, 1.0, false), \
        (2, 'c', 10, 3.0, true), (NULL, 'a', 40, 2.0, true), (NULL, NULL, NULL, NULL, NULL), \
        (3, NULL, NULL, NULL, false), (4, 'd', 50, 5.0, true), (4, 'e', 50, 6.0, true)) \
        AS t(g, s, n, f, b)";

    async fn answers(ctx: &SessionContext, sql: &str) -> String {
        ctx.sql(&format!("CREATE OR REPLACE VIEW t AS {ROWS}"))
            .await
            .unwrap();
        let df = ctx.sql(sql).await.unwrap();
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await.unwrap();
        format!(
            "{schema:?}\n{}",
            arrow::util::pretty::pretty_format_batches(&batches).unwrap()
        )
    }

    /// The rewrite gives DataFusion's own answers, column names and types, on each shape it
    /// handles (and on those it leaves alone).
    #[tokio::test]
    async fn answers_equal_datafusions_own() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(&QuerySettings::default(), dir.path());
        let queries = [
            // One distinct column beside combinable aggregates, count(*) included.
            "SELECT g, count(DISTINCT s) AS d, count(*) AS rows, sum(n), min(f), max(s) \
             FROM t GROUP BY g ORDER BY g",
            // Several distinct columns; FILTER on distinct and plain aggregates.
            "SELECT g, count(DISTINCT s), count(DISTINCT n), \
             count(DISTINCT s) FILTER (WHERE b), count(*) FILTER (WHERE NOT b), \
             sum(f) FILTER (WHERE b) FROM t GROUP BY g ORDER BY g",
            // Aggregates that do not combine: each distinct count is a branch.
            "SELECT g, avg(f), count(DISTINCT s), count(DISTINCT n) FROM t GROUP BY g ORDER BY g",
            // An expression as the group and as the value; several group columns.
            "SELECT g % 2 AS parity, b, count(DISTINCT upper(s)) AS d, count(n) \
             FROM t GROUP BY g % 2, b ORDER BY parity, b",
            // Only distinct counts.
            "SELECT s, count(DISTINCT g), count(DISTINCT n) FILTER (WHERE n > 10) \
             FROM t GROUP BY s ORDER BY s",
            // Decimal sums keep their type.
            "SELECT g, sum(CAST(n AS DECIMAL(10, 2))), count(DISTINCT s) FROM t GROUP BY g \
             ORDER BY g",
            // Left alone: no group, another distinct aggregate.
            "SELECT count(DISTINCT s), count(*) FROM t",
            "SELECT g, sum(DISTINCT n), count(DISTINCT s) FROM t GROUP BY g ORDER BY g",
        ];
        for sql in queries {
            let lake = answers(&sessions.context(false).unwrap(), sql).await;
            let own = answers(&SessionContext::new(), sql).await;
            assert_eq!(lake, own, "{sql}");
        }
        // The shape it exists for is rewritten: no per-group distinct accumulator is left.
        let ctx = sessions.context(false).unwrap();
        answers(&ctx, "SELECT 1").await;
        let plan = ctx
            .sql("SELECT g, count(DISTINCT s), count(DISTINCT n), count(*) FROM t GROUP BY g")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        let mut distinct = 0;
        plan.apply(|node| {
            if let LogicalPlan::Aggregate(a) = node {
                distinct += a
                    .aggr_expr
                    .iter()
                    .filter(|e| matches!(e, Expr::AggregateFunction(f) if f.params.distinct))
                    .count();
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(distinct, 0, "{}", plan.display_indent());
    }
}
