//! Concurrent writers on S3. These would catch a lost commit: with a conditional PUT that is not
//! atomic (`LAKE_TEST_S3_RACY=1`), two appends land as the same version and a batch vanishes.

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
