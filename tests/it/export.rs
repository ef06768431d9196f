//! `lake export` against the real PostgreSQL and MariaDB on this machine, and SQLite.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{Backend, TestContext};

static N: AtomicUsize = AtomicUsize::new(0);

/// A warehouse for one test: its URL for lake and a way to run SQL on it, printing rows as
/// tab-separated text.
struct Wh {
    url: String,
    kind: &'static str,
    schema: String,
    file: Option<std::path::PathBuf>,
}

impl Wh {
    fn new(kind: &'static str, ctx: &TestContext) -> Self {
        let schema = format!(
            "lake_it_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        match kind {
            "postgres" => Wh {
                url: "postgres://postgres@127.0.0.1:5432/test".into(),
                kind,
                schema,
                file: None,
            },
            "mysql" => Wh {
                url: "mysql://root@127.0.0.1:3306/test".into(),
                kind,
                schema,
                file: None,
            },
            _ => Wh {
                url: "sqlite://warehouse.db".into(),
                kind,
                schema,
                file: Some(ctx.path("warehouse.db")),
            },
        }
    }

    /// The table name as a query names it.
    fn table(&self, name: &str) -> String {
        match self.kind {
            "postgres" => format!("\"{}\".\"{name}\"", self.schema),
            "mysql" => format!("`{}`.`{name}`", self.schema),
            _ => format!("\"{name}\""),
        }
    }

    fn sql(&self, sql: &str) -> String {
        crate::common::db_sql(self.kind, self.file.as_deref(), sql)
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec!["--set".to_string(), format!("warehouse.url={}", self.url)];
        if self.kind != "sqlite" {
            a.push("--set".into());
            a.push(format!("warehouse.schema={}", self.schema));
        }
        a
    }

    fn drop(&self) {
        match self.kind {
            "postgres" => {
                self.sql(&format!(
                    "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                    self.schema
                ));
            }
            "mysql" => {
                self.sql(&format!("DROP DATABASE IF EXISTS `{}`", self.schema));
            }
            _ => {}
        }
    }
}

fn export(ctx: &TestContext, wh: &Wh, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec!["export".into()];
    args.extend(wh.args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ctx.ok(&args)
}

/// Every type lake produces, a row of values and a row of nulls, with columns whose names need
/// quoting.
const TYPES: &str = r#"/* lake
materialized = "incremental"
unique_key = ["id"]
*/
SELECT 1 AS id, true AS flag, CAST(3 AS SMALLINT) AS small, CAST(2147483647 AS INT) AS int32,
       CAST(9007199254740993 AS BIGINT) AS big, CAST(1.5 AS REAL) AS f32, CAST(2.25 AS DOUBLE) AS f64,
       CAST('12345.678' AS DECIMAL(12,3)) AS dec, 'it''s "q" ' || chr(9) || 'tab\back' AS text,
       DATE '2024-02-29' AS day,
       arrow_cast('2024-01-01T12:34:56.123456Z', 'Timestamp(Microsecond, Some("UTC"))') AS at_utc,
       CAST('2024-01-01 12:34:56' AS TIMESTAMP) AS at_local,
       make_array(1, 2, 3) AS list, named_struct('a', 1, 'b', 'x') AS st,
       arrow_cast('hi', 'Binary') AS bytes, 'x' AS "select", 'y' AS "a""b",
       repeat('long ', 40000) AS large
UNION ALL
SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
"#;

fn round_trip(kind: &'static str) {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("queries/all_types.sql", TYPES);
    ctx.ok(&["run"]);
    let wh = Wh::new(kind, &ctx);
    let out = export(&ctx, &wh, &[]);
    assert!(
        out.contains("exported      curated.all_types") && out.contains("2 rows"),
        "{out}"
    );
    let t = wh.table("all_types");
    let text = match kind {
        "postgres" => wh.sql(&format!(
            "SELECT id, flag, small, int32, big, f32, f64, dec, text, day, at_utc AT TIME ZONE 'UTC', at_local, list::text, st::text, encode(bytes, 'escape'), \"select\", \"a\"\"b\" FROM {t} ORDER BY id"
        )),
        "mysql" => wh.sql(&format!(
            "SELECT id, flag, small, int32, big, f32, f64, `dec`, text, day, at_utc, at_local, list, st, CAST(bytes AS CHAR), `select`, `a\"b` FROM {t} ORDER BY id"
        )),
        _ => wh.sql(&format!(
            "SELECT id, flag, small, int32, big, f32, f64, dec, text, day, at_utc, at_local, list, st, CAST(bytes AS TEXT), \"select\", \"a\"\"b\" FROM {t} ORDER BY id"
        )),
    };
    let mut rows = text.lines();
    let first: Vec<&str> = rows.next().unwrap().split('\t').collect();
    let expect_flag = match kind {
        "postgres" => "t",
        _ => "1",
    };
    assert_eq!(
        &first[..8],
        [
            "1",
            expect_flag,
            "3",
            "2147483647",
            "9007199254740993",
            "1.5",
            "2.25",
            "12345.678"
        ],
        "{text}"
    );
    // The text holds a tab, which the CLIs print escaped or raw; its other characters are intact.
    assert!(first[8].starts_with("it's \"q\" "), "{text}");
    assert!(text.contains("back"), "{text}");
    assert!(text.contains("2024-02-29"), "{text}");
    assert!(
        text.contains("2024-01-01 12:34:56.123456") || text.contains("2024-01-01T12:34:56.123456Z"),
        "{text}"
    );
    assert!(
        text.contains("[1,2,3]") || text.contains("[1, 2, 3]"),
        "{text}"
    );
    assert!(text.contains("\"a\"") && text.contains("\"x\""), "{text}");
    assert!(text.contains("hi\tx\ty") || text.contains("hi"), "{text}");
    // The row of nulls: an empty string stays empty, the rest are NULL.
    let dec = if kind == "mysql" { "`dec`" } else { "dec" };
    let nulls = wh.sql(&format!(
        "SELECT count(*) FROM {t} WHERE id = 2 AND flag IS NULL AND {dec} IS NULL AND at_utc IS NULL AND list IS NULL AND bytes IS NULL AND text = ''"
    ));
    assert_eq!(nulls, "1");
    // A 200 KB string arrives whole.
    assert_eq!(
        wh.sql(&format!("SELECT length(large) FROM {t} WHERE id = 1")),
        "200000"
    );
    // Column types, where the database says them plainly.
    if kind == "postgres" {
        let types = wh.sql(&format!(
            "SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_schema = '{}' AND table_name = 'all_types' ORDER BY ordinal_position",
            wh.schema
        ));
        for expected in [
            "flag boolean",
            "dec numeric",
            "day date",
            "at_utc timestamp with time zone",
            "at_local timestamp without time zone",
            "list jsonb",
            "bytes bytea",
        ] {
            assert!(types.contains(expected), "{expected} missing in:\n{types}");
        }
    }

    // The same version again: nothing is loaded.
    let out = export(&ctx, &wh, &[]);
    assert!(out.contains("unchanged"), "{out}");

    // A load killed part-way leaves a staging table behind; the next export still works.
    let staging = wh.table("all_types__lake_staging");
    wh.sql(&format!("CREATE TABLE {staging} (junk INTEGER)"));
    ctx.write(
        "queries/all_types.sql",
        TYPES.replace("SELECT 2,", "SELECT 3,"),
    );
    ctx.ok(&["run", "--full-refresh"]);
    // (Dropped, so that the whole table is loaded again through staging, not its changes.)
    wh.sql(&format!("DROP TABLE {t}"));
    let out = export(&ctx, &wh, &[]);
    assert!(out.contains("exported"), "{out}");
    assert_eq!(wh.sql(&format!("SELECT max(id) FROM {t}")), "3");
    wh.drop();
}

#[test]
fn postgres_round_trip() {
    round_trip("postgres");
}

#[test]
fn mysql_round_trip() {
    round_trip("mysql");
}

#[test]
fn sqlite_round_trip() {
    round_trip("sqlite");
}

#[test]
fn passwords_never_show() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("queries/a.sql", "SELECT 1 AS id");
    ctx.ok(&["run"]);
    let err = ctx.fails(&[
        "export",
        "--set",
        "warehouse.url=postgres://postgres:hunter2secret@127.0.0.1:1/test",
    ]);
    assert!(!err.contains("hunter2secret"), "{err}");
    assert!(
        err.contains("postgres://postgres:***@127.0.0.1:1/test"),
        "{err}"
    );
    assert!(
        err.contains("Connection refused"),
        "the real cause is named: {err}"
    );
}

/// New rows of an incremental model are upserted; a rewrite or a new column reloads the table
/// through staging and swap.
fn upserts(kind: &'static str) {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("e.csv", "id,name\n1,a\n2,b\n");
    ctx.ok(&["ingest", "e.csv", "--table", "raw.e"]);
    let model = "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\nexport = true\n*/\nSELECT id, name FROM raw.e";
    ctx.write("queries/e.sql", model);
    ctx.ok(&["run"]);
    let wh = Wh::new(kind, &ctx);
    let t = wh.table("e");
    let out = export(&ctx, &wh, &[]);
    assert!(out.contains("exported") && out.contains("2 rows"), "{out}");

    ctx.write("f.csv", "id,name\n3,c\n");
    ctx.ok(&["ingest", "f.csv", "--table", "raw.e"]);
    ctx.ok(&["run"]);
    let out = export(&ctx, &wh, &[]);
    assert!(out.contains("upserted") && out.contains("1 rows"), "{out}");
    assert_eq!(wh.sql(&format!("SELECT count(*) FROM {t}")), "3");

    // An update rewrites files in the lake: the export sends the row that changed, found by
    // key against the version exported last.
    ctx.write("g.csv", "id,name\n2,B\n");
    ctx.ok(&["ingest", "g.csv", "--table", "raw.e"]);
    ctx.ok(&["run"]);
    let out = export(&ctx, &wh, &[]);
    assert!(
        out.contains("upserted") && out.contains("1 rows, 0 deleted"),
        "{out}"
    );
    assert_eq!(wh.sql(&format!("SELECT name FROM {t} WHERE id = 2")), "B");
    assert_eq!(wh.sql(&format!("SELECT count(*) FROM {t}")), "3");

    // A new column: rebuilt through staging and swap, with the column.
    ctx.write(
        "queries/e.sql",
        model.replace("SELECT id, name", "SELECT id, name, upper(name) AS shout"),
    );
    ctx.ok(&["run"]);
    let out = export(&ctx, &wh, &[]);
    assert!(out.contains("exported"), "{out}");
    assert_eq!(wh.sql(&format!("SELECT shout FROM {t} WHERE id = 1")), "A");
    wh.drop();
}

#[test]
fn postgres_upserts() {
    upserts("postgres");
}

#[test]
fn mysql_upserts() {
    upserts("mysql");
}

#[test]
fn sqlite_upserts() {
    upserts("sqlite");
}

/// A table model whose rows partly changed sends only those, and deletes the rows whose key
/// is gone, keyed by its `unique` test; the warehouse then holds what the lake does.
fn changed_rows(kind: &'static str) {
    let ctx = TestContext::new(Backend::Local);
    ctx.write(
        "e.csv",
        "id,day,n\n1,2026-01-01,5\n2,2026-01-02,7\n3,2026-01-03,1\n6,,4\n",
    );
    ctx.ok(&["ingest", "e.csv", "--table", "raw.e"]);
    ctx.write(
        "queries/daily.sql",
        "/* lake\nexport = true\n[[tests]]\nunique = [\"day\"]\n*/\nSELECT day, count(*) AS plays, sum(n) AS n FROM raw.e GROUP BY day",
    );
    ctx.ok(&["run"]);
    let wh = Wh::new(kind, &ctx);
    let t = wh.table("daily");
    let out = export(&ctx, &wh, &[]);
    assert!(out.contains("exported") && out.contains("4 rows"), "{out}");

    ctx.write("f.csv", "id,day,n\n4,2026-01-03,2\n5,2026-01-04,3\n7,,1\n");
    ctx.ok(&["ingest", "f.csv", "--table", "raw.e"]);
    let out = ctx.ok(&["run"]);
    assert!(out.contains("3 groups recomputed"), "{out}");
    // The null day's row is replaced, not joined by a second one.
    let out = export(&ctx, &wh, &[]);
    assert!(
        out.contains("upserted") && out.contains("3 rows, 0 deleted"),
        "{out}"
    );

    // The source loses a day: the model is rebuilt, and the warehouse loses that row alone.
    ctx.write(
        "e.csv",
        "id,day,n\n2,2026-01-02,7\n3,2026-01-03,1\n4,2026-01-03,2\n5,2026-01-04,3\n6,,4\n7,,1\n",
    );
    ctx.ok(&["ingest", "e.csv", "--table", "raw.e", "--mode", "overwrite"]);
    ctx.ok(&["run"]);
    let out = export(&ctx, &wh, &[]);
    assert!(
        out.contains("upserted") && out.contains("0 rows, 1 deleted"),
        "{out}"
    );
    let rows = wh.sql(&format!("SELECT plays, n FROM {t} ORDER BY plays, n"));
    assert_eq!(rows.replace('\t', ","), "1,3\n1,7\n2,3\n2,5");
    wh.drop();
}

#[test]
fn postgres_changed_rows() {
    changed_rows("postgres");
}

#[test]
fn mysql_changed_rows() {
    changed_rows("mysql");
}

#[test]
fn sqlite_changed_rows() {
    changed_rows("sqlite");
}

#[test]
fn models_whose_tests_failed_are_not_exported() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write(
        "queries/a.sql",
        "/* lake\n[[tests]]\nunique = [\"id\"]\n*/\nSELECT 1 AS id UNION ALL SELECT 1",
    );
    ctx.write("queries/b.sql", "SELECT 2 AS id");
    let _ = crate::common::outcome(ctx.lake().args(["run"]));
    let (ok, out, err) = crate::common::outcome(ctx.lake().args(["export"]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("not exported  curated.a: its error-level tests failed in run"),
        "{out}"
    );
    assert!(
        out.contains("exported      curated.b -> b  1 rows"),
        "{out}"
    );
    assert!(err.contains("failed to export: curated.a"), "{err}");
}

/// While an export swaps a new table in, a reader in a loop sees the whole old table or the
/// whole new one, never a mix, an empty table or a missing one.
fn readers_see_old_or_new(kind: &'static str) {
    let ctx = TestContext::new(Backend::Local);
    let model =
        |n: u32, v: &str| format!("SELECT value AS id, '{v}' AS v FROM generate_series(1, {n})");
    ctx.write("queries/t.sql", model(100_000, "a"));
    ctx.ok(&["run"]);
    let wh = Wh::new(kind, &ctx);
    export(&ctx, &wh, &[]);
    ctx.write("queries/t.sql", model(150_000, "b"));
    ctx.ok(&["run"]);

    let t = wh.table("t");
    let query = format!("SELECT count(*), min(v), max(v) FROM {t}");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let (url, schema, file) = (wh.url.clone(), wh.schema.clone(), wh.file.clone());
        std::thread::spawn(move || {
            let wh = Wh {
                url,
                kind,
                schema,
                file,
            };
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                seen.push(wh.sql(&query));
            }
            seen.push(wh.sql(&query));
            seen
        })
    };
    let out = export(&ctx, &wh, &[]);
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().expect("the reader never failed");
    assert!(out.contains("150000 rows"), "{out}");
    let (old, new) = ("100000\ta\ta", "150000\tb\tb");
    assert!(seen.iter().all(|s| s == old || s == new), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some(new));
    assert!(
        seen.iter().any(|s| s == old),
        "the reader never overlapped the load: {seen:?}"
    );
    wh.drop();
}

#[test]
fn postgres_swap_under_readers() {
    readers_see_old_or_new("postgres");
}

#[test]
fn mysql_swap_under_readers() {
    readers_see_old_or_new("mysql");
}

#[test]
fn sqlite_swap_under_readers() {
    readers_see_old_or_new("sqlite");
}

/// `lake export` killed while it loads: the old table is intact, and the next export recovers.
fn killed_mid_load(kind: &'static str) {
    let ctx = TestContext::new(Backend::Local);
    let model =
        |n: u32, v: &str| format!("SELECT value AS id, '{v}' AS v FROM generate_series(1, {n})");
    ctx.write("queries/t.sql", model(1000, "a"));
    ctx.ok(&["run"]);
    let wh = Wh::new(kind, &ctx);
    export(&ctx, &wh, &[]);
    ctx.write("queries/t.sql", model(400_000, "b"));
    ctx.ok(&["run"]);

    let mut args = vec!["export".to_string()];
    args.extend(wh.args());
    let mut child = ctx.std_command().args(&args).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let staging = match kind {
        "postgres" => Some(format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{}' AND table_name = 't__lake_staging'",
            wh.schema
        )),
        "mysql" => Some(format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{}' AND table_name = 't__lake_staging'",
            wh.schema
        )),
        // SQLite loads inside one transaction, which nothing outside it can see.
        _ => None,
    };
    match staging {
        Some(q) => {
            while wh.sql(&q) != "1" && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        None => std::thread::sleep(std::time::Duration::from_millis(400)),
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let t = wh.table("t");
    let now = wh.sql(&format!("SELECT count(*), min(v), max(v) FROM {t}"));
    if kind == "sqlite" && status.success() {
        // It finished before the kill landed; then it must be whole.
        assert_eq!(now, "400000\tb\tb");
    } else {
        assert_eq!(now, "1000\ta\ta", "the old table is not intact");
    }
    let out = export(&ctx, &wh, &[]);
    assert!(out.contains("400000 rows"), "{out}");
    assert_eq!(
        wh.sql(&format!("SELECT count(*), min(v), max(v) FROM {t}")),
        "400000\tb\tb"
    );
    wh.drop();
}

#[test]
fn postgres_killed_mid_load() {
    killed_mid_load("postgres");
}

#[test]
fn mysql_killed_mid_load() {
    killed_mid_load("mysql");
}

#[test]
fn sqlite_killed_mid_load() {
    killed_mid_load("sqlite");
}

/// `export_to` names the target; a name full of quotes is a name, never SQL.
#[test]
fn export_to_names_the_target_and_cannot_inject() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write(
        "queries/a.sql",
        "/* lake\nexport = true\nexport_to = 'rep.x\"; DROP TABLE keep; --'\n*/\nSELECT 1 AS id",
    );
    ctx.ok(&["run"]);
    let wh = Wh::new("postgres", &ctx);
    let keep = format!("\"{}\".keep", wh.schema);
    wh.sql(&format!(
        "CREATE SCHEMA \"{}\"; CREATE TABLE {keep} (id int)",
        wh.schema
    ));
    let out = ctx.ok(&["export", "--set", &format!("warehouse.url={}", wh.url)]);
    assert!(out.contains("-> rep.x\"; DROP TABLE keep; --"), "{out}");
    assert_eq!(
        wh.sql("SELECT count(*) FROM \"rep\".\"x\"\"; DROP TABLE keep; --\""),
        "1"
    );
    assert_eq!(wh.sql(&format!("SELECT count(*) FROM {keep}")), "0");
    wh.sql("DROP SCHEMA rep CASCADE");
    wh.drop();
}

/// TLS options reach the driver: `require` connects over TLS to the local PostgreSQL (Debian's
/// self-signed certificate), and `verify-full` refuses that certificate.
#[test]
fn postgres_tls_modes() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write(
        "queries/a.sql",
        "/* lake\nexport_to = \"tls_probe\"\n*/\nSELECT 1 AS id",
    );
    ctx.ok(&["run"]);
    let wh = Wh::new("postgres", &ctx);
    let mut args = wh.args();
    args.extend(["--set".to_string(), "warehouse.sslmode=require".to_string()]);
    let mut cmd = vec!["export".to_string()];
    cmd.extend(args.clone());
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = ctx.ok(&cmd);
    assert!(out.contains("exported"), "{out}");
    let mut cmd: Vec<String> = vec!["export".into()];
    cmd.extend(wh.args());
    cmd.extend([
        "--set".to_string(),
        "warehouse.sslmode=verify-full".to_string(),
    ]);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let err = ctx.fails(&cmd);
    assert!(err.contains("failed to connect to the warehouse"), "{err}");
    let bad = ctx.fails(&[
        "export",
        "--set",
        &format!("warehouse.url={}", wh.url),
        "--set",
        "warehouse.sslmode=sometimes",
    ]);
    assert!(bad.contains("sslmode `sometimes`"), "{bad}");
    wh.sql("DROP TABLE IF EXISTS tls_probe");
    wh.drop();
}

/// A password from LAKE_WAREHOUSE_PASSWORD is used (MariaDB's root has none, so a wrong one is
/// refused) and never printed.
#[test]
fn password_from_the_environment() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("queries/a.sql", "SELECT 1 AS id");
    ctx.ok(&["run"]);
    let err = ctx.fails_with_env(
        &[
            ("LAKE_WAREHOUSE_URL", "mysql://root@127.0.0.1:3306/test"),
            ("LAKE_WAREHOUSE_PASSWORD", "wrong-pw-xyzzy"),
        ],
        &["export"],
    );
    assert!(
        err.contains("failed to connect to the warehouse mysql://root@127.0.0.1:3306/test"),
        "{err}"
    );
    assert!(!err.contains("xyzzy"), "{err}");
}
