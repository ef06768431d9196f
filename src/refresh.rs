//! `lake refresh`: the scheduled job, as a library call. Under a lease on the lake (one refresh
//! at a time, from any machine), it extracts the SQL sources, runs the models and their tests,
//! exports what passed and, when `[maintain] after_refresh` says so, maintains the tables.
//!
//! A failed stage does not stop the rest: a source that failed leaves its table as it was, and
//! the models and the export run on what is in the lake. Every step commits atomically (a
//! Delta commit, a warehouse table swapped in one transaction), so a killed refresh leaves the
//! previous state and the next refresh picks up from there. The refresh is one run in
//! `_lake.runs`: a start row, a row per model under the same id, and an end row, written
//! also when the lease was lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{App, ModelRun, Observer, Stage};
use crate::export::ExportOutcome;
use crate::lake::TableName;
use crate::lake::lease::HeldLease;
use crate::transform::run::Status;
use crate::transform::runs::{self, RunRecord, RunStatus};

/// What to refresh.
#[derive(Debug, Clone, Default)]
pub struct RefreshOptions {
    /// The models to run and export; all when empty.
    pub select: Vec<String>,
    /// Models to leave out.
    pub exclude: Vec<String>,
    /// Models built at once; the machine's cores by default.
    pub threads: Option<usize>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Leave out the extract.
    pub skip_extract: bool,
    /// Leave out the export.
    pub skip_export: bool,
}

/// How a line of the report ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// Done.
    Ok,
    /// Nothing new; nothing written.
    Unchanged,
    /// A model built with a failed warn-level test.
    Warn,
    /// Failed; what it would have written is not.
    Failed,
    /// A model built, but an error-level test failed; or the run stage with such a model.
    TestsFailed,
    /// Not exported: its error-level tests failed.
    HeldBack,
    /// Not run.
    Skipped,
}

impl StepStatus {
    /// Its name in the summary and logs.
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Unchanged => "unchanged",
            StepStatus::Warn => "warn",
            StepStatus::Failed => "failed",
            StepStatus::TestsFailed => "tests_failed",
            StepStatus::HeldBack => "held_back",
            StepStatus::Skipped => "skipped",
        }
    }
}

impl From<Status> for StepStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Ok => StepStatus::Ok,
            Status::Warn => StepStatus::Warn,
            Status::Unchanged => StepStatus::Unchanged,
            Status::Failed => StepStatus::Failed,
            Status::TestsFailed => StepStatus::TestsFailed,
            Status::Skipped => StepStatus::Skipped,
        }
    }
}

/// One line of the report: an item of a stage (a source, a model, a table), or the stage.
#[derive(Debug, Clone)]
pub struct Step {
    /// The stage.
    pub stage: Stage,
    /// The item; none for the stage's own line.
    pub item: Option<String>,
    /// How it ended.
    pub status: StepStatus,
    /// Rows, as shown: `120`, or `+3 ~1` for a merge.
    pub rows: String,
    /// Time taken, where measured.
    pub duration: Option<Duration>,
    /// Why, or what.
    pub detail: String,
}

/// How a refresh ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every stage ran and passed.
    Ok,
    /// Error-level tests failed (those models were held back); the other stages ran.
    TestsFailed,
    /// A stage failed.
    Failed,
    /// The lease expired and another process took the lake; the refresh stopped before the
    /// next stage.
    LeaseLost,
}

/// What a refresh did.
#[derive(Debug)]
pub struct RefreshReport {
    /// Its id in `_lake.runs`, shared by its models.
    pub run_id: String,
    /// The lines, in order.
    pub steps: Vec<Step>,
    /// The stages that failed.
    pub failed: Vec<Stage>,
    /// The models whose error-level tests failed.
    pub tests_failed: Vec<TableName>,
    /// Whether the lease was lost.
    pub lease_lost: bool,
    /// Wall time.
    pub duration: Duration,
}

impl RefreshReport {
    /// How it ended.
    pub fn outcome(&self) -> Outcome {
        if self.lease_lost {
            Outcome::LeaseLost
        } else if !self.failed.is_empty() {
            Outcome::Failed
        } else if !self.tests_failed.is_empty() {
            Outcome::TestsFailed
        } else {
            Outcome::Ok
        }
    }

    /// The lines of one stage.
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.stage == stage)
    }

    fn item(
        &mut self,
        stage: Stage,
        item: String,
        status: StepStatus,
        rows: String,
        duration: Option<Duration>,
        detail: String,
    ) {
        self.push(Step {
            stage,
            item: Some(item),
            status,
            rows,
            duration,
            detail,
        });
    }

    /// The items of a stage that ran each on its own (sources, tables), `ok` making a done
    /// item's line, and the stage's line: failed if any item failed, or if none could start.
    fn results<K: std::fmt::Display, T, E: std::fmt::Display>(
        &mut self,
        stage: Stage,
        noun: &str,
        started: Instant,
        results: crate::app::Result<Vec<(K, Result<T, E>)>>,
        ok: impl Fn(&K, &T) -> Step,
    ) {
        let results = match results {
            Ok(r) => r,
            Err(e) => return self.stage_failed(stage, started, e.to_string()),
        };
        for (key, result) in &results {
            match result {
                Ok(done) => self.push(ok(key, done)),
                Err(e) => self.item(
                    stage,
                    key.to_string(),
                    StepStatus::Failed,
                    String::new(),
                    None,
                    e.to_string(),
                ),
            }
        }
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        let detail = format!("{} {noun}, {failed} failed", results.len());
        self.end_stage(stage, failed, started, detail);
    }

    /// A stage's own line; the stage fails when any of its items failed.
    fn end_stage(&mut self, stage: Stage, failed: usize, started: Instant, detail: String) {
        let status = if failed > 0 {
            self.failed.push(stage);
            StepStatus::Failed
        } else if stage == Stage::Run && !self.tests_failed.is_empty() {
            StepStatus::TestsFailed
        } else {
            StepStatus::Ok
        };
        self.push(stage_step(stage, status, Some(started.elapsed()), detail));
    }

    /// A stage that could not run at all.
    fn stage_failed(&mut self, stage: Stage, started: Instant, why: String) {
        self.failed.push(stage);
        self.push(stage_step(
            stage,
            StepStatus::Failed,
            Some(started.elapsed()),
            why,
        ));
    }

    fn skipped(&mut self, stage: Stage, why: &str) {
        self.push(stage_step(stage, StepStatus::Skipped, None, why.into()));
    }

    /// Adds a line, and logs it: with `--log-format json` each is one JSON object.
    fn push(&mut self, step: Step) {
        macro_rules! log_step {
            ($level:ident) => {
                tracing::$level!(
                    stage = step.stage.name(),
                    item = step.item.as_deref().unwrap_or("(stage)"),
                    status = step.status.name(),
                    rows = %step.rows,
                    duration_ms = step.duration.map(|d| d.as_millis() as u64),
                    detail = %step.detail,
                    "refresh step"
                )
            };
        }
        if step.status == StepStatus::Failed {
            log_step!(error);
        } else {
            log_step!(info);
        }
        self.steps.push(step);
    }
}

fn stage_step(
    stage: Stage,
    status: StepStatus,
    duration: Option<Duration>,
    detail: String,
) -> Step {
    Step {
        stage,
        item: None,
        status,
        rows: String::new(),
        duration,
        detail,
    }
}

/// Runs a refresh under `lease` (taken by the caller, which decides how to wait for it and
/// what a signal does). It never fails as a whole: each stage's failure is in the report.
pub async fn refresh(
    app: &App,
    lease: &HeldLease,
    options: &RefreshOptions,
    observer: &Arc<dyn Observer>,
) -> RefreshReport {
    let started = Instant::now();
    let start = RunRecord {
        run_id: runs::new_id(),
        command: "refresh".into(),
        status: RunStatus::Started,
        started_at: chrono::Utc::now(),
        ..Default::default()
    };
    // The start row now, the end row at the end: `lake runs` lists the refresh, and shows it
    // interrupted if it never ends.
    if let Err(e) = runs::append(app.lake(), std::slice::from_ref(&start)).await {
        tracing::warn!("failed to record the refresh in _lake.runs: {e}");
    }
    let mut report = RefreshReport {
        run_id: start.run_id.clone(),
        steps: Vec::new(),
        failed: Vec::new(),
        tests_failed: Vec::new(),
        lease_lost: false,
        duration: Duration::ZERO,
    };
    for stage in [Stage::Extract, Stage::Run, Stage::Export, Stage::Maintain] {
        if lease.lost() {
            report.lease_lost = true;
            break;
        }
        let skipped = match stage {
            Stage::Extract if options.skip_extract => Some("--skip-extract"),
            Stage::Extract if app.settings().sources.is_empty() => {
                Some("no [sources] in lake.toml")
            }
            Stage::Export if options.skip_export => Some("--skip-export"),
            _ => None,
        };
        if let Some(why) = skipped {
            report.skipped(stage, why);
            continue;
        }
        match stage {
            Stage::Extract => extract(app, observer, &mut report).await,
            Stage::Run => run(app, options, observer, &mut report).await,
            Stage::Export => export(app, options, observer, &mut report).await,
            Stage::Maintain => maintain(app, observer, &mut report).await,
        }
    }
    report.lease_lost |= lease.lost();
    report.duration = started.elapsed();
    let status = match report.outcome() {
        Outcome::Ok => Status::Ok,
        Outcome::TestsFailed => Status::TestsFailed,
        Outcome::Failed | Outcome::LeaseLost => Status::Failed,
    };
    let error = if report.lease_lost {
        Some("the lease on the lake expired and another process took it".to_string())
    } else {
        let failed: Vec<&str> = report.failed.iter().map(|s| s.name()).collect();
        (!failed.is_empty()).then(|| format!("{} failed", failed.join(", ")))
    };
    let end = RunRecord {
        status: RunStatus::Ended(status),
        duration_ms: Some(report.duration.as_millis() as u64),
        error,
        finished_at: Some(chrono::Utc::now()),
        ..start
    };
    if let Err(e) = runs::append(app.lake(), &[end]).await {
        tracing::warn!("failed to record the refresh in _lake.runs: {e}");
    }
    report
}

async fn extract(app: &App, observer: &Arc<dyn Observer>, report: &mut RefreshReport) {
    let t = Instant::now();
    let results = app.extract_sources(&[], false, observer).await;
    report.results(Stage::Extract, "sources", t, results, |name, x| Step {
        stage: Stage::Extract,
        item: Some(format!("{name} -> {}", x.table)),
        status: if x.version.is_some() {
            StepStatus::Ok
        } else {
            StepStatus::Unchanged
        },
        rows: x.rows.to_string(),
        duration: None,
        detail: String::new(),
    });
}

async fn run(
    app: &App,
    options: &RefreshOptions,
    observer: &Arc<dyn Observer>,
    report: &mut RefreshReport,
) {
    let t = Instant::now();
    let run = ModelRun {
        select: options.select.clone(),
        exclude: options.exclude.clone(),
        threads: options.threads,
        build: true,
        full_refresh: options.full_refresh,
        run_id: Some(report.run_id.clone()),
    };
    match app.run_models(&run, observer).await {
        Ok(summary) => {
            for o in &summary.outcomes {
                if o.status == Status::TestsFailed {
                    report.tests_failed.push(o.model.clone());
                }
                report.item(
                    Stage::Run,
                    o.model.to_string(),
                    o.status.into(),
                    match (o.merged, o.rows, o.groups) {
                        (Some((i, u)), _, _) => format!("+{i} ~{u}"),
                        (None, Some(r), Some(g)) if o.status != Status::Unchanged => {
                            format!("{r} ({g} group{})", if g == 1 { "" } else { "s" })
                        }
                        (None, Some(r), _) => r.to_string(),
                        (None, None, _) => String::new(),
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
            let detail = format!("{} models, run {}", summary.outcomes.len(), summary.run_id);
            report.end_stage(Stage::Run, failed, t, detail);
        }
        Err(e) => report.stage_failed(Stage::Run, t, e.to_string()),
    }
}

async fn export(
    app: &App,
    options: &RefreshOptions,
    observer: &Arc<dyn Observer>,
    report: &mut RefreshReport,
) {
    let t = Instant::now();
    match app
        .export(&options.select, &options.exclude, observer)
        .await
    {
        Ok(done) => {
            for (table, outcome) in &done.tables {
                let (status, detail) = match outcome {
                    ExportOutcome::Done(e) if e.unchanged => (StepStatus::Unchanged, String::new()),
                    ExportOutcome::Done(_) => (StepStatus::Ok, String::new()),
                    ExportOutcome::HeldBack { .. } => (
                        StepStatus::HeldBack,
                        "its error-level tests failed".to_string(),
                    ),
                    ExportOutcome::Failed(e @ crate::export::ExportError::NotBuilt(_)) => {
                        (StepStatus::Failed, e.to_string())
                    }
                    ExportOutcome::Failed(_) => (
                        StepStatus::Failed,
                        "the warehouse keeps its previous version".to_string(),
                    ),
                };
                // Rows sent: all of them, or the upserted (+) and deleted (-) ones.
                let rows = match outcome {
                    ExportOutcome::Done(e) if !e.unchanged => match (e.upsert, e.deleted) {
                        (true, Some(d)) => format!("+{} -{d}", e.rows.unwrap_or(0)),
                        (true, None) => format!("+{}", e.rows.unwrap_or(0)),
                        (false, _) => e.rows.unwrap_or(0).to_string(),
                    },
                    _ => String::new(),
                };
                report.item(Stage::Export, table.to_string(), status, rows, None, detail);
            }
            let detail = format!(
                "{} loaded, {} unchanged, {} held back (tests failed), {} failed",
                done.loaded().len(),
                done.unchanged().len(),
                done.held_back().len(),
                done.failed().len()
            );
            report.end_stage(Stage::Export, done.failed().len(), t, detail);
        }
        Err(e) => report.stage_failed(Stage::Export, t, e.to_string()),
    }
}

async fn maintain(app: &App, observer: &Arc<dyn Observer>, report: &mut RefreshReport) {
    if app.settings().maintain.after_refresh != Some(true) {
        return;
    }
    let t = Instant::now();
    let maintained = app.maintain(&[], &app.maintain_options(), observer).await;
    report.results(Stage::Maintain, "tables", t, maintained, |table, m| Step {
        stage: Stage::Maintain,
        item: Some(table.to_string()),
        status: StepStatus::Ok,
        rows: String::new(),
        duration: Some(m.duration),
        detail: m.summary(false),
    });
}
