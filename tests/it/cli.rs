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
