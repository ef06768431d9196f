//! Group-scoped table models: the strategy `lake plan` names for each shape, runs that
//! recompute only the touched groups and equal a full rebuild after every kind of change, and
//! a run killed midway that reruns to the same tables.

use std::path::Path;

use proptest::prelude::*;

use crate::common::{Backend, TestContext};
use crate::snapshot;

/// raw.plays (id, listener, at, ms, track) and raw.extra (a few plays more, rewritten whole
/// when they change, as the example's API plays are), a view over both, and four
/// group-scoped models: by day (through the view, with a distinct count), by listener
/// (sessions, from windows, recomputed from the last session before the new plays), by month
/// (a top 2 ranked within the month), and by track (aggregates that merge, and take out the
/// extra plays that went). Sessions (a file a day) and months are sorted: their runs replace
/// the files that hold the touched groups. Days and tracks are not: their runs write the
/// table anew.
fn project(ctx: &TestContext, rows: &[Play]) {
    ctx.write("plays.csv", csv(rows));
    ctx.ok(&["ingest", "plays.csv", "--table", "raw.plays"]);
    extra(ctx, &[]);
    ctx.write(
        "queries/p.sql",
        "/* lake\nmaterialized = \"view\"\n*/\nSELECT *, CAST(at AS DATE) AS day FROM raw.plays\nUNION ALL SELECT *, CAST(at AS DATE) AS day FROM raw.extra",
    );
    ctx.write(
        "queries/daily.sql",
        "/* lake\nexport = true\n[[tests]]\nunique = [\"day\"]\n*/\nSELECT day, count(*) AS plays, count(DISTINCT track) AS tracks, sum(ms) AS ms FROM curated.p GROUP BY day",
    );
    ctx.write(
        "queries/sessions.sql",
        "/* lake\nexport = true\nrecompute_from = \"at\"\nsort_by = [\"at\"]\nfiles_by = \"day\"\n[[tests]]\nunique = [\"listener\", \"at\"]\n*/\nWITH o AS (SELECT listener, at, id, ms, lag(at) OVER (PARTITION BY listener ORDER BY at, id) AS prev FROM raw.plays),
f AS (SELECT *, CASE WHEN prev IS NULL OR at - prev > INTERVAL '30 minutes' THEN 1 ELSE 0 END AS s FROM o),
n AS (SELECT *, sum(s) OVER (PARTITION BY listener ORDER BY at, id ROWS UNBOUNDED PRECEDING) AS sid FROM f)
SELECT listener, min(at) AS at, count(*) AS plays, sum(ms) AS ms FROM n GROUP BY listener, sid",
    );
    ctx.write(
        "queries/per_track.sql",
        "/* lake\nexport = true\n[[tests]]\nunique = [\"track\"]\n*/\nSELECT track, count(*) AS plays, sum(ms) AS ms, min(at) AS first, max(at) AS last,
    count(*) FILTER (WHERE ms > 3000) AS long, round(CAST(sum(ms) AS DOUBLE) / count(*), 2) AS mean
FROM curated.p GROUP BY track HAVING count(*) > 1",
    );
    ctx.write(
        "queries/unmatched.sql",
        "/* lake\nexport = true\n*/\nSELECT x.id, x.listener, x.at, x.track FROM raw.extra x
WHERE x.ms > 0 AND NOT EXISTS (
    SELECT 1 FROM raw.plays p
    WHERE p.track = x.track AND p.at BETWEEN x.at - INTERVAL '30 days' AND x.at + INTERVAL '30 days'
)",
    );
    ctx.write(
        "queries/monthly.sql",
        "/* lake\nexport = true\nsort_by = [\"month\"]\n[[tests]]\nunique = [\"month\", \"rank\"]\n*/\nSELECT * FROM (
    SELECT CAST(month AS DATE) AS month, track, n,
        row_number() OVER (PARTITION BY month ORDER BY n DESC, track) AS rank
    FROM (SELECT date_trunc('month', at) AS month, track, count(*) AS n FROM raw.plays GROUP BY 1, 2)
) WHERE rank <= 2",
    );
}

const MODELS: [&str; 5] = ["daily", "sessions", "monthly", "per_track", "unmatched"];

#[derive(Debug, Clone)]
struct Play {
    id: u32,
    listener: Option<&'static str>,
    /// Minutes since 2026-01-01T00:00Z.
    minute: u32,
    ms: u32,
    track: &'static str,
}

/// raw.extra overwritten with a play on day 0 and `rows`.
fn extra(ctx: &TestContext, rows: &[Play]) {
    let mut all = vec![Play {
        id: 90_000,
        listener: Some("cy"),
        minute: 700,
        ms: 4000,
        track: "b",
    }];
    all.extend_from_slice(rows);
    ctx.write("extra.csv", csv(&all));
    ctx.ok(&[
        "ingest",
        "extra.csv",
        "--table",
        "raw.extra",
        "--mode",
        "overwrite",
    ]);
}

fn csv(rows: &[Play]) -> String {
    let mut out = String::from("id,listener,at,ms,track\n");
    for r in rows {
        let at = chrono::DateTime::from_timestamp(1_767_225_600 + r.minute as i64 * 60, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ");
        out.push_str(&format!(
            "{},{},{at},{},{}\n",
            r.id,
            r.listener.unwrap_or(""),
            r.ms,
            r.track
        ));
    }
    out
}

/// Every model's rows, sorted, as CSV lines; and as the SQLite warehouse holds them.
fn tables(ctx: &TestContext) -> Vec<(String, Vec<String>)> {
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let warehouse = ctx.path("warehouse.db");
    MODELS
        .iter()
        .flat_map(|m| {
            let lake = sorted(ctx.csv(&format!("SELECT * FROM curated.{m}")));
            let exported = sorted(crate::common::db_sql(
                "sqlite",
                Some(&warehouse),
                &format!("SELECT * FROM \"{m}\""),
            ));
            [(m.to_string(), lake), (format!("warehouse {m}"), exported)]
        })
        .collect()
}

/// `lake run`, then `lake export` to the SQLite warehouse.
fn run_and_export(ctx: &TestContext) -> String {
    let out = ctx.ok(&["run"]);
    ctx.ok(&["export"]);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The models as `lake run --full-refresh` builds them from the same state, in a copy.
fn rebuilt(ctx: &TestContext) -> Vec<(String, Vec<String>)> {
    let copy = TestContext::new(Backend::Local);
    copy_dir(ctx.dir.path(), copy.dir.path());
    std::fs::remove_file(copy.path("warehouse.db")).unwrap();
    copy.ok(&["run", "--full-refresh"]);
    copy.ok(&["export"]);
    tables(&copy)
}

#[test]
fn plan_names_each_models_strategy() {
    let ctx = TestContext::new(Backend::Local);
    project(&ctx, &day(0, 1, 0));
    ctx.write("tracks.csv", "track,artist\na,x\nb,y\n");
    ctx.ok(&["ingest", "tracks.csv", "--table", "raw.tracks"]);
    let models = [
        (
            "joined",
            "SELECT p.listener, t.artist, count(*) AS n FROM raw.plays p JOIN raw.tracks t ON p.track = t.track GROUP BY 1, 2",
        ),
        (
            "limited",
            "SELECT track, count(*) AS n FROM raw.plays GROUP BY track ORDER BY n DESC LIMIT 5",
        ),
        (
            "ranked",
            "SELECT track, row_number() OVER (ORDER BY track) AS r FROM (SELECT DISTINCT track FROM raw.plays)",
        ),
        (
            "outer",
            "SELECT p.track, count(*) AS n FROM raw.plays p FULL JOIN raw.tracks t ON p.track = t.track GROUP BY 1",
        ),
        (
            "random",
            "SELECT track, count(*) AS n, random() AS r FROM raw.plays GROUP BY track",
        ),
        ("total", "SELECT count(*) AS n FROM raw.plays"),
        (
            "itself",
            "SELECT p.listener, count(*) AS n FROM raw.plays p WHERE EXISTS (SELECT 1 FROM raw.plays q WHERE q.id = p.id + 1) GROUP BY 1",
        ),
        ("rows", "SELECT id, track FROM raw.plays WHERE ms > 0"),
        (
            "forced",
            "/* lake\nincremental_by = \"full\"\n*/\nSELECT track, count(*) AS n FROM raw.plays GROUP BY track",
        ),
        (
            "trusted",
            "/* lake\nincremental_by = [\"listener\"]\n*/\nSELECT listener, at, row_number() OVER (ORDER BY at) AS r FROM raw.plays",
        ),
        (
            "misnamed",
            "/* lake\nrecompute_from = \"started_at\"\n*/\nSELECT listener, min(at) AS started_at FROM raw.plays GROUP BY listener",
        ),
    ];
    for (name, sql) in models {
        ctx.write(&format!("queries/{name}.sql"), sql);
    }
    let out = ctx.ok(&["plan"]);
    snapshot!(ctx, "plan_strategies", out);

    ctx.write(
        "queries/forced.sql",
        "/* lake\nincremental_by = \"day\"\n*/\nSELECT 1 AS n",
    );
    let err = ctx.fails(&["plan"]);
    assert!(
        err.contains("queries/forced.sql")
            && err.contains("expected \"full\" or a list of output columns"),
        "{err}"
    );
    ctx.write(
        "queries/forced.sql",
        "/* lake\nmaterialized = \"view\"\nrecompute_from = \"at\"\n*/\nSELECT 1 AS n",
    );
    let err = ctx.fails(&["plan"]);
    assert!(
        err.contains("queries/forced.sql")
            && err.contains("`recompute_from` is for table models recomputed by groups"),
        "{err}"
    );
}

/// A NOT EXISTS model loses the rows a day's new plays match, and keeps the rest without
/// reading them again; a change to the table its rows come from rebuilds it.
#[test]
fn a_not_exists_model_loses_only_the_rows_new_rows_match() {
    let ctx = TestContext::new(Backend::Local);
    project(&ctx, &day(0, 2, 0));
    let late = |id: u32, d: u32, track: &'static str| Play {
        id,
        listener: Some("cy"),
        minute: d * 1440 + 600,
        ms: 1000,
        track,
    };
    extra(&ctx, &[late(500, 40, "a"), late(501, 40, "zz")]);
    run_and_export(&ctx);
    let unmatched = |ctx: &TestContext| ctx.csv("SELECT id FROM curated.unmatched ORDER BY id");
    assert_eq!(unmatched(&ctx), "id\n500\n501\n");
    let plan = ctx.ok(&["plan", "--select", "curated.unmatched"]);
    assert!(
        plan.contains("shrinks: the rows new rows of raw.plays match (NOT EXISTS) go"),
        "{plan}"
    );
    // Day 41's plays hold track a: play 500 goes, 501 stays.
    ctx.write("new.csv", csv(&day(41, 2, 100)));
    ctx.ok(&["ingest", "new.csv", "--table", "raw.plays"]);
    let out = run_and_export(&ctx);
    assert!(
        out.contains("kept the rows that the new rows of raw.plays do not match"),
        "{out}"
    );
    assert_eq!(unmatched(&ctx), "id\n501\n");
    assert_eq!(tables(&ctx), rebuilt(&ctx));
    // Compacted only: nothing to do.
    ctx.ok(&["maintain", "raw.plays"]);
    let out = run_and_export(&ctx);
    assert!(out.contains("its inputs' rows are as they were"), "{out}");
    // raw.extra rewritten: rebuilt.
    extra(&ctx, &[late(502, 60, "zz")]);
    let out = run_and_export(&ctx);
    assert!(out.contains("rebuilt: raw.extra changed"), "{out}");
    assert_eq!(unmatched(&ctx), "id\n502\n");
    assert_eq!(tables(&ctx), rebuilt(&ctx));
}

/// `listeners` listeners' plays on day `d`: a session each, of `per` plays 5 minutes apart,
/// ids from `first`.
fn day(d: u32, per: u32, first: u32) -> Vec<Play> {
    const LISTENERS: [Option<&str>; 3] = [Some("ann"), Some("bob"), None];
    const TRACKS: [&str; 4] = ["a", "b", "c", "d"];
    let mut out = Vec::new();
    for (l, listener) in LISTENERS.iter().enumerate() {
        for i in 0..per {
            let id = first + out.len() as u32;
            out.push(Play {
                id,
                listener: *listener,
                minute: d * 1440 + 600 + l as u32 * 7 + i * 5,
                ms: 1000 * (id % 7 + 1),
                track: TRACKS[(id as usize * 3 + l) % TRACKS.len()],
            });
        }
    }
    out
}

#[test]
fn a_day_recomputes_its_groups_and_compaction_none() {
    let ctx = TestContext::new(Backend::Local);
    let mut rows = day(0, 3, 0);
    rows.extend(day(1, 3, 100));
    rows.extend(day(40, 2, 200));
    project(&ctx, &rows);
    run_and_export(&ctx);

    ctx.write("day.csv", csv(&day(41, 2, 300)));
    ctx.ok(&["ingest", "day.csv", "--table", "raw.plays"]);
    let plan = ctx.ok(&["plan"]);
    assert!(
        plan.contains("strategy groups by day, re-aggregated: count(DISTINCT …) does not merge\n     would recompute 1 group"),
        "{plan}"
    );
    assert!(
        plan.contains("strategy groups by track, merging new rows into its aggregates"),
        "{plan}"
    );
    let out = run_and_export(&ctx);
    for (model, groups) in [
        ("daily", "1 group"),
        ("sessions", "3 groups"),
        ("monthly", "1 group"),
        ("per_track", "4 groups"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("curated.{model} ")))
            .unwrap();
        assert!(line.contains(&format!("{groups} recomputed")), "{out}");
    }
    assert_eq!(tables(&ctx), rebuilt(&ctx));

    // Compaction changes no rows: nothing is recomputed.
    ctx.ok(&["maintain", "raw.plays"]);
    let out = run_and_export(&ctx);
    assert!(
        out.matches("its inputs' rows are as they were").count() == 5,
        "{out}"
    );
    // Late plays recompute their old day, not the new one.
    ctx.write("late.csv", csv(&day(1, 1, 400)));
    ctx.ok(&["ingest", "late.csv", "--table", "raw.plays"]);
    let out = run_and_export(&ctx);
    assert!(out.contains("1 group recomputed"), "{out}");
    assert_eq!(tables(&ctx), rebuilt(&ctx));

    // A new listener's first play touches no stored session: its session is added in a file
    // of its own, and no file is rewritten. Its next play replaces that file only.
    let eve = |id: u32, minute: u32| Play {
        id,
        listener: Some("eve"),
        minute,
        ms: 3000,
        track: "d",
    };
    for (i, (removed, added)) in [(0, 1), (1, 1)].into_iter().enumerate() {
        ctx.write(
            "eve.csv",
            csv(&[eve(800 + i as u32, 41 * 1440 + 1000 + i as u32 * 10)]),
        );
        ctx.ok(&["ingest", "eve.csv", "--table", "raw.plays"]);
        run_and_export(&ctx);
        assert_eq!(
            last_commit_files(&ctx, "curated.sessions"),
            (removed, added)
        );
        assert_eq!(tables(&ctx), rebuilt(&ctx));
    }

    // A play before a listener's first session, and a new listener's: their groups have no
    // session before the change and are recomputed whole, the others from their cut.
    let early = [
        Play {
            id: 700,
            listener: Some("ann"),
            minute: 5,
            ms: 2000,
            track: "a",
        },
        Play {
            id: 701,
            listener: Some("dee"),
            minute: 41 * 1440 + 900,
            ms: 2000,
            track: "c",
        },
        Play {
            id: 702,
            listener: Some("bob"),
            minute: 41 * 1440 + 900,
            ms: 2000,
            track: "c",
        },
    ];
    ctx.write("early.csv", csv(&early));
    ctx.ok(&["ingest", "early.csv", "--table", "raw.plays"]);
    let out = run_and_export(&ctx);
    let line = out
        .lines()
        .find(|l| l.contains("curated.sessions "))
        .unwrap();
    assert!(line.contains("3 groups recomputed"), "{out}");
    assert_eq!(tables(&ctx), rebuilt(&ctx));

    // raw.extra rewritten whole, with one play more: its old rows go and come back. The
    // merging model takes them out of its aggregates and adds the new ones, reading no
    // history; the sessions recompute from the listener's last session before the change.
    extra(&ctx, &day(1, 1, 600)[..1]);
    let out = run_and_export(&ctx);
    let line = out
        .lines()
        .find(|l| l.contains("curated.per_track "))
        .unwrap();
    assert!(line.contains("2 groups recomputed"), "{out}");
    assert!(!out.contains("re-aggregated"), "{out}");
    assert_eq!(tables(&ctx), rebuilt(&ctx));
    extra(&ctx, &[]);
    run_and_export(&ctx);
    assert_eq!(tables(&ctx), rebuilt(&ctx));

    // A rewrite of most of the input rebuilds its dependents in full.
    ctx.write("plays.csv", csv(&day(2, 2, 500)));
    ctx.ok(&[
        "ingest",
        "plays.csv",
        "--table",
        "raw.plays",
        "--mode",
        "overwrite",
    ]);
    let plan = ctx.ok(&["plan"]);
    assert!(
        plan.contains("would rebuild: an input was rewritten"),
        "{plan}"
    );
    let out = run_and_export(&ctx);
    assert!(out.contains("rebuilt: an input was rewritten"), "{out}");
    assert_eq!(tables(&ctx), rebuilt(&ctx));
}

/// The files the last commit of a table (on a local lake) removed and added.
fn last_commit_files(ctx: &TestContext, table: &str) -> (usize, usize) {
    let (schema, name) = table.split_once('.').unwrap();
    let log = ctx.path(&format!(
        "lake/{schema}/{name}/_delta_log/{:020}.json",
        ctx.version(table)
    ));
    let text = std::fs::read_to_string(log).unwrap();
    let count = |kind: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{{\"{kind}\"")))
            .count()
    };
    (count("remove"), count("add"))
}

#[derive(Debug, Clone)]
enum Step {
    /// A new day's plays.
    Day(u32),
    /// Plays into an old day.
    Late(u32),
    /// The source overwritten without some plays (a delete upstream).
    Drop(u32),
    /// `lake maintain`.
    Compact,
    /// raw.extra rewritten with other plays (some gone, some new) on an old day.
    Extra(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u32..3).prop_map(Step::Day),
        (1u32..3).prop_map(Step::Late),
        (1u32..5).prop_map(Step::Drop),
        Just(Step::Compact),
        (0u32..3).prop_map(Step::Extra),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, max_shrink_iters: 0, ..ProptestConfig::default() })]

    /// After each change and run, every model equals `lake run --full-refresh` of the same
    /// state, row for row.
    #[test]
    fn group_scoped_runs_equal_a_full_rebuild(steps in prop::collection::vec(step(), 3..6)) {
        let ctx = TestContext::new(Backend::Local);
        let mut rows = day(0, 2, 0);
        rows.extend(day(31, 2, 10));
        project(&ctx, &rows);
        run_and_export(&ctx);
        let mut next_day = 32;
        let mut next_id = 100;
        for step in steps {
            match step {
                Step::Day(per) | Step::Late(per) => {
                    let d = match step {
                        Step::Day(_) => { next_day += 1; next_day }
                        _ => next_day / 2,
                    };
                    let new = day(d, per, next_id);
                    next_id += 100;
                    ctx.write("new.csv", csv(&new));
                    ctx.ok(&["ingest", "new.csv", "--table", "raw.plays"]);
                    rows.extend(new);
                }
                Step::Drop(every) => {
                    rows.retain(|r| r.id % (every + 6) != 1);
                    ctx.write("plays.csv", csv(&rows));
                    ctx.ok(&["ingest", "plays.csv", "--table", "raw.plays", "--mode", "overwrite"]);
                }
                Step::Compact => {
                    ctx.ok(&["maintain", "raw.plays"]);
                }
                Step::Extra(n) => {
                    let mut plays = day(next_day / 3, 1, next_id);
                    next_id += 100;
                    plays.truncate(n as usize);
                    // A track only raw.extra plays: its group comes and goes.
                    if let Some(first) = plays.first_mut() {
                        first.track = "e";
                    }
                    extra(&ctx, &plays);
                }
            }
            run_and_export(&ctx);
            prop_assert_eq!(tables(&ctx), rebuilt(&ctx));
        }
    }
}

/// A run killed with SIGKILL at any point leaves the tables as a whole earlier run made them;
/// the next run gets them to what a clean run makes.
#[test]
fn a_killed_group_scoped_run_reruns_to_the_same_tables() {
    let ctx = TestContext::new(Backend::Local);
    let mut rows = day(0, 3, 0);
    rows.extend(day(1, 3, 100));
    project(&ctx, &rows);
    run_and_export(&ctx);
    let mut id = 1000;
    for wait_ms in [150u64, 400, 700, 1000] {
        ctx.write("day.csv", csv(&day(2 + id / 1000, 2, id)));
        id += 1000;
        ctx.ok(&["ingest", "day.csv", "--table", "raw.plays"]);
        let mut child = ctx.std_command().args(["-q", "run"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        run_and_export(&ctx);
        assert_eq!(tables(&ctx), rebuilt(&ctx), "killed after {wait_ms} ms");
    }
}
