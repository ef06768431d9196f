//! Group scope: the output columns a table model's rows are grouped by, traced back to each
//! input table's columns, so that a run recomputes only the groups its new input rows touch.
//!
//! The analysis walks the model's logical plan bottom up. Row-wise steps (scans, projections,
//! filters, UNION ALL, a join to a table read in full) keep, for each output column, its
//! expression over the input table's columns. The first GROUP BY or window PARTITION BY makes
//! those of its keys that are such expressions the scope: output rows with one key value come
//! only from input rows whose key expression has that value. Later steps keep the scope where
//! they group or partition by it, or by a function of it (a coarser scope is as good: a month
//! of days). Anything that mixes groups — a LIMIT, a window over all rows, a FULL JOIN, a
//! non-deterministic function — makes the model one that is rebuilt in full, and the reason
//! is shown by `lake plan`.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, JoinType, ScalarValue, TableReference};
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan, lit};

use super::model::{IncrementalBy, ModelConfig};
use crate::lake::TableName;

/// How a table model is kept up to date.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Only the groups that new input rows touch are recomputed and replaced.
    Groups(Scope),
    /// Rows only go when the tables its `NOT EXISTS` reads gain rows.
    Shrinks(Shrinks),
    /// Rebuilt in full on every change: why.
    Full(String),
}

impl Strategy {
    /// `groups by day` or `full: a LIMIT over all rows`, for `lake plan`.
    pub fn describe(&self) -> String {
        match self {
            Strategy::Groups(scope) => {
                let mut text = format!("groups by {}", scope.columns.join(", "));
                if let Some(from) = &scope.from {
                    text.push_str(&format!(" from {from}"));
                }
                if !scope.joined.is_empty() {
                    let joined: Vec<String> = scope.joined.iter().map(|t| t.to_string()).collect();
                    text.push_str(&format!(" (read in full: {})", joined.join(", ")));
                }
                text
            }
            Strategy::Shrinks(s) => {
                let names = |t: &BTreeSet<TableName>| {
                    t.iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "shrinks: the rows new rows of {} match (NOT EXISTS) go; a change to {} rebuilds it",
                    names(&s.against),
                    names(&s.rows)
                )
            }
            Strategy::Full(why) => format!("full: {why}"),
        }
    }
}

/// The group key of a model's output and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// The output columns.
    pub columns: Vec<String>,
    /// For each input table the grouped rows come from, each key column's expression over
    /// that table's columns.
    pub keys: BTreeMap<TableName, Vec<Expr>>,
    /// Tables read in full (the other side of a join, a subquery): when one changes, the
    /// model is rebuilt in full.
    pub joined: BTreeSet<TableName>,
    /// `recompute_from`: the column each group is recomputed from (its last row at or before
    /// the earliest changed input row on), an output column and a column of each input in
    /// `keys`.
    pub from: Option<String>,
}

/// The strategy of a model whose SELECT plans to `plan` (unoptimized, views inlined), with
/// its header's `incremental_by` and `recompute_from`.
pub fn strategy(plan: &LogicalPlan, config: &ModelConfig) -> Strategy {
    let strategy = groups_of(plan, config.incremental_by.as_ref());
    if let (Strategy::Full(_), None) = (&strategy, &config.incremental_by)
        && let Some(shrinks) = shrinks_of(plan)
    {
        return Strategy::Shrinks(shrinks);
    }
    let (Strategy::Groups(mut scope), Some(from)) = (strategy.clone(), &config.recompute_from)
    else {
        return strategy;
    };
    let Some(field) = plan
        .schema()
        .fields()
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(from))
    else {
        return Strategy::Full(format!(
            "`recompute_from` names `{from}`, which is not an output column"
        ));
    };
    let mut missing = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(t) = table_name(&scan.table_name)
            && scope.keys.contains_key(&t)
            && scan.source.schema().field_with_name(field.name()).is_err()
        {
            missing = Some(t);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Some(table) = missing {
        return Strategy::Full(format!(
            "`recompute_from` names `{}`, which {table} does not have",
            field.name()
        ));
    }
    scope.from = Some(field.name().clone());
    Strategy::Groups(scope)
}

/// The group scope the plan proves, or `by` asserts.
fn groups_of(plan: &LogicalPlan, by: Option<&IncrementalBy>) -> Strategy {
    let columns = match by {
        Some(IncrementalBy::Full) => return Strategy::Full("`incremental_by = \"full\"`".into()),
        Some(IncrementalBy::Columns(columns)) => Some(columns.as_slice()),
        None => None,
    };
    let trust = columns.is_some();
    let node = match analyze(plan, trust) {
        Ok(node) => node,
        Err(why) => return Strategy::Full(why),
    };
    let names: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let keys = match node.shape {
        Shape::Grouped(keys) => keys,
        // The analyst vouches for the groups of rows lake traced column by column.
        Shape::Rows(defs) if trust => defs
            .into_iter()
            .enumerate()
            .filter_map(|(i, d)| Some((i, d?)))
            .filter(|(_, d)| !d.is_empty())
            .collect(),
        Shape::Rows(_) => {
            return Strategy::Full(
                "no GROUP BY or window PARTITION BY to scope its rows by".into(),
            );
        }
    };
    let mut chosen: Vec<(usize, Defs)> = Vec::new();
    match columns {
        Some(wanted) => {
            for w in wanted {
                let found = keys.iter().find(|(i, _)| names[*i].eq_ignore_ascii_case(w));
                match found {
                    Some(k) => chosen.push(k.clone()),
                    None => {
                        return Strategy::Full(format!(
                            "`incremental_by` names `{w}`, which is not a group key lake can trace to the input's columns"
                        ));
                    }
                }
            }
        }
        None => {
            // One key column per output position; the first of several equal ones.
            for (i, defs) in keys {
                if !chosen.iter().any(|(_, d)| *d == defs) {
                    chosen.push((i, defs));
                }
            }
        }
    }
    let mut per_table: BTreeMap<TableName, Vec<Expr>> = BTreeMap::new();
    for (_, defs) in &chosen {
        for (table, def) in defs {
            per_table
                .entry(table.clone())
                .or_default()
                .push(def.clone());
        }
    }
    if per_table.values().any(|d| d.len() != chosen.len()) {
        return Strategy::Full("its group keys come from different inputs".into());
    }
    if per_table.is_empty() {
        return Strategy::Full("its groups come from no input table".into());
    }
    // A table read both by group and in full (joined to itself, or in a subquery) cannot be
    // filtered to the touched groups for one use alone.
    if let Some(both) = per_table.keys().find(|t| node.joined.contains(*t)) {
        return Strategy::Full(format!("it reads {both} both by group and in full"));
    }
    Strategy::Groups(Scope {
        columns: chosen.iter().map(|(i, _)| names[*i].clone()).collect(),
        keys: per_table,
        joined: node.joined,
        from: None,
    })
}

/// A model whose rows are its inputs' rows, kept where NOT EXISTS a match in other tables
/// (new API plays the export does not hold yet): when only those other tables gain rows, its
/// rows can only go, the ones the new rows match, and none of its other rows changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Shrinks {
    /// The tables the rows come from: when one of them changes, the model is rebuilt.
    pub rows: BTreeSet<TableName>,
    /// The tables the NOT EXISTS subqueries read.
    pub against: BTreeSet<TableName>,
}

/// The [`Shrinks`] a plan proves: scans, projections, aliases and filters only, of
/// deterministic expressions, where a filter may hold `NOT EXISTS` of such a plan over other
/// tables as one of its conjuncts.
fn shrinks_of(plan: &LogicalPlan) -> Option<Shrinks> {
    let mut rows = BTreeSet::new();
    let mut against = BTreeSet::new();
    row_wise(plan, &mut rows, Some(&mut against))?;
    (!rows.is_empty() && !against.is_empty() && rows.is_disjoint(&against))
        .then_some(Shrinks { rows, against })
}

/// Walks a plan that maps each input row to at most one output row, collecting the tables
/// it reads in `rows` and, where `against` is given, those of its filters' `NOT EXISTS`.
fn row_wise(
    plan: &LogicalPlan,
    rows: &mut BTreeSet<TableName>,
    mut against: Option<&mut BTreeSet<TableName>>,
) -> Option<()> {
    // Deterministic and free of subqueries.
    let plain = |e: &Expr| {
        !e.is_volatile()
            && !e
                .exists(|n| {
                    Ok(matches!(
                        n,
                        Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                    ))
                })
                .unwrap_or(true)
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() || scan.filters.iter().any(|e| !plain(e)) {
                return None;
            }
            rows.insert(table_name(&scan.table_name).ok()?);
        }
        LogicalPlan::Projection(p) => {
            if !p.expr.iter().all(plain) {
                return None;
            }
        }
        LogicalPlan::SubqueryAlias(_) => {}
        LogicalPlan::Filter(f) => {
            for conjunct in datafusion::logical_expr::utils::split_conjunction(&f.predicate) {
                match (conjunct, against.as_deref_mut()) {
                    (Expr::Exists(x), Some(against)) if x.negated => {
                        let mut inner = BTreeSet::new();
                        row_wise(&x.subquery.subquery, &mut inner, None)?;
                        against.extend(inner);
                    }
                    (e, _) if plain(e) => {}
                    _ => return None,
                }
            }
        }
        _ => return None,
    }
    for input in plan.inputs() {
        row_wise(input, rows, against.as_deref_mut())?;
    }
    Some(())
}

/// For a plan whose rows are its tables' rows, one for one (scans, projections, filters,
/// UNION ALL: a view over tables), each table's columns that the output `columns` are, where
/// every one of them is a plain column of every table the plan reads; none otherwise.
pub fn source_columns(
    plan: &LogicalPlan,
    columns: &[String],
) -> Option<BTreeMap<TableName, Vec<String>>> {
    let node = analyze(plan, false).ok()?;
    let Shape::Rows(defs) = node.shape else {
        return None;
    };
    if !node.joined.is_empty() {
        return None;
    }
    let tables = tables_of(plan);
    let schema = plan.schema();
    let mut out: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    for c in columns {
        let i = schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(c))?;
        let defs = defs.get(i)?.as_ref()?;
        if defs.keys().cloned().collect::<BTreeSet<_>>() != tables {
            return None;
        }
        for (table, e) in defs {
            let Expr::Column(column) = strip_alias(e) else {
                return None;
            };
            out.entry(table.clone())
                .or_default()
                .push(column.name.clone());
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Each input table's expression for one column.
type Defs = BTreeMap<TableName, Expr>;

/// What a plan node's rows are, as far as the scope goes.
#[derive(Debug, Clone)]
enum Shape {
    /// Each output row comes from one input row: for each output column, its expression over
    /// the columns of each input table (none where it cannot be traced, such as a joined
    /// table's column). VALUES have no tables.
    Rows(Vec<Option<Defs>>),
    /// Output rows with equal values at these positions come only from input rows whose
    /// expressions have those values.
    Grouped(Vec<(usize, Defs)>),
}

#[derive(Debug, Clone)]
struct Node {
    shape: Shape,
    joined: BTreeSet<TableName>,
}

/// Analyses `plan`; `trust` (an `incremental_by` header) lets through what the analysis
/// cannot prove group-local: a LIMIT, a window over all rows, a non-deterministic function.
fn analyze(plan: &LogicalPlan, trust: bool) -> Result<Node, String> {
    let mut joined = BTreeSet::new();
    for e in plan.expressions() {
        check_expr(&e, trust, &mut joined)?;
    }
    let child = |i: usize| -> Result<Node, String> { analyze(plan.inputs()[i], trust) };
    let mut node = match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() && !trust {
                return Err("a LIMIT over all rows".into());
            }
            let table = table_name(&scan.table_name)?;
            let defs = scan
                .projected_schema
                .fields()
                .iter()
                .map(|f| {
                    Some(BTreeMap::from([(
                        table.clone(),
                        Expr::Column(datafusion::common::Column::new_unqualified(f.name())),
                    )]))
                })
                .collect();
            Node {
                shape: Shape::Rows(defs),
                joined: BTreeSet::new(),
            }
        }
        LogicalPlan::Values(values) => Node {
            shape: Shape::Rows(vec![Some(Defs::new()); values.schema.fields().len()]),
            joined: BTreeSet::new(),
        },
        LogicalPlan::EmptyRelation(empty) => Node {
            shape: Shape::Rows(vec![Some(Defs::new()); empty.schema.fields().len()]),
            joined: BTreeSet::new(),
        },
        LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) | LogicalPlan::Repartition(_) => {
            child(0)?
        }
        LogicalPlan::Sort(sort) => {
            if sort.fetch.is_some() && !trust {
                return Err("a LIMIT over all rows (ORDER BY … LIMIT)".into());
            }
            child(0)?
        }
        LogicalPlan::Limit(_) => {
            if !trust {
                return Err("a LIMIT over all rows".into());
            }
            child(0)?
        }
        LogicalPlan::Projection(p) => {
            let input = child(0)?;
            let schema = p.input.schema();
            let exprs: Vec<Expr> = p.expr.clone();
            project(input, schema, &exprs)
        }
        LogicalPlan::Aggregate(a) => {
            if a.group_expr.is_empty() {
                return Err("an aggregate over all rows, with no GROUP BY".into());
            }
            if a.group_expr
                .iter()
                .any(|g| matches!(g, Expr::GroupingSet(_)))
            {
                return Err("GROUPING SETS, CUBE or ROLLUP".into());
            }
            let input = child(0)?;
            let n = a.group_expr.len();
            let grouped = project(input, a.input.schema(), &a.group_expr);
            regroup(grouped, n, "GROUP BY")?
        }
        LogicalPlan::Distinct(Distinct::All(input)) => {
            let node = analyze(input, trust)?;
            let exprs: Vec<Expr> = input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            let n = exprs.len();
            regroup(project(node, input.schema(), &exprs), n, "DISTINCT")?
        }
        LogicalPlan::Window(w) => {
            let input = child(0)?;
            let schema = w.input.schema();
            let width = schema.fields().len();
            // The positions every window partitions by.
            let mut common: Option<BTreeSet<usize>> = None;
            for e in &w.window_expr {
                let Expr::WindowFunction(f) = strip_alias(e) else {
                    return Err(format!("a window expression lake does not read: {e}"));
                };
                let positions: BTreeSet<usize> = f
                    .params
                    .partition_by
                    .iter()
                    .filter_map(|p| match strip_alias(p) {
                        Expr::Column(c) => schema.index_of_column(c).ok(),
                        _ => None,
                    })
                    .collect();
                if positions.is_empty() && !trust {
                    return Err(format!(
                        "a window over all rows ({}() with no PARTITION BY)",
                        f.fun.name()
                    ));
                }
                if !positions.is_empty() {
                    common = Some(match common {
                        Some(c) => c.intersection(&positions).copied().collect(),
                        None => positions,
                    });
                }
            }
            let keys: Vec<(usize, Defs)> = match (input.shape, common) {
                (Shape::Rows(defs), Some(common)) => common
                    .into_iter()
                    .filter_map(|i| Some((i, defs[i].clone()?)))
                    .filter(|(_, d)| !d.is_empty())
                    .collect(),
                (Shape::Grouped(keys), Some(common)) => keys
                    .into_iter()
                    .filter(|(i, _)| common.contains(i))
                    .collect(),
                (Shape::Grouped(keys), None) => keys,
                (Shape::Rows(defs), None) => {
                    // Trusted: the window adds columns to rows.
                    let mut defs = defs;
                    defs.resize(width + w.window_expr.len(), None);
                    return Ok(Node {
                        shape: Shape::Rows(defs),
                        joined: input.joined.union(&joined).cloned().collect(),
                    });
                }
            };
            if keys.is_empty() {
                return Err(
                    "its windows partition by nothing traced to the input's columns".into(),
                );
            }
            Node {
                shape: Shape::Grouped(keys),
                joined: input.joined,
            }
        }
        LogicalPlan::Union(u) => {
            let mut nodes = Vec::new();
            for input in &u.inputs {
                nodes.push(analyze(input, trust)?);
            }
            union(nodes)?
        }
        LogicalPlan::Join(j) => {
            let (driving, other, offset) = match j.join_type {
                JoinType::Inner
                | JoinType::Left
                | JoinType::LeftSemi
                | JoinType::LeftAnti
                | JoinType::LeftMark => (&j.left, &j.right, 0),
                JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark => (&j.right, &j.left, j.left.schema().fields().len()),
                JoinType::Full => return Err("a FULL JOIN".into()),
            };
            let mut node = analyze(driving, trust)?;
            node.joined.extend(tables_of(other));
            let width = j.schema.fields().len();
            let offset = match j.join_type {
                JoinType::LeftSemi
                | JoinType::LeftAnti
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::LeftMark
                | JoinType::RightMark => 0,
                _ => offset,
            };
            node.shape = match node.shape {
                Shape::Rows(defs) => {
                    let mut all = vec![None; width];
                    for (i, d) in defs.into_iter().enumerate() {
                        if let Some(slot) = all.get_mut(i + offset) {
                            *slot = d;
                        }
                    }
                    Shape::Rows(all)
                }
                Shape::Grouped(keys) => {
                    Shape::Grouped(keys.into_iter().map(|(i, d)| (i + offset, d)).collect())
                }
            };
            node
        }
        LogicalPlan::Unnest(_) => return Err("UNNEST, which lake does not trace".into()),
        other => {
            let display = other.display().to_string();
            let step = display.split(':').next().unwrap_or_default().to_string();
            return Err(format!("a {step} step, which lake does not trace"));
        }
    };
    node.joined.extend(joined);
    Ok(node)
}

/// The node after `exprs` (over `schema`): a projection, or an aggregate's group keys.
/// Over rows, every traceable expression keeps its trace; over groups, an expression of key
/// columns only is a key (a coarser one, where it is a function of them).
fn project(input: Node, schema: &DFSchema, exprs: &[Expr]) -> Node {
    let shape = match input.shape {
        Shape::Rows(defs) => Shape::Rows(
            exprs
                .iter()
                .map(|e| substitute(e, schema, |i| defs.get(i).cloned().flatten()))
                .collect(),
        ),
        Shape::Grouped(keys) => Shape::Grouped(
            exprs
                .iter()
                .enumerate()
                .filter_map(|(out, e)| {
                    let defs = substitute(e, schema, |i| {
                        keys.iter().find(|(k, _)| *k == i).map(|(_, d)| d.clone())
                    })?;
                    (!defs.is_empty()).then_some((out, defs))
                })
                .collect(),
        ),
    };
    Node {
        shape,
        joined: input.joined,
    }
}

/// After a GROUP BY or DISTINCT whose `n` keys lead the output: the keys that trace to the
/// input become the scope.
fn regroup(node: Node, n: usize, what: &str) -> Result<Node, String> {
    let keys: Vec<(usize, Defs)> = match node.shape {
        Shape::Rows(defs) => defs
            .into_iter()
            .take(n)
            .enumerate()
            .filter_map(|(i, d)| Some((i, d?)))
            .filter(|(_, d)| !d.is_empty())
            .collect(),
        Shape::Grouped(keys) => keys.into_iter().filter(|(i, _)| *i < n).collect(),
    };
    if keys.is_empty() {
        return Err(format!(
            "no {what} key is a function of one input's columns, or of the groups below it"
        ));
    }
    Ok(Node {
        shape: Shape::Grouped(keys),
        joined: node.joined,
    })
}

/// The inputs of a UNION ALL, side by side.
fn union(nodes: Vec<Node>) -> Result<Node, String> {
    let joined: BTreeSet<TableName> = nodes.iter().flat_map(|n| n.joined.clone()).collect();
    let merge = |a: Defs, b: Defs| -> Option<Defs> {
        let mut out = a;
        for (t, e) in b {
            match out.get(&t) {
                Some(existing) if *existing != e => return None,
                _ => {
                    out.insert(t, e);
                }
            }
        }
        Some(out)
    };
    let mut shapes = nodes.into_iter().map(|n| n.shape);
    let first = shapes.next().ok_or("an empty UNION")?;
    let shape = shapes.try_fold(first, |acc, next| match (acc, next) {
        (Shape::Rows(a), Shape::Rows(b)) => Ok(Shape::Rows(
            a.into_iter().zip(b).map(|(x, y)| merge(x?, y?)).collect(),
        )),
        (Shape::Grouped(a), Shape::Grouped(b)) => Ok(Shape::Grouped(
            a.into_iter()
                .filter_map(|(i, x)| {
                    let (_, y) = b.iter().find(|(j, _)| *j == i)?;
                    Some((i, merge(x, y.clone())?))
                })
                .collect(),
        )),
        _ => Err("a UNION of grouped and ungrouped rows".to_string()),
    })?;
    Ok(Node { shape, joined })
}

/// `e` over the input columns of `schema` rewritten over each input table's columns, where
/// every column it reads traces to the same tables; `None` otherwise.
fn substitute(e: &Expr, schema: &DFSchema, def: impl Fn(usize) -> Option<Defs>) -> Option<Defs> {
    let e = strip_alias(e);
    let mut used: Vec<(datafusion::common::Column, Defs)> = Vec::new();
    let mut traced = true;
    e.apply(|node| {
        match node {
            Expr::Column(c) => match schema.index_of_column(c).ok().and_then(&def) {
                Some(d) => used.push((c.clone(), d)),
                None => traced = false,
            },
            Expr::OuterReferenceColumn(..)
            | Expr::ScalarSubquery(_)
            | Expr::Exists(_)
            | Expr::InSubquery(_)
            | Expr::WindowFunction(_)
            | Expr::AggregateFunction(_) => traced = false,
            _ => {}
        }
        Ok(if traced {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    })
    .ok()?;
    if !traced {
        return None;
    }
    // The tables every column traces to; a constant (no columns) traces to every table, which
    // only the caller's context can name, so it is no key.
    let mut tables: Option<BTreeSet<TableName>> = None;
    for (_, d) in &used {
        let ts: BTreeSet<TableName> = d.keys().cloned().collect();
        tables = Some(match tables {
            Some(t) if t != ts => return None,
            _ => ts,
        });
    }
    let tables = tables?;
    let mut out = Defs::new();
    for table in tables {
        let rewritten = e
            .clone()
            .transform(|node| match node {
                Expr::Column(c) => {
                    let d = used
                        .iter()
                        .find(|(u, _)| *u == c)
                        .map(|(_, d)| d[&table].clone());
                    Ok(match d {
                        Some(d) => Transformed::yes(d),
                        None => Transformed::no(Expr::Column(c)),
                    })
                }
                other => Ok(Transformed::no(other)),
            })
            .ok()?
            .data;
        out.insert(table, rewritten);
    }
    Some(out)
}

/// Checks a plan node's own expressions: no non-deterministic function (unless trusted), and
/// the tables its subqueries read, which are read in full.
fn check_expr(e: &Expr, trust: bool, joined: &mut BTreeSet<TableName>) -> Result<(), String> {
    if !trust && e.is_volatile() {
        return Err(format!("a non-deterministic function ({e})"));
    }
    e.apply(|node| {
        match node {
            Expr::ScalarSubquery(s) => joined.extend(tables_of(&s.subquery)),
            Expr::Exists(x) => joined.extend(tables_of(&x.subquery.subquery)),
            Expr::InSubquery(x) => joined.extend(tables_of(&x.subquery.subquery)),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Every table a plan reads, subqueries included.
fn tables_of(plan: &LogicalPlan) -> BTreeSet<TableName> {
    let mut out = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(t) = table_name(&scan.table_name)
        {
            out.insert(t);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

fn table_name(reference: &TableReference) -> Result<TableName, String> {
    let (schema, table) = match reference {
        TableReference::Partial { schema, table } => (schema.as_ref(), table.as_ref()),
        TableReference::Full { schema, table, .. } => (schema.as_ref(), table.as_ref()),
        TableReference::Bare { table } => {
            return Err(format!("it reads `{table}`, which is not a lake table"));
        }
    };
    TableName::new(schema, table).map_err(|e| e.to_string())
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// The distinct values of each key column among touched groups, and whether a null is one.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// Per key column: its non-null values, and whether null is among them.
    pub columns: Vec<(Vec<ScalarValue>, bool)>,
    /// Distinct key tuples.
    pub groups: u64,
}

impl Touched {
    /// Reads the distinct key tuples in `batches` (one column per key).
    pub fn from_batches(batches: &[RecordBatch], keys: usize) -> Result<Self, String> {
        let mut columns: Vec<(BTreeSet<ScalarOrd>, bool)> = vec![(BTreeSet::new(), false); keys];
        let mut tuples: BTreeSet<Vec<ScalarOrd>> = BTreeSet::new();
        for batch in batches {
            for row in 0..batch.num_rows() {
                let mut tuple = Vec::with_capacity(keys);
                for (k, (values, null)) in columns.iter_mut().enumerate() {
                    let v = ScalarValue::try_from_array(batch.column(k), row)
                        .map_err(|e| e.to_string())?;
                    if v.is_null() {
                        *null = true;
                    } else {
                        values.insert(ScalarOrd(v.clone()));
                    }
                    tuple.push(ScalarOrd(v));
                }
                tuples.insert(tuple);
            }
        }
        Ok(Self {
            columns: columns
                .into_iter()
                .map(|(v, n)| (v.into_iter().map(|s| s.0).collect(), n))
                .collect(),
            groups: tuples.len() as u64,
        })
    }

    /// Whether no group is touched.
    pub fn is_empty(&self) -> bool {
        self.groups == 0
    }

    /// The rows of the touched groups, over `exprs` (one per key column): each column's
    /// values (an `IN` list, or a hash set when there are many: [`crate::query::keyset`]),
    /// or null where a touched key is. Over several columns it is the product of
    /// the columns' values, a superset of the touched tuples whose groups are recomputed
    /// whole all the same.
    pub fn predicate(&self, exprs: &[Expr]) -> Expr {
        exprs
            .iter()
            .zip(&self.columns)
            .map(|(e, (values, null))| {
                let listed = match values.len() {
                    0 => lit(false),
                    _ => crate::query::keyset::member(e.clone(), values),
                };
                if *null {
                    listed.or(e.clone().is_null())
                } else {
                    listed
                }
            })
            .reduce(Expr::and)
            .unwrap_or(lit(false))
    }

    /// A range over the column under each key that is a truncation of a timestamp column of
    /// `schema` (`CAST(ended_at AS DATE)`, `date_trunc('month', ended_at)`): from a day
    /// before the first touched value to a day past the last one's span. The touched keys'
    /// `IN` list is no range a file's statistics can rule out; this is, where the table's
    /// files hold ranges of the column.
    pub fn ranges(&self, exprs: &[Expr], schema: &arrow::datatypes::Schema) -> Option<Expr> {
        const DAY: i64 = 86_400_000_000;
        exprs
            .iter()
            .zip(&self.columns)
            .filter_map(|(e, (values, null))| {
                if *null {
                    return None;
                }
                let (column, span) = truncated(strip_alias(e))?;
                let field = schema.field_with_name(&column.name).ok()?;
                let arrow::datatypes::DataType::Timestamp(unit, tz) = field.data_type() else {
                    return None;
                };
                let first = micros(values.first()?)?;
                let last = micros(values.last()?)?;
                let at = |us: i64| -> ScalarValue {
                    use arrow::datatypes::TimeUnit;
                    match unit {
                        TimeUnit::Second => {
                            ScalarValue::TimestampSecond(Some(us.div_euclid(1_000_000)), tz.clone())
                        }
                        TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(
                            Some(us.div_euclid(1_000)),
                            tz.clone(),
                        ),
                        TimeUnit::Microsecond => {
                            ScalarValue::TimestampMicrosecond(Some(us), tz.clone())
                        }
                        TimeUnit::Nanosecond => {
                            ScalarValue::TimestampNanosecond(us.checked_mul(1_000), tz.clone())
                        }
                    }
                };
                let column = Expr::Column(column);
                Some(
                    column
                        .clone()
                        .gt_eq(lit(at(first.checked_sub(DAY)?)))
                        .and(column.lt(lit(at(last.checked_add(span + DAY)?)))),
                )
            })
            .reduce(Expr::and)
    }

    /// [`Touched::predicate`] over the output columns of `scope`.
    pub fn output_predicate(&self, scope: &Scope) -> Expr {
        let exprs: Vec<Expr> = scope
            .columns
            .iter()
            .map(|c| Expr::Column(datafusion::common::Column::new_unqualified(c)))
            .collect();
        self.predicate(&exprs)
    }
}

/// The column a key truncates, and the longest span one key value covers, in microseconds.
fn truncated(e: &Expr) -> Option<(datafusion::common::Column, i64)> {
    const DAY: i64 = 86_400_000_000;
    match e {
        // A date of a timestamp, or of a truncation of one (`CAST(date_trunc('month', t) AS
        // DATE)`).
        Expr::Cast(c) if *c.field.data_type() == arrow::datatypes::DataType::Date32 => {
            match strip_alias(&c.expr) {
                Expr::Column(column) => Some((column.clone(), DAY)),
                inner => truncated(inner).map(|(column, span)| (column, span.max(DAY))),
            }
        }
        Expr::ScalarFunction(f) if f.name() == "date_trunc" => {
            let [Expr::Literal(unit, _), inner] = f.args.as_slice() else {
                return None;
            };
            let Expr::Column(column) = strip_alias(inner) else {
                return None;
            };
            let unit = match unit {
                ScalarValue::Utf8(Some(u))
                | ScalarValue::Utf8View(Some(u))
                | ScalarValue::LargeUtf8(Some(u)) => u.to_lowercase(),
                _ => return None,
            };
            let span = match unit.as_str() {
                "microsecond" => 1,
                "millisecond" => 1_000,
                "second" => 1_000_000,
                "minute" => 60_000_000,
                "hour" => 3_600_000_000,
                "day" => DAY,
                "week" => 7 * DAY,
                "month" => 31 * DAY,
                "quarter" => 92 * DAY,
                "year" => 366 * DAY,
                _ => return None,
            };
            Some((column.clone(), span))
        }
        _ => None,
    }
}

/// A date or timestamp as microseconds since the epoch (its local value, for one with a zone).
fn micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Date32(Some(d)) => (*d as i64).checked_mul(86_400_000_000),
        ScalarValue::Date64(Some(ms)) => ms.checked_mul(1_000),
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => ms.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(*us),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns.div_euclid(1_000)),
        _ => None,
    }
}

/// A scalar ordered by its `PartialOrd`, for sets of key values of one type.
#[derive(Debug, Clone, PartialEq)]
struct ScalarOrd(ScalarValue);

impl Eq for ScalarOrd {}

impl PartialOrd for ScalarOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ScalarOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .partial_cmp(&other.0)
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::col;

    use super::Touched;

    #[test]
    fn touched_keys_count_tuples_and_match_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    None,
                    Some("x"),
                    Some("y"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 1, 3])),
            ],
        )
        .unwrap();
        let touched = Touched::from_batches(&[batch], 2).unwrap();
        assert_eq!(touched.groups, 3);
        assert_eq!(
            touched.predicate(&[col("a"), col("b")]).to_string(),
            "(a IN ([Utf8(\"x\"), Utf8(\"y\")]) OR a IS NULL) AND b IN ([Int64(1), Int64(2), Int64(3)])"
        );
        let none = Touched::from_batches(&[], 1).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn touched_days_and_months_bound_the_timestamp_they_truncate() {
        use arrow::array::Date32Array;
        use datafusion::logical_expr::cast;
        let days = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)])),
            vec![Arc::new(Date32Array::from(vec![20_454, 20_450]))],
        )
        .unwrap();
        let touched = Touched::from_batches(&[days], 1).unwrap();
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Schema::new(vec![
            Field::new("at", ts, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let range = touched
            .ranges(&[cast(col("at"), DataType::Date32)], &schema)
            .unwrap();
        // Days 2025-12-28 and 2026-01-01: from 2025-12-27 up to 2026-01-03.
        assert_eq!(
            range.to_string(),
            "at >= TimestampMicrosecond(1766793600000000, Some(\"UTC\")) AND at < TimestampMicrosecond(1767398400000000, Some(\"UTC\"))"
        );
        // Not a timestamp column, or not a truncation: no range.
        assert!(
            touched
                .ranges(&[cast(col("s"), DataType::Date32)], &schema)
                .is_none()
        );
        assert!(touched.ranges(&[col("at")], &schema).is_none());
    }
}
