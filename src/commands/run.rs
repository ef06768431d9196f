//! `lake run` and `lake test`: build the selected models and run their tests, one line per
//! model as it finishes.

use std::sync::Arc;

use anyhow::{Result, bail};

use super::Context;
use crate::cli::{RunArgs, Selection, TestArgs};
use crate::output;
use crate::progress;
use crate::transform::run::{
    ModelOutcome, RunEvent, RunOptions, RunSummary, Status, run as run_models,
};
use crate::transform::{Project, Severity, select};

pub async fn run(ctx: &Context, args: RunArgs) -> Result<()> {
    execute(ctx, &args.selection, args.threads, true, args.full_refresh).await
}

pub async fn test(ctx: &Context, args: TestArgs) -> Result<()> {
    execute(ctx, &args.selection, args.threads, false, false).await
}

async fn execute(
    ctx: &Context,
    selection: &Selection,
    threads: Option<usize>,
    build: bool,
    full_refresh: bool,
) -> Result<()> {
    let summary = models(ctx, selection, threads, build, full_refresh).await?;
    if !summary.ok() {
        bail!(
            "failed to {}: {}",
            if build { "run models" } else { "pass tests" },
            failed(&summary).join(", ")
        );
    }
    Ok(())
}

/// The models that failed or whose error-level tests failed.
fn failed(summary: &RunSummary) -> Vec<String> {
    summary
        .outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Failed | Status::TestsFailed))
        .map(|o| o.model.to_string())
        .collect()
}

/// Builds (or only tests) the selected models, a line per model as it finishes; an error only
/// when nothing could run.
pub(super) async fn models(
    ctx: &Context,
    selection: &Selection,
    threads: Option<usize>,
    build: bool,
    full_refresh: bool,
) -> Result<RunSummary> {
    let settings = ctx.settings()?;
    let lake = ctx.lake().await?;
    let tables = lake.list_tables().await?;
    let project = Arc::new(Project::load(&settings.project_dir, &tables)?);
    if project.models.is_empty() {
        bail!(
            "failed to run models: there are none in {}; put one SELECT per file there",
            settings.project_dir.join("queries").display()
        );
    }
    let options = RunOptions {
        select: selection.select.clone(),
        exclude: selection.exclude.clone(),
        full_refresh,
        threads: threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        }),
        build,
        command: if build { "run" } else { "test" }.to_string(),
    };
    let width = project.name_width();
    let spinner = progress::spinner(
        ctx.quiet(),
        if build {
            "running models"
        } else {
            "running tests"
        }
        .to_string(),
    );
    let total = select::resolve(&project, &selection.select, &selection.exclude)?.len();
    let running = std::sync::Mutex::new(Vec::<String>::new());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let summary = run_models(lake, project, options, |event| {
        let mut running = running.lock().expect("poisoned");
        match event {
            RunEvent::Started(name) => running.push(name.to_string()),
            RunEvent::Finished(outcome) => {
                running.retain(|n| *n != outcome.model.to_string());
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                spinner.suspend(|| {
                    let _ = output::print(line(outcome, width, build));
                });
            }
        }
        spinner.set_message(format!(
            "{} of {total} done; running {}",
            done.load(std::sync::atomic::Ordering::Relaxed),
            running.join(", ")
        ));
    })
    .await?;
    spinner.finish_and_clear();
    if !ctx.quiet() {
        eprintln!("{}", totals(&summary));
    }
    Ok(summary)
}

/// One model's line, with its failing tests below it.
fn line(o: &ModelOutcome, width: usize, build: bool) -> String {
    let secs = format!("{:.2}s", o.duration.as_secs_f64());
    let detail = match o.status {
        Status::Failed | Status::Skipped => o.error.clone().unwrap_or_default(),
        _ if !build => format!("{} tests", o.tests.len()),
        _ => {
            let rows = match (o.merged, o.rows) {
                (Some((i, u)), _) => format!("{i} inserted, {u} updated"),
                (None, Some(r)) => format!("{r} rows"),
                (None, None) => "defined".to_string(),
            };
            let tests = match o.tests.len() {
                0 => String::new(),
                n => format!(
                    ", {} of {n} tests passed",
                    o.tests.iter().filter(|t| t.passed()).count()
                ),
            };
            let note = o
                .note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!("{rows}{tests}{note}")
        }
    };
    let mut text = format!(
        "{:<12} {:<width$}  {:<11}  {secs:>7}  {detail}",
        o.status.name(),
        o.model.to_string(),
        o.materialized.name(),
    );
    for t in o.tests.iter().filter(|t| !t.passed()) {
        let level = match t.severity {
            Severity::Error => "FAIL",
            Severity::Warn => "WARN",
        };
        match &t.error {
            Some(e) => text.push_str(&format!("\n  {level} {}: {e}", t.name)),
            None => {
                text.push_str(&format!(
                    "\n  {level} {}: {} failing row{}{}",
                    t.name,
                    t.failing,
                    if t.failing == 1 { "" } else { "s" },
                    t.audit
                        .as_ref()
                        .map(|a| format!(", all in {a}"))
                        .unwrap_or_default()
                ));
                if let Some(first) = t.sample.first()
                    && let Ok(table) = output::format_table(&first.schema(), &t.sample)
                {
                    for l in table.lines() {
                        text.push_str(&format!("\n    {l}"));
                    }
                }
            }
        }
    }
    text
}

fn totals(s: &RunSummary) -> String {
    let count = |f: &dyn Fn(Status) -> bool| s.outcomes.iter().filter(|o| f(o.status)).count();
    format!(
        "{} models in {:.2}s: {} ok, {} warn, {} unchanged, {} failed, {} tests failed, {} skipped (run {})",
        s.outcomes.len(),
        s.duration.as_secs_f64(),
        count(&|x| x == Status::Ok),
        count(&|x| x == Status::Warn),
        count(&|x| x == Status::Unchanged),
        count(&|x| x == Status::Failed),
        count(&|x| x == Status::TestsFailed),
        count(&|x| x == Status::Skipped),
        s.run_id
    )
}
