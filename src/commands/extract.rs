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
    let failed: Vec<String> = ctx
        .app()
        .await?
        .extract_sources(&args.names, args.detect_deletes, &ctx.lines(true))
        .await?
        .into_iter()
        .filter_map(|(_, r)| r.err().map(|e| e.to_string()))
        .collect();
    match failed.len() {
        0 => Ok(()),
        1 => bail!("{}", failed[0]),
        n => bail!("{n} sources failed:\n{}", failed.join("\n")),
    }
}
