//! `lake maintain [TABLE ...]`: compaction, checkpoints and vacuum, table by table, under the
//! lake's lease (so it never races a refresh).

use std::time::Duration;

use anyhow::Result;

use super::{Context, Exit, exit};
use crate::cli::MaintainArgs;
use crate::lake::TableName;

pub async fn run(ctx: &Context, args: MaintainArgs) -> Result<()> {
    let app = ctx.app().await?;
    let mut options = app.maintain_options();
    options.dry_run = args.dry_run;
    options.unsafe_retention = args.unsafe_retention;
    if let Some(r) = args.retention {
        options.retention = r;
    }
    let tables: Vec<TableName> = args
        .tables
        .iter()
        .map(|t| t.parse())
        .collect::<Result<_, _>>()?;
    // Renewed while it runs, so a maintenance longer than the TTL keeps the lake.
    let lease = super::hold_lake(
        ctx,
        app.lake(),
        "maintain",
        args.wait,
        Duration::from_secs(600),
    )
    .await?
    .release_on_signal(|code| {
        eprintln!("error: maintenance was stopped by a signal; tables it finished are committed");
        std::process::exit(code);
    });
    let results = app.maintain(&tables, &options, &ctx.lines(true)).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("failed to release the lease (it expires by itself): {e}");
    }
    let failed: Vec<String> = results?
        .into_iter()
        .filter_map(|(t, r)| r.err().map(|e| format!("{t}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Err(Exit {
            code: exit::FAILED,
            message: format!(
                "failed to maintain {} tables:\n{}",
                failed.len(),
                failed.join("\n")
            ),
        }
        .into());
    }
    Ok(())
}
