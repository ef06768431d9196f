//! Concurrent writers on S3. These catch a lost commit: with a conditional PUT that is not
//! atomic (`LAKE_TEST_S3_RACY=1`), two appends land as the same version and a batch vanishes.
//! The in-process test catches that on every run measured; the process tests in some runs.

use std::process::Child;

use crate::common::{Backend, TestContext};

const WRITERS: usize = 8;
const ROWS: usize = 50;

/// Starts WRITERS ingests at once; `round` keeps ids distinct across rounds.
fn spawn_writers(ctx: &TestContext, table: &str, round: usize) -> Vec<Child> {
    (0..WRITERS)
        .map(|w| {
            let mut body = String::from("writer,seq,id\n");
            for i in 0..ROWS {
                body.push_str(&format!("{w},{i},{}\n", (round * WRITERS + w) * ROWS + i));
            }
            let file = ctx.write(&format!("r{round}w{w}.csv"), body);
            let mut cmd = ctx.std_command();
            cmd.args(["--quiet", "ingest"])
                .arg(file)
                .args(["--table", table, "--mode", "append"]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("spawn lake")
        })
        .collect()
}

fn wait_all(children: Vec<Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a writer failed: {err}");
        assert!(!err.to_lowercase().contains("protocol changed"), "{err}");
    }
}

fn check(ctx: &TestContext, table: &str, rounds: usize, extra_rows: usize) {
    let expected = rounds * WRITERS * ROWS + extra_rows;
    assert_eq!(
        ctx.scalar(&format!("SELECT count(*) FROM {table}")),
        expected.to_string(),
        "rows lost or duplicated"
    );
    assert_eq!(
        ctx.scalar(&format!("SELECT count(DISTINCT id) FROM {table}")),
        expected.to_string()
    );
    assert_eq!(
        ctx.scalar(&format!(
            "SELECT count(DISTINCT writer) FROM {table} WHERE seq >= 0"
        )),
        WRITERS.to_string()
    );
}

#[test]
fn eight_appenders_into_an_existing_s3_table() {
    let ctx = TestContext::new(Backend::S3);
    ctx.write("seed.csv", "writer,seq,id\n-1,-1,-1\n");
    ctx.ok(&["ingest", "seed.csv", "--table", "raw.events"]);
    // Three rounds: a non-atomic conditional PUT loses a commit in some rounds, not all.
    const ROUNDS: usize = 3;
    for round in 0..ROUNDS {
        wait_all(spawn_writers(&ctx, "raw.events", round));
    }
    check(&ctx, "raw.events", ROUNDS, 1);
    assert_eq!(ctx.version("raw.events"), (ROUNDS * WRITERS) as u64);
}

#[test]
fn eight_creators_of_a_missing_s3_table() {
    let ctx = TestContext::new(Backend::S3);
    wait_all(spawn_writers(&ctx, "raw.created", 0));
    check(&ctx, "raw.created", 1, 0);
    assert_eq!(ctx.version("raw.created"), WRITERS as u64 - 1);
}

#[test]
fn eight_creators_of_a_missing_local_table() {
    let ctx = TestContext::new(Backend::Local);
    wait_all(spawn_writers(&ctx, "raw.created", 0));
    check(&ctx, "raw.created", 1, 0);
}

/// The same race inside one process, through the library: the eight writes start together, so
/// their commits collide far more often than eight processes' do.
#[test]
fn eight_concurrent_library_appends_lose_nothing() {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use futures::StreamExt;
    use lake::config::{Overrides, Settings};
    use lake::lake::Lake;
    use lake::lake::write::{BatchSource, SourceError, WriteMode, write};
    use lake::query::LakeSession;

    use crate::s3_server::{ACCESS_KEY, SECRET_KEY};

    struct Rows(SchemaRef, i64);
    impl BatchSource for Rows {
        fn schema(&self) -> SchemaRef {
            self.0.clone()
        }
        fn stream(&self) -> futures::stream::BoxStream<'static, Result<RecordBatch, SourceError>> {
            let ids = Int64Array::from_iter_values(self.1 * 10..self.1 * 10 + 10);
            let batch = RecordBatch::try_new(self.0.clone(), vec![Arc::new(ids)]).unwrap();
            futures::stream::iter([Ok(batch)]).boxed()
        }
    }

    let ctx = TestContext::new(Backend::S3);
    let settings = Settings::resolve(&Overrides::default(), Vec::new(), ctx.dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let lake = Lake::open(&settings)
            .await
            .unwrap()
            .with_storage_option("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .with_storage_option("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        let lake = Arc::new(lake);
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let table: lake::lake::TableName = "raw.lib".parse().unwrap();
        const ROUNDS: i64 = 5;
        for round in 0..ROUNDS {
            let writes = (0..WRITERS as i64).map(|w| {
                let (lake, table, schema) = (lake.clone(), table.clone(), schema.clone());
                tokio::spawn(async move {
                    let source = Arc::new(Rows(schema, round * WRITERS as i64 + w));
                    write(&lake, &table, source, &WriteMode::Append, &[]).await
                })
            });
            for outcome in futures::future::join_all(writes).await {
                outcome.unwrap().expect("a write failed");
            }
        }
        let session = LakeSession::new(lake.clone()).await.unwrap();
        let batches = session
            .sql("SELECT count(*) AS n, count(DISTINCT id) AS d FROM raw.lib")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let expected = (ROUNDS * WRITERS as i64 * 10).to_string();
        assert_eq!(
            text.matches(&expected).count(),
            2,
            "rows lost or duplicated:\n{text}"
        );
    });
    assert_eq!(ctx.version("raw.lib"), 5 * WRITERS as u64 - 1);
}
