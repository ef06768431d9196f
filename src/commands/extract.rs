//! `lake extract spotify [--stream NAME ...]`: the Web API into raw tables.

use anyhow::{Result, bail};

use super::Context;
use crate::cli::{ExtractArgs, ExtractSource};
use crate::extract::spotify::{self, Outcome};
use crate::progress;

pub async fn run(ctx: &Context, args: ExtractArgs) -> Result<()> {
    let ExtractSource::Spotify(args) = args.source;
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
