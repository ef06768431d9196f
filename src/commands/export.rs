//! `lake export [--select ...]`: curated tables into the warehouse.

use anyhow::{Result, bail};

use super::Context;
use crate::cli::{ExportArgs, Selection};
use crate::export::{Target, Warehouse, export_table};
use crate::lake::{CURATED, TableName};
use crate::output;
use crate::progress;
use crate::query::LakeSession;
use crate::transform::{Materialized, Project, runs, select};

pub async fn run(ctx: &Context, args: ExportArgs) -> Result<()> {
    let outcome = export(ctx, &args.selection).await?;
    let failed: Vec<String> = outcome.blocked.into_iter().chain(outcome.failed).collect();
    if !failed.is_empty() {
        bail!("failed to export: {}", failed.join(", "));
    }
    Ok(())
}

/// What an export did, table by table.
#[derive(Debug, Default)]
pub(super) struct Exported {
    /// Loaded or upserted.
    pub loaded: Vec<String>,
    /// Already in the warehouse at their current version.
    pub unchanged: Vec<String>,
    /// Not exported because their error-level tests failed.
    pub blocked: Vec<String>,
    /// Failed to load; the warehouse keeps their previous version.
    pub failed: Vec<String>,
}

/// Exports the selected tables (the models marked `export`, or every curated table), a line
/// each; an error only when nothing could start.
pub(super) async fn export(ctx: &Context, selection: &Selection) -> Result<Exported> {
    let settings = ctx.settings()?;
    let lake = ctx.lake().await?;
    let tables = lake.list_tables().await?;
    let project = Project::load(&settings.project_dir, &tables)?;
    // The models marked for export, or every curated table when none is marked.
    let marked: Vec<_> = project
        .models
        .iter()
        .filter(|m| m.config.export == Some(true))
        .collect();
    let selected = if selection.select.is_empty() && selection.exclude.is_empty() {
        None
    } else {
        Some(select::resolve(
            &project,
            &selection.select,
            &selection.exclude,
        )?)
    };
    let mut chosen: Vec<(TableName, Target, Vec<String>)> = Vec::new();
    let not_refused = |t: &TableName| {
        project
            .model(t)
            .is_none_or(|m| m.config.export != Some(false))
    };
    // Selected models go whether marked or not (unless marked `export = false`).
    let candidates: Vec<TableName> = if let Some(sel) = &selected {
        tables
            .iter()
            .filter(|t| sel.contains(*t) && not_refused(t))
            .cloned()
            .collect()
    } else if marked.is_empty() {
        tables
            .iter()
            .filter(|t| t.schema() == CURATED && not_refused(t))
            .cloned()
            .collect()
    } else {
        marked.iter().map(|m| m.name.clone()).collect()
    };
    for table in candidates {
        if selected.as_ref().is_some_and(|s| !s.contains(&table)) {
            continue;
        }
        let model = project.model(&table);
        if model.is_some_and(|m| m.config.materialized == Materialized::View) {
            bail!("failed to export {table}: it is a view; make it a table to export it");
        }
        if !tables.contains(&table) {
            bail!("failed to export {table}: it is not built yet; run `lake run` first");
        }
        let target = match model.and_then(|m| m.config.export_to.clone()) {
            Some(to) => match to.split_once('.') {
                Some((s, n)) => Target {
                    schema: Some(s.to_string()),
                    name: n.to_string(),
                },
                None => Target {
                    schema: None,
                    name: to,
                },
            },
            None if table.schema() == CURATED => Target {
                schema: None,
                name: table.name().to_string(),
            },
            None => Target {
                schema: None,
                name: format!("{}_{}", table.schema(), table.name()),
            },
        };
        let key = model
            .filter(|m| m.config.materialized == Materialized::Incremental)
            .map(|m| m.config.unique_key.clone())
            .unwrap_or_default();
        chosen.push((table, target, key));
    }
    if chosen.is_empty() {
        bail!("failed to export: no curated table matches; build models with `lake run` first");
    }
    let blocked = tests_failed(&lake).await?;
    let warehouse = Warehouse::connect(&settings.warehouse, &settings.project_dir).await?;
    let mut outcome = Exported::default();
    for (table, target, key) in &chosen {
        if let Some(run) = blocked.iter().find(|(m, _)| m == &table.to_string()) {
            output::print(format!(
                "not exported  {table}: its error-level tests failed in run {}",
                run.1
            ))?;
            outcome.blocked.push(table.to_string());
            continue;
        }
        let bar = progress::spinner(ctx.quiet(), format!("exporting {table}"));
        let shown = |rows: u64| bar.set_message(format!("exporting {table}: {rows} rows"));
        let result = export_table(&lake, &warehouse, table, target, key, &shown).await;
        bar.finish_and_clear();
        match result {
            Ok(e) if e.unchanged => {
                output::print(format!(
                    "unchanged     {table} -> {}  (version {} is there already)",
                    e.target, e.version
                ))?;
                outcome.unchanged.push(table.to_string());
            }
            Ok(e) => {
                output::print(format!(
                    "{:<13} {table} -> {}  {} rows, version {}, {:.2}s",
                    if e.upsert { "upserted" } else { "exported" },
                    e.target,
                    e.rows.unwrap_or(0),
                    e.version,
                    e.duration.as_secs_f64()
                ))?;
                outcome.loaded.push(table.to_string());
            }
            Err(err) => {
                output::print(format!("failed        {table}: {err}"))?;
                outcome.failed.push(table.to_string());
            }
        }
    }
    Ok(outcome)
}

/// Models whose latest run ended with failed error-level tests, with that run's id.
async fn tests_failed(lake: &std::sync::Arc<crate::lake::Lake>) -> Result<Vec<(String, String)>> {
    let session = LakeSession::new(lake.clone()).await?;
    if !session.tables().contains(&runs::table()) {
        return Ok(Vec::new());
    }
    let df = session
        .sql(
            "SELECT model, run_id FROM (SELECT model, run_id, status, row_number() OVER (PARTITION BY model ORDER BY finished_at DESC) AS r FROM _lake.runs WHERE model IS NOT NULL AND finished_at IS NOT NULL) WHERE r = 1 AND status = 'tests_failed'",
        )
        .await?;
    let batches = df.collect().await?;
    let mut out = Vec::new();
    for b in batches {
        // Strings read back from Parquet may come as views.
        let models = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let runs = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)?;
        let models = arrow::array::AsArray::as_string::<i32>(&models);
        let runs = arrow::array::AsArray::as_string::<i32>(&runs);
        for i in 0..b.num_rows() {
            out.push((models.value(i).to_string(), runs.value(i).to_string()));
        }
    }
    Ok(out)
}
