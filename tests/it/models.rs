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
