//! `lake ingest spotify-export`: generated exports, as a folder and as Spotify's zip.

use lake::extract::spotify_export::generate;

use crate::common::{Backend, TestContext, succeeds};
use crate::{on_both, snapshot};

on_both!(
    exports_import_without_duplicates,
    exports_import_without_duplicates_on
);
fn exports_import_without_duplicates_on(ctx: TestContext) {
    // An older export (plays 0..3000, in the zip Spotify sends, with a legacy file beside it)
    // and a newer one that overlaps it (plays 2000..5000, as a folder).
    let older = ctx.path("older");
    generate::extended(&older, 7, 0..3000, 1000, &generate::Shape::PERSONAL, false).unwrap();
    generate::legacy(&older, 8, 0..100).unwrap();
    let zip = ctx.path("my_spotify_data.zip");
    generate::zip(&older, &zip).unwrap();
    let newer = ctx.path("newer");
    generate::extended(
        &newer,
        7,
        2000..5000,
        1000,
        &generate::Shape::PERSONAL,
        false,
    )
    .unwrap();

    let (_, stderr) =
        succeeds(
            ctx.lake()
                .args(["ingest", "spotify-export", "my_spotify_data.zip"]),
        );
    snapshot!(ctx, "first_import", stderr);
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams"),
        "3100"
    );

    // The same export again, and then the overlapping one: no duplicates.
    ctx.ok(&["ingest", "spotify-export", "my_spotify_data.zip"]);
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams"),
        "3100"
    );
    assert_eq!(
        ctx.version("raw.spotify_streams"),
        0,
        "a re-import commits nothing"
    );
    let (_, stderr) = succeeds(ctx.lake().args(["ingest", "spotify-export", "newer"]));
    assert!(
        stderr.contains("wrote raw.spotify_streams version 1: 2000 new of 3000 plays from 4 files; 1000 were in the lake"),
        "{stderr}"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams"),
        "5100"
    );
    assert_eq!(
        ctx.scalar("SELECT count(DISTINCT stream_key) FROM raw.spotify_streams"),
        "5100"
    );

    // Podcasts have no track fields; every kind is told apart.
    assert_eq!(
        ctx.scalar(
            "SELECT count(*) FROM raw.spotify_streams WHERE kind = 'episode' \
             AND (track_name IS NOT NULL OR show_name IS NULL) AND source_format = 'extended'"
        ),
        "0"
    );
    assert_eq!(
        ctx.scalar("SELECT string_agg(DISTINCT kind, ';' ORDER BY kind) FROM raw.spotify_streams"),
        "audiobook;episode;track"
    );
    assert_ne!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams WHERE source_file LIKE 'Streaming_History_Video_%'"),
        "0"
    );
    // Incognito and offline plays, typed.
    assert_ne!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams WHERE incognito_mode"),
        "0"
    );
    assert_eq!(
        ctx.scalar(
            "SELECT count(*) FROM raw.spotify_streams WHERE offline AND \
             (offline_at IS NULL OR offline_at > ended_at OR offline_at < ended_at - INTERVAL '1 hour')"
        ),
        "0"
    );
    // Names outside ASCII survive, and times are UTC.
    assert_ne!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams WHERE artist_name = 'Мумий Тролль'"),
        "0"
    );
    assert_eq!(
        ctx.scalar(
            "SELECT min(ended_at) FROM raw.spotify_streams WHERE source_format = 'extended'"
        ),
        generate::play(
            7,
            0,
            generate::default_start(),
            &generate::Shape::PERSONAL,
            false
        )["ts"]
            .as_str()
            .unwrap()
    );
    // Personal data is dropped by default.
    assert_eq!(
        ctx.scalar(
            "SELECT count(ip_addr) + count(username) + count(user_agent) FROM raw.spotify_streams"
        ),
        "0"
    );
}

#[test]
fn personal_fields_are_hashed_with_the_lakes_salt_when_asked() {
    let ctx = TestContext::new(Backend::Local);
    ctx.configure("\n[spotify_export]\npersonal_data = \"hash\"\n");
    generate::extended(
        &ctx.path("export"),
        3,
        0..200,
        1000,
        &generate::Shape::PERSONAL,
        true,
    )
    .unwrap();
    ctx.ok(&["ingest", "spotify-export", "export"]);
    let salt = std::fs::read_to_string(ctx.path("lake/_lake/salt")).unwrap();
    assert!(salt.len() >= 32);
    let hashed = ctx.scalar("SELECT min(username) FROM raw.spotify_streams");
    assert_eq!(hashed.len(), 64);
    assert_eq!(
        ctx.scalar("SELECT count(DISTINCT username) FROM raw.spotify_streams"),
        "1"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams WHERE ip_addr LIKE '10.%'"),
        "0"
    );
    // `keep` keeps them as they are.
    let ctx2 = TestContext::new(Backend::Local);
    generate::extended(
        &ctx2.path("export"),
        3,
        0..10,
        1000,
        &generate::Shape::PERSONAL,
        true,
    )
    .unwrap();
    ctx2.lake()
        .env("LAKE_SPOTIFY_EXPORT_PERSONAL_DATA", "keep")
        .args(["ingest", "spotify-export", "export"])
        .assert()
        .success();
    assert_eq!(
        ctx2.scalar("SELECT min(username) FROM raw.spotify_streams"),
        "listener_ü"
    );
}

#[test]
fn overlapping_exports_in_one_folder_land_once() {
    let ctx = TestContext::new(Backend::Local);
    generate::extended(
        &ctx.path("both/a"),
        5,
        0..300,
        100,
        &generate::Shape::PERSONAL,
        false,
    )
    .unwrap();
    generate::extended(
        &ctx.path("both/b"),
        5,
        200..500,
        100,
        &generate::Shape::PERSONAL,
        false,
    )
    .unwrap();
    let (_, stderr) = succeeds(ctx.lake().args(["ingest", "spotify-export", "both"]));
    assert!(
        stderr.contains("500 new of 600 plays from 6 files; 100 repeated within the export"),
        "{stderr}"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams"),
        "500"
    );
}

#[test]
fn a_broken_file_names_its_line_and_writes_nothing() {
    let ctx = TestContext::new(Backend::Local);
    let dir = ctx.path("export");
    ctx.ok(&["bench", "generate", "--plays", "50", "--out", "export"]);
    ctx.ok(&["ingest", "spotify-export", "export"]);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.spotify_streams"), "50");
    let version = ctx.version("raw.spotify_streams");
    let text = std::fs::read_to_string(dir.join("Streaming_History_Audio_2024_0.json")).unwrap();
    // Break the fifth line.
    let broken: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 4 {
                format!("{l} oops")
            } else {
                l.to_string()
            }
        })
        .collect();
    ctx.write(
        "export/Streaming_History_Audio_2025_9.json",
        broken.join("\n"),
    );
    let stderr = ctx.fails(&["ingest", "spotify-export", "export"]);
    assert!(
        stderr.contains("Streaming_History_Audio_2025_9.json at line 5"),
        "{stderr}"
    );
    assert_eq!(ctx.version("raw.spotify_streams"), version);

    let stderr = ctx.fails(&["ingest", "spotify-export", "lake.toml"]);
    assert!(
        stderr.contains("lake.toml") && stderr.contains("zip"),
        "{stderr}"
    );
    std::fs::create_dir_all(ctx.path("empty")).unwrap();
    let stderr = ctx.fails(&["ingest", "spotify-export", "empty"]);
    assert!(stderr.contains("Streaming_History_Audio_"), "{stderr}");
}

#[test]
fn bench_generate_makes_many_listeners_a_dimension_and_one_more_day() {
    let ctx = TestContext::new(Backend::Local);
    ctx.configure("\n[spotify_export]\npersonal_data = \"keep\"\n");
    // 4 listeners with a session (16 plays) every day: 128 plays are two days.
    let generate = |args: &[&str]| {
        let mut all = vec!["bench", "generate", "--users", "4", "--artists", "50"];
        all.extend_from_slice(args);
        ctx.ok(&all);
    };
    generate(&["--plays", "128", "--out", "export", "--api", "api"]);
    generate(&["--from", "128", "--plays", "64", "--out", "day"]);
    ctx.ok(&["ingest", "spotify-export", "export"]);
    ctx.ok(&[
        "ingest",
        "api/tracks.ndjson",
        "--table",
        "raw.spotify_tracks",
    ]);
    assert_eq!(
        ctx.scalar("SELECT count(DISTINCT username) FROM raw.spotify_streams"),
        "4"
    );
    assert_eq!(
        ctx.scalar("SELECT count(DISTINCT CAST(ended_at AS DATE)) FROM raw.spotify_streams"),
        "2"
    );
    // The catalog: 50 artists of 40 tracks, and every track played is in it, always under
    // the same name.
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_tracks"),
        "2000"
    );
    assert_eq!(
        ctx.scalar(
            "SELECT count(*) FROM raw.spotify_streams s LEFT JOIN raw.spotify_tracks t \
             ON t.track_id = s.track_id \
             WHERE s.track_id IS NOT NULL AND (t.track_name IS NULL OR t.track_name <> s.track_name)"
        ),
        "0"
    );
    // The plays are sorted by listener and time, in one run.
    let sort_key = || {
        let described = ctx.ok(&["describe", "raw.spotify_streams"]);
        described
            .lines()
            .find(|l| l.contains("sort_key"))
            .unwrap_or_else(|| panic!("{described}"))
            .to_string()
    };
    assert!(
        sort_key().contains("username, ended_at (1 file; one sorted run)"),
        "{}",
        sort_key()
    );
    // `--from` continues the history: the next day, nothing in common with the first two.
    ctx.ok(&["ingest", "spotify-export", "day"]);
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams"),
        "192"
    );
    assert_eq!(
        ctx.scalar("SELECT count(DISTINCT CAST(ended_at AS DATE)) FROM raw.spotify_streams"),
        "3"
    );
    // The new day's file is sorted too, but overlaps the first; maintenance sorts them again.
    assert!(
        sort_key().contains("(all 2 files; overlapping"),
        "{}",
        sort_key()
    );
    ctx.ok(&["maintain", "raw.spotify_streams"]);
    assert!(sort_key().contains("one sorted run"), "{}", sort_key());
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams"),
        "192"
    );
}

on_both!(
    concurrent_imports_land_each_play_once,
    concurrent_imports_land_each_play_once_on
);
fn concurrent_imports_land_each_play_once_on(ctx: TestContext) {
    // Each import appends the plays it found new as of the version it read; an import that
    // loses the race to another inserts by key instead, so nothing lands twice.
    let shape = &generate::Shape::PERSONAL;
    generate::extended(&ctx.path("older"), 9, 0..1000, 1000, shape, false).unwrap();
    generate::extended(&ctx.path("newer"), 9, 500..2000, 1000, shape, false).unwrap();
    ctx.ok(&["ingest", "spotify-export", "older"]);
    let imports: Vec<_> = (0..4)
        .map(|_| {
            ctx.std_command()
                .args(["-q", "ingest", "spotify-export", "newer"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut import in imports {
        assert!(import.wait().unwrap().success());
    }
    assert_eq!(
        ctx.scalar("SELECT count(*) || '/' || count(DISTINCT stream_key) FROM raw.spotify_streams"),
        "2000/2000"
    );
}

/// One file of the export starts with a UTF-8 byte-order mark: every play still lands, from the
/// zip and from the folder. A file cut short still fails with its line and column, and nothing
/// is written.
#[test]
fn a_byte_order_mark_is_accepted_and_a_truncated_file_is_not() {
    let ctx = TestContext::new(Backend::Local);
    let dir = ctx.path("export");
    let mut files =
        generate::extended(&dir, 11, 0..300, 100, &generate::Shape::PERSONAL, false).unwrap();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let text = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], [&b"\xEF\xBB\xBF"[..], &text].concat()).unwrap();
    generate::zip(&dir, &ctx.path("my_spotify_data.zip")).unwrap();

    ctx.ok(&["ingest", "spotify-export", "my_spotify_data.zip"]);
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_streams"),
        "300"
    );
    ctx.ok(&["--root", "folder", "ingest", "spotify-export", "export"]);
    assert_eq!(
        ctx.ok(&[
            "--root",
            "folder",
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM raw.spotify_streams"
        ]),
        "n\n300\n"
    );

    // Cut the second file short (after its BOM, too).
    let text = std::fs::read(&files[1]).unwrap();
    let cut = [&b"\xEF\xBB\xBF"[..], &text[..text.len() / 2]].concat();
    std::fs::write(&files[1], cut).unwrap();
    let stderr = ctx.fails(&["--root", "cut", "ingest", "spotify-export", "export"]);
    let name = files[1].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        stderr.contains(&name) && stderr.contains(" at line ") && stderr.contains(", column "),
        "{stderr}"
    );
    let tables = ctx.ok(&["--root", "cut", "tables"]);
    assert!(!tables.contains("spotify_streams"), "{tables}");
}
