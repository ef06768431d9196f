//! `lake init`, help, and the demo the README opens with.

use crate::common::{Backend, TestContext, succeeds};
use crate::snapshot;

#[test]
fn init_writes_a_project() {
    let ctx = TestContext::new(Backend::Local);
    ctx.ok(&["init", "proj"]);
    for file in [
        "proj/lake.toml",
        "proj/queries/plays.sql",
        "proj/tests/skip_rate_is_a_fraction.sql",
        "proj/.gitignore",
    ] {
        assert!(ctx.path(file).is_file(), "{file} missing");
    }
    let gitignore = std::fs::read_to_string(ctx.path("proj/.gitignore")).unwrap();
    assert!(gitignore.contains("/lake/") && gitignore.contains("/warehouse.db"));
    assert!(
        gitignore.contains("/.lake/"),
        "the token file must not be committed"
    );
    let err = ctx.fails(&["init", "proj"]);
    assert!(err.contains("already exists"), "{err}");

    // The new project works as written: its raw inputs land, its models build and pass their
    // tests, and a second run finds nothing new for the incremental model.
    let in_proj = |args: &[&str]| succeeds(ctx.lake().current_dir(ctx.path("proj")).args(args)).0;
    // One listener's export, as `lake bench generate` writes a personal one.
    in_proj(&[
        "bench",
        "generate",
        "--plays",
        "2000",
        "--users",
        "1",
        "--artists",
        "16",
        "--session-every",
        "2h",
        "--out",
        "export",
        "--api",
        "api",
    ]);
    in_proj(&["ingest", "spotify-export", "export"]);
    for (file, table) in [
        ("api/recently_played.ndjson", "raw.spotify_recently_played"),
        ("api/playlist_tracks.ndjson", "raw.spotify_playlist_tracks"),
    ] {
        in_proj(&["ingest", file, "--table", table]);
    }
    snapshot!(ctx, "example_plan", in_proj(&["plan"]));
    let out = in_proj(&["run", "--threads", "1"]);
    snapshot!(ctx, "example_run", out);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        8,
        "{out}"
    );
    let out = in_proj(&["run"]);
    assert!(out.contains("unchanged    curated.export_plays"), "{out}");
    let plays = in_proj(&[
        "query",
        "--format",
        "csv",
        "SELECT count(*) AS n, count(DISTINCT play_id) AS d, count(*) FILTER (WHERE source = 'api') AS api FROM curated.plays",
    ]);
    // 20 API plays came after the export ended; the other 50 are the export's own.
    assert_eq!(plays, "n,d,api\n2020,2020,20\n");
}

/// The repository is itself a lake project: copied as a clone has it, its fixtures land and
/// its models plan, build and pass their SQL data tests (kept in `data_tests/`).
#[test]
fn the_repository_is_a_lake_project() {
    let ctx = TestContext::new(Backend::Local);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in walkdir::WalkDir::new(repo) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(repo).unwrap();
        let top = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        if !matches!(
            top.as_deref(),
            Some("lake.toml" | "queries" | "data_tests" | "fixtures")
        ) {
            continue;
        }
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(ctx.path(&rel.to_string_lossy())).unwrap();
        } else {
            std::fs::copy(entry.path(), ctx.path(&rel.to_string_lossy())).unwrap();
        }
    }
    ctx.ok(&["ingest", "spotify-export", "fixtures/spotify-export"]);
    for (file, table) in [
        ("recently_played", "raw.spotify_recently_played"),
        ("playlist_tracks", "raw.spotify_playlist_tracks"),
    ] {
        let file = format!("fixtures/spotify-api/{file}.ndjson");
        ctx.ok(&["ingest", &file, "--table", table, "--mode", "overwrite"]);
    }
    let plan = ctx.ok(&["plan"]);
    assert!(plan.contains("skip_rate_is_a_fraction"), "{plan}");
    let out = ctx.ok(&["run"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        8,
        "{out}"
    );
    assert!(out.contains("3 of 3 tests passed"), "{out}");
}

#[test]
fn help() {
    let ctx = TestContext::new(Backend::Local);
    snapshot!(ctx, "help", ctx.ok(&["--help"]));
    snapshot!(ctx, "ingest_help", ctx.ok(&["ingest", "--help"]));
}

#[test]
fn quiet_and_piped_output_has_no_progress() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("a.csv", "id\n1\n");
    let out = ctx
        .lake()
        .args(["--quiet", "ingest", "a.csv", "--table", "raw.q"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // Piped, a summary line and nothing else: no bar, no escape codes.
    let out = ctx
        .lake()
        .args(["ingest", "a.csv", "--table", "raw.q"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, "wrote raw.q version 1: 1 rows from 1 file\n");
}
