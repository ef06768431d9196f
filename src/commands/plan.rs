//! `lake plan`: the models in run order, checked, with what each would read; nothing runs.

use anyhow::Result;
use arrow::array::AsArray;

use super::Context;
use crate::cli::PlanArgs;
use crate::lake::Lake;
use crate::output;
use crate::transform::groups::{self, Decision};
use crate::transform::inputs::cursor;
use crate::transform::run::{Prepared, prepare};
use crate::transform::scope::{self, Strategy};
use crate::transform::{Materialized, Model, select};

pub async fn run(ctx: &Context, args: PlanArgs) -> Result<()> {
    let app = ctx.app().await?;
    let (settings, lake) = (app.settings(), app.lake());
    let project = app.project().await?;
    if project.models.is_empty() {
        if !ctx.quiet() {
            eprintln!(
                "no models: put one SELECT per file in {}",
                settings.queries_dir().display()
            );
        }
        return Ok(());
    }
    let selected = select::resolve(&project, &args.selection.select, &args.selection.exclude)?;
    let width = project.name_width();
    let mut text = String::new();
    for (i, m) in project.models.iter().enumerate() {
        if !selected.contains(&m.name) {
            continue;
        }
        let reads: Vec<String> = m.reads.iter().map(|r| r.table.to_string()).collect();
        let reads = if reads.is_empty() {
            "-".to_string()
        } else {
            reads.join(", ")
        };
        text.push_str(&format!(
            "{:>3}  {:<width$}  {:<11}  reads {reads}",
            i + 1,
            m.name.to_string(),
            m.config.materialized.name(),
        ));
        if !m.checks.is_empty() {
            let names: Vec<&str> = m.checks.iter().map(|c| c.name.as_str()).collect();
            text.push_str(&format!("\n     tests {}", names.join(", ")));
        }
        // What a run would read now; inputs that are not built yet cannot be opened.
        let table = m.config.materialized == Materialized::Table;
        let needs_lake = m.config.materialized == Materialized::Incremental || args.explain;
        if needs_lake || table {
            match prepare(&lake, &project, m, false).await {
                Ok(prepared) => {
                    if table {
                        text.push_str(&strategy(&lake, m, &prepared).await);
                    }
                    if m.config.materialized == Materialized::Incremental {
                        let how = match (&prepared.previous, &prepared.note) {
                            (Some(_), _) => "merge on the unique key",
                            (None, Some(n)) if n == "first run" => "build in full (first run)",
                            (None, _) => "rebuild in full",
                        };
                        text.push_str(&format!("\n     would {how}, reading"));
                        for r in &prepared.inputs.reads {
                            text.push_str(&format!("\n       {}", r.describe()));
                        }
                    }
                    if args.explain {
                        match prepared.inputs.ctx.sql(&m.sql).await {
                            Ok(df) => {
                                let batches = df.explain(false, false)?.collect().await?;
                                for batch in &batches {
                                    let kinds = batch.column(0).as_string::<i32>();
                                    let plans = batch.column(1).as_string::<i32>();
                                    for (kind, plan) in kinds.iter().zip(plans.iter()) {
                                        let kind = kind.unwrap_or_default().replace('_', " ");
                                        text.push_str(&format!("\n     {kind}:"));
                                        for l in plan.unwrap_or_default().lines() {
                                            text.push_str(&format!("\n       {l}"));
                                        }
                                    }
                                }
                            }
                            Err(e) => text.push_str(&format!(
                                "\n     {}",
                                crate::transform::inputs::model_sql_error(m, e)
                            )),
                        }
                    }
                }
                // A table model's strategy waits for its inputs to be built.
                Err(e) if needs_lake => {
                    text.push_str(&format!("\n     cannot open its inputs yet: {e}"))
                }
                Err(_) => {}
            }
        }
        text.push('\n');
    }
    output::print(text.trim_end())?;
    Ok(())
}

/// A table model's strategy, and what a run would do now: `strategy groups by day` and
/// `would recompute 2 groups`.
async fn strategy(lake: &Lake, model: &Model, prepared: &Prepared) -> String {
    let df = match prepared.inputs.ctx.sql(&model.sql).await {
        Ok(df) => df,
        Err(e) => {
            return format!(
                "\n     {}",
                crate::transform::inputs::model_sql_error(model, e)
            );
        }
    };
    let strategy = scope::strategy(df.logical_plan(), &model.config);
    let mut text = format!(
        "\n     strategy {}",
        crate::transform::merge::describe(&strategy, df.logical_plan())
    );
    let Strategy::Groups(scope) = &strategy else {
        return text;
    };
    let last = match lake.table(&model.name, None, None).await {
        Ok(table) => cursor(&table).await,
        Err(_) => None,
    };
    let would = match last {
        None => "would build in full".to_string(),
        Some(last) if last.sql != prepared.hash => "would rebuild: the SQL changed".to_string(),
        Some(last) => match groups::decide(lake, &prepared.inputs, scope, &last).await {
            Ok(Decision::Unchanged) => "would do nothing: its inputs' rows are as they were".into(),
            Ok(Decision::Full(why)) => format!("would rebuild: {why}"),
            Ok(Decision::Recompute(r)) => format!(
                "would recompute {} group{}",
                r.touched.groups,
                if r.touched.groups == 1 { "" } else { "s" }
            ),
            Err(e) => format!("cannot tell what changed: {e}"),
        },
    };
    text.push_str(&format!("\n     {would}"));
    text
}
