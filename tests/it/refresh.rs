//! `lake refresh`: the stages in order under the lease, idempotent reruns, and the exit codes
//! a scheduler alerts on.

use std::time::Duration;

use lake::config::{Overrides, Settings};
use lake::lake::Lake;

use crate::common::{Backend, TestContext, db_sql};

/// A project with a SQLite source, a model marked for export with a test, and the default
/// SQLite warehouse.
fn project() -> TestContext {
    let ctx = TestContext::new(Backend::Local);
    orders(&ctx);
    ctx
}

/// The SQLite source `orders`, and `curated.order_totals` over it, marked for export.
pub(crate) fn orders(ctx: &TestContext) {
    db_sql(
        "sqlite",
        Some(&ctx.path("source.db")),
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER, updated_at DATETIME);
         INSERT INTO orders VALUES (1, 10, '2024-01-01 08:00:00'), (2, 20, '2024-01-01 09:00:00');",
    );
    ctx.configure(
        "[sources.orders]\nurl = \"sqlite://source.db\"\ntable = \"orders\"\nmode = \"incremental\"\ncursor = \"updated_at\"\nprimary_key = [\"id\"]\n",
    );
    ctx.write(
        "queries/order_totals.sql",
        "/* lake\nexport = true\n[[tests]]\nrow_count = { max = 2 }\n*/\nSELECT count(*) AS orders, sum(amount) AS amount FROM raw.orders WHERE _deleted_at IS NULL",
    );
}

/// The project with 200,000 orders and two exported models: a refresh of a few seconds.
fn big_project() -> TestContext {
    let ctx = project();
    db_sql(
        "sqlite",
        Some(&ctx.path("source.db")),
        "WITH RECURSIVE g(x) AS (SELECT 3 UNION ALL SELECT x + 1 FROM g WHERE x < 200000)
         INSERT INTO orders SELECT x, x % 100, datetime('2024-01-02', '+' || x || ' seconds') FROM g;",
    );
    ctx.write(
        "queries/order_totals.sql",
        "/* lake\nexport = true\n*/\nSELECT count(*) AS orders, sum(amount) AS amount FROM raw.orders WHERE _deleted_at IS NULL",
    );
    ctx.write(
        "queries/by_amount.sql",
        "/* lake\nexport = true\n*/\nSELECT amount, count(*) AS orders FROM raw.orders GROUP BY amount",
    );
    ctx
}

/// Starts `cmd` with its stderr read line by line, and returns once a line holds `marker`: the
/// child, and a thread that returns all of stderr when the child ends.
fn spawn_until(
    cmd: &mut std::process::Command,
    marker: &'static str,
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (seen, wait) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(marker) {
                let _ = seen.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    wait.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{marker} never came"));
    (child, reader)
}

fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn warehouse(ctx: &TestContext, sql: &str) -> String {
    db_sql("sqlite", Some(&ctx.path("warehouse.db")), sql)
}

#[test]
fn stages_run_in_order_and_a_rerun_does_little() {
    let ctx = project();
    let out = ctx.lake().args(["refresh"]).assert().success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    for stage in ["extract", "run", "export"] {
        assert!(
            err.contains(stage),
            "{stage} missing from the summary:\n{err}"
        );
    }
    assert!(
        err.contains("orders -> raw.orders") && err.contains("curated.order_totals"),
        "{err}"
    );
    assert_eq!(
        warehouse(&ctx, "SELECT orders, amount FROM order_totals"),
        "1\t30".replace('1', "2")
    );
    // Again, logging JSON for a collector: no new rows, the model is unchanged, the warehouse
    // has its version.
    let done = ctx
        .lake()
        .args(["--log-format", "json", "refresh"])
        .assert()
        .success();
    let out = String::from_utf8_lossy(&done.get_output().stdout).to_string();
    let logs = String::from_utf8_lossy(&done.get_output().stderr).to_string();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let finished = events
        .iter()
        .find(|e| e["message"] == "refresh finished")
        .expect(&logs);
    assert_eq!(finished["exit_code"], 0, "{logs}");
    assert!(
        events.iter().any(|e| e["message"] == "refresh step"
            && e["stage"] == "export"
            && e["status"] == "ok"),
        "{logs}"
    );
    assert!(out.contains("no new rows, nothing committed"), "{out}");
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(ctx.version("raw.orders"), 0);
    // `lake runs` lists the refreshes beside the model runs they made.
    let listed = ctx.ok(&["runs"]);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains("refresh") && l.contains(" ok "))
            .count(),
        2,
        "{listed}"
    );
    // Maintenance at the end, when lake.toml asks for it: every table, in the summary.
    let done = ctx
        .lake()
        .args(["--set", "maintain.after_refresh=true", "refresh"])
        .assert()
        .success();
    let err = String::from_utf8_lossy(&done.get_output().stderr).to_string();
    assert!(
        err.contains("maintain") && err.contains("raw.orders") && err.contains("_lake.runs"),
        "{err}"
    );
}

#[test]
fn a_held_lake_is_named_and_exits_4() {
    let ctx = project();
    let settings = Settings::resolve(&Overrides::default(), Vec::new(), ctx.dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lake = rt.block_on(Lake::open(&settings)).unwrap();
    let lease = rt
        .block_on(lake.try_lease("lake", Duration::from_secs(600), "refresh"))
        .unwrap()
        .unwrap();
    let out = ctx.lake().args(["refresh"]).assert().code(4);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("another process holds the lake: refresh on ")
            && err.contains(&format!("(pid {})", std::process::id()))
            && err.contains("--wait"),
        "{err}"
    );
    // Waiting a little is not enough either; nothing ran.
    ctx.lake()
        .args(["refresh", "--wait", "1s"])
        .assert()
        .code(4);
    assert!(!ctx.path("lake/raw/orders").exists());
    // Released, the next refresh runs.
    rt.block_on(lease.release()).unwrap();
    ctx.lake()
        .args(["refresh", "--skip-export"])
        .assert()
        .success();
    assert!(ctx.path("lake/raw/orders").exists());
    assert!(!ctx.path("warehouse.db").exists(), "--skip-export exported");
}

#[test]
fn failed_tests_exit_3_and_hold_back_the_export() {
    let ctx = project();
    db_sql(
        "sqlite",
        Some(&ctx.path("source.db")),
        "INSERT INTO orders VALUES (3, 30, '2024-01-01 10:00:00')",
    );
    ctx.write(
        "queries/order_totals.sql",
        "/* lake\nexport = true\n[[tests]]\nrow_count = { min = 5 }\n*/\nSELECT count(*) AS orders FROM raw.orders",
    );
    let out = ctx.lake().args(["refresh"]).assert().code(3);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("error-level tests failed in curated.order_totals")
            && err.contains("held back"),
        "{err}"
    );
    assert!(
        !ctx.path("warehouse.db").exists()
            || warehouse(
                &ctx,
                "SELECT count(*) FROM sqlite_master WHERE name = 'order_totals'"
            ) == "0"
    );
    // A source that fails is a failed stage: exit 1, and the rest still runs.
    let out = ctx
        .lake()
        .args(["--set", "sources.orders.table=nope", "refresh"])
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("failed to refresh: extract failed"), "{err}");
    assert!(
        err.contains("curated.order_totals"),
        "the models ran:\n{err}"
    );
}

/// kill -9 at several points of a real refresh, then a rerun: the lake and the warehouse end as
/// a clean run leaves them. The killed holder's lease expires (`--lease-ttl 2s`) and the rerun
/// waits for it.
#[test]
fn killed_at_any_point_then_rerun_matches_a_clean_run() {
    let args = ["refresh", "--lease-ttl", "2s", "--wait", "60s"];
    let clean = big_project();
    clean.lake().args(args).assert().success();

    let ctx = big_project();
    let mut killed_running = 0;
    for ms in [250u64, 700, 1200, 2000] {
        let mut child = ctx
            .std_command()
            .args(["--quiet"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(
        killed_running >= 2,
        "only {killed_running} kills landed mid-run"
    );
    ctx.lake().args(args).assert().success();
    for sql in [
        "SELECT orders, amount FROM order_totals",
        "SELECT amount, orders FROM by_amount ORDER BY amount",
    ] {
        assert_eq!(warehouse(&ctx, sql), warehouse(&clean, sql), "{sql}");
    }
    assert_eq!(
        ctx.scalar("SELECT count(*), count(DISTINCT id), sum(amount) FROM raw.orders"),
        clean.scalar("SELECT count(*), count(DISTINCT id), sum(amount) FROM raw.orders")
    );
    assert_eq!(warehouse(&ctx, "SELECT orders FROM order_totals"), "200000");
}

/// `lake status`: freshness against the thresholds of sources and models; exit 1 past an
/// error_after.
#[test]
fn status_shows_freshness() {
    let ctx = project();
    ctx.ok(&["refresh"]);
    let out = ctx.ok(&[
        "--set",
        "sources.orders.warn_after=1h",
        "--set",
        "sources.orders.error_after=2h",
        "status",
    ]);
    let line = |table: &str| {
        out.lines()
            .find(|l| l.contains(table))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("raw.orders").contains("1h") && line("raw.orders").contains("ok"),
        "{out}"
    );
    assert!(line("_lake.runs").contains(" - "), "no thresholds:\n{out}");
    // A model whose table must be fresher than a second, a second and a half later.
    ctx.write(
        "queries/order_totals.sql",
        "/* lake\nexport = true\nwarn_after = \"1s\"\nerror_after = \"1s\"\n*/\nSELECT count(*) AS orders, sum(amount) AS amount FROM raw.orders WHERE _deleted_at IS NULL",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let done = ctx.lake().args(["status"]).assert().code(1);
    let out = String::from_utf8_lossy(&done.get_output().stdout).to_string();
    let err = String::from_utf8_lossy(&done.get_output().stderr).to_string();
    assert!(
        out.lines()
            .any(|l| l.contains("curated.order_totals") && l.contains("error")),
        "{out}"
    );
    assert!(
        err.contains("stale past error_after: curated.order_totals"),
        "{err}"
    );
}

/// `lake schedule`: a job every second runs refreshes one after another, logs each, and stops
/// on SIGTERM with exit 0.
#[test]
fn schedule_runs_jobs_and_stops_on_sigterm() {
    let ctx = project();
    ctx.configure(
        "[[schedule]]\nname = \"every-second\"\ncron = \"* * * * * *\"\nskip_export = true\n",
    );
    let child = ctx
        .std_command()
        .args(["--log-format", "json", "schedule", "--stop-timeout", "30s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{logs}");
    // The scheduler's own events (the refreshes log theirs in between).
    let events: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["job"] == "every-second")
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| *m == "job started" || *m == "job finished")
        .collect();
    let finished = kinds.iter().filter(|k| **k == "job finished").count();
    assert!(finished >= 2, "{logs}");
    // Never two runs at once: starts and finishes alternate.
    for pair in kinds.windows(2) {
        assert_ne!(pair[0], pair[1], "runs overlapped:\n{logs}");
    }
    assert!(
        events
            .iter()
            .all(|e| e["message"] != "job finished" || e["exit_code"] == 0),
        "{logs}"
    );
    assert!(logs.contains("\"stopped\""), "{logs}");
    assert!(ctx.path("lake/raw/orders").exists());
}

/// SIGTERM while a run is going, with no time allowed for it: the run is stopped, which leaves
/// the last committed state, and the scheduler exits 0.
#[test]
fn schedule_stops_a_running_refresh_past_the_stop_timeout() {
    let ctx = big_project();
    ctx.configure("[[schedule]]\nname = \"often\"\ncron = \"* * * * * *\"\n");
    // Stopped 300 ms into its first run, which takes seconds on 200,000 rows.
    let (mut child, reader) = spawn_until(
        ctx.std_command()
            .args(["--log-format", "json", "schedule", "--stop-timeout", "0s"]),
        "\"job started\"",
    );
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let status = child.wait().unwrap();
    let logs = reader.join().unwrap();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("stopped the run after --stop-timeout"),
        "{logs}"
    );
    assert!(logs.contains("\"stopped\""), "{logs}");
    // The scheduler freed the stopped run's lock: the next refresh starts at once and
    // finishes the work.
    ctx.ok(&["refresh"]);
    assert_eq!(warehouse(&ctx, "SELECT orders FROM order_totals"), "200000");
}

/// SIGTERM to a refresh: it frees the lock and exits 143; the next refresh starts at once.
#[test]
fn sigterm_frees_the_lock() {
    let ctx = big_project();
    // Stopped 300 ms into its extract of 200,000 rows.
    let (mut child, reader) = spawn_until(
        ctx.std_command().args(["--log-format", "json", "refresh"]),
        "\"refresh started\"",
    );
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by a signal"), "{err}");
    // No --wait: it would exit 4 if the lock were still held.
    ctx.ok(&["refresh"]);
    assert_eq!(warehouse(&ctx, "SELECT orders FROM order_totals"), "200000");
}
