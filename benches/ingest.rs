//! Ingest and query figures for the lake core, printed, never asserted.
//!
//! `cargo bench --bench ingest` generates 1 M NDJSON rows, then times the release `lake` binary:
//! `lake ingest` into a local folder and into the in-process S3 server the tests use, and one
//! group-by `lake query` over each, each a cold process. Set `LAKE_BENCH_ROWS` for another size.
//!
//! Then it generates a 1 M-play extended Spotify export (`LAKE_BENCH_PLAYS`) and times
//! `lake ingest spotify-export` on each backend: the first import, and a re-import of the same
//! export, which finds every play already there.

#[allow(dead_code)]
#[path = "../tests/it/s3_server.rs"]
mod s3_server;

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use lake::extract::spotify_export::generate;
use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

fn main() {
    let rows: usize = std::env::var("LAKE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("plays.ndjson");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..rows {
        writeln!(
            out,
            r#"{{"played_at":"2026-{:02}-{:02}T{:02}:{:02}:00Z","track_id":"t{}","artist":"artist {}","ms_played":{},"skipped":{}}}"#,
            i % 12 + 1,
            i % 28 + 1,
            i % 24,
            i % 60,
            i % 5000,
            i % 300,
            (i * 7919) % 240_000,
            i % 7 == 0
        )
        .unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let size = std::fs::metadata(&input).unwrap().len();
    println!(
        "input: {rows} NDJSON rows, {:.1} MiB",
        size as f64 / 1048576.0
    );

    let server = S3Server::shared();
    let bucket = server.bucket("bench");
    let lake = env!("CARGO_BIN_EXE_lake");
    let mut export: Option<(std::path::PathBuf, u64, u64)> = None;
    let sql = "SELECT artist, count(*) AS plays, sum(ms_played) AS ms FROM raw.plays GROUP BY artist ORDER BY plays DESC LIMIT 5";
    for (backend, root) in [
        ("local", dir.path().join("lake").display().to_string()),
        ("s3", format!("s3://{bucket}/lake")),
    ] {
        let run = |args: &[&str]| -> (f64, String) {
            let started = Instant::now();
            let out = Command::new(lake)
                .args([
                    "--quiet",
                    "--root",
                    &root,
                    "--set",
                    &format!("s3.endpoint={}", server.endpoint),
                    "--set",
                    "s3.allow_http=true",
                ])
                .args(args)
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_REGION", "us-east-1")
                .output()
                .expect("run lake");
            let secs = started.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "lake {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (secs, String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let (secs, _) = run(&["ingest", input.to_str().unwrap(), "--table", "raw.plays"]);
        let (_, count) = run(&[
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM raw.plays",
        ]);
        assert_eq!(
            count.trim(),
            format!("n\n{rows}"),
            "the table does not hold every row"
        );
        println!(
            "{backend:>5}: lake ingest   {rows} rows in {secs:.2} s = {:.0} rows/s ({:.1} MiB/s)",
            rows as f64 / secs,
            size as f64 / 1048576.0 / secs
        );
        let mut times: Vec<f64> = (0..5).map(|_| run(&["query", sql]).0).collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{backend:>5}: lake query    group-by over {rows} rows, cold process, 5 runs: median {:.3} s (min {:.3}, max {:.3})",
            times[2], times[0], times[4]
        );
        export.get_or_insert_with(|| {
            let plays: u64 = std::env::var("LAKE_BENCH_PLAYS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_000_000);
            let path = dir.path().join("export");
            let files =
                generate::extended(&path, 1, 0..plays, 15_000, &generate::Shape::MANY, false)
                    .unwrap();
            let bytes: u64 = files
                .iter()
                .map(|f| std::fs::metadata(f).unwrap().len())
                .sum();
            println!(
                "input: a generated extended export, {plays} plays in {} files, {:.1} MiB",
                files.len(),
                bytes as f64 / 1048576.0
            );
            (path, plays, bytes)
        });
        let (path, plays, bytes) = export.as_ref().unwrap();
        let path = path.to_str().unwrap();
        let (secs, _) = run(&["ingest", "spotify-export", path]);
        let (_, count) = run(&[
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM raw.spotify_streams",
        ]);
        assert_eq!(count.trim(), format!("n\n{plays}"), "plays were lost");
        println!(
            "{backend:>5}: spotify-export {plays} plays in {secs:.2} s = {:.0} rows/s ({:.1} MiB/s of JSON)",
            *plays as f64 / secs,
            *bytes as f64 / 1048576.0 / secs
        );
        let (secs, _) = run(&["ingest", "spotify-export", path]);
        println!(
            "{backend:>5}: spotify-export again, nothing new: {secs:.2} s = {:.0} rows/s checked",
            *plays as f64 / secs
        );
    }
}
