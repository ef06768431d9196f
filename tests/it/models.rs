//! `lake plan`: models in queries/, their headers, dependencies, order and errors.

use crate::common::{Backend, TestContext};
use crate::snapshot;

fn project() -> TestContext {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("plays.csv", "played_at,track\n2026-01-01T00:00:00Z,a\n");
    ctx.ok(&["ingest", "plays.csv", "--table", "raw.plays"]);
    ctx
}

#[test]
fn plan_orders_models_by_what_they_read() {
    let ctx = project();
    ctx.write(
        "queries/marts/top.sql",
        "SELECT track, sum(n) AS n FROM curated.daily GROUP BY track",
    );
    ctx.write(
        "queries/daily.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"day\", \"track\"]\ntags = [\"daily\"]\n*/\nWITH p AS (SELECT * FROM curated.plays)\nSELECT date_trunc('day', played_at) AS day, track, count(*) AS n FROM p GROUP BY 1, 2",
    );
    ctx.write(
        "queries/plays.sql",
        "/* lake\ndescription = \"Every play.\"\n*/\nSELECT * FROM raw.plays",
    );
    let out = ctx.ok(&["plan"]);
    snapshot!(ctx, "plan", out);
}

#[test]
fn model_errors_name_file_line_and_column() {
    let ctx = project();
    ctx.write(
        "queries/a.sql",
        "SELECT *\nFROM raw.plays JOIN raw.nope USING (track)",
    );
    let err = ctx.fails(&["plan"]);
    assert!(
        err.contains("raw.nope in queries/a.sql:2:21") && err.contains("no model makes it"),
        "{err}"
    );

    ctx.write(
        "queries/a.sql",
        "/* lake\nmaterialized = \"table\"\nmaterialised = \"view\"\n*/\nSELECT 1",
    );
    let err = ctx.fails(&["plan"]);
    assert!(
        err.contains("queries/a.sql:3:1") && err.contains("materialised"),
        "{err}"
    );

    ctx.write("queries/a.sql", "SELECT * FROM curated.b");
    ctx.write("queries/b.sql", "SELECT * FROM curated.c");
    ctx.write("queries/c.sql", "SELECT * FROM curated.a");
    let err = ctx.fails(&["plan"]);
    assert!(
        err.contains("cycle: curated.a -> curated.b -> curated.c -> curated.a"),
        "{err}"
    );
}

/// Runs `lake` in the test's project whatever the outcome.
fn run(ctx: &TestContext, args: &[&str]) -> (bool, String, String) {
    crate::common::outcome(ctx.lake().args(args))
}

fn run_with_env(ctx: &TestContext, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = ctx.lake();
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::common::outcome(cmd.args(args))
}

/// A project over raw.events: an incremental model, a table reading it, a view, and a table
/// reading the view.
fn pipeline(ctx: &TestContext) {
    ctx.write(
        "events.csv",
        "id,user_name,at,amount\n1,ann,2026-01-01T10:00:00Z,5\n2,bob,2026-01-01T11:00:00Z,7\n3,ann,2026-01-02T09:00:00Z,1\n",
    );
    ctx.ok(&["ingest", "events.csv", "--table", "raw.events"]);
    ctx.write(
        "queries/events.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n[[tests]]\nunique = [\"id\"]\n*/\nSELECT id, user_name, CAST(at AS TIMESTAMP) AS at, amount FROM raw.events",
    );
    ctx.write(
        "queries/daily.sql",
        "/* lake\ntags = [\"daily\"]\npartition_by = [\"day\"]\n*/\nSELECT CAST(at AS DATE) AS day, count(*) AS n, sum(amount) AS amount FROM curated.events GROUP BY 1",
    );
    ctx.write(
        "queries/big_spenders.sql",
        "/* lake\nmaterialized = \"view\"\n*/\nSELECT user_name, sum(amount) AS amount FROM curated.events GROUP BY user_name HAVING sum(amount) > 6",
    );
    ctx.write(
        "queries/marts/spenders.sql",
        "SELECT count(*) AS spenders FROM curated.big_spenders",
    );
}

fn runs_every_materialization(ctx: TestContext) {
    pipeline(&ctx);
    let out = ctx.ok(&["run", "--threads", "2"]);
    for line in [
        "ok           curated.events",
        "ok           curated.daily",
        "ok           curated.big_spenders",
        "ok           marts.spenders",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    assert_eq!(ctx.scalar("SELECT count(*) FROM curated.events"), "3");
    assert_eq!(
        ctx.scalar("SELECT amount FROM curated.daily WHERE day = DATE '2026-01-01'"),
        "12"
    );
    // The view is stored in the lake, so ad-hoc queries see it too.
    assert_eq!(ctx.scalar("SELECT spenders FROM marts.spenders"), "1");
    assert_eq!(
        ctx.csv("SELECT user_name, amount FROM curated.big_spenders ORDER BY 1"),
        "user_name,amount\nbob,7\n"
    );

    // Nothing new: the incremental model reads nothing and commits nothing.
    let version = ctx.version("curated.events");
    let out = ctx.ok(&["run", "--select", "events"]);
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(ctx.version("curated.events"), version);

    // New rows, one of them late (an old timestamp) and one an update of id 3: the exact
    // versions read last time, not times, say what is new.
    ctx.write(
        "more.csv",
        "id,user_name,at,amount\n4,cid,2025-12-31T23:00:00Z,2\n3,ann,2026-01-02T09:00:00Z,5\n",
    );
    ctx.ok(&["ingest", "more.csv", "--table", "raw.events"]);
    let plan = ctx.ok(&["plan", "--select", "events"]);
    assert!(
        plan.contains("raw.events@v1 (new since v0, 1 file)"),
        "{plan}"
    );
    let out = ctx.ok(&["run"]);
    assert!(out.contains("1 inserted, 1 updated"), "{out}");
    assert_eq!(ctx.scalar("SELECT count(*) FROM curated.events"), "4");
    assert_eq!(
        ctx.scalar("SELECT amount FROM curated.events WHERE id = 3"),
        "5"
    );
    assert_eq!(ctx.scalar("SELECT spenders FROM marts.spenders"), "2");

    // The cursor is in the model's commit.
    let history = ctx.ok(&["history", "curated.events", "-n", "1"]);
    assert!(history.contains("MERGE"), "{history}");

    // --full-refresh rebuilds from every input row.
    let out = ctx.ok(&["run", "--select", "events", "--full-refresh"]);
    assert!(
        out.contains("4 rows") && out.contains("full refresh"),
        "{out}"
    );
    // Two versions of id 3 came in: one is kept, and the output says so.
    assert!(
        out.contains("1 key had several rows; one was kept"),
        "{out}"
    );
    assert_eq!(ctx.scalar("SELECT count(*) FROM curated.events"), "4");

    // A changed SELECT rebuilds too, with its new columns.
    ctx.write(
        "queries/events.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n*/\nSELECT id, upper(user_name) AS user_name, amount * 2 AS amount FROM raw.events",
    );
    let out = ctx.ok(&["run", "--select", "events"]);
    assert!(out.contains("the SQL changed"), "{out}");
    assert_eq!(
        ctx.scalar("SELECT amount FROM curated.events WHERE id = 4"),
        "4"
    );
    assert_eq!(
        ctx.scalar(
            "SELECT count(*) FILTER (WHERE status = 'started') || '/' || count(*) FILTER (WHERE status = 'ok') FROM _lake.runs WHERE model IS NULL"
        ),
        "5/5"
    );

    // New keys only: appended without reading the table (no merge), reported as inserts.
    ctx.write(
        "newer.csv",
        "id,user_name,at,amount\n5,dee,2026-01-03T09:00:00Z,3\n",
    );
    ctx.ok(&["ingest", "newer.csv", "--table", "raw.events"]);
    let out = ctx.ok(&["run", "--select", "events"]);
    assert!(out.contains("1 inserted, 0 updated"), "{out}");
    let history = ctx.ok(&["history", "curated.events", "-n", "1"]);
    assert!(history.contains("WRITE"), "{history}");
    assert_eq!(ctx.scalar("SELECT count(*) FROM curated.events"), "5");
}
crate::on_both!(every_materialization, runs_every_materialization);

#[test]
fn a_failing_model_stops_only_its_dependents_and_keeps_its_table() {
    let ctx = project();
    ctx.write("queries/a.sql", "SELECT track FROM raw.plays");
    ctx.write("queries/b.sql", "SELECT track, 1 AS n FROM curated.a");
    ctx.write("queries/c.sql", "SELECT * FROM curated.b");
    ctx.write("queries/d.sql", "SELECT count(*) AS plays FROM raw.plays");
    ctx.ok(&["run"]);
    let version = ctx.version("curated.b");

    // A planning error: file, line and column.
    ctx.write(
        "queries/b.sql",
        "/* lake\ndescription = \"b\"\n*/\nSELECT track,\n       nope AS n\nFROM curated.a",
    );
    let (ok, out, err) = run(&ctx, &["run"]);
    assert!(!ok);
    assert!(out.contains("queries/b.sql:5:8"), "{out}");
    assert!(
        out.contains("skipped      curated.c") && out.contains("curated.b did not pass"),
        "{out}"
    );
    // The others still run; unchanged inputs and SQL leave them as they are.
    assert!(
        out.contains("unchanged    curated.d") && out.contains("unchanged    curated.a"),
        "{out}"
    );
    assert!(
        err.contains("error: failed to run models: curated.b"),
        "{err}"
    );
    assert_eq!(ctx.version("curated.b"), version);

    // An error while the query runs, after it planned: the previous version stays.
    ctx.write(
        "queries/b.sql",
        "SELECT track, CAST(track AS INT) AS n FROM curated.a",
    );
    let (ok, out, _) = run(&ctx, &["run", "--select", "b"]);
    assert!(!ok && out.contains("failed       curated.b"), "{out}");
    assert!(out.contains("curated.b is unchanged"), "{out}");
    assert_eq!(ctx.version("curated.b"), version);
    assert_eq!(ctx.scalar("SELECT n FROM curated.b"), "1");
    let runs = ctx.ok(&["runs"]);
    assert!(runs.contains("failed"), "{runs}");

    // A column Delta cannot name is caught before anything is written.
    ctx.write("queries/b.sql", "SELECT count(*) FROM curated.a");
    let (_, out, _) = run(&ctx, &["run", "--select", "b"]);
    assert!(out.contains("`count(*)`") && out.contains("AS"), "{out}");
}

#[test]
fn failing_tests_stop_downstream_and_keep_their_rows() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write(
        "plays.csv",
        "id,kind\n1,track\n2,track\n2,episode\n3,radio\n",
    );
    ctx.ok(&["ingest", "plays.csv", "--table", "raw.plays"]);
    ctx.write(
        "queries/plays.sql",
        "/* lake\n[[tests]]\nunique = [\"id\"]\n[[tests]]\naccepted_values = { column = \"kind\", values = [\"track\", \"episode\"] }\nseverity = \"warn\"\n[[tests]]\nrow_count = { min = 1, max = 10 }\n*/\nSELECT * FROM raw.plays",
    );
    ctx.write(
        "queries/kinds.sql",
        "SELECT DISTINCT kind FROM curated.plays",
    );
    ctx.write(
        "queries/other.sql",
        "/* lake\n[[tests]]\nrelationships = { column = \"kind\", to = \"curated.plays\" }\n*/\nSELECT 'track' AS kind",
    );
    ctx.write(
        "tests/ids_are_small.sql",
        "/* lake\nseverity = \"warn\"\n*/\nSELECT * FROM curated.plays WHERE id > 2",
    );
    let (ok, out, _) = run(&ctx, &["run", "--threads", "1"]);
    assert!(!ok);
    snapshot!(ctx, "failing_tests", out);
    assert_eq!(ctx.scalar("SELECT id FROM audit.plays__unique_id"), "2");
    assert_eq!(
        ctx.scalar("SELECT kind FROM audit.plays__accepted_values_kind"),
        "radio"
    );

    // `lake test` runs every test, skipping nothing; models never built say so.
    let (ok, out, _) = run(&ctx, &["test"]);
    assert!(!ok && !out.contains("skipped"), "{out}");
    assert!(out.contains("curated.other is not built yet"), "{out}");

    // Fixed data: the tests pass, downstream runs, the audit tables empty.
    ctx.write("plays.csv", "id,kind\n1,track\n2,episode\n");
    ctx.ok(&[
        "ingest",
        "plays.csv",
        "--table",
        "raw.plays",
        "--mode",
        "overwrite",
    ]);
    let out = ctx.ok(&["run"]);
    assert!(out.contains("ok           curated.kinds"), "{out}");
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM audit.plays__unique_id"),
        "0"
    );

    // `lake test` runs only the tests.
    let version = ctx.version("curated.plays");
    let out = ctx.ok(&["test", "--select", "plays"]);
    assert!(out.contains("4 tests"), "{out}");
    assert_eq!(ctx.version("curated.plays"), version);
}

#[test]
fn selectors() {
    let ctx = project();
    ctx.write(
        "queries/a.sql",
        "/* lake\ntags = [\"x\"]\n*/\nSELECT track FROM raw.plays",
    );
    ctx.write("queries/b.sql", "SELECT track FROM curated.a");
    ctx.write("queries/c.sql", "SELECT track FROM curated.b");
    ctx.write("queries/marts/m.sql", "SELECT track FROM curated.a");
    ctx.ok(&["run"]);
    let models = |args: &[&str]| -> Vec<String> {
        let mut cmd = vec!["run"];
        cmd.extend_from_slice(args);
        let mut names: Vec<String> = ctx
            .ok(&cmd)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
            .collect();
        names.sort();
        names
    };
    assert_eq!(models(&["-s", "b"]), ["curated.b"]);
    assert_eq!(models(&["-s", "b+"]), ["curated.b", "curated.c"]);
    assert_eq!(models(&["-s", "+b"]), ["curated.a", "curated.b"]);
    assert_eq!(models(&["-s", "tag:x"]), ["curated.a"]);
    assert_eq!(models(&["-s", "path:queries/marts"]), ["marts.m"]);
    assert_eq!(
        models(&["-s", "a+", "--exclude", "c", "marts.m"]),
        ["curated.a", "curated.b"]
    );
    let err = ctx.fails(&["run", "-s", "nope"]);
    assert!(
        err.contains("failed to select `nope`: no model is named `nope`"),
        "{err}"
    );
}

#[test]
fn an_interrupted_run_says_so() {
    let ctx = project();
    ctx.write(
        "queries/slow.sql",
        "SELECT count(*) AS n FROM (SELECT value % 7 AS v FROM generate_series(1, 3000000000) GROUP BY 1)",
    );
    let mut child = ctx.std_command().args(["run"]).spawn().unwrap();
    let started = ctx.path("lake/_lake/runs/_delta_log/00000000000000000000.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(started.exists(), "the run never recorded its start");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let runs = ctx.ok(&["runs"]);
    assert!(runs.contains("interrupted"), "{runs}");
    assert!(!ctx.path("lake/curated/slow/_delta_log").exists());
}

/// An incremental model reading another, partitioned by values that need escaping in paths:
/// the files its commits added are found and read, partition columns included.
fn chained_incremental_partitioned(ctx: TestContext) {
    ctx.write("e.csv", "id,day,name\n1,2026-01-01,a b\n2,2026-01-02,c\n");
    ctx.ok(&["ingest", "e.csv", "--table", "raw.e"]);
    ctx.write(
        "queries/a.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\npartition_by = [\"day\"]\n*/\nSELECT id, CAST(day AS VARCHAR) || ' x/y%' AS day, name FROM raw.e",
    );
    ctx.write(
        "queries/b.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n*/\nSELECT id, day, name FROM curated.a",
    );
    ctx.ok(&["run"]);
    ctx.write("f.csv", "id,day,name\n3,2026-01-03,d\n");
    ctx.ok(&["ingest", "f.csv", "--table", "raw.e"]);
    let out = ctx.ok(&["run"]);
    assert_eq!(out.matches("1 inserted, 0 updated").count(), 2, "{out}");
    assert_eq!(
        ctx.csv("SELECT id, day FROM curated.b ORDER BY id"),
        "id,day\n1,2026-01-01 x/y%\n2,2026-01-02 x/y%\n3,2026-01-03 x/y%\n"
    );
}
crate::on_both!(chained_incremental, chained_incremental_partitioned);

/// An input rewritten since the last run (an overwrite) cannot say which rows are new: that
/// input is read in full, the plan says so, and the merge absorbs the rows already there.
#[test]
fn a_rewritten_input_is_read_in_full() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("e.csv", "id,name\n1,a\n2,b\n");
    ctx.ok(&["ingest", "e.csv", "--table", "raw.e"]);
    ctx.write(
        "queries/e.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n*/\nSELECT id, name FROM raw.e",
    );
    ctx.ok(&["run"]);
    ctx.write("e.csv", "id,name\n1,a\n2,B\n3,c\n");
    ctx.ok(&["ingest", "e.csv", "--table", "raw.e", "--mode", "overwrite"]);
    let plan = ctx.ok(&["plan"]);
    assert!(
        plan.contains("raw.e@v1 (in full: version 1 rewrote or removed rows (WRITE))"),
        "{plan}"
    );
    let out = ctx.ok(&["run"]);
    assert!(out.contains("1 inserted, 2 updated"), "{out}");
    assert_eq!(
        ctx.csv("SELECT id, name FROM curated.e ORDER BY id"),
        "id,name\n1,a\n2,B\n3,c\n"
    );
}

/// `sort_by` writes a table model's rows in that order (the stored file, read back as it is,
/// comes out sorted), and a column the query lacks is refused.
#[test]
fn sort_by_writes_the_rows_in_order() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    let rows: String = (0..500)
        .map(|i| format!("{},{}\n", (i * 7919) % 500, (i * 31) % 17))
        .collect();
    ctx.write("t.csv", format!("k,g\n{rows}"));
    ctx.ok(&["ingest", "t.csv", "--table", "raw.t"]);
    ctx.write(
        "queries/sorted.sql",
        "/* lake\nsort_by = [\"g\", \"k\"]\n*/\nSELECT k, g FROM raw.t",
    );
    ctx.ok(&["run"]);
    // One small file, read in one pass: the stored order.
    let stored = ctx.csv("SELECT g, k FROM curated.sorted");
    let sorted = ctx.csv("SELECT g, k FROM curated.sorted ORDER BY g, k");
    assert_eq!(stored, sorted);
    ctx.write(
        "queries/sorted.sql",
        "/* lake\nsort_by = [\"nope\"]\n*/\nSELECT k, g FROM raw.t",
    );
    let (ok, out, err) = crate::common::outcome(ctx.lake().arg("run"));
    assert!(!ok);
    assert!(out.contains("`nope` is in the header"), "{out}{err}");
}

/// A unique test on the columns of an incremental model's key is told by the key's bloom
/// filters when they hold none of the new keys; a new key they do hold takes the join, which
/// finds the duplicate.
/// Appends `csv` to raw.plays.
fn append_plays(ctx: &TestContext, csv: &str) {
    ctx.write("more.csv", csv);
    ctx.ok(&["ingest", "more.csv", "--table", "raw.plays"]);
}

/// For each bloom lookup of a unique test's new keys on `model` logged in `err`: whether it
/// found none of them held.
fn looked_up(err: &str, model: &str) -> Vec<bool> {
    err.lines()
        .filter(|l| l.contains("a unique test's new keys looked up") && l.contains(model))
        .map(|l| l.contains("held: false"))
        .collect()
}

#[test]
fn a_unique_test_on_the_key_asks_the_bloom_filters() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("plays.csv", "id,k\n1,a\n2,b\n");
    ctx.ok(&["ingest", "plays.csv", "--table", "raw.plays"]);
    ctx.write(
        "queries/p.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\", \"k\"]\n[[tests]]\nunique = [\"id\"]\n*/\nSELECT * FROM raw.plays",
    );
    ctx.ok(&["run"]);
    let append = |csv: &str| append_plays(&ctx, csv);
    let looked_up = |err: &str| looked_up(err, "curated.p");
    append("id,k\n3,c\n");
    let (ok, out, err) = run_with_env(&ctx, &[("LAKE_LOG", "lake=debug")], &["run"]);
    assert!(
        ok && out.contains("1 of 1 tests passed (1 on the new rows only)"),
        "{out}"
    );
    assert_eq!(looked_up(&err), [true], "{err}");
    // (1, z) is a new key of the model, so it is added, and repeats id 1.
    append("id,k\n1,z\n");
    let (ok, out, err) = run_with_env(&ctx, &[("LAKE_LOG", "lake=debug")], &["run"]);
    assert!(
        !ok && out.contains("0 of 1 tests passed (1 on the new rows only)"),
        "{out}"
    );
    assert_eq!(looked_up(&err), [false], "{err}");
    assert_eq!(
        ctx.scalar("SELECT duplicates FROM audit.p__unique_id WHERE id = 1"),
        "2"
    );
}

/// A unique test on a view over tables (UNION ALL of their columns) asks each table whether
/// it held a new key before: the key's bloom filters where lake wrote them, the key column of
/// a small table; a key one of them held is joined, and caught.
#[test]
fn a_unique_test_on_a_view_asks_each_table() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("plays.csv", "id,k\n1,a\n2,b\n");
    ctx.ok(&["ingest", "plays.csv", "--table", "raw.plays"]);
    ctx.write("extra.csv", "id,k\n7,x\n");
    ctx.ok(&["ingest", "extra.csv", "--table", "raw.extra"]);
    ctx.write(
        "queries/p.sql",
        "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n*/\nSELECT * FROM raw.plays",
    );
    ctx.write(
        "queries/v.sql",
        "/* lake\nmaterialized = \"view\"\n[[tests]]\nunique = [\"key\"]\n*/\nSELECT id AS key, k FROM curated.p\nUNION ALL SELECT id, k FROM raw.extra",
    );
    ctx.ok(&["run"]);
    let append = |csv: &str| append_plays(&ctx, csv);
    let looked_up = |err: &str| looked_up(err, "curated.v");
    append("id,k\n3,c\n");
    let (ok, out, err) = run_with_env(&ctx, &[("LAKE_LOG", "lake=debug")], &["run"]);
    assert!(
        ok && out.contains("1 of 1 tests passed (1 on the new rows only)"),
        "{out}"
    );
    assert_eq!(looked_up(&err), [true, true], "{err}");
    // Key 7 is raw.extra's.
    append("id,k\n7,z\n");
    let (ok, out, err) = run_with_env(&ctx, &[("LAKE_LOG", "lake=debug")], &["run"]);
    assert!(
        !ok && out.contains("0 of 1 tests passed (1 on the new rows only)"),
        "{out}"
    );
    assert!(looked_up(&err).contains(&false), "{err}");
    assert_eq!(
        ctx.scalar("SELECT duplicates FROM audit.v__unique_key WHERE key = 7"),
        "2"
    );
}

/// Tests that passed check only the rows added since, where a failure can only be on them
/// (`not_null`, `accepted_values`, and `unique` over the added rows' keys), and catch it
/// there; after a failure, or a change to the test, they check every row again.
#[test]
fn tests_that_passed_check_the_new_rows_only() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("plays.csv", "id,k,kind\n1,a,track\n2,b,track\n");
    ctx.ok(&["ingest", "plays.csv", "--table", "raw.plays"]);
    let header = |kinds: &str| {
        format!(
            "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n[[tests]]\nunique = [\"k\"]\n[[tests]]\nnot_null = [\"k\"]\n[[tests]]\naccepted_values = {{ column = \"kind\", values = [{kinds}] }}\n*/\nSELECT * FROM raw.plays"
        )
    };
    ctx.write("queries/p.sql", &header("'track'"));
    ctx.write(
        "queries/v.sql",
        "/* lake\nmaterialized = \"view\"\n[[tests]]\nunique = [\"k\"]\n*/\nSELECT * FROM curated.p",
    );
    let out = ctx.ok(&["run"]);
    assert!(!out.contains("new rows only"), "{out}");
    let append = |csv: &str| append_plays(&ctx, csv);
    append("id,k,kind\n3,c,track\n");
    let out = ctx.ok(&["run"]);
    assert!(
        out.contains("3 of 3 tests passed (3 on the new rows only)")
            && out.contains("1 of 1 tests passed (1 on the new rows only)"),
        "{out}"
    );
    // A new row repeating an old key, with a null and a kind not accepted: each test catches
    // its failure on the new rows.
    append("id,k,kind\n4,a,radio\n5,,track\n");
    let (ok, out, _) = run(&ctx, &["run"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("0 of 3 tests passed (3 on the new rows only)"),
        "{out}"
    );
    assert_eq!(
        ctx.scalar("SELECT duplicates FROM audit.p__unique_k WHERE k = 'a'"),
        "2"
    );
    assert_eq!(ctx.scalar("SELECT count(*) FROM audit.p__not_null_k"), "1");
    // The failures stay failures: the next run checks every row.
    append("id,k,kind\n6,d,track\n");
    let (ok, out, _) = run(&ctx, &["run"]);
    assert!(!ok && !out.contains("new rows only"), "{out}");
    assert_eq!(ctx.scalar("SELECT count(*) FROM audit.p__not_null_k"), "1");

    // Fixed upstream and rebuilt; then a test that changed checks every row again.
    ctx.write("plays.csv", "id,k,kind\n1,a,track\n2,b,track\n3,c,track\n");
    ctx.ok(&[
        "ingest",
        "plays.csv",
        "--table",
        "raw.plays",
        "--mode",
        "overwrite",
    ]);
    ctx.ok(&["run", "--full-refresh"]);
    ctx.write("queries/p.sql", &header("'track', 'radio'"));
    append("id,k,kind\n7,e,radio\n");
    let out = ctx.ok(&["run"]);
    assert!(
        out.contains("3 of 3 tests passed (2 on the new rows only)"),
        "{out}"
    );
}
