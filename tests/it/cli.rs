//! `lake init`, help, and the demo the README opens with.

use crate::common::{Backend, TestContext, succeeds};
use crate::snapshot;

#[test]
fn init_writes_a_project() {
    let ctx = TestContext::new(Backend::Local);
    ctx.ok(&["init", "proj"]);
    for file in [
        "proj/lake.toml",
        "proj/queries/artist_counts.sql",
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

    // The new project works as written: its example model's input lands and queries.
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-playlists");
    let mut cmd = ctx.lake();
    cmd.current_dir(ctx.path("proj"))
        .args(["ingest", seeds, "--table", "raw.playlist_tracks"])
        .assert()
        .success();
    let (out, _) = succeeds(ctx.lake().current_dir(ctx.path("proj")).args([
        "query",
        "--format",
        "csv",
        "-f",
        "queries/artist_counts.sql",
    ]));
    assert!(out.starts_with(
        "artists,tracks
"
    ));
    assert!(
        ctx.path("proj/lake/raw/playlist_tracks/_delta_log")
            .is_dir()
    );
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
