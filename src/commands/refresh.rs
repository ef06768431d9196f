//! `lake refresh`: the scheduled job ([`crate::refresh`]) under the lake's lease, then a
//! summary table and an exit code a scheduler can alert on.

use std::time::Instant;

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::{Context, Exit, exit};
use crate::cli::RefreshArgs;
use crate::refresh::{Outcome, RefreshOptions, RefreshReport, refresh};

pub async fn run(ctx: &Context, args: RefreshArgs) -> Result<()> {
    let started = Instant::now();
    let cannot_start = |e: anyhow::Error| -> anyhow::Error {
        Exit {
            code: exit::CANNOT_START,
            message: format!("failed to start the refresh: {e:#}"),
        }
        .into()
    };
    let app = ctx.app().await.map_err(cannot_start)?;
    // SIGTERM (systemd, ECS, `lake schedule`) or Ctrl-C: free the lock and stop. Every step
    // that finished is committed and the one in flight is not, as after a crash; the next
    // refresh then starts at once instead of waiting for the lease to expire.
    let lease = super::hold_lake(ctx, app.lake(), "refresh", args.wait, args.lease_ttl)
        .await?
        .release_on_signal(|code| {
            tracing::warn!(exit_code = code, "refresh stopped by a signal");
            eprintln!(
                "error: the refresh was stopped by a signal; the steps it finished are committed, the one in flight is not"
            );
            std::process::exit(code);
        });
    tracing::info!(owner = %lease.info().owner, expires_at = %lease.info().expires_at, "refresh started");
    let options = RefreshOptions {
        select: args.selection.select,
        exclude: args.selection.exclude,
        threads: args.threads,
        full_refresh: args.full_refresh,
        skip_extract: args.skip_extract,
        skip_export: args.skip_export,
    };
    let report = refresh(app, &lease, &options, &ctx.lines(true)).await;
    if let Err(e) = lease.release().await {
        tracing::warn!("failed to release the refresh lease (it expires by itself): {e}");
    }
    summary(ctx, &report, started);
    let duration_ms = report.duration.as_millis() as u64;
    let failed: Vec<&str> = report.failed.iter().map(|s| s.name()).collect();
    match report.outcome() {
        Outcome::Ok => {
            tracing::info!(duration_ms, exit_code = 0, "refresh finished");
            Ok(())
        }
        Outcome::LeaseLost => Err(Exit {
            code: exit::FAILED,
            message: "failed to refresh: the lease on the lake expired and another process took it; stopped before the next stage".into(),
        }
        .into()),
        Outcome::Failed => {
            tracing::error!(duration_ms, exit_code = exit::FAILED, "refresh finished");
            Err(Exit {
                code: exit::FAILED,
                message: format!("failed to refresh: {} failed", failed.join(", ")),
            }
            .into())
        }
        Outcome::TestsFailed => {
            tracing::warn!(duration_ms, exit_code = exit::TESTS_FAILED, "refresh finished");
            let models: Vec<String> = report.tests_failed.iter().map(ToString::to_string).collect();
            Err(Exit {
                code: exit::TESTS_FAILED,
                message: format!(
                    "refreshed, but error-level tests failed in {}; those models were not exported",
                    models.join(", ")
                ),
            }
            .into())
        }
    }
}

/// The summary table on stderr, unless quiet or the logs are JSON (which carry the same).
fn summary(ctx: &Context, report: &RefreshReport, started: Instant) {
    if ctx.quiet() {
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["stage", "item", "status", "rows", "duration", "detail"]);
    for s in &report.steps {
        table.add_row([
            s.stage.to_string(),
            s.item.clone().unwrap_or_else(|| "(stage)".into()),
            s.status.name().to_string(),
            s.rows.clone(),
            s.duration
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_default(),
            s.detail.clone(),
        ]);
    }
    eprintln!(
        "{table}\nrefresh took {:.2}s",
        started.elapsed().as_secs_f64()
    );
}
