//! `lake export [--select ...]`: curated tables into the warehouse, a line each.

use anyhow::{Result, bail};

use super::Context;
use crate::cli::ExportArgs;

pub async fn run(ctx: &Context, args: ExportArgs) -> Result<()> {
    let s = &args.selection;
    let report = ctx
        .app()
        .await?
        .export(&s.select, &s.exclude, &ctx.lines(true))
        .await?;
    let failed: Vec<String> = report
        .held_back()
        .into_iter()
        .chain(report.failed())
        .map(ToString::to_string)
        .collect();
    if !failed.is_empty() {
        bail!("failed to export: {}", failed.join(", "));
    }
    Ok(())
}
