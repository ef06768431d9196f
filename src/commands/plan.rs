//! `lake plan`: the models in run order, checked, with what each would read; nothing runs.

use anyhow::Result;
use arrow::array::AsArray;

use super::Context;
use crate::cli::PlanArgs;
use crate::output;
use crate::transform::run::prepare;
use crate::transform::select;

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
        let needs_lake =
            m.config.materialized == crate::transform::Materialized::Incremental || args.explain;
        if needs_lake {
            match prepare(&lake, &project, m, false).await {
                Ok(prepared) => {
                    if m.config.materialized == crate::transform::Materialized::Incremental {
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
                Err(e) => text.push_str(&format!("\n     cannot open its inputs yet: {e}")),
            }
        }
        text.push('\n');
    }
    output::print(text.trim_end())?;
    Ok(())
}
