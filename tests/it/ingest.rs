//! `lake ingest`: formats, modes, schema evolution.

use crate::common::{TestContext, succeeds};
use crate::{on_both, snapshot};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-playlists");

fn seed_playlists(ctx: TestContext) {
    ctx.lake()
        .args(["ingest", SEEDS, "--table", "raw.playlist_tracks"])
        .assert()
        .success();
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.playlist_tracks"),
        "312"
    );
    // Quoted commas stay inside one field.
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.playlist_tracks WHERE \"Artists\" = 'Elton John,Dua Lipa,PNAU'"),
        "1"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.playlist_tracks WHERE \"Artists\" LIKE '%,%'"),
        "189"
    );
    // Year-only release dates are kept as written.
    let years = ctx.csv("SELECT \"Name\", \"Release Date\" FROM raw.playlist_tracks WHERE length(\"Release Date\") = 4 ORDER BY 1");
    snapshot!(ctx, "seed_year_only_dates", years);
    // Nothing is cut or padded, unlike the Athena table.
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.playlist_tracks WHERE \"Release Date\" IS NULL OR \"Name\" <> trim(\"Name\")"), "0");
    assert!(
        ctx.scalar("SELECT max(length(\"Name\")) FROM raw.playlist_tracks")
            .parse::<u32>()
            .unwrap()
            > 50
    );
}
on_both!(seed_playlists_land_whole, seed_playlists);

fn json_ndjson_parquet(ctx: TestContext) {
    ctx.write(
        "in/a.json",
        r#"[{"id": 1, "name": "a", "tags": ["x", "y"]}, {"id": 2, "name": "b", "tags": []}]"#,
    );
    ctx.write(
        "in/b.ndjson",
        "{\"id\": 3, \"name\": \"c\", \"score\": 1.5}\n\n{\"id\": 4, \"name\": \"d\"}\n",
    );
    ctx.write("in/c.jsonl", "{\"id\": 5}\n");
    ctx.ok(&["ingest", "in", "--table", "raw.things"]);
    assert_eq!(
        ctx.csv("SELECT id, name, score FROM raw.things ORDER BY id"),
        "id,name,score\n1,a,\n2,b,\n3,c,1.5\n4,d,\n5,,\n"
    );
    assert_eq!(
        ctx.scalar("SELECT array_length(tags) FROM raw.things WHERE id = 1"),
        "2"
    );

    // Parquet written by lake itself reads back.
    ctx.ok(&[
        "query",
        "--format",
        "parquet",
        "--output",
        "things.parquet",
        "SELECT id * 10 AS id, name FROM raw.things",
    ]);
    ctx.ok(&["ingest", "things.parquet", "--table", "raw.things"]);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.things"), "10");
    assert_eq!(ctx.scalar("SELECT sum(id) FROM raw.things"), "165");

    // A .json file of newline-delimited objects is read as NDJSON.
    ctx.write(
        "lines.json",
        "{\"id\": 1, \"v\": \"a\"}\n{\"id\": 2, \"v\": \"b\"}\n",
    );
    ctx.ok(&["ingest", "lines.json", "--table", "raw.lines"]);
    assert_eq!(
        ctx.csv("SELECT * FROM raw.lines ORDER BY id"),
        "id,v\n1,a\n2,b\n"
    );

    // --format overrides the extension.
    ctx.write("weird.txt", "id,name\n7,g\n");
    ctx.ok(&[
        "ingest",
        "weird.txt",
        "--format",
        "csv",
        "--table",
        "raw.weird",
    ]);
    assert_eq!(ctx.scalar("SELECT name FROM raw.weird"), "g");
}
on_both!(json_ndjson_and_parquet, json_ndjson_parquet);

fn globs_and_s3_prefixes(ctx: TestContext) {
    ctx.write("drop/2026-01.csv", "id,v\n1,a\n");
    ctx.write("drop/2026-02.csv", "id,v\n2,b\n");
    ctx.write("drop/notes.md", "ignored");
    let pattern = ctx.path("drop/*.csv").display().to_string();
    ctx.ok(&["ingest", &pattern, "--table", "raw.glob"]);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.glob"), "2");
    if let Some(bucket) = &ctx.bucket {
        // Land files that are already on S3: lake's own export of the table.
        let dir = crate::s3_server::S3Server::shared()
            .bucket_dir(bucket)
            .join("landing");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.csv"), "id,v\n3,c\n4,d\n").unwrap();
        std::fs::write(dir.join("y.ndjson"), "{\"id\":5,\"v\":\"e\"}\n").unwrap();
        ctx.ok(&[
            "ingest",
            &format!("s3://{bucket}/landing/"),
            "--table",
            "raw.glob",
        ]);
        assert_eq!(ctx.scalar("SELECT count(*) FROM raw.glob"), "5");
    }
}
on_both!(globs_and_prefixes, globs_and_s3_prefixes);

fn modes(ctx: TestContext) {
    ctx.write("a.csv", "id,name,plays\n1,a,10\n2,b,20\n");
    ctx.ok(&["ingest", "a.csv", "--table", "raw.m"]);
    ctx.ok(&["ingest", "a.csv", "--table", "raw.m", "--mode", "append"]);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.m"), "4");

    ctx.ok(&["ingest", "a.csv", "--table", "raw.m", "--mode", "overwrite"]);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.m"), "2");

    // Merge upserts on the key; within the batch the last row of a key wins.
    ctx.write("b.csv", "id,name,plays\n2,b2,21\n3,c,30\n3,c2,31\n");
    let (_, summary) = succeeds(ctx.lake().args([
        "ingest", "b.csv", "--table", "raw.m", "--mode", "merge", "--key", "id",
    ]));
    snapshot!(ctx, "merge_summary", summary);
    assert_eq!(
        ctx.csv("SELECT * FROM raw.m ORDER BY id"),
        "id,name,plays\n1,a,10\n2,b2,21\n3,c2,31\n"
    );

    // Composite keys.
    ctx.write("c.csv", "id,name,plays\n3,c2,99\n3,new,1\n");
    ctx.ok(&[
        "ingest", "c.csv", "--table", "raw.m", "--mode", "merge", "--key", "id,name",
    ]);
    assert_eq!(
        ctx.csv("SELECT * FROM raw.m ORDER BY id, name"),
        "id,name,plays\n1,a,10\n2,b2,21\n3,c2,99\n3,new,1\n"
    );
    assert_eq!(ctx.version("raw.m"), 4);
}
on_both!(append_overwrite_merge, modes);

fn schema_evolution(ctx: TestContext) {
    ctx.write("a.csv", "id,name\n1,a\n");
    ctx.ok(&["ingest", "a.csv", "--table", "raw.e"]);
    ctx.write("b.csv", "id,name,country\n2,b,NO\n");
    let (_, summary) = succeeds(ctx.lake().args(["ingest", "b.csv", "--table", "raw.e"]));
    assert!(summary.contains("added columns: country"), "{summary}");
    assert_eq!(
        ctx.csv("SELECT * FROM raw.e ORDER BY id"),
        "id,name,country\n1,a,\n2,b,NO\n"
    );

    // A new column through merge, too.
    ctx.write("c.csv", "id,plays\n1,5\n");
    ctx.ok(&[
        "ingest", "c.csv", "--table", "raw.e", "--mode", "merge", "--key", "id",
    ]);
    assert_eq!(
        ctx.csv("SELECT * FROM raw.e ORDER BY id"),
        "id,name,country,plays\n1,a,,5\n2,b,NO,\n"
    );

    // Widening is allowed: an integer into a float column.
    ctx.write("f.csv", "id,score\n1,1.5\n");
    ctx.ok(&["ingest", "f.csv", "--table", "raw.w"]);
    ctx.write("g.csv", "id,score\n2,3\n");
    ctx.ok(&["ingest", "g.csv", "--table", "raw.w"]);
    assert_eq!(
        ctx.csv("SELECT score FROM raw.w ORDER BY id"),
        "score\n1.5\n3.0\n"
    );

    // An incompatible change is refused, naming the column and both types; nothing changes.
    let before = ctx.version("raw.e");
    ctx.write("bad.csv", "id,name\nnot-a-number,x\n");
    let err = ctx.fails(&["ingest", "bad.csv", "--table", "raw.e"]);
    snapshot!(ctx, "incompatible_type", err);
    assert_eq!(ctx.version("raw.e"), before);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.e"), "2");
}
on_both!(new_columns_and_type_changes, schema_evolution);

/// Paths as a shell user types them, from a project folder with files beside it.
#[test]
fn local_paths_resolve_as_a_shell_user_means_them() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    ctx.write("plays.csv", "track,ms\na,1\nb,2\n");
    ctx.write("data/2026-01.csv", "track,ms\nc,3\n");
    ctx.write("data/2026-02.csv", "track,ms\nd,4\n");
    std::os::unix::fs::symlink(ctx.path("data"), ctx.path("linked")).unwrap();
    std::fs::create_dir_all(ctx.path("p/sub")).unwrap();
    let p = ctx.path("p");
    let ingest = |path: &str| {
        succeeds(
            ctx.lake()
                .current_dir(&p)
                .args(["ingest", path, "--table", "raw.paths"]),
        )
    };
    let through = format!("{}/p/../plays.csv", ctx.dir.path().display());
    for path in [
        "../plays.csv",
        "sub/../../plays.csv",
        &through,
        "~/plays.csv",
    ] {
        let (_, stderr) = ingest(path);
        assert!(stderr.contains("2 rows from 1 file"), "{path}: {stderr}");
    }
    // A symlinked folder, and a glob under `..` (also through the link).
    let (_, stderr) = ingest("../linked");
    assert!(stderr.contains("2 rows from 2 files"), "{stderr}");
    let (_, stderr) = ingest("../linked/*.csv");
    assert!(stderr.contains("2 rows from 2 files"), "{stderr}");
    let (_, stderr) = ingest("sub/../../data/2026-0?.csv");
    assert!(stderr.contains("2 rows from 2 files"), "{stderr}");
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.paths"), "14");

    // A path that does not exist names itself, as typed.
    let stderr = crate::common::fails(ctx.lake().current_dir(&p).args([
        "ingest",
        "../nope.csv",
        "--table",
        "raw.paths",
    ]));
    assert!(
        stderr.contains("failed to find input ../nope.csv: no such file or directory"),
        "{stderr}"
    );
    assert_eq!(ctx.version("raw.paths"), 6);

    // `query -f`, `--output` and `--config` take the same paths.
    ctx.write("q.sql", "SELECT count(*) AS n FROM raw.paths");
    ctx.lake()
        .current_dir(&p)
        .args(["query", "-f", "../q.sql", "--format", "csv", "--output"])
        .arg("sub/../../out.csv")
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(ctx.path("out.csv")).unwrap(),
        "n\n14\n"
    );
    let (stdout, _) = succeeds(ctx.lake().current_dir(ctx.path("p/sub")).args([
        "--config",
        "../../lake.toml",
        "query",
        "-f",
        "~/q.sql",
        "--format",
        "csv",
    ]));
    assert_eq!(stdout, "n\n14\n");
    let stderr =
        crate::common::fails(
            ctx.lake()
                .current_dir(&p)
                .args(["query", "-f", "../none.sql"]),
        );
    assert!(stderr.contains("../none.sql"), "{stderr}");
}

/// Windows tools put a UTF-8 byte-order mark before CSV and JSON; it is not part of the data.
#[test]
fn byte_order_marks_are_skipped() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    ctx.write("bom/a.csv", "\u{feff}track,ms\na,1\n");
    ctx.write("bom/b.ndjson", "\u{feff}{\"track\":\"b\",\"ms\":2}\n");
    ctx.write("bom/c.json", "\u{feff}[{\"track\":\"c\",\"ms\":3}]");
    ctx.ok(&["ingest", "bom", "--table", "raw.bom"]);
    assert_eq!(
        ctx.csv("SELECT track, ms FROM raw.bom ORDER BY ms"),
        "track,ms\na,1\nb,2\nc,3\n"
    );
}
