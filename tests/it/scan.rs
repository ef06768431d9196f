//! lake's own scan (`lake::lake::scan`) answers as delta-rs's provider does, for the same
//! version of a table: every type with nulls, a column added later, partitions (with a null
//! partition), earlier versions, filters that prune, and a table another Delta writer made.
//! On a local folder and on S3.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use lake::lake::scan::{LakeScan, provider};
use lake::lake::write::{MemorySource, WriteMode, write};
use lake::lake::{Lake, TableName};

use crate::common::TestContext;
use crate::on_both;

fn batch(n: usize, offset: i64, extra: bool) -> RecordBatch {
    let null = |i: usize| i % 4 == 3;
    let mut fields = vec![
        Field::new("i8", DataType::Int8, true),
        Field::new("i16", DataType::Int16, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("i64", DataType::Int64, true),
        Field::new("f32", DataType::Float32, true),
        Field::new("f64", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("d", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("dec", DataType::Decimal128(10, 2), true),
        Field::new(
            "list",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            true,
        ),
        Field::new(
            "st",
            DataType::Struct(vec![Field::new("x", DataType::Int64, true)].into()),
            true,
        ),
    ];
    let rows = 0..n;
    let k = |i: usize| offset + i as i64;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int8Array::from_iter(
            rows.clone()
                .map(|i| (!null(i)).then_some((k(i) % 100) as i8)),
        )),
        Arc::new(Int16Array::from_iter(
            rows.clone().map(|i| (!null(i)).then_some(k(i) as i16)),
        )),
        Arc::new(Int32Array::from_iter(
            rows.clone().map(|i| (!null(i)).then_some(k(i) as i32)),
        )),
        Arc::new(Int64Array::from_iter(rows.clone().map(|i| Some(k(i))))),
        Arc::new(Float32Array::from_iter(
            rows.clone()
                .map(|i| (!null(i)).then_some(k(i) as f32 / 3.0)),
        )),
        Arc::new(Float64Array::from_iter(
            rows.clone()
                .map(|i| (!null(i)).then_some(k(i) as f64 / 7.0)),
        )),
        Arc::new(StringArray::from_iter(rows.clone().map(|i| {
            // Some long strings: a bound Delta may truncate.
            (!null(i)).then(|| format!("{}-{}", "x".repeat(i % 40), k(i)))
        }))),
        Arc::new(BooleanArray::from_iter(
            rows.clone().map(|i| (!null(i)).then_some(i % 2 == 0)),
        )),
        Arc::new(Date32Array::from_iter(
            rows.clone()
                .map(|i| (!null(i)).then_some(20_000 + k(i) as i32)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                rows.clone()
                    .map(|i| (!null(i)).then_some(1_767_225_600_000_000 + k(i) * 1_234_567)),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(
            Decimal128Array::from_iter(
                rows.clone()
                    .map(|i| (!null(i)).then_some(k(i) as i128 * 101)),
            )
            .with_precision_and_scale(10, 2)
            .unwrap(),
        ),
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            rows.clone()
                .map(|i| (!null(i)).then(|| vec![Some(k(i) as i32), None])),
        )),
        Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Int64, true)),
            Arc::new(Int64Array::from_iter(
                rows.clone().map(|i| (i % 3 != 0).then_some(k(i))),
            )) as ArrayRef,
        )])),
    ];
    if extra {
        fields.push(Field::new("added", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter(
            rows.map(|i| Some(format!("new{i}"))),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

async fn answer(provider: Arc<dyn TableProvider>, sql: &str) -> String {
    let ctx = SessionContext::new();
    ctx.register_table("t", provider).unwrap();
    let df = ctx.sql(sql).await.unwrap();
    // delta-rs gives string partition values as dictionaries, lake's scan as the column's
    // own type: the same values.
    let schema =
        format!("{:?}", df.schema().as_arrow()).replace("Dictionary(UInt16, Utf8)", "Utf8View");
    let batches = df.collect().await.unwrap();
    format!(
        "{schema}\n{}",
        arrow::util::pretty::pretty_format_batches(&batches).unwrap()
    )
}

/// Each query, through lake's scan and delta-rs's, on `table` as it is.
async fn same_answers(table: &DeltaTable, queries: &[&str]) {
    assert!(
        LakeScan::try_new(table, None).unwrap().is_some(),
        "lake's scan reads this table"
    );
    for sql in queries {
        let ours = answer(provider(table, None).await.unwrap(), sql).await;
        let theirs = answer(table.table_provider().await.unwrap(), sql).await;
        if ours != theirs {
            let (a, b) = ours
                .lines()
                .zip(theirs.lines())
                .find(|(a, b)| a != b)
                .unwrap_or(("(shorter)", "(longer)"));
            panic!(
                "{sql} at version {:?}: lake's scan\n{a}\ndelta-rs\n{b}",
                table.version()
            );
        }
    }
}

const QUERIES: &[&str] = &[
    "SELECT * FROM t ORDER BY i64",
    "SELECT i64, s, ts FROM t WHERE i64 BETWEEN 500 AND 520 ORDER BY i64",
    "SELECT count(*), count(s), min(s), max(s), min(ts), max(ts), sum(dec) FROM t",
    "SELECT i64 FROM t WHERE s > 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' ORDER BY i64",
    "SELECT i64, d FROM t WHERE d = DATE '2024-10-01' OR ts < TIMESTAMP '2026-01-01T00:00:02Z' ORDER BY i64",
];

on_both!(
    lakes_scan_answers_as_delta_rs,
    lakes_scan_answers_as_delta_rs_on
);
fn lakes_scan_answers_as_delta_rs_on(ctx: TestContext) {
    let lake: Lake = crate::lease::open(&ctx);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Three writes: two files of the first shape, then one with a column added.
        let name = TableName::new("raw", "typed").unwrap();
        for (offset, extra) in [(0, false), (1000, false), (2000, true)] {
            let b = batch(700, offset, extra);
            let source = Arc::new(MemorySource {
                schema: b.schema(),
                batches: vec![b],
            });
            write(&lake, &name, source, &WriteMode::Append, &[])
                .await
                .unwrap();
        }
        for version in [0, 1, 2] {
            let table = lake.table(&name, Some(version), None).await.unwrap();
            same_answers(&table, QUERIES).await;
        }
        let latest = lake.table(&name, None, None).await.unwrap();
        same_answers(
            &latest,
            &["SELECT i64, added FROM t WHERE added IS NOT NULL OR i64 < 3 ORDER BY i64"],
        )
        .await;
        // Partitioned by a string and a date, with a null partition, by another writer:
        // delta-rs directly, without lake's write path.
        let b = batch(500, 0, false);
        let part = RecordBatch::try_new(
            Arc::new(Schema::new(
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .chain([
                        Field::new("region", DataType::Utf8, true),
                        Field::new("day", DataType::Date32, true),
                    ])
                    .collect::<Vec<_>>(),
            )),
            b.columns()
                .iter()
                .cloned()
                .chain([
                    Arc::new(StringArray::from_iter((0..500).map(|i| {
                        (i % 5 != 4).then(|| ["eu", "us", "a p/a%c"][i % 3].to_string())
                    }))) as ArrayRef,
                    Arc::new(Date32Array::from_iter(
                        (0..500).map(|i| Some(20_000 + (i % 4) as i32)),
                    )),
                ])
                .collect(),
        )
        .unwrap();
        let table = lake
            .table_or_new(&TableName::new("raw", "foreign").unwrap())
            .await
            .unwrap();
        let table = table
            .write(vec![part])
            .with_partition_columns(["region", "day"])
            .await
            .unwrap();
        same_answers(
            &table,
            &[
                "SELECT * FROM t ORDER BY i64",
                "SELECT region, day, count(*) FROM t GROUP BY region, day ORDER BY region, day",
                "SELECT i64 FROM t WHERE region = 'eu' AND day > DATE '2024-10-02' ORDER BY i64",
                "SELECT i64 FROM t WHERE region IS NULL ORDER BY i64",
            ],
        )
        .await;
    });
}
