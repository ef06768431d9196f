//! `lake extract sql`: SQL database sources into raw tables, against the PostgreSQL on this
//! machine.

use crate::common::{Backend, TestContext, psql};

fn schema() -> String {
    format!("src_it_{}", std::process::id())
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
    // A second full extract replaces the table in one commit.
    psql(&format!("INSERT INTO {s}.t (id) VALUES (3)"));
    let out = ctx.ok(&["extract", "sql", "crm"]);
    assert!(out.contains("version 1: 3 rows"), "{out}");
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
        out.contains("down: failed, nothing committed")
            && out.contains("postgres://postgres:***@127.0.0.1:1/test"),
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
