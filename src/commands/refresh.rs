//! `lake refresh`: the scheduled job. Under a lease on the lake (one refresh at a time, from
//! any machine), it extracts the SQL sources, runs the models and their tests, and exports what
//! passed; then prints a summary table and exits with a code a scheduler can alert on.
//!
//! A failed stage does not stop the rest: a source that failed leaves its table as it was, and
//! the models and the export run on what is in the lake. Every step commits atomically (a
//! Delta commit, a warehouse table swapped in one transaction), so a killed refresh leaves the
//! previous state and the next refresh picks up from there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::run as models;
use super::{Context, Exit, exit, export, extract, maintain};
use crate::cli::RefreshArgs;
use crate::lake::Lake;
use crate::lake::lease::Lease;
use crate::transform::run::Status;
use crate::transform::runs::{self, RunRecord};

/// The lease a refresh or a standalone maintenance takes: one of them at a time per lake.
pub const LEASE: &str = "lake";

/// One line of the summary.
struct Row {
    stage: &'static str,
    item: String,
    status: String,
    rows: String,
    duration: Option<Duration>,
    detail: String,
}

pub async fn run(ctx: &Context, args: RefreshArgs) -> Result<()> {
    let started = Instant::now();
    let cannot_start = |e: anyhow::Error| -> anyhow::Error {
        Exit {
            code: exit::CANNOT_START,
            message: format!("failed to start the refresh: {e:#}"),
        }
        .into()
    };
    let settings = ctx.settings().map_err(cannot_start)?;
    let lake = ctx.lake().await.map_err(cannot_start)?;
    let lease = acquire(ctx, &lake, "refresh", args.wait, args.lease_ttl).await?;
    tracing::info!(owner = %lease.info().owner, expires_at = %lease.info().expires_at, "refresh started");
    // `_lake.runs` gets a start row now and an end row at the end, so `lake runs` lists the
    // refresh (and shows it interrupted if it never ends).
    let record = RunRecord {
        run_id: format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        command: "refresh".into(),
        status: "started".into(),
        started_at: chrono::Utc::now(),
        ..Default::default()
    };
    if let Err(e) = runs::append(&lake, std::slice::from_ref(&record)).await {
        tracing::warn!("failed to record the refresh in _lake.runs: {e}");
    }
    let lost = Arc::new(AtomicBool::new(false));
    let lease = Arc::new(tokio::sync::Mutex::new(Some(lease)));
    let renewer = tokio::spawn(renew(lease.clone(), args.lease_ttl, lost.clone()));

    let mut rows: Vec<Row> = Vec::new();
    let mut failed_stages: Vec<&str> = Vec::new();
    let mut tests_failed: Vec<String> = Vec::new();

    // 1. Extract.
    if args.skip_extract {
        push(
            &mut rows,
            stage_row("extract", "skipped", None, "--skip-extract"),
        );
    } else if settings.sources.is_empty() {
        push(
            &mut rows,
            stage_row("extract", "skipped", None, "no [sources] in lake.toml"),
        );
    } else {
        let t = Instant::now();
        match extract::sql_sources(ctx, &[], false).await {
            Ok(results) => {
                let failed = results.iter().filter(|(_, r)| r.is_err()).count();
                if failed > 0 {
                    failed_stages.push("extract");
                }
                for (name, r) in &results {
                    push(
                        &mut rows,
                        match r {
                            Ok(report) => Row {
                                stage: "extract",
                                item: format!("{name} -> {}", report.table),
                                status: if report.version.is_some() {
                                    "ok"
                                } else {
                                    "unchanged"
                                }
                                .into(),
                                rows: report.rows.to_string(),
                                duration: None,
                                detail: String::new(),
                            },
                            Err(e) => Row {
                                stage: "extract",
                                item: name.clone(),
                                status: "failed".into(),
                                rows: String::new(),
                                duration: None,
                                detail: e.clone(),
                            },
                        },
                    );
                }
                push(
                    &mut rows,
                    stage_row(
                        "extract",
                        if failed > 0 { "failed" } else { "ok" },
                        Some(t.elapsed()),
                        &format!("{} sources, {failed} failed", results.len()),
                    ),
                );
            }
            Err(e) => {
                failed_stages.push("extract");
                push(
                    &mut rows,
                    stage_row("extract", "failed", Some(t.elapsed()), &format!("{e:#}")),
                );
            }
        }
    }

    // 2. Models and their tests.
    if lost.load(Ordering::SeqCst) {
        return lost_lease(ctx, &rows, started);
    }
    let t = Instant::now();
    match models::models(ctx, &args.selection, args.threads, true, false).await {
        Ok(summary) => {
            for o in &summary.outcomes {
                if o.status == Status::Failed {
                    failed_stages.push("run");
                }
                if o.status == Status::TestsFailed {
                    tests_failed.push(o.model.to_string());
                }
                push(
                    &mut rows,
                    Row {
                        stage: "run",
                        item: o.model.to_string(),
                        status: o.status.name().to_string(),
                        rows: match (o.merged, o.rows) {
                            (Some((i, u)), _) => format!("+{i} ~{u}"),
                            (None, Some(r)) => r.to_string(),
                            (None, None) => String::new(),
                        },
                        duration: Some(o.duration),
                        detail: o.error.clone().unwrap_or_default(),
                    },
                );
            }
            failed_stages.dedup();
            push(
                &mut rows,
                stage_row(
                    "run",
                    if failed_stages.contains(&"run") {
                        "failed"
                    } else if !tests_failed.is_empty() {
                        "tests_failed"
                    } else {
                        "ok"
                    },
                    Some(t.elapsed()),
                    &format!("{} models, run {}", summary.outcomes.len(), summary.run_id),
                ),
            );
        }
        Err(e) => {
            failed_stages.push("run");
            push(
                &mut rows,
                stage_row("run", "failed", Some(t.elapsed()), &format!("{e:#}")),
            );
        }
    }

    // 3. Export: what passed (models whose error-level tests failed are held back).
    if lost.load(Ordering::SeqCst) {
        return lost_lease(ctx, &rows, started);
    }
    if args.skip_export {
        push(
            &mut rows,
            stage_row("export", "skipped", None, "--skip-export"),
        );
    } else {
        let t = Instant::now();
        match export::export(ctx, &args.selection).await {
            Ok(done) => {
                if !done.failed.is_empty() {
                    failed_stages.push("export");
                }
                for (names, status, detail) in [
                    (&done.loaded, "ok", ""),
                    (&done.unchanged, "unchanged", ""),
                    (&done.blocked, "held_back", "its error-level tests failed"),
                    (
                        &done.failed,
                        "failed",
                        "the warehouse keeps its previous version",
                    ),
                ] {
                    for name in names {
                        push(
                            &mut rows,
                            Row {
                                stage: "export",
                                item: name.clone(),
                                status: status.into(),
                                rows: String::new(),
                                duration: None,
                                detail: detail.into(),
                            },
                        );
                    }
                }
                let detail = format!(
                    "{} loaded, {} unchanged, {} held back (tests failed), {} failed",
                    done.loaded.len(),
                    done.unchanged.len(),
                    done.blocked.len(),
                    done.failed.len()
                );
                push(
                    &mut rows,
                    stage_row(
                        "export",
                        if done.failed.is_empty() {
                            "ok"
                        } else {
                            "failed"
                        },
                        Some(t.elapsed()),
                        &detail,
                    ),
                );
            }
            Err(e) => {
                failed_stages.push("export");
                push(
                    &mut rows,
                    stage_row("export", "failed", Some(t.elapsed()), &format!("{e:#}")),
                );
            }
        }
    }

    // 4. Maintenance, when lake.toml asks for it after each refresh.
    if lost.load(Ordering::SeqCst) {
        return lost_lease(ctx, &rows, started);
    }
    if settings.maintain.after_refresh == Some(true) {
        let t = Instant::now();
        let maintained = match maintain::options(&settings) {
            Ok(options) => match lake.list_tables().await {
                Ok(tables) => Ok(maintain::maintain_tables(ctx, &lake, &tables, &options).await),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("{e:#}")),
        };
        match maintained {
            Ok(results) => {
                let failed = results.iter().filter(|(_, r)| r.is_err()).count();
                for (table, r) in &results {
                    push(
                        &mut rows,
                        Row {
                            stage: "maintain",
                            item: table.to_string(),
                            status: if r.is_ok() { "ok" } else { "failed" }.into(),
                            rows: String::new(),
                            duration: r.as_ref().ok().map(|r| r.duration),
                            detail: match r {
                                Ok(r) => maintain::describe(r, false),
                                Err(e) => e.clone(),
                            },
                        },
                    );
                }
                if failed > 0 {
                    failed_stages.push("maintain");
                }
                push(
                    &mut rows,
                    stage_row(
                        "maintain",
                        if failed > 0 { "failed" } else { "ok" },
                        Some(t.elapsed()),
                        &format!("{} tables, {failed} failed", results.len()),
                    ),
                );
            }
            Err(e) => {
                failed_stages.push("maintain");
                push(
                    &mut rows,
                    stage_row("maintain", "failed", Some(t.elapsed()), &e),
                );
            }
        }
    }

    renewer.abort();
    if let Some(lease) = lease.lock().await.take()
        && let Err(e) = lease.release().await
    {
        tracing::warn!("failed to release the refresh lease (it expires by itself): {e}");
    }
    if lost.load(Ordering::SeqCst) {
        return lost_lease(ctx, &rows, started);
    }
    summary(ctx, &rows, started);
    failed_stages.dedup();
    let duration_ms = started.elapsed().as_millis() as u64;
    let end = RunRecord {
        status: if !failed_stages.is_empty() {
            "failed"
        } else if !tests_failed.is_empty() {
            "tests_failed"
        } else {
            "ok"
        }
        .into(),
        duration_ms: Some(duration_ms),
        error: (!failed_stages.is_empty()).then(|| format!("{} failed", failed_stages.join(", "))),
        finished_at: Some(chrono::Utc::now()),
        ..record.clone()
    };
    if let Err(e) = runs::append(&lake, &[end]).await {
        tracing::warn!("failed to record the refresh in _lake.runs: {e}");
    }
    if !failed_stages.is_empty() {
        tracing::error!(duration_ms, exit_code = exit::FAILED, "refresh finished");
        failed_stages.dedup();
        return Err(Exit {
            code: exit::FAILED,
            message: format!("failed to refresh: {} failed", failed_stages.join(", ")),
        }
        .into());
    }
    if !tests_failed.is_empty() {
        tracing::warn!(
            duration_ms,
            exit_code = exit::TESTS_FAILED,
            "refresh finished"
        );
        return Err(Exit {
            code: exit::TESTS_FAILED,
            message: format!(
                "refreshed, but error-level tests failed in {}; those models were not exported",
                tests_failed.join(", ")
            ),
        }
        .into());
    }
    tracing::info!(duration_ms, exit_code = 0, "refresh finished");
    Ok(())
}

/// Adds a line to the summary, and logs it: with `--log-format json` each is one JSON object.
fn push(rows: &mut Vec<Row>, row: Row) {
    let duration_ms = row.duration.map(|d| d.as_millis() as u64);
    if row.status == "failed" {
        tracing::error!(
            stage = row.stage,
            item = %row.item,
            status = %row.status,
            rows = %row.rows,
            duration_ms,
            detail = %row.detail,
            "refresh step"
        );
    } else {
        tracing::info!(
            stage = row.stage,
            item = %row.item,
            status = %row.status,
            rows = %row.rows,
            duration_ms,
            detail = %row.detail,
            "refresh step"
        );
    }
    rows.push(row);
}

fn stage_row(stage: &'static str, status: &str, duration: Option<Duration>, detail: &str) -> Row {
    Row {
        stage,
        item: "(stage)".into(),
        status: status.into(),
        rows: String::new(),
        duration,
        detail: detail.into(),
    }
}

/// Takes the lake's lease for `command`, waiting up to `wait` for another holder to finish.
pub(super) async fn acquire(
    ctx: &Context,
    lake: &Lake,
    command: &str,
    wait: Option<Duration>,
    ttl: Duration,
) -> Result<Lease> {
    let deadline = Instant::now() + wait.unwrap_or_default();
    let mut spinner = None;
    loop {
        let tried = lake
            .try_lease(LEASE, ttl, command)
            .await
            .map_err(|e| Exit {
                code: exit::CANNOT_START,
                message: format!("failed to start the {command}: {e}"),
            })?;
        let holder = match tried {
            Ok(lease) => return Ok(lease),
            Err(holder) => holder,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Exit {
                code: exit::CANNOT_START,
                message: format!(
                    "failed to start the {command}: another process holds the lake: {}{}",
                    holder.describe(),
                    if wait.is_none() {
                        "; pass --wait 30m to wait for it"
                    } else {
                        ""
                    }
                ),
            }
            .into());
        }
        let bar =
            spinner.get_or_insert_with(|| crate::progress::spinner(ctx.quiet(), String::new()));
        bar.set_message(format!("waiting for {}", holder.describe()));
        tokio::time::sleep((deadline - now).min(Duration::from_secs(2))).await;
    }
}

/// Renews the lease every third of its TTL; marks it lost if another process took it.
async fn renew(
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let mut guard = lease.lock().await;
        let Some(lease) = guard.as_mut() else {
            return;
        };
        if let Err(e) = lease.renew(ttl).await {
            tracing::error!("{e}");
            if matches!(e, crate::lake::LakeError::LeaseLost { .. }) {
                lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

fn lost_lease(ctx: &Context, rows: &[Row], started: Instant) -> Result<()> {
    summary(ctx, rows, started);
    Err(Exit {
        code: exit::FAILED,
        message: "failed to refresh: the lease on the lake expired and another process took it; stopped before the next stage".into(),
    }
    .into())
}

/// The summary table on stderr, unless quiet or the logs are JSON (which carry the same).
fn summary(ctx: &Context, rows: &[Row], started: Instant) {
    if ctx.quiet() {
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["stage", "item", "status", "rows", "duration", "detail"]);
    for r in rows {
        table.add_row([
            r.stage.to_string(),
            r.item.clone(),
            r.status.clone(),
            r.rows.clone(),
            r.duration
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_default(),
            r.detail.clone(),
        ]);
    }
    eprintln!(
        "{table}\nrefresh took {:.2}s",
        started.elapsed().as_secs_f64()
    );
}
