//! `_lake.runs`: one row when a run starts, one per model as it finishes, and one when the
//! run ends. A run with a start row and no end row was interrupted (or is still going).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};

use super::run::Status;
use crate::lake::write::{MemorySource, WriteMode, write};
use crate::lake::{INTERNAL, Lake, LakeError, TableName};

/// The table.
pub fn table() -> TableName {
    TableName::new(INTERNAL, "runs").expect("a valid name")
}

/// A new run id: the start time and a random suffix, `20261202T062300Z-1a2b3c4d`.
pub fn new_id() -> String {
    format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A row's status: a run's start row, or how a model or a whole run ended (a run ends `ok`,
/// `failed` or `tests_failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunStatus {
    /// The run started.
    #[default]
    Started,
    /// It ended so.
    Ended(Status),
}

impl RunStatus {
    /// The name in `_lake.runs`.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Started => "started",
            RunStatus::Ended(s) => s.name(),
        }
    }
}

/// One row of `_lake.runs`.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    /// The run.
    pub run_id: String,
    /// `run`, `test` or `refresh`.
    pub command: String,
    /// The model; none for the rows of the run itself.
    pub model: Option<String>,
    /// `started`, then how the model or the run ended.
    pub status: RunStatus,
    /// Rows written.
    pub rows: Option<u64>,
    /// The version committed.
    pub version: Option<u64>,
    /// Milliseconds taken.
    pub duration_ms: Option<u64>,
    /// The input versions read, as JSON: `{"raw.plays": 12}`.
    pub inputs: Option<String>,
    /// The error, if any.
    pub error: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The tests that passed, as JSON: each one's name and the hash of its query and its
    /// model's SQL, `{"unique_play_id": "9f1c…"}`.
    pub tests: Option<String>,
}

fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("command", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("version", DataType::Int64, true),
        Field::new("duration_ms", DataType::Int64, true),
        Field::new("inputs", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("started_at", ts.clone(), false),
        Field::new("finished_at", ts, true),
        Field::new("tests", DataType::Utf8, true),
    ]))
}

/// Appends rows in one commit.
pub async fn append(lake: &Lake, records: &[RunRecord]) -> Result<(), LakeError> {
    let strings = |f: &dyn Fn(&RunRecord) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(records.iter().map(f)))
    };
    let ints = |f: &dyn Fn(&RunRecord) -> Option<u64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(
            records.iter().map(|r| f(r).map(|v| v as i64)),
        ))
    };
    let times = |f: &dyn Fn(&RunRecord) -> Option<DateTime<Utc>>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                records.iter().map(|r| f(r).map(|t| t.timestamp_micros())),
            )
            .with_timezone("UTC"),
        )
    };
    let schema = schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            strings(&|r| Some(&r.run_id)),
            strings(&|r| Some(&r.command)),
            strings(&|r| r.model.as_deref()),
            strings(&|r| Some(r.status.name())),
            ints(&|r| r.rows),
            ints(&|r| r.version),
            ints(&|r| r.duration_ms),
            strings(&|r| r.inputs.as_deref()),
            strings(&|r| r.error.as_deref()),
            times(&|r| Some(r.started_at)),
            times(&|r| r.finished_at),
            strings(&|r| r.tests.as_deref()),
        ],
    )
    .map_err(|e| LakeError::Write {
        table: table(),
        cause: Box::new(e),
    })?;
    let source = Arc::new(MemorySource {
        schema,
        batches: vec![batch],
    });
    write(lake, &table(), source, &WriteMode::Append, &[]).await?;
    Ok(())
}

/// Recent runs, newest first: one row per run with its counts, for `lake runs`.
pub const RECENT_SQL: &str = "
SELECT r.run_id,
       r.command,
       r.started_at,
       coalesce(e.status, 'interrupted') AS status,
       e.duration_ms,
       m.models,
       m.ok,
       m.failed,
       m.skipped,
       m.rows
FROM _lake.runs r
LEFT JOIN _lake.runs e ON e.run_id = r.run_id AND e.model IS NULL AND e.status <> 'started'
LEFT JOIN (
    SELECT run_id,
           count(*) AS models,
           count(*) FILTER (WHERE status IN ('ok', 'warn', 'unchanged')) AS ok,
           count(*) FILTER (WHERE status IN ('failed', 'tests_failed')) AS failed,
           count(*) FILTER (WHERE status = 'skipped') AS skipped,
           sum(rows) AS rows
    FROM _lake.runs WHERE model IS NOT NULL GROUP BY run_id
) m ON m.run_id = r.run_id
WHERE r.model IS NULL AND r.status = 'started'
ORDER BY r.started_at DESC
";

/// The model rows of one run (a prefix of its id is enough).
pub fn run_sql(run_id: &str) -> String {
    format!(
        "SELECT model, status, rows, version, duration_ms, inputs, error FROM _lake.runs \
         WHERE starts_with(run_id, '{}') AND model IS NOT NULL ORDER BY finished_at",
        run_id.replace('\'', "''")
    )
}

/// How a model's tests last ended, from its latest row in `_lake.runs`.
#[derive(Debug, Clone, Default)]
pub struct LastTested {
    /// Every test passed (the model ended `ok`).
    pub passed: bool,
    /// The version the model committed then (a table or incremental model).
    pub version: Option<u64>,
    /// The versions of the tables it read then (a view's tables).
    pub inputs: std::collections::BTreeMap<String, u64>,
    /// The tests that passed, by name: the hash of each one's query and model SQL.
    pub tests: std::collections::BTreeMap<String, String>,
}

/// Each model's latest row in `_lake.runs` (by `schema.name`); empty when there are none, or
/// the table cannot be read (its tests then run over every row, as they would anyway).
pub async fn last_tested(lake: &Lake) -> std::collections::HashMap<String, LastTested> {
    let read = async {
        let table = lake.table(&table(), None, None).await.ok()?;
        let ctx = lake.sessions().context(false).ok()?;
        ctx.register_table(
            "runs",
            crate::lake::scan::provider(&table, None).await.ok()?,
        )
        .ok()?;
        let df = ctx
            .sql(
                "SELECT model, status, version, inputs, tests FROM (SELECT *, row_number() OVER \
                 (PARTITION BY model ORDER BY finished_at DESC) AS latest FROM runs \
                 WHERE model IS NOT NULL AND status <> 'started') WHERE latest = 1",
            )
            .await
            .ok()?;
        df.collect().await.ok()
    };
    let mut out = std::collections::HashMap::new();
    for batch in read.await.unwrap_or_default() {
        let cast = |i: usize, to: &DataType| arrow::compute::cast(batch.column(i), to);
        let (Ok(models), Ok(statuses), Ok(versions), Ok(inputs), Ok(tests)) = (
            cast(0, &DataType::Utf8),
            cast(1, &DataType::Utf8),
            cast(2, &DataType::Int64),
            cast(3, &DataType::Utf8),
            cast(4, &DataType::Utf8),
        ) else {
            continue;
        };
        let (models, statuses, inputs, tests) = (
            arrow::array::as_string_array(&models),
            arrow::array::as_string_array(&statuses),
            arrow::array::as_string_array(&inputs),
            arrow::array::as_string_array(&tests),
        );
        let versions = arrow::array::as_primitive_array::<arrow::datatypes::Int64Type>(&versions);
        use arrow::array::Array;
        for row in 0..batch.num_rows() {
            let read: std::collections::BTreeMap<String, Option<u64>> = if inputs.is_null(row) {
                Default::default()
            } else {
                serde_json::from_str(inputs.value(row)).unwrap_or_default()
            };
            out.insert(
                models.value(row).to_string(),
                LastTested {
                    passed: statuses.value(row) == Status::Ok.name(),
                    version: (!versions.is_null(row)).then(|| versions.value(row) as u64),
                    inputs: read
                        .into_iter()
                        .filter_map(|(t, v)| Some((t, v?)))
                        .collect(),
                    tests: if tests.is_null(row) {
                        Default::default()
                    } else {
                        serde_json::from_str(tests.value(row)).unwrap_or_default()
                    },
                },
            );
        }
    }
    out
}
