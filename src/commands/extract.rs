//! `lake extract spotify [--stream NAME ...]`: the Web API into raw tables.

use anyhow::{Result, bail};

use super::Context;
use crate::cli::{ExtractArgs, ExtractSource, SqlArgs};
use crate::extract::spotify::{self, Outcome};
use crate::extract::sql::SqlReport;
use crate::progress;

pub async fn run(ctx: &Context, args: ExtractArgs) -> Result<()> {
    let args = match args.source {
        ExtractSource::Spotify(a) => a,
        ExtractSource::Sql(a) => return sql(ctx, a).await,
    };
    let settings = ctx.settings()?;
    let streams = spotify::select(&settings, &args.streams)?;
    let lake = ctx.lake().await?;
    let quiet = ctx.quiet();
    let reports = spotify::extract(&lake, &settings, &streams, &|name| {
        progress::spinner(quiet, format!("{name}: starting"))
    })
    .await?;
    let width = reports
        .iter()
        .map(|r| r.stream.table().to_string().len())
        .max()
        .unwrap_or(0);
    let mut failed = Vec::new();
    for r in &reports {
        let table = r.stream.table().to_string();
        let line = match &r.outcome {
            Outcome::Written { version, rows } => {
                let of = r.expected.map(|e| format!(" of {e}")).unwrap_or_default();
                format!("version {version}: {rows} rows{of}")
            }
            Outcome::Unchanged => "unchanged: nothing new".to_string(),
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed(why) => {
                failed.push(table.clone());
                format!("failed, nothing committed: {why}")
            }
        };
        if !quiet || matches!(r.outcome, Outcome::Skipped(_)) {
            eprintln!("{table:<width$}  {line}");
        }
        for w in &r.warnings {
            eprintln!("warning: {table}: {w}");
        }
    }
    if !failed.is_empty() {
        bail!(
            "failed to extract {} of {} streams: {}",
            failed.len(),
            reports.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// One line per source: `crm -> raw.crm version 3: 120 rows (cursor 2024-01-01 .. 2024-01-02)`.
fn sql_summary(r: &SqlReport) -> String {
    let mut line = match r.version {
        Some(v) => format!("{} -> {} version {v}: {} rows", r.source, r.table, r.rows),
        None => format!(
            "{} -> {}: no new rows, nothing committed",
            r.source, r.table
        ),
    };
    if let Some((before, after)) = &r.cursor {
        let shown = |c: &Option<String>| c.clone().unwrap_or_else(|| "start".into());
        line.push_str(&format!(", cursor {} -> {}", shown(before), shown(after)));
    }
    if let Some(d) = r.deleted {
        line.push_str(&format!(", {d} newly deleted at the source"));
    }
    line
}

/// `lake extract sql [NAME ...]`: every named source (all when none is named), one commit each;
/// a failed source commits nothing and the others still land.
async fn sql(ctx: &Context, args: SqlArgs) -> Result<()> {
    let failed: Vec<String> = sql_sources(ctx, &args.names, args.detect_deletes)
        .await?
        .into_iter()
        .filter_map(|(_, r)| r.err())
        .collect();
    match failed.len() {
        0 => Ok(()),
        1 => bail!("{}", failed[0]),
        n => bail!("{n} sources failed:\n{}", failed.join("\n")),
    }
}

/// What each source's extract did, or why it failed.
pub(super) type SourceResults = Vec<(String, std::result::Result<SqlReport, String>)>;

/// Extracts the named sources (all when none is named), a line each; an error only when
/// nothing could start.
pub(super) async fn sql_sources(
    ctx: &Context,
    names: &[String],
    detect_deletes: bool,
) -> Result<SourceResults> {
    let settings = ctx.settings()?;
    if settings.sources.is_empty() {
        bail!("failed to extract: lake.toml has no [sources.<name>]");
    }
    for n in names {
        if !settings.sources.contains_key(n) {
            let known: Vec<&str> = settings.sources.keys().map(String::as_str).collect();
            bail!(
                "failed to extract {n}: no [sources.{n}] in lake.toml (there are: {})",
                known.join(", ")
            );
        }
    }
    let lake = ctx.lake().await?;
    let mut results = Vec::new();
    for (name, src) in &settings.sources {
        if !names.is_empty() && !names.contains(name) {
            continue;
        }
        let bar = progress::spinner(ctx.quiet(), format!("{name}: connecting"));
        let shown = {
            let bar = bar.clone();
            let name = name.clone();
            std::sync::Arc::new(move |rows: u64| bar.set_message(format!("{name}: {rows} rows")))
        };
        let options = crate::extract::sql::RunOptions {
            detect_deletes,
            project_dir: settings.project_dir.clone(),
        };
        let result = crate::extract::sql::extract(&lake, name, src, options, shown).await;
        bar.finish_and_clear();
        match result {
            Ok(r) => {
                crate::output::print(sql_summary(&r))?;
                results.push((name.clone(), Ok(r)));
            }
            Err(e) => {
                crate::output::print(format!("{name}: failed: {e}"))?;
                results.push((name.clone(), Err(e.to_string())));
            }
        }
    }
    Ok(results)
}
