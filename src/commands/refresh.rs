//! `lake refresh`: the scheduled job. Under a lease on the lake (one refresh at a time, from
//! any machine), it extracts the SQL sources, runs the models and their tests, and exports what
//! passed; then prints a summary table and exits with a code a scheduler can alert on.
//!
//! A failed stage does not stop the rest: a source that failed leaves its table as it was, and
//! the models and the export run on what is in the lake. Every step commits atomically (a
//! Delta commit, a warehouse table swapped in one transaction), so a killed refresh leaves the
//! previous state and the next refresh picks up from there.

use std::time::{Duration, Instant};

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::run as models;
use super::{Context, Exit, exit, export, extract, maintain};
use crate::cli::RefreshArgs;
use crate::transform::run::Status;
use crate::transform::runs::{self, RunRecord};

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
    // SIGTERM (systemd, ECS, `lake schedule`) or Ctrl-C: free the lock and stop. Every step
    // that finished is committed and the one in flight is not, as after a crash; the next
    // refresh then starts at once instead of waiting for the lease to expire.
    let lease = super::hold_lake(ctx, &lake, "refresh", args.wait, args.lease_ttl)
        .await?
        .release_on_signal(|code| {
            tracing::warn!(exit_code = code, "refresh stopped by a signal");
            eprintln!(
                "error: the refresh was stopped by a signal; the steps it finished are committed, the one in flight is not"
            );
            std::process::exit(code);
        });
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

    let mut report = Report::default();

    // 1. Extract.
    if args.skip_extract {
        report.skipped("extract", "--skip-extract");
    } else if settings.sources.is_empty() {
        report.skipped("extract", "no [sources] in lake.toml");
    } else {
        let t = Instant::now();
        match extract::sql_sources(ctx, &[], false).await {
            Ok(results) => report.results("extract", "sources", t, &results, |name, x| Row {
                stage: "extract",
                item: format!("{name} -> {}", x.table),
                status: if x.version.is_some() {
                    "ok"
                } else {
                    "unchanged"
                }
                .into(),
                rows: x.rows.to_string(),
                duration: None,
                detail: String::new(),
            }),
            Err(e) => report.stage_failed("extract", t, format!("{e:#}")),
        }
    }

    // 2. Models and their tests.
    if lease.lost() {
        return lost_lease(ctx, &report, started);
    }
    let t = Instant::now();
    match models::models(ctx, &args.selection, args.threads, true, args.full_refresh).await {
        Ok(summary) => {
            for o in &summary.outcomes {
                if o.status == Status::TestsFailed {
                    report.tests_failed.push(o.model.to_string());
                }
                report.item(
                    "run",
                    o.model.to_string(),
                    o.status.name(),
                    match (o.merged, o.rows) {
                        (Some((i, u)), _) => format!("+{i} ~{u}"),
                        (None, Some(r)) => r.to_string(),
                        (None, None) => String::new(),
                    },
                    Some(o.duration),
                    o.error.clone().unwrap_or_default(),
                );
            }
            let failed = summary
                .outcomes
                .iter()
                .filter(|o| o.status == Status::Failed)
                .count();
            report.stage(
                "run",
                failed,
                t,
                format!("{} models, run {}", summary.outcomes.len(), summary.run_id),
            );
        }
        Err(e) => report.stage_failed("run", t, format!("{e:#}")),
    }

    // 3. Export: what passed (models whose error-level tests failed are held back).
    if lease.lost() {
        return lost_lease(ctx, &report, started);
    }
    if args.skip_export {
        report.skipped("export", "--skip-export");
    } else {
        let t = Instant::now();
        match export::export(ctx, &args.selection).await {
            Ok(done) => {
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
                        report.item(
                            "export",
                            name.clone(),
                            status,
                            String::new(),
                            None,
                            detail.into(),
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
                report.stage("export", done.failed.len(), t, detail);
            }
            Err(e) => report.stage_failed("export", t, format!("{e:#}")),
        }
    }

    // 4. Maintenance, when lake.toml asks for it after each refresh.
    if lease.lost() {
        return lost_lease(ctx, &report, started);
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
            Ok(results) => report.results("maintain", "tables", t, &results, |table, m| Row {
                stage: "maintain",
                item: table.to_string(),
                status: "ok".into(),
                rows: String::new(),
                duration: Some(m.duration),
                detail: maintain::describe(m, false),
            }),
            Err(e) => report.stage_failed("maintain", t, e),
        }
    }

    let lost = lease.lost();
    if let Err(e) = lease.release().await {
        tracing::warn!("failed to release the refresh lease (it expires by itself): {e}");
    }
    if lost {
        return lost_lease(ctx, &report, started);
    }
    summary(ctx, &report, started);
    let duration_ms = started.elapsed().as_millis() as u64;
    let (code, status) = if !report.failed.is_empty() {
        (exit::FAILED, "failed")
    } else if !report.tests_failed.is_empty() {
        (exit::TESTS_FAILED, "tests_failed")
    } else {
        (0, "ok")
    };
    let end = RunRecord {
        status: status.into(),
        duration_ms: Some(duration_ms),
        error: (!report.failed.is_empty()).then(|| format!("{} failed", report.failed.join(", "))),
        finished_at: Some(chrono::Utc::now()),
        ..record.clone()
    };
    if let Err(e) = runs::append(&lake, &[end]).await {
        tracing::warn!("failed to record the refresh in _lake.runs: {e}");
    }
    match code {
        0 => {
            tracing::info!(duration_ms, exit_code = 0, "refresh finished");
            Ok(())
        }
        exit::FAILED => {
            tracing::error!(duration_ms, exit_code = code, "refresh finished");
            Err(Exit {
                code,
                message: format!("failed to refresh: {} failed", report.failed.join(", ")),
            }
            .into())
        }
        _ => {
            tracing::warn!(duration_ms, exit_code = code, "refresh finished");
            Err(Exit {
                code,
                message: format!(
                    "refreshed, but error-level tests failed in {}; those models were not exported",
                    report.tests_failed.join(", ")
                ),
            }
            .into())
        }
    }
}

/// What the refresh did: the summary's lines, the stages that failed, the models whose
/// error-level tests failed.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    failed: Vec<&'static str>,
    tests_failed: Vec<String>,
}

impl Report {
    /// A source, model, export or table: a line of the summary and a log event.
    fn item(
        &mut self,
        stage: &'static str,
        item: String,
        status: &str,
        rows: String,
        duration: Option<Duration>,
        detail: String,
    ) {
        self.push(Row {
            stage,
            item,
            status: status.into(),
            rows,
            duration,
            detail,
        });
    }

    /// The items of a stage that ran each (sources, tables), `ok` making a done item's line,
    /// and then the stage's own line: failed if any item failed.
    fn results<K: std::fmt::Display, T>(
        &mut self,
        stage: &'static str,
        noun: &str,
        started: Instant,
        results: &[(K, std::result::Result<T, String>)],
        ok: impl Fn(&K, &T) -> Row,
    ) {
        for (key, r) in results {
            match r {
                Ok(done) => self.push(ok(key, done)),
                Err(e) => self.item(
                    stage,
                    key.to_string(),
                    "failed",
                    String::new(),
                    None,
                    e.clone(),
                ),
            }
        }
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        self.stage(
            stage,
            failed,
            started,
            format!("{} {noun}, {failed} failed", results.len()),
        );
    }

    /// A stage left out.
    fn skipped(&mut self, stage: &'static str, why: &str) {
        self.push(stage_row(stage, "skipped", None, why.into()));
    }

    /// A stage that ran, `failed` of its items failing (then the stage fails).
    fn stage(&mut self, stage: &'static str, failed: usize, started: Instant, detail: String) {
        let status = if failed > 0 {
            self.failed.push(stage);
            "failed"
        } else if stage == "run" && !self.tests_failed.is_empty() {
            "tests_failed"
        } else {
            "ok"
        };
        self.push(stage_row(stage, status, Some(started.elapsed()), detail));
    }

    /// A stage that could not run at all.
    fn stage_failed(&mut self, stage: &'static str, started: Instant, why: String) {
        self.failed.push(stage);
        self.push(stage_row(stage, "failed", Some(started.elapsed()), why));
    }

    /// Adds a line, and logs it: with `--log-format json` each is one JSON object.
    fn push(&mut self, row: Row) {
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
        self.rows.push(row);
    }
}

fn stage_row(stage: &'static str, status: &str, duration: Option<Duration>, detail: String) -> Row {
    Row {
        stage,
        item: "(stage)".into(),
        status: status.into(),
        rows: String::new(),
        duration,
        detail,
    }
}

fn lost_lease(ctx: &Context, report: &Report, started: Instant) -> Result<()> {
    summary(ctx, report, started);
    Err(Exit {
        code: exit::FAILED,
        message: "failed to refresh: the lease on the lake expired and another process took it; stopped before the next stage".into(),
    }
    .into())
}

/// The summary table on stderr, unless quiet or the logs are JSON (which carry the same).
fn summary(ctx: &Context, report: &Report, started: Instant) {
    if ctx.quiet() {
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["stage", "item", "status", "rows", "duration", "detail"]);
    for r in &report.rows {
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
