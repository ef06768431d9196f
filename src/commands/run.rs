//! `lake run` and `lake test`: build the selected models and run their tests, one line per
//! model as it finishes.

use anyhow::{Result, bail};

use super::Context;
use crate::app::ModelRun;
use crate::cli::{RunArgs, Selection, TestArgs};
use crate::transform::run::Status;

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
    let run = ModelRun {
        select: selection.select.clone(),
        exclude: selection.exclude.clone(),
        threads,
        build,
        full_refresh,
        run_id: None,
    };
    let summary = ctx.app().await?.run_models(&run, &ctx.lines(build)).await?;
    if !summary.ok() {
        let failed: Vec<String> = summary
            .outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Failed | Status::TestsFailed))
            .map(|o| o.model.to_string())
            .collect();
        bail!(
            "failed to {}: {}",
            if build { "run models" } else { "pass tests" },
            failed.join(", ")
        );
    }
    Ok(())
}
