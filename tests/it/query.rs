//! `lake query`, `lake shell`, `lake tables`, `lake describe` and `lake history`.

use crate::common::TestContext;
use crate::{on_both, snapshot};

fn formats(ctx: TestContext) {
    ctx.write(
        "a.csv",
        "id,name,day\n1,\"a, with comma\",2026-01-02\n2,b,2026-01-03\n",
    );
    ctx.ok(&["ingest", "a.csv", "--table", "raw.plays"]);
    let sql = "SELECT id, name, day FROM raw.plays ORDER BY id";
    snapshot!(ctx, "format_table", ctx.ok(&["query", sql]));
    snapshot!(
        ctx,
        "format_csv",
        ctx.ok(&["query", "--format", "csv", sql])
    );
    snapshot!(
        ctx,
        "format_json",
        ctx.ok(&["query", "--format", "json", sql])
    );
    snapshot!(
        ctx,
        "format_ndjson",
        ctx.ok(&["query", "--format", "ndjson", sql])
    );
    assert_eq!(
        ctx.ok(&[
            "query",
            "--format",
            "json",
            "SELECT * FROM raw.plays WHERE id > 5"
        ]),
        "[]\n"
    );
    snapshot!(
        ctx,
        "format_table_empty",
        ctx.ok(&["query", "SELECT id FROM raw.plays WHERE id > 5"])
    );

    ctx.ok(&["query", "--format", "csv", "--output", "out.csv", sql]);
    assert_eq!(
        std::fs::read_to_string(ctx.path("out.csv")).unwrap(),
        ctx.csv(sql)
    );
    ctx.write(
        "q.sql",
        "-- a comment\nSELECT count(*) AS n\nFROM raw.plays;\n",
    );
    assert_eq!(
        ctx.ok(&["query", "--format", "csv", "-f", "q.sql"]),
        "n\n2\n"
    );
}
on_both!(output_formats, formats);

fn time_travel(ctx: TestContext) {
    ctx.write("a.csv", "id\n1\n");
    ctx.ok(&["ingest", "a.csv", "--table", "raw.t"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ctx.write("b.csv", "id\n2\n3\n");
    ctx.ok(&["ingest", "b.csv", "--table", "raw.t"]);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.t"), "3");
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.\"t@v0\""), "1");
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.\"t@v1\""), "3");
    assert_eq!(
        ctx.scalar(&format!("SELECT count(*) FROM raw.\"t@{between}\"")),
        "1"
    );
    // Both states in one query.
    assert_eq!(
        ctx.scalar("SELECT (SELECT count(*) FROM raw.t) - (SELECT count(*) FROM raw.\"t@v0\")"),
        "2"
    );
    let err = ctx.fails(&["query", "SELECT * FROM raw.\"t@v9\""]);
    assert!(err.contains("raw.t") || err.contains("version"), "{err}");
    let err = ctx.fails(&["query", "SELECT * FROM raw.\"t@yesterday\""]);
    assert!(err.contains("after `@`"), "{err}");
}
on_both!(time_travel_by_version_and_time, time_travel);

fn sql_errors(ctx: TestContext) {
    ctx.write("a.csv", "id\n1\n");
    ctx.ok(&["ingest", "a.csv", "--table", "raw.t"]);
    snapshot!(
        ctx,
        "sql_syntax_error",
        ctx.fails(&["query", "SELECT id\nFROM raw.t\nWHERE id = = 1"])
    );
    snapshot!(
        ctx,
        "sql_unknown_column",
        ctx.fails(&["query", "SELECT nope FROM raw.t"])
    );
    snapshot!(
        ctx,
        "sql_unknown_table",
        ctx.fails(&["query", "SELECT * FROM raw.missing"])
    );
}
on_both!(sql_errors_show_position, sql_errors);

fn inspect(ctx: TestContext) {
    ctx.write("a.csv", "id,name\n1,a\n2,b\n");
    ctx.ok(&["ingest", "a.csv", "--table", "raw.one"]);
    ctx.ok(&["ingest", "a.csv", "--table", "raw.one"]);
    ctx.ok(&[
        "ingest",
        "a.csv",
        "--table",
        "curated.two",
        "--mode",
        "overwrite",
    ]);
    let tables = ctx.ok(&["tables"]);
    // Sizes differ by a few bytes between runs; compare the rest.
    let tables = regex::Regex::new(r"\d+(\.\d+)? (B|KiB)")
        .unwrap()
        .replace_all(&tables, "[SIZE]");
    snapshot!(ctx, "tables", tables);
    snapshot!(
        ctx,
        "describe",
        regex::Regex::new(r"\d+(\.\d+)? (B|KiB)")
            .unwrap()
            .replace_all(&ctx.ok(&["describe", "raw.one"]), "[SIZE]")
    );
    let history = ctx.ok(&["history", "raw.one"]);
    let history = regex::Regex::new(r#""execution_time_ms":\d+"#)
        .unwrap()
        .replace_all(&history, r#""execution_time_ms":[N]"#);
    snapshot!(ctx, "history", history);
    let err = ctx.fails(&["describe", "raw.nope"]);
    assert!(err.contains("table raw.nope does not exist"), "{err}");
}
on_both!(tables_describe_history, inspect);

fn shell(ctx: TestContext) {
    ctx.write("a.csv", "id,name\n1,a\n2,b\n");
    ctx.ok(&["ingest", "a.csv", "--table", "raw.s"]);
    let script = ".tables\n.schema raw.s\nSELECT name\nFROM raw.s\nORDER BY id;\n.timing off\nSELECT nope FROM raw.s;\nSELECT count(*) AS n FROM raw.s;\n.quit\n";
    let out = ctx
        .lake()
        .args(["shell", "--quiet"])
        .write_stdin(script)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    snapshot!(ctx, "shell_session", text);
}
on_both!(shell_session, shell);

/// `lake query ... | head -1`: the reader goes away early; that is no failure, and nothing is
/// printed about it.
#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::io::BufRead;
    let ctx = TestContext::new(crate::common::Backend::Local);
    for format in ["csv", "ndjson", "table"] {
        let mut child = ctx
            .std_command()
            .args(["query", "--format", format])
            .arg("SELECT value, repeat('x', 100) AS pad FROM generate_series(1, 200000)")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format}: {stderr}");
        assert!(!stderr.contains("error"), "{format}: {stderr}");
    }
}
