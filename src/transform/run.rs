//! `lake run` and `lake test`: build the selected models in dependency order, independent ones
//! at once up to `--threads`, and run their tests.
//!
//! - **table**: the SELECT's result replaces the table in one Delta commit (schema included).
//! - **incremental**: the rows of the incremental inputs committed since the last run are
//!   merged on the unique key; the first run, `--full-refresh`, or a change of the SQL rebuilds.
//! - **view**: its SQL is stored in the lake for downstream models and ad-hoc queries.
//!
//! A model that fails, or whose error-level test fails, stops the models downstream of it,
//! which are reported as skipped; the rest of the DAG runs on. A failed write commits nothing,
//! so the previous version stays in place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::Utc;
use datafusion::common::{Column, JoinType, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::lit;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::DataFrame;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use sha2::Digest;
use tokio::sync::Mutex;

use super::checks::Check;
use super::groups::{self, Decision};
use super::inputs::{
    Inputs, MODEL_STATE_KEY, ModelCursor, Read, ReadKind, cursor, model_sql_error,
};
use super::merge;
use super::runs::{self, RunRecord, RunStatus};
use super::scope::{self, Strategy};
use super::{CheckKind, Materialized, Model, Project, Severity, TransformError, select};
use crate::lake::layout::Layout;
use crate::lake::write::{BatchSource, SourceError, WriteMode, write, write_laid_out};
use crate::lake::{Lake, LakeError, TableName, quote_ident};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Selectors; all models when empty.
    pub select: Vec<String>,
    /// Selectors to leave out.
    pub exclude: Vec<String>,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Models built at once.
    pub threads: usize,
    /// False for `lake test`: only the tests run.
    pub build: bool,
    /// `run`, `test` or `refresh`, for `_lake.runs`.
    pub command: String,
    /// The run the models belong to, when it is part of a larger one (a refresh, which
    /// records its own start and end); otherwise a new id, with start and end rows.
    pub run_id: Option<String>,
}

/// How a model ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Built, tests passed.
    Ok,
    /// Built; a warn-level test failed.
    Warn,
    /// Nothing new to read; nothing written.
    Unchanged,
    /// The build failed; the table is as it was.
    Failed,
    /// Built, but an error-level test failed: downstream models do not run and the table is
    /// not exported.
    TestsFailed,
    /// Not run because a model it waits for failed.
    Skipped,
}

impl Status {
    /// The name in output and in `_lake.runs`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Unchanged => "unchanged",
            Status::Failed => "failed",
            Status::TestsFailed => "tests_failed",
            Status::Skipped => "skipped",
        }
    }

    /// Whether models downstream may run.
    pub fn passed(self) -> bool {
        matches!(self, Status::Ok | Status::Warn | Status::Unchanged)
    }
}

/// How one test ended.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// The test.
    pub name: String,
    /// Its severity.
    pub severity: Severity,
    /// Failing rows.
    pub failing: u64,
    /// A few of them.
    pub sample: Vec<RecordBatch>,
    /// Where they all are.
    pub audit: Option<TableName>,
    /// The test's query failed.
    pub error: Option<String>,
    /// The hash of its query and its model's SQL, which `_lake.runs` keeps for a test that
    /// passed.
    pub hash: String,
    /// Whether it checked only the rows added since it last passed.
    pub new_rows_only: bool,
}

impl TestOutcome {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.failing == 0
    }
}

/// How one model ended.
#[derive(Debug, Clone)]
pub struct ModelOutcome {
    /// The model.
    pub model: TableName,
    /// Its materialization.
    pub materialized: Materialized,
    /// The result.
    pub status: Status,
    /// Rows written: the whole table, or inserted plus updated for a merge.
    pub rows: Option<u64>,
    /// For a merge: rows inserted and updated.
    pub merged: Option<(u64, u64)>,
    /// The version committed.
    pub version: Option<u64>,
    /// What it read.
    pub reads: Vec<Read>,
    /// A note, such as why an incremental model was rebuilt.
    pub note: Option<String>,
    /// A table model's strategy (`groups by day`, `full: …`).
    pub strategy: Option<String>,
    /// For a group-scoped run: the groups recomputed.
    pub groups: Option<u64>,
    /// Rows the build read from its inputs' files.
    pub rows_read: Option<u64>,
    /// How long the build and tests took.
    pub duration: Duration,
    /// Why it failed, or which upstream model stopped it.
    pub error: Option<String>,
    /// Its tests.
    pub tests: Vec<TestOutcome>,
}

impl ModelOutcome {
    fn new(model: &Model) -> Self {
        Self {
            model: model.name.clone(),
            materialized: model.config.materialized,
            status: Status::Ok,
            rows: None,
            merged: None,
            version: None,
            reads: Vec::new(),
            note: None,
            strategy: None,
            groups: None,
            rows_read: None,
            duration: Duration::ZERO,
            error: None,
            tests: Vec::new(),
        }
    }
}

/// A whole run.
#[derive(Debug)]
pub struct RunSummary {
    /// Its id in `_lake.runs`.
    pub run_id: String,
    /// Each model, in the order they finished.
    pub outcomes: Vec<ModelOutcome>,
    /// Wall time.
    pub duration: Duration,
}

impl RunSummary {
    /// Whether every model built and no error-level test failed.
    pub fn ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.status.passed())
    }
}

/// What a run reports as it goes.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A model started.
    Started(&'a TableName),
    /// A model finished (or was skipped).
    Finished(&'a ModelOutcome),
}

/// Runs the selected models of `project`. `on_event` sees each model start and finish.
pub async fn run(
    lake: Arc<Lake>,
    project: Arc<Project>,
    options: RunOptions,
    on_event: impl Fn(RunEvent) + Send + Sync,
) -> Result<RunSummary, TransformError> {
    let started = Instant::now();
    let selected = select::resolve(&project, &options.select, &options.exclude)?;
    let own_run = options.run_id.is_none();
    let run_id = options.run_id.clone().unwrap_or_else(runs::new_id);
    let recorder = Arc::new(Recorder {
        lake: lake.clone(),
        run_id: run_id.clone(),
        command: options.command.clone(),
        lock: Mutex::new(()),
    });
    if own_run {
        recorder.record(None, RunStatus::Started, None).await;
    }
    let existing: Arc<BTreeSet<TableName>> =
        Arc::new(lake.list_tables().await?.into_iter().collect());
    let tested = Arc::new(runs::last_tested(&lake).await);

    let mut pending: Vec<TableName> = project
        .models
        .iter()
        .filter(|m| selected.contains(&m.name))
        .map(|m| m.name.clone())
        .collect();
    let mut finished: HashMap<TableName, Status> = HashMap::new();
    let mut outcomes = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    let threads = options.threads.max(1);
    loop {
        let mut i = 0;
        while i < pending.len() {
            let model = project.model(&pending[i]).expect("selected models exist");
            let upstream: Vec<TableName> = project
                .upstream(model)
                .into_iter()
                .filter(|u| selected.contains(u))
                .collect();
            // Building stops at a failure; testing alone runs every test.
            let stopped_by = upstream
                .iter()
                .filter(|_| options.build)
                .find(|u| finished.get(*u).is_some_and(|s| !s.passed()));
            if let Some(up) = stopped_by {
                let mut outcome = ModelOutcome::new(model);
                outcome.status = Status::Skipped;
                outcome.error = Some(format!("{up} did not pass"));
                finished.insert(model.name.clone(), Status::Skipped);
                recorder.model(&outcome).await;
                on_event(RunEvent::Finished(&outcome));
                outcomes.push(outcome);
                pending.remove(i);
                continue;
            }
            if running.len() < threads && upstream.iter().all(|u| finished.contains_key(u)) {
                let name = pending.remove(i);
                on_event(RunEvent::Started(&name));
                let (lake, project, existing) = (lake.clone(), project.clone(), existing.clone());
                let tested = tested.clone();
                let options = options.clone();
                let run_id = run_id.clone();
                running.spawn(async move {
                    let model = project.model(&name).expect("selected models exist");
                    let last = tested.get(&name.to_string());
                    model_run(&lake, &project, model, &options, &run_id, &existing, last).await
                });
                continue;
            }
            i += 1;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let outcome = joined.expect("a model task does not panic");
        finished.insert(outcome.model.clone(), outcome.status);
        recorder.model(&outcome).await;
        on_event(RunEvent::Finished(&outcome));
        outcomes.push(outcome);
    }
    let summary = RunSummary {
        run_id,
        outcomes,
        duration: started.elapsed(),
    };
    if own_run {
        let status = if summary.ok() {
            Status::Ok
        } else {
            Status::Failed
        };
        recorder
            .record(None, RunStatus::Ended(status), Some(summary.duration))
            .await;
    }
    Ok(summary)
}

/// Writes `_lake.runs`, one commit at a time. A failure to record is logged, never fatal: the
/// models' own commits are what matter.
struct Recorder {
    lake: Arc<Lake>,
    run_id: String,
    command: String,
    lock: Mutex<()>,
}

impl Recorder {
    async fn record(
        &self,
        model: Option<&ModelOutcome>,
        status: RunStatus,
        took: Option<Duration>,
    ) {
        let now = Utc::now();
        let record = RunRecord {
            run_id: self.run_id.clone(),
            command: self.command.clone(),
            model: model.map(|m| m.model.to_string()),
            status,
            rows: model.and_then(|m| m.rows),
            version: model.and_then(|m| m.version),
            duration_ms: took.map(|d| d.as_millis() as u64),
            inputs: model.filter(|m| !m.reads.is_empty()).map(|m| {
                let v: BTreeMap<String, serde_json::Value> = m
                    .reads
                    .iter()
                    .map(|r| (r.table.to_string(), json!(r.version)))
                    .collect();
                serde_json::to_string(&v).unwrap_or_default()
            }),
            error: model.and_then(|m| m.error.clone()),
            started_at: took.map_or(now, |d| {
                now - chrono::Duration::from_std(d).unwrap_or_default()
            }),
            finished_at: took.map(|_| now),
            tests: model.filter(|m| !m.tests.is_empty()).map(|m| {
                let passed: BTreeMap<&str, &str> = m
                    .tests
                    .iter()
                    .filter(|t| t.passed())
                    .map(|t| (t.name.as_str(), t.hash.as_str()))
                    .collect();
                serde_json::to_string(&passed).unwrap_or_default()
            }),
        };
        let _guard = self.lock.lock().await;
        if let Err(e) = runs::append(&self.lake, &[record]).await {
            tracing::warn!("failed to record the run in _lake.runs: {e}");
        }
    }

    async fn model(&self, outcome: &ModelOutcome) {
        let status = RunStatus::Ended(outcome.status);
        self.record(Some(outcome), status, Some(outcome.duration))
            .await;
    }
}

/// Builds one model (unless only testing) and runs its tests.
async fn model_run(
    lake: &Lake,
    project: &Project,
    model: &Model,
    options: &RunOptions,
    run_id: &str,
    existing: &BTreeSet<TableName>,
    last: Option<&runs::LastTested>,
) -> ModelOutcome {
    let started = Instant::now();
    let mut outcome = ModelOutcome::new(model);
    if options.build {
        if let Err(e) = build(lake, project, model, options, run_id, &mut outcome).await {
            outcome.status = Status::Failed;
            outcome.error = Some(e.to_string());
            outcome.duration = started.elapsed();
            return outcome;
        }
    } else if model.config.materialized != Materialized::View && !existing.contains(&model.name) {
        outcome.status = Status::Failed;
        outcome.error = Some(format!("{} is not built yet: run `lake run`", model.name));
        return outcome;
    }
    // What the model's tables gained since its tests last passed: read once, for every test
    // that checks just that.
    let added = tokio::sync::OnceCell::new();
    for check in &model.checks {
        let since = last.map(|l| (l, &added));
        let result = test(lake, project, model, check, existing, since).await;
        let failed = !result.passed();
        if failed && check.severity == Severity::Error {
            outcome.status = Status::TestsFailed;
        } else if failed && outcome.status == Status::Ok {
            outcome.status = Status::Warn;
        }
        outcome.tests.push(result);
    }
    outcome.duration = started.elapsed();
    outcome
}

/// The hash of what shapes an incremental model's rows; a change means a rebuild.
fn shape_hash(model: &Model) -> String {
    let mut h = sha2::Sha256::new();
    h.update(model.sql.trim().as_bytes());
    h.update(b"\0");
    h.update(model.config.unique_key.join(",").as_bytes());
    if !model.config.sort_by.is_empty() {
        h.update(b"\0sort_by\0");
        h.update(model.config.sort_by.join(",").as_bytes());
        if let Some(span) = model.config.files_by {
            h.update(b"\0files_by\0");
            h.update(span.name().as_bytes());
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// A model's inputs opened for a run, and where an incremental model's last run left off.
pub struct Prepared {
    /// The session with the inputs.
    pub inputs: Inputs,
    /// The cursor of the last run, when this run merges onto it.
    pub previous: Option<ModelCursor>,
    /// The incremental inputs and the version each was read up to last time.
    pub since: BTreeMap<TableName, u64>,
    /// Why an incremental model is rebuilt, if it is.
    pub note: Option<String>,
    /// The hash of the model's shape, for the new cursor.
    pub hash: String,
}

/// Opens a model's inputs as a run would read them, without running anything.
pub async fn prepare(
    lake: &Lake,
    project: &Project,
    model: &Model,
    full_refresh: bool,
) -> Result<Prepared, TransformError> {
    let reads: Vec<TableName> = model.reads.iter().map(|r| r.table.clone()).collect();
    let mut inputs = Inputs::new(lake)?;
    let hash = shape_hash(model);
    let mut previous: Option<ModelCursor> = None;
    let mut note = None;
    if model.config.materialized == Materialized::Incremental {
        let target = lake.table_or_new(&model.name).await?;
        if target.version().is_some() {
            match cursor(&target).await {
                _ if full_refresh => note = Some("full refresh".into()),
                Some(c) if c.sql == hash => previous = Some(c),
                Some(_) => note = Some("the SQL changed: rebuilt".into()),
                None => note = Some("the last commit was not a model run: rebuilt".into()),
            }
        } else {
            note = Some("first run".into());
        }
    }
    let since: BTreeMap<TableName, u64> = match &previous {
        Some(c) => model
            .incremental_inputs()
            .into_iter()
            .filter_map(|t| Some((t.clone(), *c.inputs.get(&t.to_string())?)))
            .collect(),
        None => BTreeMap::new(),
    };
    inputs.add(lake, project, &reads, &since).await?;
    Ok(Prepared {
        inputs,
        previous,
        since,
        note,
        hash,
    })
}

async fn build(
    lake: &Lake,
    project: &Project,
    model: &Model,
    options: &RunOptions,
    run_id: &str,
    outcome: &mut ModelOutcome,
) -> Result<(), TransformError> {
    let Prepared {
        inputs,
        previous,
        since,
        note,
        hash,
    } = prepare(lake, project, model, options.full_refresh).await?;
    outcome.note = note.filter(|n| n != "first run");
    outcome.reads = inputs.reads.clone();
    let df = inputs
        .ctx
        .sql(&model.sql)
        .await
        .map_err(|e| model_sql_error(model, e))?;
    check_columns(model, &df)?;

    if model.config.materialized == Materialized::View {
        lake.put_view(&model.name, &model.sql).await?;
        return Ok(());
    }
    if previous.is_some()
        && inputs
            .reads
            .iter()
            .filter(|r| since.contains_key(&r.table))
            .all(|r| matches!(r.kind, ReadKind::New { files: 0, .. }))
    {
        outcome.status = Status::Unchanged;
        outcome.rows = Some(0);
        return Ok(());
    }
    let mode = match previous {
        Some(_) => WriteMode::Merge(model.config.unique_key.clone()),
        None => WriteMode::Rebuild(model.config.partition_by.clone()),
    };
    let new_cursor = ModelCursor {
        sql: hash,
        inputs: inputs.versions(),
    };
    // A table built from the same SQL over the same input versions would come out the same.
    if model.config.materialized == Materialized::Table
        && !options.full_refresh
        && let Ok(table) = lake.table(&model.name, None, None).await
        && cursor(&table).await.as_ref() == Some(&new_cursor)
    {
        outcome.status = Status::Unchanged;
        outcome.rows = Some(0);
        outcome.note = Some("its SQL and inputs are as they were".into());
        return Ok(());
    }
    let metadata = vec![
        ("lake.command".to_string(), json!(options.command)),
        ("lake.run_id".to_string(), json!(run_id)),
        (
            MODEL_STATE_KEY.to_string(),
            serde_json::to_value(&new_cursor).expect("a cursor serializes"),
        ),
    ];
    // A table model grouped by keys traced to its inputs recomputes only the groups its
    // inputs' new rows touch, and writes them with its other rows in one commit.
    let mut df = df;
    // Rows a merging model's aggregate read on a full build, before its own rows.
    let mut state_read = 0;
    if model.config.materialized == Materialized::Table {
        let strategy = scope::strategy(df.logical_plan(), &model.config);
        let mergeable = match &strategy {
            Strategy::Groups(scope) => Some(merge::mergeable(df.logical_plan(), scope)),
            Strategy::Shrinks(_) | Strategy::Full(_) => None,
        };
        outcome.strategy = Some(merge::describe(&strategy, df.logical_plan()));
        let mergeable = mergeable.and_then(Result::ok);
        // The table as the last run of this SQL left it, for a model kept by its groups or by
        // shrinking; without one, the model is built in full.
        let last_run = match (&strategy, options.full_refresh) {
            (Strategy::Full(_), _) | (_, true) => None,
            _ => match lake.table(&model.name, None, None).await {
                Ok(table) => cursor(&table).await.map(|last| (table, last)),
                Err(_) => None,
            },
        };
        let last_run = match last_run {
            Some((_, last)) if last.sql != new_cursor.sql => {
                outcome.note = Some("the SQL changed: rebuilt".into());
                None
            }
            other => other,
        };
        match (&strategy, &last_run) {
            // Rows that only go when the tables a NOT EXISTS reads gain rows: the stored rows
            // the model over those new rows alone still yields.
            (Strategy::Shrinks(shrinks), Some((table, last))) => {
                match shrink(lake, project, model, &inputs, shrinks, last, table).await? {
                    Shrunk::Full(why) => outcome.note = Some(format!("rebuilt: {why}")),
                    Shrunk::Unchanged => {
                        outcome.status = Status::Unchanged;
                        outcome.rows = Some(0);
                        outcome.note = Some("its inputs' rows are as they were".into());
                        return Ok(());
                    }
                    Shrunk::Rows(rows) => {
                        let source = ModelSource::new(rows, false);
                        let mode = WriteMode::Rebuild(model.config.partition_by.clone());
                        let written =
                            write_model(lake, model, source.clone(), &mode, &metadata).await?;
                        outcome.version = Some(written.version);
                        outcome.rows = Some(written.rows_read);
                        outcome.rows_read = Some(source.rows_scanned());
                        let against: Vec<String> =
                            shrinks.against.iter().map(|t| t.to_string()).collect();
                        outcome.note = Some(format!(
                            "kept the rows that the new rows of {} do not match",
                            against.join(", ")
                        ));
                        return Ok(());
                    }
                }
            }
            (Strategy::Groups(scope), Some((table, last))) => {
                let decision = groups::decide(lake, &inputs, scope, last).await?;
                let stale = match (&decision, &mergeable) {
                    (Decision::Recompute(_), Some(m)) => {
                        !state_matches(lake, &model.name, last, m).await
                    }
                    _ => false,
                };
                match decision {
                    Decision::Unchanged => {
                        outcome.status = Status::Unchanged;
                        outcome.rows = Some(0);
                        outcome.groups = Some(0);
                        outcome.note = Some("its inputs' rows are as they were".into());
                        return Ok(());
                    }
                    Decision::Full(why) => outcome.note = Some(format!("rebuilt: {why}")),
                    Decision::Recompute(_) if stale => {
                        outcome.note = Some("rebuilt: its stored aggregates are missing".into());
                    }
                    Decision::Recompute(groups) => {
                        let scoped = Scoped {
                            lake,
                            project,
                            model,
                            inputs: &inputs,
                            scope,
                            mergeable: mergeable.as_ref(),
                            table,
                            metadata: &metadata,
                        };
                        return scoped.run(groups, outcome).await;
                    }
                }
            }
            _ => {}
        }
        // Built in full: a model that merges keeps its aggregate's rows first, and computes
        // its own from them.
        if let Some(m) = &mergeable {
            let sql_err = |e| model_sql_error(model, e);
            let state = m
                .state_of(&inputs.ctx.state(), df.logical_plan())
                .map_err(sql_err)?;
            state_read = write_state(lake, model, state, &metadata).await?;
            let stored = stored_state(lake, &inputs, model, m, None).await?;
            let plan = m
                .over(df.logical_plan(), stored.into_unoptimized_plan())
                .map_err(sql_err)?;
            df = DataFrame::new(inputs.ctx.state(), plan);
        }
    }
    // An incremental model holds one row per key, whether built whole or merged: where the
    // SELECT yields several, one is kept (choose which in the SELECT when it matters).
    let incremental = model.config.materialized == Materialized::Incremental;
    let df = if incremental {
        let (df, repeated) = one_row_per_key(&inputs, df, &model.config.unique_key)
            .await
            .map_err(|e| model_sql_error(model, e))?;
        if repeated > 0 {
            let note = match repeated {
                1 => "1 key had several rows; one was kept".to_string(),
                n => format!("{n} keys had several rows; one of each was kept"),
            };
            outcome.note = Some(match outcome.note.take() {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
        }
        df
    } else {
        df
    };
    // New keys only (facts that never change, the usual increment) are appended, which reads
    // nothing of the table; a merge joins every row of it. Keys the table has get the merge.
    let mode = match mode {
        WriteMode::Merge(keys) => match all_new(lake, &inputs, &df, &model.name, &keys)
            .await
            .map_err(|e| model_sql_error(model, e))?
        {
            Some(version) => WriteMode::AppendChecked {
                version: Some(version),
                otherwise: Box::new(WriteMode::Merge(keys)),
            },
            None => WriteMode::Merge(keys),
        },
        other => other,
    };
    let source = ModelSource::new(df, incremental);
    let written = write_model(lake, model, source.clone(), &mode, &metadata).await?;
    outcome.rows_read = Some(state_read + source.rows_scanned());
    outcome.version = Some(written.version);
    // An append of new keys is an insert of them all.
    outcome.merged = written
        .merged
        .or(matches!(mode, WriteMode::AppendChecked { .. }).then_some((written.rows_read, 0)));
    outcome.rows = Some(match outcome.merged {
        Some((inserted, updated)) => inserted + updated,
        None => written.rows_read,
    });
    if model.config.materialized == Materialized::Table {
        // A model that was a view before leaves no stale definition behind.
        lake.drop_view(&model.name).await?;
    }
    Ok(())
}

/// What a run of a [`scope::Shrinks`] model does.
enum Shrunk {
    /// Rebuild in full, and why.
    Full(String),
    /// Its inputs' rows are as they were.
    Unchanged,
    /// Its rows from now on: those it had that the model over the tables' new rows alone
    /// still yields.
    Rows(DataFrame),
}

/// The rows of a model that [`scope::Shrinks`] describes, after the commits since `last`:
/// when only the tables its `NOT EXISTS` reads gained rows (and lost none), a stored row stays
/// where the model over just those new rows keeps it too.
async fn shrink(
    lake: &Lake,
    project: &Project,
    model: &Model,
    inputs: &Inputs,
    shrinks: &scope::Shrinks,
    last: &ModelCursor,
    table: &deltalake::DeltaTable,
) -> Result<Shrunk, TransformError> {
    let mut only = BTreeMap::new();
    let mut at = BTreeMap::new();
    for read in &inputs.reads {
        let Some(version) = read.version else {
            continue;
        };
        let name = &read.table;
        at.insert(name.clone(), version);
        let Some(&since) = last.inputs.get(&name.to_string()) else {
            return Ok(Shrunk::Full(format!("the last run did not read {name}")));
        };
        if since == version {
            continue;
        }
        if !shrinks.against.contains(name) {
            return Ok(Shrunk::Full(format!("{name} changed")));
        }
        if since > version {
            return Ok(Shrunk::Full(format!(
                "{name} is at v{version}, before v{since} that the last run read"
            )));
        }
        let delta = lake.table(name, Some(version), None).await?;
        let diff = crate::lake::changes::diff_since(name, &delta, since, version).await?;
        if let Some(why) = diff.incomplete {
            return Ok(Shrunk::Full(format!("{name}: {why}")));
        }
        if !diff.removed.is_empty() {
            return Ok(Shrunk::Full(format!(
                "{name} lost or rewrote rows, which NOT EXISTS may now let through"
            )));
        }
        if !diff.added.is_empty() {
            only.insert(name.clone(), diff.added);
        }
    }
    if only.is_empty() {
        return Ok(Shrunk::Unchanged);
    }
    let sql_err = |e| model_sql_error(model, e);
    let reads: Vec<TableName> = model.reads.iter().map(|r| r.table.clone()).collect();
    let mut part = Inputs::new(lake)?;
    part.at = at;
    part.only = only;
    part.add(lake, project, &reads, &BTreeMap::new()).await?;
    let kept = part.ctx.sql(&model.sql).await.map_err(sql_err)?;
    let stored = crate::lake::scan::provider(table, None)
        .await
        .map_err(sql_err)?;
    // The stored rows as the SELECT types them, matched on every column (nulls alike).
    let columns: Vec<Expr> = kept
        .schema()
        .fields()
        .iter()
        .map(|f| {
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(column(f.name())),
                f.data_type().clone(),
            ))
            .alias(f.name())
        })
        .collect();
    let rows = part
        .ctx
        .read_table(stored)
        .and_then(|s| s.select(columns))
        .and_then(|s| s.intersect(kept))
        .map_err(sql_err)?;
    Ok(Shrunk::Rows(rows))
}

/// A group-scoped run of a table model: its touched groups recomputed (re-aggregated, or
/// merged from the new rows' aggregates), and written with its other rows in one commit.
struct Scoped<'a> {
    lake: &'a Lake,
    project: &'a Project,
    model: &'a Model,
    /// The inputs as the run opened them.
    inputs: &'a Inputs,
    scope: &'a scope::Scope,
    mergeable: Option<&'a merge::Mergeable>,
    /// The model's table as the last run left it.
    table: &'a deltalake::DeltaTable,
    metadata: &'a [(String, serde_json::Value)],
}

impl Scoped<'_> {
    async fn run(
        &self,
        groups: groups::Recompute,
        outcome: &mut ModelOutcome,
    ) -> Result<(), TransformError> {
        let (lake, project, model) = (self.lake, self.project, self.model);
        let groups::Recompute {
            touched,
            filters,
            rows_read,
            removed,
            added,
            lost,
            lost_at,
            keys,
            from_known,
        } = groups;
        let at: BTreeMap<TableName, u64> = self
            .inputs
            .reads
            .iter()
            .filter_map(|r| Some((r.table.clone(), r.version?)))
            .collect();
        let reads: Vec<TableName> = model.reads.iter().map(|r| r.table.clone()).collect();
        let sql_err = |e| model_sql_error(model, e);
        // The inputs at the same versions, filtered to the touched groups' rows.
        let mut scoped = Inputs::new(lake)?;
        scoped.at = at.clone();
        // With `recompute_from`, each touched group from its last row at or before the
        // changes: the inputs read from the earliest such row on.
        let cuts = match (&self.scope.from, from_known, self.mergeable) {
            (Some(from), true, None) => self
                .cuts(&scoped.ctx, from, &touched, keys)
                .await
                .map_err(sql_err)?,
            _ => None,
        };
        scoped.filters = match (&cuts, &self.scope.from) {
            (Some(cuts), Some(from)) => filters
                .into_iter()
                .map(|(t, f)| {
                    // From the earliest cut on; groups recomputed whole, all their rows.
                    let mut since = column(from)
                        .gt_eq(lit(cuts.since.clone()))
                        .or(column(from).is_null());
                    if let (Some(whole), Some(exprs)) = (&cuts.whole, self.scope.keys.get(&t)) {
                        since = since.or(whole.predicate(exprs));
                    }
                    (t, f.and(since))
                })
                .collect(),
            _ => filters,
        };
        scoped.add(lake, project, &reads, &BTreeMap::new()).await?;
        let scoped_df = scoped.ctx.sql(&model.sql).await.map_err(sql_err)?;
        let mut read = rows_read;
        let new_rows = match self.mergeable {
            Some(m) => {
                // The touched groups' aggregates: the stored ones combined with the new rows'
                // (or, where rows were removed, anew from the touched groups' rows), kept in
                // memory for both writes.
                // The model's aggregate over some of its inputs' rows: the files given, at
                // the versions given.
                let aggregate_of =
                    async |at: BTreeMap<TableName, u64>,
                           only: BTreeMap<TableName, Vec<deltalake::kernel::Add>>|
                           -> Result<DataFrame, TransformError> {
                        let mut part = Inputs::new(lake)?;
                        part.at = at;
                        part.only = only;
                        part.add(lake, project, &reads, &BTreeMap::new()).await?;
                        let df = part.ctx.sql(&model.sql).await.map_err(sql_err)?;
                        m.state_of(&part.ctx.state(), df.logical_plan())
                            .map_err(sql_err)
                    };
                let merged = if removed && !m.retracts {
                    outcome.note = Some(
                        "re-aggregated: rows were removed, and a floating-point sum does not take them out exactly".into(),
                    );
                    None
                } else {
                    let new = aggregate_of(at.clone(), added).await?;
                    let stored = stored_state(lake, &scoped, model, m, Some(&touched)).await?;
                    let state = if removed {
                        let mut gone_at = at.clone();
                        gone_at.extend(lost_at);
                        let gone = aggregate_of(gone_at, lost).await?;
                        m.retract(stored, new, gone).map_err(sql_err)?
                    } else {
                        m.combine(stored, new).map_err(sql_err)?
                    };
                    let state = ModelSource::new(state, false);
                    let batches = collect(state.clone()).await.map_err(sql_err)?;
                    read += state.rows_scanned();
                    if removed {
                        let exact = exact_groups(batches).map_err(sql_err)?;
                        if exact.is_none() {
                            outcome.note = Some(
                                "re-aggregated: a removed row may have been a group's minimum or maximum".into(),
                            );
                        }
                        exact
                    } else {
                        Some(batches)
                    }
                };
                let batches = match merged {
                    Some(batches) => batches,
                    None => {
                        let state = m
                            .state_of(&scoped.ctx.state(), scoped_df.logical_plan())
                            .map_err(sql_err)?;
                        let state = ModelSource::new(state, false);
                        let batches = collect(state.clone()).await.map_err(sql_err)?;
                        read += state.rows_scanned();
                        batches
                    }
                };
                let touched_state = scoped.ctx.read_batches(batches).map_err(sql_err)?;
                let kept = stored_state(lake, &scoped, model, m, None)
                    .await?
                    .filter(Expr::IsNotTrue(Box::new(
                        touched.predicate(&m.scope_columns()),
                    )))
                    .and_then(|k| k.union(touched_state.clone()))
                    .map_err(sql_err)?;
                read += write_state(lake, model, kept, self.metadata).await?;
                let plan = m
                    .over(
                        scoped_df.logical_plan(),
                        touched_state.into_unoptimized_plan(),
                    )
                    .map_err(sql_err)?;
                DataFrame::new(scoped.ctx.state(), plan)
            }
            None => scoped_df,
        };
        // The touched groups' rows are replaced in the files that hold them, in one commit;
        // the table's other files stay as they are. (A replace through delta-rs turns the
        // predicate into a kernel expression by recursion, too deep for thousands of keys.)
        // A partitioned table is written anew, its other groups as they are.
        let replaced = match model.config.partition_by.is_empty() {
            true => self
                .replaced_files(&scoped.ctx, &touched, cuts.as_ref())
                .await
                .map_err(sql_err)?,
            false => None,
        };
        let kept = async {
            let provider =
                crate::lake::scan::provider(self.table, replaced.as_ref().map(|r| r.0.as_slice()))
                    .await?;
            let columns: Vec<Expr> = new_rows
                .schema()
                .fields()
                .iter()
                .map(|f| column(f.name()))
                .collect();
            let stored = scoped.ctx.read_table(provider)?;
            match (&cuts, &self.scope.from) {
                // The touched groups' rows from their cut on, anew; every other row as it is.
                (Some(cuts), Some(from)) => {
                    let cut = || scoped.ctx.read_batches(cuts.batches.clone());
                    let on = || self.on_cut();
                    let since = column(from).gt_eq(column(CUT));
                    let new_rows = new_rows
                        .join_on(cut()?, JoinType::Inner, on())?
                        .filter(column(CUT).is_null().or(since.clone()))?
                        .select(columns.clone())?;
                    let before = column(from).is_null().or(column(from).lt(column(CUT)));
                    stored
                        .join_on(cut()?, JoinType::Left, on())?
                        .filter(
                            column(TOUCHED)
                                .is_null()
                                .or(column(CUT).is_not_null().and(before)),
                        )?
                        .select(columns)?
                        .union(new_rows)
                }
                _ => stored
                    .filter(Expr::IsNotTrue(Box::new(
                        touched.output_predicate(self.scope),
                    )))?
                    .select(columns)?
                    .union(new_rows),
            }
        }
        .await
        .map_err(sql_err)?;
        let source = ModelSource::new(kept, false);
        let mode = match replaced {
            Some((_, paths)) => WriteMode::ReplaceFiles(paths),
            None => WriteMode::Rebuild(model.config.partition_by.clone()),
        };
        let written = write_model(lake, model, source.clone(), &mode, self.metadata).await?;
        outcome.version = Some(written.version);
        outcome.rows = Some(written.rows_read);
        outcome.groups = Some(touched.groups);
        outcome.rows_read = Some(read + source.rows_scanned());
        Ok(())
    }
}

/// The groups [`merge::Mergeable::retract`] computed, without its exactness column; none
/// when a group was not exact.
fn exact_groups(batches: Vec<RecordBatch>) -> Result<Option<Vec<RecordBatch>>, DataFusionError> {
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let i = batch.schema().index_of(merge::EXACT)?;
        let exact = arrow::array::downcast_array::<arrow::array::BooleanArray>(batch.column(i));
        if arrow::array::Array::null_count(&exact) > 0 || exact.false_count() > 0 {
            return Ok(None);
        }
        let keep: Vec<usize> = (0..batch.num_columns()).filter(|c| *c != i).collect();
        out.push(batch.project(&keep)?);
    }
    Ok(Some(out))
}

/// Where each touched group of a `recompute_from` model is recomputed from.
struct Cuts {
    /// Per touched group (`__lake_key<i>`): the value of its last stored row at or before
    /// the earliest change (`__lake_cut`).
    batches: Vec<RecordBatch>,
    /// The smallest cut: the inputs are read from it on.
    since: ScalarValue,
    /// The groups recomputed whole (no row before their change), read in full.
    whole: Option<scope::Touched>,
}

/// The column marking a touched group's cut.
const TOUCHED: &str = "__lake_touched";

/// The column holding a group's cut.
const CUT: &str = "__lake_cut";

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

impl Scoped<'_> {
    /// For each touched group (`keys`: its key and its changed rows' earliest `from`), its
    /// last stored row's `from` at or before that, or null to recompute the group whole (it
    /// has no such row); none when every group is recomputed whole.
    async fn cuts(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        from: &str,
        touched: &scope::Touched,
        keys: Vec<RecordBatch>,
    ) -> Result<Option<Cuts>, DataFusionError> {
        if keys.iter().all(|b| b.num_rows() == 0) {
            return Ok(None);
        }
        let n = self.scope.columns.len();
        let provider = crate::lake::scan::provider(self.table, None).await?;
        let stored = ctx
            .read_table(provider)?
            .filter(touched.output_predicate(self.scope))?;
        let changed = ctx.read_batches(keys)?;
        let key = |i: usize| column(&groups::key_column(i));
        let cut_key = |i: usize| format!("__lake_cut_key{i}");
        let before = changed
            .clone()
            .join_on(stored, JoinType::Inner, self.on_cut())?
            .filter(column(from).lt_eq(column(groups::FROM)))?
            .aggregate(
                (0..n).map(|i| key(i).alias(cut_key(i))).collect(),
                vec![max(column(from)).alias(CUT)],
            )?;
        let on: Vec<Expr> = (0..n)
            .map(|i| not_distinct(key(i), column(&cut_key(i))))
            .collect();
        let mut select: Vec<Expr> = (0..n).map(key).collect();
        select.push(column(CUT));
        select.push(lit(true).alias(TOUCHED));
        let batches = changed
            .select((0..n).map(key).collect::<Vec<Expr>>())?
            .join_on(before, JoinType::Left, on)?
            .select(select)?
            .collect()
            .await?;
        let mut since: Option<ScalarValue> = None;
        let mut whole = Vec::new();
        for batch in &batches {
            let cut = batch.column(n);
            for row in 0..batch.num_rows() {
                let v = ScalarValue::try_from_array(cut, row)?;
                if v.is_null() {
                    continue;
                }
                since = Some(match since {
                    Some(s) if s <= v => s,
                    _ => v,
                });
            }
            let none = arrow::compute::is_null(cut)?;
            whole.push(arrow::compute::filter_record_batch(batch, &none)?);
        }
        let Some(since) = since else {
            return Ok(None);
        };
        let whole = scope::Touched::from_batches(&whole, n).map_err(DataFusionError::Plan)?;
        Ok(Some(Cuts {
            batches,
            since,
            whole: (!whole.is_empty()).then_some(whole),
        }))
    }

    /// The files of the table that hold a row this run replaces (a touched group's row; with
    /// `recompute_from`, from the group's cut on), as add actions and as paths; none when the
    /// table is one only delta-rs reads. The scan reads the key columns, of the files whose
    /// statistics may hold such a row.
    async fn replaced_files(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        touched: &scope::Touched,
        cuts: Option<&Cuts>,
    ) -> Result<Option<(Vec<deltalake::kernel::Add>, Vec<String>)>, DataFusionError> {
        use crate::lake::scan::FILE_COLUMN;
        let Some(provider) = crate::lake::scan::provider_with_files(self.table, None)? else {
            return Ok(None);
        };
        let stored = ctx
            .read_table(provider)?
            .filter(touched.output_predicate(self.scope))?;
        let replaced = match (cuts, &self.scope.from) {
            (Some(cuts), Some(from)) => {
                // Only rows from the earliest cut on, or of a group recomputed whole, can be
                // replaced: the files' statistics rule the others out.
                let mut since = column(from)
                    .gt_eq(lit(cuts.since.clone()))
                    .or(column(from).is_null());
                if let Some(whole) = &cuts.whole {
                    since = since.or(whole.output_predicate(self.scope));
                }
                stored
                    .filter(since)?
                    .join_on(
                        ctx.read_batches(cuts.batches.clone())?,
                        JoinType::Inner,
                        self.on_cut(),
                    )?
                    .filter(column(CUT).is_null().or(column(from).gt_eq(column(CUT))))?
            }
            _ => stored,
        };
        let batches = replaced
            .select(vec![column(FILE_COLUMN)])?
            .distinct()?
            .collect()
            .await?;
        let mut paths = std::collections::HashSet::new();
        for batch in &batches {
            let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
            let column = arrow::array::AsArray::as_string::<i32>(&column);
            paths.extend(column.iter().flatten().map(str::to_string));
        }
        let files: Vec<deltalake::kernel::Add> = crate::lake::changes::files(self.table)
            .into_iter()
            .filter(|a| paths.contains(&a.path))
            .collect();
        let paths = files.iter().map(|a| a.path.clone()).collect();
        Ok(Some((files, paths)))
    }

    /// The join of the model's rows to their group's cut (null keys match).
    fn on_cut(&self) -> Vec<Expr> {
        self.scope
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| not_distinct(column(c), column(&groups::key_column(i))))
            .collect()
    }
}

/// `a IS NOT DISTINCT FROM b`: a join key where nulls match, which DataFusion runs as a hash
/// join.
fn not_distinct(a: Expr, b: Expr) -> Expr {
    datafusion::logical_expr::binary_expr(
        a,
        datafusion::logical_expr::Operator::IsNotDistinctFrom,
        b,
    )
}

/// Whether a merging model's stored aggregates were written by the run that `last` records.
async fn state_matches(
    lake: &Lake,
    model: &TableName,
    last: &ModelCursor,
    m: &merge::Mergeable,
) -> bool {
    let Ok(t) = lake.table(&merge::state_table(model), None, None).await else {
        return false;
    };
    let columns = t
        .snapshot()
        .ok()
        .is_some_and(|s| m.stored_in(&s.snapshot().arrow_schema()));
    columns && cursor(&t).await.as_ref() == Some(last)
}

/// A merging model's stored aggregates, of the touched groups only when given.
async fn stored_state(
    lake: &Lake,
    inputs: &Inputs,
    model: &Model,
    m: &merge::Mergeable,
    touched: Option<&scope::Touched>,
) -> Result<DataFrame, TransformError> {
    let name = merge::state_table(&model.name);
    let table = lake.table(&name, None, None).await?;
    let df = async {
        let df = inputs
            .ctx
            .read_table(crate::lake::scan::provider(&table, None).await?)?;
        match touched {
            Some(t) => df.filter(t.predicate(&m.scope_columns())),
            None => Ok(df),
        }
    }
    .await
    .map_err(|e| super::inputs::sql_error(&name, e))?;
    Ok(df)
}

/// Writes a merging model's aggregates, with the model's cursor.
async fn write_state(
    lake: &Lake,
    model: &Model,
    state: DataFrame,
    metadata: &[(String, serde_json::Value)],
) -> Result<u64, TransformError> {
    let name = merge::state_table(&model.name);
    let source = ModelSource::new(state, false);
    write(
        lake,
        &name,
        source.clone(),
        &WriteMode::Rebuild(Vec::new()),
        metadata,
    )
    .await
    .map_err(|e| write_error(model, e))?;
    Ok(source.rows_scanned())
}

/// A model's query failing as a write reads its rows is a SQL error, at its position where
/// DataFusion gives one; a failure of the Delta write itself stays a lake error. Either way
/// nothing was committed.
fn write_error(model: &Model, e: LakeError) -> TransformError {
    match e {
        LakeError::Write { table, cause } => match cause.downcast::<DataFusionError>() {
            Ok(e) => match model_sql_error(model, *e) {
                TransformError::Sql {
                    file,
                    position,
                    message,
                } => TransformError::Sql {
                    file,
                    position,
                    message: format!("{message}; {} is unchanged", model.name),
                },
                other => other,
            },
            Err(cause) => LakeError::Write { table, cause }.into(),
        },
        other => other.into(),
    }
}

/// Every row of a source, in memory.
async fn collect(source: Arc<ModelSource>) -> Result<Vec<RecordBatch>, DataFusionError> {
    let batches: Vec<RecordBatch> = source
        .stream()
        .try_collect()
        .await
        .map_err(DataFusionError::External)?;
    Ok(batches)
}

/// Writes a model's rows in its sort order, in files cut at the key's boundaries.
async fn write_model(
    lake: &Lake,
    model: &Model,
    source: Arc<ModelSource>,
    mode: &WriteMode,
    metadata: &[(String, serde_json::Value)],
) -> Result<crate::lake::write::WriteOutcome, TransformError> {
    let mut layout = Layout::sorted_by(&model.config.sort_by).with_span(model.config.files_by);
    if model.config.materialized == Materialized::Incremental {
        // Each night's keys are looked up in the files' bloom filters (see `all_new`).
        layout = layout.with_keys(&model.config.unique_key);
    }
    write_laid_out(lake, &model.name, source, mode, metadata, &layout)
        .await
        .map_err(|e| write_error(model, e))
}

/// Up to how many new keys [`all_new`] looks up in the table's bloom filters; more are
/// joined with the table's keys (past that many, the filters let most row groups through).
const LOOKED_UP_KEYS: usize = 100_000;

/// The table's version when none of the keys of `df`'s rows is in `name` at that version.
/// A few keys are looked up in the files' bloom filters, and the key columns read only of
/// the row groups whose filters may hold one ([`crate::lake::keys`]); otherwise the table's
/// key columns are joined to the new rows' distinct keys.
async fn all_new(
    lake: &Lake,
    inputs: &Inputs,
    df: &DataFrame,
    name: &TableName,
    keys: &[String],
) -> Result<Option<u64>, datafusion::error::DataFusionError> {
    fn external(
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
    let table = lake.table(name, None, None).await.map_err(external)?;
    let Some(version) = table.version() else {
        return Ok(None);
    };
    let new_keys = df
        .clone()
        .select_columns(&keys.iter().map(String::as_str).collect::<Vec<_>>())?
        .distinct()?
        .limit(0, Some(LOOKED_UP_KEYS + 1))?
        .collect()
        .await?;
    if new_keys.iter().map(RecordBatch::num_rows).sum::<usize>() <= LOOKED_UP_KEYS
        && let Some(lookup) = crate::lake::keys::holds_any(&table, keys, &new_keys)
            .await
            .map_err(external)?
    {
        tracing::debug!(table = %name, ?lookup, "new keys looked up in the bloom filters");
        return Ok((!lookup.held).then_some(version));
    }
    let provider = crate::lake::scan::provider(&table, None).await?;
    inputs.ctx.register_table("__lake_target", provider)?;
    inputs
        .ctx
        .register_table("__lake_new", df.clone().into_view())?;
    let cols: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    let on: Vec<String> = cols.iter().map(|c| format!("t.{c} = n.{c}")).collect();
    let found = async {
        inputs
            .ctx
            .sql(&format!(
                "SELECT 1 FROM __lake_target t JOIN (SELECT DISTINCT {} FROM __lake_new) n ON {} LIMIT 1",
                cols.join(", "),
                on.join(" AND ")
            ))
            .await?
            .count()
            .await
    }
    .await;
    inputs.ctx.deregister_table("__lake_target")?;
    inputs.ctx.deregister_table("__lake_new")?;
    Ok((found? == 0).then_some(version))
}

/// The query's rows, one per key, and how many keys had several. Counting first is cheap
/// (one hash aggregate of the key columns); only when some key repeats are the rows sorted to
/// keep one of each, which costs a sort of the whole result.
async fn one_row_per_key(
    inputs: &Inputs,
    df: DataFrame,
    keys: &[String],
) -> Result<(DataFrame, u64), datafusion::error::DataFusionError> {
    inputs
        .ctx
        .register_table("__lake_model", df.clone().into_view())?;
    let keys: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    let keys = keys.join(", ");
    let repeated = inputs
        .ctx
        .sql(&format!(
            "SELECT {keys} FROM __lake_model GROUP BY {keys} HAVING count(*) > 1"
        ))
        .await?
        .count()
        .await? as u64;
    if repeated == 0 {
        return Ok((df, 0));
    }
    let deduped = inputs
        .ctx
        .sql(&format!(
            "SELECT * EXCLUDE (__lake_rank) FROM (SELECT *, row_number() OVER (PARTITION BY {keys}) AS __lake_rank FROM __lake_model) WHERE __lake_rank = 1"
        ))
        .await?;
    Ok((deduped, repeated))
}

/// Output columns Delta can store without column mapping, named so a reader can use them.
fn check_columns(model: &Model, df: &DataFrame) -> Result<(), TransformError> {
    let mut seen = BTreeSet::new();
    for field in df.schema().fields() {
        let name = field.name();
        if let Some(c) = name.chars().find(|c| " ,;{}()\n\t=".contains(*c)) {
            return Err(TransformError::Sql {
                file: model.display.clone(),
                position: None,
                message: format!(
                    "the column `{name}` holds {c:?}, which a Delta column name cannot: give it a name with AS"
                ),
            });
        }
        if !seen.insert(name.to_lowercase()) {
            return Err(TransformError::Sql {
                file: model.display.clone(),
                position: None,
                message: format!("two columns are named `{name}`: rename one with AS"),
            });
        }
    }
    if let Some(key) = model
        .config
        .unique_key
        .iter()
        .chain(&model.config.partition_by)
        .chain(&model.config.sort_by)
        .find(|k| !seen.contains(&k.to_lowercase()))
    {
        return Err(TransformError::Invalid {
            file: model.display.clone(),
            line: Some(1),
            column: None,
            why: format!("`{key}` is in the header but the query has no such column"),
        });
    }
    Ok(())
}

/// A planned query as a write source; re-executed if the write has to retry.
struct ModelSource {
    schema: SchemaRef,
    df: DataFrame,
    /// The query yields one row per key already.
    keys_unique: bool,
    /// The physical plan of the last execution, for the rows its scans read.
    executed: Arc<std::sync::Mutex<Option<Arc<dyn ExecutionPlan>>>>,
}

impl ModelSource {
    fn new(df: DataFrame, keys_unique: bool) -> Arc<Self> {
        Arc::new(Self {
            schema: Arc::new(df.schema().as_arrow().clone()),
            df,
            keys_unique,
            executed: Arc::default(),
        })
    }

    /// Rows the last execution's scans produced: the rows read from the inputs' files.
    fn rows_scanned(&self) -> u64 {
        fn leaves(plan: &Arc<dyn ExecutionPlan>) -> u64 {
            let children = plan.children();
            if children.is_empty() {
                return plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
            }
            children.into_iter().map(leaves).sum()
        }
        let executed = self.executed.lock().expect("not poisoned");
        executed.as_ref().map_or(0, leaves)
    }
}

impl BatchSource for ModelSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn keys_unique(&self) -> bool {
        self.keys_unique
    }

    fn stream(&self) -> BoxStream<'static, Result<RecordBatch, SourceError>> {
        let df = self.df.clone();
        let executed = self.executed.clone();
        futures::stream::once(async move {
            let task = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await?;
            *executed.lock().expect("not poisoned") = Some(plan.clone());
            datafusion::physical_plan::execute_stream(plan, task)
        })
        .map_ok(|s| s.map_err(|e| Box::new(e) as SourceError))
        .map_err(|e| Box::new(e) as SourceError)
        .try_flatten()
        .boxed()
    }
}

/// Failing rows shown in the output.
const SAMPLE_ROWS: usize = 5;

/// Runs one test against the model as it is now; keeps failing rows in its audit table.
async fn test(
    lake: &Lake,
    project: &Project,
    model: &Model,
    check: &Check,
    existing: &BTreeSet<TableName>,
    last: Option<(&runs::LastTested, &AddedSince)>,
) -> TestOutcome {
    let mut hash = sha2::Sha256::new();
    hash.update(check.sql(&model.name).as_bytes());
    hash.update(b"\0");
    hash.update(model.sql.trim().as_bytes());
    let mut outcome = TestOutcome {
        name: check.name.clone(),
        severity: check.severity,
        failing: 0,
        sample: Vec::new(),
        audit: None,
        error: None,
        hash: hex::encode(&hash.finalize()[..16]),
        new_rows_only: false,
    };
    if let Err(e) = run_test(lake, project, model, check, existing, last, &mut outcome).await {
        outcome.error = Some(e.to_string());
    }
    outcome
}

async fn run_test(
    lake: &Lake,
    project: &Project,
    model: &Model,
    check: &Check,
    existing: &BTreeSet<TableName>,
    last: Option<(&runs::LastTested, &AddedSince)>,
    outcome: &mut TestOutcome,
) -> Result<(), TransformError> {
    let mut tables = vec![model.name.clone()];
    tables.extend(check.reads.iter().map(|r| r.table.clone()));
    let header_lines = match &check.kind {
        CheckKind::Custom { header_lines, .. } => *header_lines,
        _ => check.line.saturating_sub(1),
    };
    let sql_err = |e| super::inputs::sql_error_in(&check.file, header_lines, e);
    // A test that passed on rows that have since only been added to (or taken from) fails,
    // if at all, on an added row: a null, a value not accepted, a key the added rows repeat.
    // It reads just those rows (or, for `unique`, the rows of their keys).
    let added = match (&check.kind, last) {
        (
            CheckKind::NotNull(_) | CheckKind::AcceptedValues { .. } | CheckKind::Unique(_),
            Some((l, added)),
        ) if l.passed && l.tests.get(&check.name) == Some(&outcome.hash) => added
            .get_or_try_init(|| added_since(lake, model, l))
            .await?
            .as_ref(),
        _ => None,
    };
    let mut inputs = Inputs::new(lake)?;
    let sql = match added {
        None => check.sql(&model.name),
        Some((at, only)) => {
            outcome.new_rows_only = true;
            inputs.at = at.clone();
            let mut new = Inputs::new(lake)?;
            new.at = at.clone();
            new.only = only.clone();
            new.add(lake, project, &tables, &BTreeMap::new()).await?;
            match &check.kind {
                CheckKind::Unique(columns) => {
                    // The added rows' keys, then every row of those keys.
                    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
                    let keys = new
                        .ctx
                        .sql(&format!(
                            "SELECT DISTINCT {} FROM {}",
                            cols.join(", "),
                            model.name
                        ))
                        .await
                        .map_err(sql_err)?
                        .collect()
                        .await
                        .map_err(sql_err)?;
                    if keys.iter().all(|b| b.num_rows() == 0) {
                        return Ok(());
                    }
                    // The test passed last time, so its audit table is empty.
                    if model.config.materialized != Materialized::View
                        && let Some(files) = only.get(&model.name)
                        && new_keys_unique(lake, &new, model, columns, &keys, files, at)
                            .await
                            .map_err(sql_err)?
                    {
                        return Ok(());
                    }
                    if model.config.materialized == Materialized::View
                        && view_keys_unique(lake, project, &new, model, columns, &keys, only, at)
                            .await
                            .map_err(sql_err)?
                    {
                        return Ok(());
                    }
                    // The rows of those keys are those an IN list of each key column's values
                    // lets through, which the scan checks against each file's statistics and
                    // each row group's bloom filters: only what may hold a key is read. (Past
                    // `keyset::LISTED` keys the list is a hash set, which prunes nothing but
                    // costs nothing per file.)
                    let rows: usize = keys.iter().map(RecordBatch::num_rows).sum();
                    let table = if rows <= LOOKED_UP_KEYS {
                        let touched = scope::Touched::from_batches(&keys, columns.len())
                            .map_err(|e| sql_err(DataFusionError::Execution(e)))?;
                        if !inputs.has(&model.name) {
                            inputs.add(lake, project, &tables, &BTreeMap::new()).await?;
                        }
                        let exprs: Vec<Expr> = columns
                            .iter()
                            .map(|c| Expr::Column(Column::from_name(c)))
                            .collect();
                        let candidates = inputs
                            .ctx
                            .table(model.name.to_string())
                            .await
                            .and_then(|t| t.filter(touched.predicate(&exprs)))
                            .map_err(sql_err)?;
                        inputs
                            .ctx
                            .register_table("__lake_key_rows", candidates.into_view())
                            .map_err(sql_err)?;
                        "__lake_key_rows".to_string()
                    } else {
                        model.name.to_string()
                    };
                    let keys = inputs.ctx.read_batches(keys).map_err(sql_err)?;
                    inputs
                        .ctx
                        .register_table("__lake_new_keys", keys.into_view())
                        .map_err(sql_err)?;
                    let on: Vec<String> = cols
                        .iter()
                        .map(|c| format!("(t.{c} IS NOT DISTINCT FROM n.{c})"))
                        .collect();
                    let select: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();
                    format!(
                        "SELECT {s}, count(*) AS duplicates FROM {table} t JOIN __lake_new_keys n ON {on} GROUP BY {s} HAVING count(*) > 1",
                        s = select.join(", "),
                        on = on.join(" AND ")
                    )
                }
                _ => {
                    inputs = new;
                    check.sql(&model.name)
                }
            }
        }
    };
    if !inputs.has(&model.name) {
        inputs.add(lake, project, &tables, &BTreeMap::new()).await?;
    }
    let df = inputs.ctx.sql(&sql).await.map_err(sql_err)?;
    let failing =
        df.clone()
            .count()
            .await
            .map_err(|e| super::inputs::sql_error_in(&check.file, header_lines, e))? as u64;
    outcome.failing = failing;
    let audit = check.audit_table(&model.name);
    if failing == 0 && !existing.contains(&audit) {
        return Ok(());
    }
    if failing > 0 {
        outcome.sample = df
            .clone()
            .limit(0, Some(SAMPLE_ROWS))
            .map_err(|e| super::inputs::sql_error_in(&check.file, header_lines, e))?
            .collect()
            .await
            .map_err(|e| super::inputs::sql_error_in(&check.file, header_lines, e))?;
        outcome.audit = Some(audit.clone());
    }
    // Passing tests empty their audit table, so it never shows stale failures.
    let source = ModelSource::new(df, false);
    let metadata = vec![("lake.test".to_string(), json!(check.name))];
    write(
        lake,
        &audit,
        source,
        &WriteMode::Rebuild(Vec::new()),
        &metadata,
    )
    .await?;
    Ok(())
}

/// Whether a unique test's added rows (`new`, of `added` files; their distinct keys `keys`)
/// repeat no key, told without reading the table's keys: none of the added rows shares a key
/// with another, and the bloom filters of the key in the table's other files, and the row
/// groups they let through, hold none of the keys ([`crate::lake::keys`]). `false` when that
/// cannot be told so (no filters of the key, a null in a key): the test then joins.
async fn new_keys_unique(
    lake: &Lake,
    new: &Inputs,
    model: &Model,
    columns: &[String],
    keys: &[RecordBatch],
    added: &[deltalake::kernel::Add],
    at: &BTreeMap<TableName, u64>,
) -> Result<bool, DataFusionError> {
    let external = |e: crate::lake::LakeError| DataFusionError::External(Box::new(e));
    let join = |why: &str| {
        tracing::debug!(table = %model.name, why, "a unique test's new keys joined");
        Ok(false)
    };
    let Some(&version) = at.get(&model.name) else {
        return join("no version");
    };
    let rows: usize = keys.iter().map(RecordBatch::num_rows).sum();
    if let Some(why) = unlookable(keys) {
        return join(why);
    }
    let table = lake
        .table(&model.name, Some(version), None)
        .await
        .map_err(external)?;
    let filtered = bloom_columns(&table, Some(model));
    if !columns.iter().all(|c| filtered.contains(c)) {
        return join("no bloom filters of the columns");
    }
    if added_rows(new, model).await? != rows {
        return join("the added rows repeat a key");
    }
    let skip: Vec<String> = added.iter().map(|a| a.path.clone()).collect();
    let lookup = crate::lake::keys::holds_any_outside(&table, columns, keys, &skip)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    tracing::debug!(table = %model.name, ?lookup, "a unique test's new keys looked up");
    Ok(lookup.is_some_and(|l| !l.held))
}

/// Why keys cannot be looked up in bloom filters: too many, or a null in one.
fn unlookable(keys: &[RecordBatch]) -> Option<&'static str> {
    let rows: usize = keys.iter().map(RecordBatch::num_rows).sum();
    if rows > LOOKED_UP_KEYS {
        return Some("too many keys");
    }
    keys.iter()
        .any(|b| {
            b.columns()
                .iter()
                .any(|c| arrow::array::Array::null_count(c) > 0)
        })
        .then_some("a null in a key")
}

/// The rows of `model` that `new` (its inputs as their added files) holds.
async fn added_rows(new: &Inputs, model: &Model) -> Result<usize, DataFusionError> {
    new.ctx
        .sql(&format!("SELECT 1 FROM {}", model.name))
        .await?
        .count()
        .await
}

/// The columns `table`'s files have bloom filters of. The files lake lays out say so; those
/// delta-rs writes (a merge, a model without a sort key) filter an incremental model's key
/// too, untagged.
fn bloom_columns(table: &deltalake::DeltaTable, model: Option<&Model>) -> Vec<String> {
    let mut filtered = crate::lake::layout::table_keys(table);
    if let Some(m) = model
        && m.config.materialized == Materialized::Incremental
    {
        filtered.extend(m.config.unique_key.iter().cloned());
    }
    filtered
}

/// [`new_keys_unique`] for a view whose rows are its tables' rows (scans, projections,
/// filters, UNION ALL) and whose key columns are columns of each table: the added rows repeat
/// no key, and no table's other files hold one, told by the bloom filters of the key where
/// lake wrote them, and by reading the key columns of a table of few rows.
#[allow(clippy::too_many_arguments)]
async fn view_keys_unique(
    lake: &Lake,
    project: &Project,
    new: &Inputs,
    model: &Model,
    columns: &[String],
    keys: &[RecordBatch],
    only: &BTreeMap<TableName, Vec<deltalake::kernel::Add>>,
    at: &BTreeMap<TableName, u64>,
) -> Result<bool, DataFusionError> {
    let external = |e: crate::lake::LakeError| DataFusionError::External(Box::new(e));
    let join = |why: &str| {
        tracing::debug!(view = %model.name, why, "a unique test's new keys joined");
        Ok(false)
    };
    let rows: usize = keys.iter().map(RecordBatch::num_rows).sum();
    if let Some(why) = unlookable(keys) {
        return join(why);
    }
    let plan = new.ctx.sql(&model.sql).await?;
    let Some(sources) = scope::source_columns(plan.logical_plan(), columns) else {
        return join("its rows are not its tables' rows, column for column");
    };
    if added_rows(new, model).await? != rows {
        return join("the added rows repeat a key");
    }
    for (name, table_columns) in &sources {
        let (Some(&version), Some(added)) = (at.get(name), only.get(name)) else {
            return join("a table without a version");
        };
        let table = lake
            .table(name, Some(version), None)
            .await
            .map_err(external)?;
        let filtered = bloom_columns(&table, project.model(name));
        let few = groups::rows_of(&table) <= LOOKED_UP_KEYS as u64;
        if !few && !table_columns.iter().all(|c| filtered.contains(c)) {
            return join("no bloom filters of the columns");
        }
        // The keys under the table's names for them.
        let fields: Vec<arrow::datatypes::Field> = table_columns
            .iter()
            .zip(keys[0].schema().fields())
            .map(|(c, f)| f.as_ref().clone().with_name(c))
            .collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let renamed = keys
            .iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let skip: Vec<String> = added.iter().map(|a| a.path.clone()).collect();
        let lookup = crate::lake::keys::holds_any_outside(&table, table_columns, &renamed, &skip)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        tracing::debug!(view = %model.name, table = %name, ?lookup, "a unique test's new keys looked up");
        if !lookup.is_some_and(|l| !l.held) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The tables a model's rows come from at their latest versions, and the files each gained
/// since its tests last passed; none when that cannot be told.
type Added = (
    BTreeMap<TableName, u64>,
    BTreeMap<TableName, Vec<deltalake::kernel::Add>>,
);

/// [`Added`] for a model, read when a test first needs it.
type AddedSince = tokio::sync::OnceCell<Option<Added>>;

/// For a model whose tests passed as `last` records: the tables its rows come from (itself,
/// or a view's tables) at their latest versions, and the files each gained since then; none
/// when that cannot be told (a version the last run did not record, a log that no longer
/// holds a commit in between, a compaction of files added since).
async fn added_since(
    lake: &Lake,
    model: &Model,
    last: &runs::LastTested,
) -> Result<Option<Added>, TransformError> {
    let tables: Vec<(TableName, u64)> = match model.config.materialized {
        Materialized::View => {
            let mut out = Vec::new();
            for (t, v) in &last.inputs {
                let Ok(name) = t.parse::<TableName>() else {
                    return Ok(None);
                };
                out.push((name, *v));
            }
            out
        }
        _ => match last.version {
            Some(v) => vec![(model.name.clone(), v)],
            None => return Ok(None),
        },
    };
    if tables.is_empty() {
        return Ok(None);
    }
    let mut at = BTreeMap::new();
    let mut only = BTreeMap::new();
    for (table, since) in tables {
        let delta = lake.table(&table, None, None).await?;
        let Some(now) = delta.version().map(|v| v as u64) else {
            return Ok(None);
        };
        if now < since {
            return Ok(None);
        }
        let diff = crate::lake::changes::diff_since(&table, &delta, since, now).await?;
        if diff.incomplete.is_some() {
            return Ok(None);
        }
        at.insert(table.clone(), now);
        only.insert(table, diff.added);
    }
    Ok(Some((at, only)))
}
