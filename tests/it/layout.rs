//! A table's layout: its rows sorted by the table's key, in files cut where the leading key
//! changes. lake's scan declares the order and the key ranges to DataFusion, so a window
//! partitioned by the key runs without a sort or a repartition. Later writes keep the key; an
//! append that overlaps ends the one sorted run, and `maintain` sorts the table again.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use lake::lake::layout::{Layout, sort_state};
use lake::lake::maintain::MaintainOptions;
use lake::lake::write::{MemorySource, WriteMode, write, write_laid_out};
use lake::lake::{Lake, TableName};
use lake::query::LakeSession;

use crate::common::TestContext;
use crate::on_both;

/// Plays `from..to`, in no useful order: 89 listeners, one play every 7 minutes or so; every
/// 1000th play has no listener.
fn plays(from: usize, to: usize) -> Arc<MemorySource> {
    plays_of(from, to, true)
}

fn plays_of(from: usize, to: usize, nulls: bool) -> Arc<MemorySource> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("listener", DataType::Utf8, true),
        Field::new(
            "ended_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("ms_played", DataType::Int64, true),
    ]));
    let start = 1_767_225_600_000_000i64; // 2026-01-01
    let batches = (from..to)
        .step_by(5_000)
        .map(|b| {
            let rows = b..(b + 5_000).min(to);
            let listener: StringArray = rows
                .clone()
                // Nulls sort last.
                .map(|i| (!nulls || i % 1000 != 7).then(|| format!("listener{:02}", (i * 31) % 89)))
                .collect();
            let ended: TimestampMicrosecondArray = rows
                .clone()
                .map(|i| Some(start + (i as i64 * 7919 % 50_000) * 420_000_000))
                .collect();
            let ms: Int64Array = rows.map(|i| Some((i as i64 * 37) % 240_000)).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(listener),
                    Arc::new(ended.with_timezone("UTC")),
                    Arc::new(ms),
                ],
            )
            .unwrap()
        })
        .collect();
    Arc::new(MemorySource { schema, batches })
}

/// Gaps between a listener's plays: a window partitioned by the sort key's leading column and
/// ordered by the rest.
const WINDOW: &str = "SELECT listener, ended_at, \
     ended_at - lag(ended_at) OVER (PARTITION BY listener ORDER BY ended_at) AS gap \
     FROM raw.plays";

const QUERIES: &[&str] = &[
    "SELECT * FROM (SELECT listener, ended_at, \
       ended_at - lag(ended_at) OVER (PARTITION BY listener ORDER BY ended_at) AS gap, \
       sum(ms_played) OVER (PARTITION BY listener ORDER BY ended_at ROWS UNBOUNDED PRECEDING) AS heard \
       FROM raw.plays) ORDER BY listener, ended_at, heard",
    "SELECT listener, count(*), sum(ms_played), min(ended_at) FROM raw.plays \
       GROUP BY listener ORDER BY listener",
    "SELECT listener, ms_played FROM raw.plays WHERE listener = 'listener42' \
       ORDER BY ended_at, ms_played",
    COALESCED,
];

/// Grouped by a coalesce of the key: the key itself where the table holds no nulls in it.
const COALESCED: &str = "SELECT coalesce(listener, 'nobody') AS who, CAST(ended_at AS DATE) AS day, \
     count(*) AS plays, count(DISTINCT ms_played) AS lengths FROM raw.plays \
     GROUP BY 1, 2 ORDER BY who, day";

/// The physical plan lake makes for `sql`.
async fn plan(lake: &Arc<Lake>, sql: &str) -> Arc<dyn ExecutionPlan> {
    let session = LakeSession::new(lake.clone()).await.unwrap();
    session
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

/// The operators of a plan, depth first.
fn operators(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut names = vec![plan.name().to_string()];
    for child in plan.children() {
        names.extend(operators(child));
    }
    names
}

/// Each query's answer through lake's session, and through delta-rs's provider of the same
/// version in a plain DataFusion session.
async fn same_answers(lake: &Arc<Lake>, name: &TableName) {
    let table = lake.table(name, None, None).await.unwrap();
    let theirs = SessionContext::new();
    theirs.sql("CREATE SCHEMA raw").await.unwrap();
    theirs
        .register_table("raw.plays", table.table_provider().await.unwrap())
        .unwrap();
    let session = LakeSession::new(lake.clone()).await.unwrap();
    for sql in QUERIES {
        let ours = session.sql(sql).await.unwrap().collect().await.unwrap();
        let expected = theirs.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&ours)
                .unwrap()
                .to_string(),
            arrow::util::pretty::pretty_format_batches(&expected)
                .unwrap()
                .to_string(),
            "{sql}"
        );
    }
}

/// Each file's listener range from its add action's statistics, in order of the range.
async fn listener_ranges(lake: &Lake, name: &TableName) -> Vec<(String, String, u64)> {
    let table = lake.table(name, None, None).await.unwrap();
    let mut ranges: Vec<(String, String, u64)> = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| {
            let stats: serde_json::Value = serde_json::from_str(&f.stats().unwrap()).unwrap();
            let text = |kind: &str| stats[kind]["listener"].as_str().unwrap_or("").to_string();
            let nulls = stats["nullCount"]["listener"].as_u64().unwrap();
            (text("minValues"), text("maxValues"), nulls)
        })
        .collect();
    ranges.sort();
    ranges
}

/// Writes `plays` sorted by listener and time, in small files, so that 40,000 rows make
/// several.
async fn write_by_listener(lake: &Lake, name: &TableName, plays: Arc<MemorySource>) {
    let layout = Layout {
        sort_by: vec!["listener".into(), "ended_at".into()],
        target_file_size: Some(48 * 1024),
        ..Layout::default()
    };
    write_laid_out(lake, name, plays, &WriteMode::Append, &[], &layout)
        .await
        .unwrap();
}

on_both!(
    a_sorted_table_is_read_in_key_order_without_a_sort_or_a_repartition,
    sorted_table_on
);
fn sorted_table_on(ctx: TestContext) {
    let lake = Arc::new(crate::lease::open(&ctx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name = TableName::new("raw", "plays").unwrap();
        write_by_listener(&lake, &name, plays(0, 40_000)).await;

        // Files of about the target size, none sharing a listener with another, the nulls in
        // the last.
        let ranges = listener_ranges(&lake, &name).await;
        assert!(ranges.len() >= 4, "{ranges:?}");
        for pair in ranges.windows(2) {
            assert!(pair[0].1 < pair[1].0, "overlapping files: {ranges:?}");
        }
        let nulls: Vec<u64> = ranges.iter().map(|r| r.2).collect();
        assert_eq!(nulls.iter().sum::<u64>(), 40, "{ranges:?}");
        let table = lake.table(&name, None, None).await.unwrap();
        let state = sort_state(&table).unwrap().unwrap();
        assert_eq!(state.key, ["listener", "ended_at"]);
        assert_eq!(state.sorted_files, state.files);
        assert!(state.one_run);

        // The window reads the files' order and their key ranges.
        let window = operators(&plan(&lake, WINDOW).await);
        assert!(
            !window
                .iter()
                .any(|o| o == "SortExec" || o == "RepartitionExec"),
            "{window:?}"
        );
        same_answers(&lake, &name).await;

        // A plain append keeps the table's key, but its file overlaps the others.
        write(&lake, &name, plays(40_000, 46_000), &WriteMode::Append, &[])
            .await
            .unwrap();
        let table = lake.table(&name, None, None).await.unwrap();
        let state = sort_state(&table).unwrap().unwrap();
        assert_eq!(state.sorted_files, state.files);
        assert!(!state.one_run);
        let window = operators(&plan(&lake, WINDOW).await);
        assert!(window.iter().any(|o| o == "SortExec"), "{window:?}");
        same_answers(&lake, &name).await;

        // Maintenance sorts the table again, into one run.
        let report = lake
            .maintain(
                &name,
                &MaintainOptions {
                    target_file_size: Some(48 * 1024),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(report.compacted.0 > 0, "{report:?}");
        let table = lake.table(&name, None, None).await.unwrap();
        assert!(sort_state(&table).unwrap().unwrap().one_run);
        let ranges = listener_ranges(&lake, &name).await;
        for pair in ranges.windows(2) {
            assert!(pair[0].1 < pair[1].0, "overlapping files: {ranges:?}");
        }
        let window = operators(&plan(&lake, WINDOW).await);
        assert!(!window.iter().any(|o| o == "SortExec"), "{window:?}");
        same_answers(&lake, &name).await;
    });
}

on_both!(
    a_coalesce_of_a_key_without_nulls_groups_in_key_order,
    coalesce_on
);
fn coalesce_on(ctx: TestContext) {
    let lake = Arc::new(crate::lease::open(&ctx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name = TableName::new("raw", "plays").unwrap();
        write_by_listener(&lake, &name, plays_of(0, 40_000, false)).await;
        // The statistics show no nulls: both aggregates stream in the files' order, split by
        // the files' key ranges, with nothing sorted or repartitioned.
        let plan = plan(&lake, COALESCED).await;
        let text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let aggregates: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("AggregateExec"))
            .collect();
        assert_eq!(aggregates.len(), 2, "{text}");
        assert!(
            aggregates.iter().all(|l| l.contains("ordering_mode=")),
            "{text}"
        );
        assert!(
            !operators(&plan)
                .iter()
                .any(|o| o == "SortExec" || o == "RepartitionExec"),
            "{text}"
        );
        same_answers(&lake, &name).await;
    });
}

#[test]
fn ingest_sort_by_names_the_key_and_describe_shows_it() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    let mut csv = String::from("listener,ended_at,ms_played\n");
    for i in 0..300 {
        csv.push_str(&format!(
            "l{},2026-01-01T00:{:02}:00Z,{}\n",
            (i * 7) % 13,
            i % 60,
            i
        ));
    }
    let file = ctx.write("plays.csv", csv);
    let file = file.to_str().unwrap();
    ctx.ok(&[
        "ingest",
        file,
        "-t",
        "raw.plays",
        "--sort-by",
        "listener,ended_at",
    ]);
    let described = ctx.ok(&["describe", "raw.plays"]);
    assert!(
        described.contains("listener, ended_at (1 file; one sorted run)"),
        "{described}"
    );
    // The rows come back in the key's order without an ORDER BY of the key's leading column
    // being needed for the first listener.
    assert_eq!(
        ctx.scalar("SELECT listener FROM raw.plays LIMIT 1"),
        "l0",
        "sorted by listener"
    );
    let err = ctx.fails(&["ingest", file, "-t", "raw.other", "--sort-by", "nope"]);
    assert!(
        err.contains("raw.other") && err.contains("the sort key column `nope`"),
        "{err}"
    );
}

on_both!(
    bloom_filters_of_the_key_tell_which_keys_a_table_holds,
    bloom_on
);
fn bloom_on(ctx: TestContext) {
    use arrow::array::Array;
    use lake::lake::keys::holds_any;
    use lake::lake::layout::table_keys;
    let lake = Arc::new(crate::lease::open(&ctx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name = TableName::new("raw", "plays").unwrap();
        let key: Vec<String> = vec!["listener".into(), "ended_at".into()];
        let layout = Layout {
            sort_by: vec!["ended_at".into()],
            target_file_size: Some(48 * 1024),
            keys: key.clone(),
            span: None,
        };
        write_laid_out(
            &lake,
            &name,
            plays(0, 40_000),
            &WriteMode::Append,
            &[],
            &layout,
        )
        .await
        .unwrap();
        let lookup = async |columns: &[String], rows: Arc<MemorySource>| {
            let table = lake.table(&name, None, None).await.unwrap();
            holds_any(&table, columns, &rows.batches)
                .await
                .unwrap()
                .unwrap()
        };
        let table = lake.table(&name, None, None).await.unwrap();
        assert_eq!(table_keys(&table), key);

        // Keys the table holds are found; keys it lacks are ruled out by the filters, without
        // reading a row group.
        let held = lookup(&key, plays(12_345, 12_346)).await;
        assert!(held.held, "{held:?}");
        assert!(held.row_groups_read >= 1, "{held:?}");
        let absent = lookup(&key, plays(40_000, 41_000)).await;
        assert!(!absent.held, "{absent:?}");
        assert!(absent.row_groups >= 4, "{absent:?}");
        assert_eq!(absent.row_groups_read, 0, "{absent:?}");
        // A null in a key matches nothing, though the table holds nulls there.
        let null = plays(7, 8);
        assert!(null.batches[0].column(0).is_null(0));
        assert!(!lookup(&key, null).await.held);

        // A column without a filter is read, and compared exactly.
        let ms = vec!["ms_played".to_string()];
        let found = lookup(&ms, plays(3, 4)).await;
        assert!(found.held && found.row_groups_read >= 1, "{found:?}");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ms_played",
            DataType::Int64,
            true,
        )]));
        let none = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![240_001]))],
        )
        .unwrap();
        let missing = lookup(
            &ms,
            Arc::new(MemorySource {
                schema,
                batches: vec![none],
            }),
        )
        .await;
        assert!(!missing.held);
        assert_eq!(missing.row_groups_read, missing.row_groups);

        // A later append, and the table sorted again, keep the filters.
        write(&lake, &name, plays(40_000, 46_000), &WriteMode::Append, &[])
            .await
            .unwrap();
        assert!(lookup(&key, plays(40_500, 40_501)).await.held);
        lake.maintain(
            &name,
            &MaintainOptions {
                target_file_size: Some(48 * 1024),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let table = lake.table(&name, None, None).await.unwrap();
        assert_eq!(table_keys(&table), key);
        let absent = lookup(&key, plays(46_000, 47_000)).await;
        assert!(!absent.held && absent.row_groups_read == 0, "{absent:?}");
        assert!(lookup(&key, plays(45_999, 46_000)).await.held);
    });
}

on_both!(no_file_crosses_a_month_with_files_by, files_by_on);
fn files_by_on(ctx: TestContext) {
    use lake::lake::layout::{FileSpan, table_span};
    let lake = Arc::new(crate::lease::open(&ctx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name = TableName::new("raw", "plays").unwrap();
        let layout = Layout::sorted_by(["ended_at"]).with_span(Some(FileSpan::Month));
        write_laid_out(
            &lake,
            &name,
            plays(0, 40_000),
            &WriteMode::Append,
            &[],
            &layout,
        )
        .await
        .unwrap();
        // The plays span eight months and a bit (2026-01 to 2026-09-01): a file for each, in
        // one run.
        let months = async || {
            let table = lake.table(&name, None, None).await.unwrap();
            assert_eq!(table_span(&table), Some(FileSpan::Month));
            let state = sort_state(&table).unwrap().unwrap();
            assert!(state.one_run);
            let mut months: Vec<(String, String)> = table
                .snapshot()
                .unwrap()
                .log_data()
                .iter()
                .map(|f| {
                    let stats: serde_json::Value =
                        serde_json::from_str(&f.stats().unwrap()).unwrap();
                    let month =
                        |kind: &str| stats[kind]["ended_at"].as_str().unwrap()[..7].to_string();
                    (month("minValues"), month("maxValues"))
                })
                .collect();
            months.sort();
            months
        };
        let one_file_a_month = |files: &[(String, String)]| {
            assert!(files.iter().all(|(a, b)| a == b), "{files:?}");
            assert!(files.windows(2).all(|w| w[0].0 < w[1].0), "{files:?}");
        };
        let before = months().await;
        assert!(before.len() >= 8, "{before:?}");
        one_file_a_month(&before);
        same_answers(&lake, &name).await;

        // An append inherits the span, and maintenance keeps it.
        write(&lake, &name, plays(40_000, 46_000), &WriteMode::Append, &[])
            .await
            .unwrap();
        lake.maintain(&name, &MaintainOptions::default())
            .await
            .unwrap();
        let after = months().await;
        assert!(after.len() >= before.len(), "{after:?}");
        one_file_a_month(&after);
        same_answers(&lake, &name).await;
    });
}

#[test]
fn files_by_needs_a_sort_key() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    ctx.write(
        "queries/m.sql",
        "/* lake\nfiles_by = \"month\"\n*/\nSELECT now() AS at",
    );
    let err = ctx.fails(&["run"]);
    assert!(
        err.contains("`files_by` cuts files by a span of the leading `sort_by` column"),
        "{err}"
    );
    ctx.write(
        "queries/m.sql",
        "/* lake\nsort_by = [\"at\"]\nfiles_by = \"week\"\n*/\nSELECT now() AS at",
    );
    let err = ctx.fails(&["run"]);
    assert!(err.contains("week") && err.contains("month"), "{err}");
}
