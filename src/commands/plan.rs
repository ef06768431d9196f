//! `lake plan`: the models in run order, checked, without running anything.

use anyhow::Result;

use super::Context;
use crate::output;
use crate::transform::Project;

pub async fn run(ctx: &Context) -> Result<()> {
    let settings = ctx.settings()?;
    let lake = ctx.lake().await?;
    let tables = lake.list_tables().await?;
    let queries = settings.project_dir.join("queries");
    let project = Project::load(&queries, &settings.project_dir, &tables)?;
    if project.models.is_empty() {
        if !ctx.quiet() {
            eprintln!(
                "no models: put one SELECT per file in {}",
                queries.display()
            );
        }
        return Ok(());
    }
    let width = project
        .models
        .iter()
        .map(|m| m.name.to_string().len())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (i, m) in project.models.iter().enumerate() {
        let reads: Vec<String> = m.reads.iter().map(|r| r.table.to_string()).collect();
        let reads = if reads.is_empty() {
            "-".to_string()
        } else {
            reads.join(", ")
        };
        text.push_str(&format!(
            "{:>3}  {:<width$}  {:<11}  reads {reads}\n",
            i + 1,
            m.name.to_string(),
            m.config.materialized.name(),
        ));
    }
    output::print(text.trim_end())?;
    Ok(())
}
