//! `lake extract sql`: SQL database sources into raw tables, against the PostgreSQL and
//! MariaDB on this machine, a SQLite file, and the TDS mock of `mssql-testing`.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{Backend, TestContext, db_sql, outcome, psql};

static N: AtomicUsize = AtomicUsize::new(0);

fn schema() -> String {
    format!("src_it_{}", std::process::id())
}

/// A source database for one test: a PostgreSQL schema, a MariaDB database or a SQLite file.
struct Src {
    kind: &'static str,
    /// The schema or database.
    space: String,
    file: Option<std::path::PathBuf>,
}

impl Src {
    fn new(kind: &'static str, ctx: &TestContext) -> Self {
        let space = format!(
            "src_it_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let src = Src {
            kind,
            space,
            file: (kind == "sqlite").then(|| ctx.path("source.db")),
        };
        match kind {
            "postgres" => {
                src.sql(&format!(
                    "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
                    src.space
                ));
            }
            "mysql" => {
                src.sql(&format!(
                    "DROP DATABASE IF EXISTS {0}; CREATE DATABASE {0}",
                    src.space
                ));
            }
            _ => {}
        }
        src
    }

    fn url(&self) -> String {
        match self.kind {
            "postgres" => "postgres://postgres@127.0.0.1:5432/test".into(),
            "mysql" => format!("mysql://root@127.0.0.1:3306/{}", self.space),
            _ => "sqlite://source.db".into(),
        }
    }

    /// A table's name as lake.toml and SQL name it.
    fn table(&self, name: &str) -> String {
        match self.kind {
            "postgres" | "mysql" => format!("{}.{name}", self.space),
            _ => name.to_string(),
        }
    }

    fn sql(&self, sql: &str) -> String {
        db_sql(self.kind, self.file.as_deref(), sql)
    }

    /// A timestamp column type.
    fn timestamp(&self) -> &'static str {
        match self.kind {
            "mysql" => "DATETIME(6)",
            "sqlite" => "DATETIME",
            _ => "timestamp",
        }
    }
}

impl Drop for Src {
    fn drop(&mut self) {
        let _ = match self.kind {
            "postgres" => std::panic::catch_unwind(|| {
                psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.space))
            }),
            "mysql" => std::panic::catch_unwind(|| {
                db_sql(
                    "mysql",
                    None,
                    &format!("DROP DATABASE IF EXISTS {}", self.space),
                )
            }),
            _ => Ok(String::new()),
        };
    }
}

#[test]
fn postgres_types_land_exactly() {
    let s = schema() + "_types";
    psql(&format!(
        "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}; CREATE TYPE {s}.mood AS ENUM ('happy', 'sad');
         CREATE TABLE {s}.t (id int8 PRIMARY KEY, flag bool, small int2, i int4, r real, d double precision,
           amount numeric(12,3), free numeric, name text, code varchar(5), day date, at timestamp,
           at_tz timestamptz, tm time, blob bytea, tags text[], nums int4[], doc jsonb, u uuid, m {s}.mood, spot point);
         INSERT INTO {s}.t VALUES
           (1, true, 2, 3, 1.5, 2.25, 12345.678, 1.000000000001, 'a''b', 'xy', '2024-02-29',
            '2024-01-01 12:34:56.123456', '2024-01-01 12:34:56.123456+02', '13:14:15.5', '\\x00ff',
            '{{a,NULL,c}}', '{{1,2}}', '{{\"k\": [1, 2]}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'sad', '(1,2)'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"
    ));
    let ctx = TestContext::new(Backend::Local);
    ctx.configure(&format!(
        "[sources.uncast]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\ntable = \"{s}.t\"\n\n[sources.crm]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\ntable = \"{s}.t\"\ncasts = {{ spot = \"text\" }}\n"
    ));
    // A type lake does not map is named, with the cast that fixes it; nothing lands.
    let (ok, out, _) = crate::common::outcome(ctx.lake().args(["extract", "sql", "uncast"]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("column `spot` has type POINT") && out.contains("casts = { spot = \"text\" }"),
        "{out}"
    );
    assert!(!ctx.path("lake/raw/uncast").exists());
    let out = ctx.ok(&["extract", "sql", "crm"]);
    assert!(out.contains("crm -> raw.crm version 0: 2 rows"), "{out}");
    let types = ctx.ok(&["describe", "raw.crm"]);
    for t in [
        "Decimal128(12, 3)",
        "Timestamp(µs, \"UTC\")",
        "Date32",
        "Binary",
        "List(Int64",
    ] {
        assert!(types.contains(t), "{t} missing:\n{types}");
    }
    assert_eq!(
        ctx.csv("SELECT flag, small, i, r, d, CAST(amount AS VARCHAR) AS amount, free, name, code, day, at, at_tz, tm, array_to_string(tags, '|', 'NULL') AS tags, array_to_string(nums, '|') AS nums, doc, u, m, spot FROM raw.crm WHERE id = 1"),
        "flag,small,i,r,d,amount,free,name,code,day,at,at_tz,tm,tags,nums,doc,u,m,spot\ntrue,2,3,1.5,2.25,12345.678,1.000000000001,a'b,xy,2024-02-29,2024-01-01T12:34:56.123456,2024-01-01T10:34:56.123456Z,13:14:15.5,a|NULL|c,1|2,\"{\"\"k\"\": [1, 2]}\",a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,sad,\"(1,2)\"\n"
    );
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.crm WHERE id = 2 AND flag IS NULL AND amount IS NULL AND tags IS NULL AND at_tz IS NULL"), "1");
    // A second full extract replaces the table in one commit, its columns too: a type that
    // changed at the source changes in the lake, a dropped column goes.
    psql(&format!(
        "INSERT INTO {s}.t (id) VALUES (3); ALTER TABLE {s}.t ALTER COLUMN small TYPE int8, DROP COLUMN blob"
    ));
    let out = ctx.ok(&["extract", "sql", "crm"]);
    assert!(out.contains("version 1: 3 rows"), "{out}");
    let types = ctx.ok(&["describe", "raw.crm"]);
    assert!(
        types.contains("small") && !types.contains("blob") && !types.contains("Int16"),
        "{types}"
    );
    psql(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn postgres_queries_and_bad_sources() {
    let ctx = TestContext::new(Backend::Local);
    ctx.configure(
        "[sources.nums]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\nquery = \"SELECT g AS n, g * 2 AS twice FROM generate_series(1, 20000) AS g\"\ntarget = \"raw.numbers\"\nbatch_rows = 1000\n\n[sources.down]\nurl = \"postgres://postgres:hunter2secret@127.0.0.1:1/test\"\ntable = \"x\"\n",
    );
    let (ok, out, err) = crate::common::outcome(ctx.lake().args(["extract", "sql"]));
    assert!(!ok);
    // The good source lands; the unreachable one fails alone, its password never shown.
    assert!(
        out.contains("nums -> raw.numbers version 0: 20000 rows"),
        "{out}"
    );
    assert!(
        out.contains("down: failed:") && out.contains("postgres://postgres:***@127.0.0.1:1/test"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2secret") && !err.contains("hunter2secret"),
        "{out}{err}"
    );
    assert!(
        out.contains("Connection refused"),
        "the real cause is named: {out}"
    );
    assert_eq!(
        ctx.scalar("SELECT sum(twice) FROM raw.numbers"),
        "400020000"
    );
    let err = ctx.fails(&["extract", "sql", "nope"]);
    assert!(err.contains("no [sources.nope] in lake.toml"), "{err}");
}

/// Incremental extracts: inserts and updates merge on the key, a late row inside the lookback
/// is caught, and deleted keys are marked.
fn incremental(kind: &'static str) {
    let ctx = TestContext::new(Backend::Local);
    let src = Src::new(kind, &ctx);
    let t = src.table("items");
    src.sql(&format!(
        "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name VARCHAR(20), updated_at {});
         INSERT INTO {t} VALUES (1, 'a', '2024-01-01 08:00:00'), (2, 'b', '2024-01-01 09:00:00'), (3, 'c', '2024-01-01 10:00:00')",
        src.timestamp()
    ));
    ctx.configure(&format!(
        "[sources.items]\nurl = \"{}\"\ntable = \"{t}\"\nmode = \"incremental\"\ncursor = \"updated_at\"\nprimary_key = [\"id\"]\nlookback = \"1m\"\n",
        src.url()
    ));
    let out = ctx.ok(&["extract", "sql", "items"]);
    assert!(
        out.contains("items -> raw.items version 0: 3 rows, cursor start -> 2024-01-01 10:00:00"),
        "{out}"
    );
    // An insert and an update: read from the cursor minus the lookback (row 3 again), merged.
    src.sql(&format!(
        "INSERT INTO {t} VALUES (4, 'd', '2024-01-01 11:00:00');
         UPDATE {t} SET name = 'a2', updated_at = '2024-01-01 12:00:00' WHERE id = 1"
    ));
    let out = ctx.ok(&["extract", "sql", "items"]);
    assert!(
        out.contains("version 1: 3 rows, cursor 2024-01-01 10:00:00 -> 2024-01-01 12:00:00"),
        "{out}"
    );
    assert_eq!(
        ctx.csv("SELECT id, name FROM raw.items ORDER BY id"),
        "id,name\n1,a2\n2,b\n3,c\n4,d\n"
    );
    // A row that commits late, 30 s before the saved cursor, is inside the lookback.
    src.sql(&format!(
        "INSERT INTO {t} VALUES (5, 'late', '2024-01-01 11:59:30')"
    ));
    let out = ctx.ok(&["extract", "sql", "items"]);
    assert!(out.contains("version 2: 2 rows"), "{out}");
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.items"), "5");
    assert_eq!(
        ctx.scalar("SELECT count(*) - count(DISTINCT id) FROM raw.items"),
        "0"
    );
    // Deletes: the row stays, marked.
    src.sql(&format!("DELETE FROM {t} WHERE id = 2"));
    let out = ctx.ok(&["extract", "sql", "items", "--detect-deletes"]);
    assert!(out.contains("1 newly deleted at the source"), "{out}");
    assert_eq!(
        ctx.csv("SELECT id FROM raw.items WHERE _deleted_at IS NOT NULL"),
        "id\n2\n"
    );
    let out = ctx.ok(&["extract", "sql", "items", "--detect-deletes"]);
    assert!(out.contains(", 0 newly deleted at the source"), "{out}");
    // The cursor survives the delete commit: nothing new is read past it.
    assert!(
        out.contains("cursor 2024-01-01 12:00:00 -> 2024-01-01 12:00:00"),
        "{out}"
    );
    // A cursor column that does not exist is named, with the columns there are.
    let err = ctx.fails(&[
        "--set",
        "sources.items.cursor=changed_at",
        "extract",
        "sql",
        "items",
    ]);
    assert!(
        err.contains("the cursor column `changed_at` is not a column of table")
            && err.contains("its columns are: id, name, updated_at"),
        "{err}"
    );
}

#[test]
fn postgres_incremental() {
    incremental("postgres");
}

#[test]
fn mysql_incremental() {
    incremental("mysql");
}

#[test]
fn sqlite_incremental() {
    incremental("sqlite");
}

#[test]
fn mysql_types_land_exactly() {
    let ctx = TestContext::new(Backend::Local);
    let src = Src::new("mysql", &ctx);
    let t = src.table("t");
    src.sql(&format!(
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, flag BOOLEAN, tiny TINYINT, utiny TINYINT UNSIGNED, small SMALLINT,
           i INT, ui INT UNSIGNED, big BIGINT UNSIGNED, r FLOAT, d DOUBLE, amount DECIMAL(12,3), name VARCHAR(20),
           body TEXT, day DATE, at DATETIME(6), at_utc TIMESTAMP(6) NULL, tm TIME, blob_col VARBINARY(10), doc JSON,
           mood ENUM('happy','sad'), yr YEAR, spot POINT NULL);
         INSERT INTO {t} VALUES (1, true, -5, 250, -300, 70000, 4000000000, 18446744073709551615, 1.5, 2.25,
           12345.678, 'a''b', 'ünïcode', '2024-02-29', '2024-01-01 12:34:56.123456', '2024-01-01 12:34:56.123456',
           '13:14:15', X'00FF', '{{\"k\": [1, 2]}}', 'sad', 2024, POINT(1, 2)),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
    ));
    ctx.configure(&format!(
        "[sources.m]\nurl = \"{}\"\ntable = \"{t}\"\n",
        src.url()
    ));
    let (ok, out, _) = outcome(ctx.lake().args(["extract", "sql", "m"]));
    assert!(
        !ok && out.contains("column `spot` has type GEOMETRY"),
        "{out}"
    );
    let out = ctx.ok(&["--set", "sources.m.casts.spot=text", "extract", "sql", "m"]);
    assert!(out.contains("m -> raw.m version 0: 2 rows"), "{out}");
    let types = ctx.ok(&["describe", "raw.m"]);
    for t in [
        "Int8",
        "Int16",
        "Int32",
        "Decimal128(20, 0)",
        "Decimal128(12, 3)",
        "Float32",
        "Timestamp(µs, \"UTC\")",
        "Date32",
        "Binary",
    ] {
        assert!(types.contains(t), "{t} missing:\n{types}");
    }
    assert_eq!(
        ctx.csv("SELECT flag, tiny, utiny, small, i, ui, CAST(big AS VARCHAR) AS big, r, d, CAST(amount AS VARCHAR) AS amount, name, body, day, at, at_utc, tm, blob_col, doc, mood, yr, spot FROM raw.m WHERE id = 1"),
        "flag,tiny,utiny,small,i,ui,big,r,d,amount,name,body,day,at,at_utc,tm,blob_col,doc,mood,yr,spot\ntrue,-5,250,-300,70000,4000000000,18446744073709551615,1.5,2.25,12345.678,a'b,ünïcode,2024-02-29,2024-01-01T12:34:56.123456,2024-01-01T12:34:56.123456Z,13:14:15,00ff,\"{\"\"k\"\": [1, 2]}\",sad,2024,POINT(1 2)\n"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.m WHERE id = 2 AND flag IS NULL AND big IS NULL AND amount IS NULL AND at_utc IS NULL AND doc IS NULL"),
        "1"
    );
}

#[test]
fn sqlite_types_land_exactly() {
    let ctx = TestContext::new(Backend::Local);
    let src = Src::new("sqlite", &ctx);
    src.sql(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, flag BOOLEAN, n BIGINT, r REAL, amount DECIMAL(12,3), loose NUMERIC,
           name TEXT, code VARCHAR(5), day DATE, at DATETIME, blob_col BLOB, doc JSON);
         INSERT INTO t VALUES (1, 1, 9007199254740993, 1.5, 12345.678, 2.5, 'a''b', 'xy', '2024-02-29',
           '2024-01-01 12:34:56.123456', X'00FF', '{\"k\": [1, 2]}'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    );
    ctx.configure("[sources.s]\nurl = \"sqlite://source.db\"\ntable = \"t\"\n");
    let out = ctx.ok(&["extract", "sql", "s"]);
    assert!(out.contains("s -> raw.s version 0: 2 rows"), "{out}");
    let types = ctx.ok(&["describe", "raw.s"]);
    for t in [
        "Decimal128(12, 3)",
        "Boolean",
        "Date32",
        "Timestamp(µs)",
        "Binary",
        "Float64",
    ] {
        assert!(types.contains(t), "{t} missing:\n{types}");
    }
    assert_eq!(
        ctx.csv("SELECT flag, n, r, CAST(amount AS VARCHAR) AS amount, loose, name, code, day, at, blob_col, doc FROM raw.s WHERE id = 1"),
        "flag,n,r,amount,loose,name,code,day,at,blob_col,doc\ntrue,9007199254740993,1.5,12345.678,2.5,a'b,xy,2024-02-29,2024-01-01T12:34:56.123456,00ff,\"{\"\"k\"\": [1, 2]}\"\n"
    );
    // A value that is not what its column declares is an error naming the column.
    src.sql("INSERT INTO t (id, n) VALUES (3, 'not a number')");
    let (ok, out, _) = outcome(ctx.lake().args(["extract", "sql", "s"]));
    assert!(!ok && out.contains("column `n`"), "{out}");
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.s"),
        "2",
        "the table is as it was"
    );
}

#[test]
fn bad_sources_are_named() {
    let ctx = TestContext::new(Backend::Local);
    ctx.configure(
        "[sources.wrong_password]\nurl = \"mysql://root:hunter2secret@127.0.0.1:3306/test\"\ntable = \"x\"\n\n[sources.missing]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\ntable = \"no_such_table\"\n\n[sources.no_file]\nurl = \"sqlite://nothing.db\"\ntable = \"t\"\n\n[sources.repeats]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\nquery = \"SELECT g % 3 AS k, g AS c FROM generate_series(1, 10) AS g\"\nmode = \"incremental\"\ncursor = \"c\"\nprimary_key = [\"k\"]\n",
    );
    let (ok, out, err) = outcome(ctx.lake().args(["extract", "sql"]));
    assert!(!ok);
    assert!(
        out.contains("wrong_password: failed:")
            && out.contains("Access denied for user 'root'")
            && out.contains("mysql://root:***@127.0.0.1:3306/test"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2secret") && !err.contains("hunter2secret"),
        "{out}{err}"
    );
    assert!(
        out.contains("missing: failed")
            && out.contains("relation \"no_such_table\" does not exist")
            && out.contains("reading table no_such_table"),
        "{out}"
    );
    assert!(
        out.contains("no_file: failed") && out.contains("nothing.db: no such file"),
        "{out}"
    );
}

/// A process killed in the middle of an incremental extract leaves the table as it was; the
/// rerun lands every row once.
fn killed_mid_extract_then_rerun(kind: &'static str) {
    let ctx = TestContext::new(Backend::Local);
    let src = Src::new(kind, &ctx);
    let t = src.table("big");
    // 50,000 rows; then every tenth updated and 350,000 inserted.
    let (create, update) = match kind {
        "postgres" => (
            format!(
                "CREATE TABLE {t} (id int8 PRIMARY KEY, v int8, updated_at timestamptz);
                 INSERT INTO {t} SELECT g, g, '2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, 50000) g"
            ),
            format!(
                "UPDATE {t} SET v = -v, updated_at = updated_at + interval '1 day' WHERE id % 10 = 0;
                 INSERT INTO {t} SELECT g, g, '2024-03-01'::timestamptz + g * interval '1 second' FROM generate_series(50001, 400000) g"
            ),
        ),
        "mysql" => (
            format!(
                "CREATE TABLE {t} (id BIGINT PRIMARY KEY, v BIGINT, updated_at DATETIME(6));
                 INSERT INTO {t} SELECT seq, seq, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_50000"
            ),
            format!(
                "UPDATE {t} SET v = -v, updated_at = updated_at + INTERVAL 1 DAY WHERE id % 10 = 0;
                 INSERT INTO {t} SELECT seq, seq, TIMESTAMP '2024-03-01 00:00:00' + INTERVAL seq SECOND FROM seq_50001_to_400000"
            ),
        ),
        _ => (
            format!(
                "CREATE TABLE {t} (id INTEGER PRIMARY KEY, v INTEGER, updated_at DATETIME);
                 WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 50000)
                 INSERT INTO {t} SELECT x, x, datetime('2024-01-01', '+' || x || ' seconds') FROM g"
            ),
            format!(
                "UPDATE {t} SET v = -v, updated_at = datetime(updated_at, '+1 day') WHERE id % 10 = 0;
                 WITH RECURSIVE g(x) AS (SELECT 50001 UNION ALL SELECT x + 1 FROM g WHERE x < 400000)
                 INSERT INTO {t} SELECT x, x, datetime('2024-03-01', '+' || x || ' seconds') FROM g"
            ),
        ),
    };
    src.sql(&create);
    ctx.configure(&format!(
        "[sources.big]\nurl = \"{}\"\ntable = \"{t}\"\nmode = \"incremental\"\ncursor = \"updated_at\"\nprimary_key = [\"id\"]\nbatch_rows = 500\n",
        src.url()
    ));
    ctx.ok(&["extract", "sql", "big"]);
    assert_eq!(ctx.version("raw.big"), 0);
    src.sql(&update);
    let mut child = ctx
        .std_command()
        .args(["--quiet", "extract", "sql", "big"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        running,
        "the extract ended before it was killed; make the table larger"
    );
    // Nothing half-written: the table is at its first version.
    assert_eq!(ctx.version("raw.big"), 0);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.big"), "50000");
    let out = ctx.ok(&["extract", "sql", "big"]);
    assert!(out.contains("version 1: 355000 rows"), "{out}");
    assert_eq!(
        ctx.csv("SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(v) AS v FROM raw.big"),
        format!(
            "n,ids,v\n400000,400000,{}\n",
            (1..=400000i64)
                .map(|g| if g <= 50000 && g % 10 == 0 { -g } else { g })
                .sum::<i64>()
        )
    );
}

#[test]
fn postgres_killed_mid_extract_then_rerun() {
    killed_mid_extract_then_rerun("postgres");
}

#[test]
fn mysql_killed_mid_extract_then_rerun() {
    killed_mid_extract_then_rerun("mysql");
}

#[test]
fn sqlite_killed_mid_extract_then_rerun() {
    killed_mid_extract_then_rerun("sqlite");
}

/// SQL Server over the real TDS protocol, against the mock: several types, several batches.
#[test]
fn mssql_query_over_tds() {
    use crate::tds_mock::{Response, TdsMock, listens_columns, listens_rows};
    let query = "SELECT id, plays, ratio, score, liked, name, art FROM dbo.listens";
    let read = format!(
        "SELECT {} FROM ({query}) AS q",
        ["id", "plays", "ratio", "score", "liked", "name", "art"]
            .map(|c| format!("q.[{c}] AS [{c}]"))
            .join(", ")
    );
    let mock = TdsMock::start(vec![
        (
            format!("SELECT TOP 0 * FROM ({query}) AS q"),
            Response::rows(listens_columns(), vec![]),
        ),
        (read, Response::rows(listens_columns(), listens_rows())),
    ]);
    let ctx = TestContext::new(Backend::Local);
    ctx.configure(&format!(
        "[sources.crm]\nurl = \"mssql://lake:pw-secret@127.0.0.1:{}/crm?encrypt=no_tls\"\nquery = \"{query}\"\nbatch_rows = 3\n",
        mock.port
    ));
    let out = ctx.ok(&["extract", "sql", "crm"]);
    assert!(out.contains("crm -> raw.crm version 0: 7 rows"), "{out}");
    let types = ctx.ok(&["describe", "raw.crm"]);
    for t in [
        "Int64", "Int32", "Float64", "Float32", "Boolean", "Utf8", "Binary",
    ] {
        assert!(types.contains(t), "{t} missing:\n{types}");
    }
    assert_eq!(
        ctx.csv("SELECT id, plays, ratio, score, liked, name, art FROM raw.crm ORDER BY id"),
        "id,plays,ratio,score,liked,name,art\n1,10,0.25,0.5,false,track 1,01ff\n2,20,0.5,1.0,true,track 2,02ff\n3,30,0.75,1.5,false,track 3,03ff\n4,,,,,naïve ☕,\n5,50,1.25,2.5,false,track 5,05ff\n6,60,1.5,3.0,true,track 6,06ff\n7,70,1.75,3.5,false,track 7,07ff\n"
    );
    assert!(!out.contains("pw-secret"), "{out}");
}

/// An increasing id as the cursor: the lookback is a number of ids.
#[test]
fn integer_cursor_with_lookback() {
    let ctx = TestContext::new(Backend::Local);
    let src = Src::new("sqlite", &ctx);
    src.sql("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT); INSERT INTO events VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e');");
    ctx.configure("[sources.events]\nurl = \"sqlite://source.db\"\ntable = \"events\"\nmode = \"incremental\"\ncursor = \"id\"\nprimary_key = [\"id\"]\nlookback = \"2\"\n");
    let out = ctx.ok(&["extract", "sql", "events"]);
    assert!(
        out.contains("version 0: 5 rows, cursor start -> 5"),
        "{out}"
    );
    src.sql("INSERT INTO events VALUES (6, 'f'), (7, 'g')");
    // From 5 - 2: ids 3 to 7.
    let out = ctx.ok(&["extract", "sql", "events"]);
    assert!(out.contains("version 1: 5 rows, cursor 5 -> 7"), "{out}");
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.events"), "7");
    // Nothing new: the lookback's rows are merged again and the cursor stays.
    let out = ctx.ok(&["extract", "sql", "events"]);
    assert!(out.contains("cursor 7 -> 7"), "{out}");
    let (ok, out, _) = outcome(ctx.lake().args([
        "--set",
        "sources.events.lookback=2h",
        "extract",
        "sql",
        "events",
    ]));
    assert!(
        !ok && out.contains("lookback = \"2h\": an integer cursor takes a number of ids"),
        "{out}"
    );
}
