//! Bad input: a clear error naming the file and line, never a panic, and the table left at its
//! last version.

use crate::common::{Backend, TestContext, fails};
use crate::s3_server::SECRET_KEY;
use crate::{on_both, snapshot};

fn bad_files(ctx: TestContext) {
    ctx.write("good.csv", "id,name\n1,a\n2,b\n");
    ctx.ok(&["ingest", "good.csv", "--table", "raw.t"]);
    let version = ctx.version("raw.t");

    // A row with too many fields.
    ctx.write("bad.csv", "id,name\n3,c\n4,d,extra\n");
    let err = ctx.fails(&["ingest", "bad.csv", "--table", "raw.t"]);
    snapshot!(ctx, "malformed_csv", err);

    // Broken JSON, in an array and in NDJSON.
    ctx.write("bad.json", "[\n  {\"id\": 5},\n  {\"id\": 6,,}\n]\n");
    let err = ctx.fails(&["ingest", "bad.json", "--table", "raw.t"]);
    snapshot!(ctx, "broken_json_array", err);
    ctx.write(
        "bad.ndjson",
        "{\"id\": 5, \"name\": \"e\"}\n{\"id\": 6, \"name\": \"f\"\n",
    );
    let err = ctx.fails(&["ingest", "bad.ndjson", "--table", "raw.t"]);
    snapshot!(ctx, "broken_ndjson", err);

    // A bad line past the inference sample, found while streaming.
    ctx.write(
        "late.ndjson",
        past_the_sample(
            "",
            400_000,
            |i| format!("{{\"id\": {i}, \"name\": \"n{i}\"}}"),
            "{\"id\": oops}",
        ),
    );
    let err = ctx.fails(&["ingest", "late.ndjson", "--table", "raw.t"]);
    assert!(err.contains("late.ndjson at line 400001"), "{err}");
    ctx.write(
        "late.csv",
        past_the_sample("id,name\n", 900_000, |i| format!("{i},n{i}"), "oops,x"),
    );
    let err = ctx.fails(&["ingest", "late.csv", "--table", "raw.t"]);
    assert!(
        err.contains("late.csv at line 900002: Error while parsing value 'oops'"),
        "{err}"
    );

    // A missing file, and an empty pattern.
    let err = ctx.fails(&["ingest", "nope.csv", "--table", "raw.t"]);
    snapshot!(ctx, "missing_file", err);
    let err = ctx.fails(&["ingest", "nothing/*.csv", "--table", "raw.t"]);
    assert!(
        err.contains("nothing/*.csv") && err.contains("matched no files"),
        "{err}"
    );

    // Two files that disagree on a column's shape.
    ctx.write("mix/a.json", "[{\"id\": 1, \"v\": [1]}]");
    ctx.write("mix/b.json", "[{\"id\": 2, \"v\": \"text\"}]");
    let err = ctx.fails(&["ingest", "mix", "--table", "raw.t"]);
    assert!(
        err.contains("column `v`") && err.contains("a.json") && err.contains("b.json"),
        "{err}"
    );

    // Bad names and flags.
    let err = ctx.fails(&["ingest", "good.csv", "--table", "raw.../../etc"]);
    assert!(err.contains("invalid table name"), "{err}");
    let err = ctx.fails(&["ingest", "good.csv", "--table", "raw.t", "--mode", "merge"]);
    assert!(err.contains("--key"), "{err}");
    let err = ctx.fails(&[
        "ingest", "good.csv", "--table", "raw.t", "--mode", "merge", "--key", "nope",
    ]);
    assert!(err.contains("no key column `nope`"), "{err}");
    ctx.write("nullkey.csv", "id,name\n3,z\n,y\n");
    let err = ctx.fails(&[
        "ingest",
        "nullkey.csv",
        "--table",
        "raw.t",
        "--mode",
        "merge",
        "--key",
        "id",
    ]);
    assert!(
        err.contains("key column `id` is null in input row 2"),
        "{err}"
    );

    assert_eq!(ctx.version("raw.t"), version);
    assert_eq!(
        ctx.csv("SELECT * FROM raw.t ORDER BY id"),
        "id,name\n1,a\n2,b\n"
    );
}
on_both!(bad_input_leaves_the_table_alone, bad_files);

/// A file longer than the 8 MiB inference sample whose last line is bad.
fn past_the_sample(head: &str, rows: usize, row: impl Fn(usize) -> String, bad: &str) -> String {
    let mut text = String::from(head);
    for i in 0..rows {
        text.push_str(&row(i));
        text.push('\n');
    }
    text.push_str(bad);
    text.push('\n');
    text
}

#[test]
fn unreachable_endpoint_and_bad_credentials() {
    let ctx = TestContext::new(Backend::S3);
    ctx.write("a.csv", "id\n1\n");
    ctx.ok(&["ingest", "a.csv", "--table", "raw.t"]);

    // Nothing listens on the port of a listener that was just dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = fails(ctx.lake().args([
        "--set",
        &format!("s3.endpoint=http://127.0.0.1:{port}"),
        "ingest",
        "a.csv",
        "--table",
        "raw.t",
    ]));
    assert!(
        err.contains("raw.t") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let out = ctx
        .lake()
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
        .env("LAKE_LOG", "debug")
        .args(["query", "SELECT * FROM raw.t"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: ") && (err.contains("403") || err.contains("SignatureDoesNotMatch")),
        "{err}"
    );
    // Secrets never appear, not even in debug logs.
    assert!(
        !err.contains("wrong-secret-value") && !err.contains(SECRET_KEY),
        "a secret leaked:\n{err}"
    );
    assert_eq!(ctx.version("raw.t"), 0);
}
