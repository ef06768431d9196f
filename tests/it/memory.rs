//! Bounded memory: a window, a grouped count(DISTINCT), a large sort and a join of two large
//! sides, and a model, under `memory_limit = "64MiB"` over two million rows, give the answers
//! of an unlimited session; the limited ones spill, and no spill folder is left behind.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::physical_plan::{ExecutionPlan, collect};
use lake::config::{Overrides, Settings};
use lake::lake::write::{MemorySource, WriteMode, write};
use lake::lake::{Lake, TableName};
use lake::query::LakeSession;

use crate::common::{Backend, TestContext};

const ROWS: usize = 2_000_000;
const BATCH: usize = 65_536;

/// `raw.plays`: 997 listeners, 50,000 tracks, two months of plays.
async fn plays(lake: &Lake, total: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("listener", DataType::Utf8, true),
        Field::new(
            "ended_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("track_id", DataType::Utf8, true),
        Field::new("ms_played", DataType::Int64, true),
    ]));
    let start = 1_767_225_600_000_000i64; // 2026-01-01
    let batches = (0..total)
        .step_by(BATCH)
        .map(|from| {
            let rows = from..(from + BATCH).min(total);
            let listener: StringArray = rows
                .clone()
                .map(|i| Some(format!("listener{:03}", i % 997)))
                .collect();
            let ended: TimestampMicrosecondArray = rows
                .clone()
                .map(|i| Some(start + (i as i64 * 2_591_000) % 5_184_000_000_000))
                .collect();
            // Every 50th play has no track: count(DISTINCT) leaves nulls out.
            let track: StringArray = rows
                .clone()
                .map(|i| (i % 50 != 0).then(|| format!("track{:05}", (i * 7919) % 50_000)))
                .collect();
            let ms: Int64Array = rows.map(|i| Some((i as i64 * 37) % 240_000)).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(listener),
                    Arc::new(ended.with_timezone("UTC")),
                    Arc::new(track),
                    Arc::new(ms),
                ],
            )
            .unwrap()
        })
        .collect();
    let name = TableName::new("raw", "plays").unwrap();
    let source = Arc::new(MemorySource { schema, batches });
    write(lake, &name, source, &WriteMode::Append, &[])
        .await
        .unwrap();
}

const QUERIES: &[&str] = &[
    // Sessions per listener: two windows partitioned by listener.
    "SELECT listener, max(session) AS sessions, count(*) AS plays FROM ( \
       SELECT listener, sum(CASE WHEN gap IS NULL OR gap > INTERVAL '30 minutes' THEN 1 ELSE 0 END) \
         OVER (PARTITION BY listener ORDER BY ended_at ROWS UNBOUNDED PRECEDING) AS session \
       FROM (SELECT listener, ended_at, \
               ended_at - lag(ended_at) OVER (PARTITION BY listener ORDER BY ended_at) AS gap \
             FROM raw.plays)) \
     GROUP BY listener ORDER BY listener",
    // Distinct tracks per listener and day.
    "SELECT count(*) AS groups, sum(tracks) AS tracks, sum(plays) AS plays, max(tracks) AS most FROM ( \
       SELECT listener, date_trunc('day', ended_at) AS day, count(DISTINCT track_id) AS tracks, \
              count(*) AS plays \
       FROM raw.plays GROUP BY 1, 2)",
    // A sort of every row.
    "SELECT sum(rn * (ms_played % 1000)) AS weighted FROM ( \
       SELECT ms_played, row_number() OVER (ORDER BY track_id, ended_at, listener) AS rn \
       FROM raw.plays)",
    // A join of two large sides.
    "SELECT count(*) AS pairs, sum(a.ms_played - b.ms_played) AS diff \
     FROM raw.plays a JOIN raw.plays b ON a.listener = b.listener AND a.ended_at = b.ended_at",
];

/// The lake with `--set`s.
async fn open(ctx: &TestContext, set: &[String]) -> Arc<Lake> {
    let overrides = Overrides {
        set: set.to_vec(),
        ..Default::default()
    };
    let settings = Settings::resolve(&overrides, Vec::new(), ctx.dir.path()).unwrap();
    Arc::new(Lake::open(&settings).await.unwrap())
}

/// Runs a query; its answer as text, and how many times its operators spilled.
async fn answer(lake: &Arc<Lake>, sql: &str) -> (String, usize) {
    let session = LakeSession::new(lake.clone()).await.unwrap();
    let plan = session
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let batches = collect(plan.clone(), session.context().task_ctx())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    fn spills(plan: &Arc<dyn ExecutionPlan>) -> usize {
        plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0)
            + plan.children().into_iter().map(spills).sum::<usize>()
    }
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    (text, spills(&plan))
}

fn spill_folders(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("lake-spill-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn queries_and_a_model_under_64_mib_answer_as_unlimited_and_leave_no_spill_files() {
    let ctx = TestContext::new(Backend::Local);
    let spill = ctx.path("spill");
    let limited = vec![
        "query.memory_limit=64MiB".to_string(),
        format!("query.spill_dir={}", spill.display()),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let unlimited = open(&ctx, &[]).await;
        plays(&unlimited, ROWS).await;
        let small = open(&ctx, &limited).await;
        assert_eq!(small.sessions().memory_limit(), 64 << 20);
        let mut spilled = 0;
        for sql in QUERIES {
            let (expected, _) = answer(&unlimited, sql).await;
            let (got, spills) = answer(&small, sql).await;
            assert_eq!(got, expected, "{sql}");
            spilled += spills;
        }
        assert!(spilled > 0, "nothing spilled under 64 MiB");
        // While the lake is open, its folder is there; when it is gone, so is the folder.
        assert_eq!(spill_folders(&spill).len(), 1);
        drop(small);
        assert_eq!(spill_folders(&spill), Vec::<String>::new());
    });

    // A model through the binary, under the same limit: its table equals the query's answer.
    let model = "SELECT listener, date_trunc('day', ended_at) AS day, \
                 count(DISTINCT track_id) AS tracks, count(*) AS plays, sum(ms_played) AS ms \
                 FROM raw.plays GROUP BY 1, 2";
    ctx.write("queries/daily.sql", model);
    let mut run = ctx.lake();
    run.args(["run"]);
    for s in &limited {
        run.args(["--set", s]);
    }
    crate::common::succeeds(&mut run);
    let order = " ORDER BY listener, day";
    let built = ctx.csv(&format!("SELECT * FROM curated.daily{order}"));
    let expected = ctx.csv(&format!("SELECT * FROM ({model}){order}"));
    assert_eq!(built.lines().count(), 997 * 60 + 1);
    assert!(
        built == expected,
        "the model's table differs from its query's answer"
    );
    // The counts are integers, not decimals.
    let types = ctx.csv(
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_name = 'daily' AND column_name IN ('tracks', 'plays') ORDER BY 1",
    );
    assert_eq!(types, "column_name,data_type\nplays,Int64\ntracks,Int64\n");
    assert_eq!(spill_folders(&spill), Vec::<String>::new());
}

/// What cannot finish inside the limit fails, naming the limit and the setting.
#[test]
fn a_query_that_cannot_fit_names_the_limit_and_the_setting() {
    let ctx = TestContext::new(Backend::Local);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { plays(open(&ctx, &[]).await.as_ref(), 200_000).await });
    let err = ctx.fails(&[
        "query",
        "--set",
        "query.memory_limit=256KiB",
        "SELECT listener, track_id FROM raw.plays ORDER BY track_id, ended_at",
    ]);
    assert!(
        err.contains("[query] memory_limit = 256.0 KiB") && err.contains("LAKE_QUERY_MEMORY_LIMIT"),
        "{err}"
    );
    assert!(!err.contains("runtime.memory_limit"), "{err}");
}
