//! `lake maintain [TABLE ...]`: compaction, checkpoints and vacuum, table by table, under the
//! lake's lock (so it never races a refresh).

use std::time::Duration;

use anyhow::{Result, bail};

use super::{Context, Exit, exit};
use crate::cli::MaintainArgs;
use crate::config::Settings;
use crate::lake::maintain::{DEFAULT_RETENTION, MaintainOptions, MaintainReport};
use crate::lake::{Lake, TableName};
use crate::output;

pub async fn run(ctx: &Context, args: MaintainArgs) -> Result<()> {
    let settings = ctx.settings()?;
    let lake = ctx.lake().await?;
    let mut options = options(&settings)?;
    options.dry_run = args.dry_run;
    options.unsafe_retention = args.unsafe_retention;
    if let Some(r) = args.retention {
        options.retention = r;
    }
    let tables: Vec<TableName> = if args.tables.is_empty() {
        lake.list_tables().await?
    } else {
        args.tables
            .iter()
            .map(|t| t.parse())
            .collect::<Result<_, _>>()?
    };
    // Renewed while it runs, so a maintenance longer than the TTL keeps the lake.
    let lease = super::hold_lake(ctx, &lake, "maintain", args.wait, Duration::from_secs(600))
        .await?
        .release_on_signal(|code| {
            eprintln!(
                "error: maintenance was stopped by a signal; tables it finished are committed"
            );
            std::process::exit(code);
        });
    let results = maintain_tables(ctx, &lake, &tables, &options).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("failed to release the lease (it expires by itself): {e}");
    }
    let failed: Vec<String> = results
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

/// The options `[maintain]` sets.
pub(super) fn options(settings: &Settings) -> Result<MaintainOptions> {
    let retention = match &settings.maintain.vacuum_retention {
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => bail!(
                "failed to read maintain.vacuum_retention = \"{text}\": {e}; write it as 168h or 30d"
            ),
        },
        None => DEFAULT_RETENTION,
    };
    Ok(MaintainOptions {
        retention,
        target_file_size: settings.maintain.target_file_size,
        dry_run: false,
        unsafe_retention: false,
    })
}

/// Maintains each table in turn, a line each; a failed table does not stop the others.
pub(super) async fn maintain_tables(
    ctx: &Context,
    lake: &Lake,
    tables: &[TableName],
    options: &MaintainOptions,
) -> Vec<(TableName, Result<MaintainReport, String>)> {
    let mut results = Vec::new();
    for table in tables {
        let bar = crate::progress::spinner(ctx.quiet(), format!("maintaining {table}"));
        let result = lake.maintain(table, options).await;
        bar.finish_and_clear();
        let line = match &result {
            Ok(r) => format!("{table}: {}", describe(r, options.dry_run)),
            Err(e) => format!("{table}: failed: {e}"),
        };
        let _ = output::print(line);
        results.push((table.clone(), result.map_err(|e| e.to_string())));
    }
    results
}

/// `compacted 12 files into 1, checkpoint at version 40, vacuumed 12 files (0.41s)`.
pub(super) fn describe(r: &MaintainReport, dry_run: bool) -> String {
    let mut parts = Vec::new();
    if r.compacted.0 > 0 {
        parts.push(format!(
            "compacted {} files into {}",
            r.compacted.0, r.compacted.1
        ));
    }
    if let Some(v) = r.checkpoint {
        parts.push(format!("checkpoint at version {v}"));
    }
    if r.vacuumed > 0 || dry_run {
        parts.push(format!(
            "{} {} old files",
            if dry_run { "would vacuum" } else { "vacuumed" },
            r.vacuumed
        ));
    }
    if parts.is_empty() {
        parts.push("nothing to do".into());
    }
    format!("{} ({:.2}s)", parts.join(", "), r.duration.as_secs_f64())
}
