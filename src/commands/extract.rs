//! `lake extract spotify [--stream NAME ...]`: the Web API into raw tables.

use anyhow::{Result, bail};

use super::Context;
use crate::cli::{ExtractArgs, ExtractSource, SqlArgs};
use crate::extract::spotify::{self, Outcome};
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

/// `lake extract sql [NAME ...]`: every named source (all when none is named), one commit each;
/// a failed source commits nothing and the others still land.
async fn sql(ctx: &Context, args: SqlArgs) -> Result<()> {
    let settings = ctx.settings()?;
    if settings.sources.is_empty() {
        bail!("failed to extract: lake.toml has no [sources.<name>]");
    }
    for n in &args.names {
        if !settings.sources.contains_key(n) {
            let known: Vec<&str> = settings.sources.keys().map(String::as_str).collect();
            bail!(
                "failed to extract {n}: no [sources.{n}] in lake.toml (there are: {})",
                known.join(", ")
            );
        }
    }
    let lake = ctx.lake().await?;
    let mut failed = Vec::new();
    for (name, src) in &settings.sources {
        if !args.names.is_empty() && !args.names.contains(name) {
            continue;
        }
        let bar = progress::spinner(ctx.quiet(), format!("{name}: connecting"));
        let shown = {
            let bar = bar.clone();
            let name = name.clone();
            std::sync::Arc::new(move |rows: u64| bar.set_message(format!("{name}: {rows} rows")))
        };
        let result = crate::extract::sql::extract(&lake, name, src, shown).await;
        bar.finish_and_clear();
        match result {
            Ok(r) => crate::output::print(format!(
                "{name} -> {} version {}: {} rows",
                r.table, r.version, r.rows
            ))?,
            Err(e) => {
                crate::output::print(format!("{name}: failed, nothing committed: {e}"))?;
                failed.push(name.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!("failed to extract: {}", failed.join(", "));
    }
    Ok(())
}
