//! `lake extract spotify` and `lake auth spotify`, with the real rspotify client against the
//! local Spotify stand-in.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::common::{TestContext, succeeds};
use crate::spotify_server::{
    CLIENT_SECRET, SpotifyServer, State, artist, id_for, seed_playlists, seed_state, track,
};
use crate::{on_both, snapshot};

/// An editorial playlist: Development Mode apps get 404 for these.
const EDITORIAL: &str = "37i9dQZF1DXcBWIGoYBM5M";

pub(crate) fn rows(ctx: &TestContext, sql: &str) -> Vec<Value> {
    ctx.ok(&["query", "--format", "ndjson", sql])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn extract(ctx: &TestContext, args: &[&str]) -> (String, String) {
    succeeds(
        ctx.lake()
            .env("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET)
            .args(["extract", "spotify"])
            .args(args),
    )
}

on_both!(
    playlists_land_as_the_seed_csvs,
    playlists_land_as_the_seed_csvs_on
);
fn playlists_land_as_the_seed_csvs_on(ctx: TestContext) {
    let mut state = seed_state();
    state.batch_forbidden = true;
    let ids: Vec<String> = state.playlists.keys().cloned().collect();
    // A 429 on the second page of one playlist and a 500 on another's first page.
    state.rate_limit_once.insert(format!(
        "/v1/playlists/{}/items?limit=100&offset=25",
        ids[0]
    ));
    state
        .fail_once
        .insert(format!("/v1/playlists/{}/items?limit=100&offset=0", ids[1]));
    state.short_playlist = Some(ids[2].clone());
    let server = SpotifyServer::start(state);
    let mut listed = vec![
        format!("https://open.spotify.com/playlist/{}?si=abc", ids[0]),
        format!("spotify:playlist:{}", ids[1]),
    ];
    listed.extend(ids[2..].iter().cloned());
    listed.push(EDITORIAL.to_string());
    let quoted: Vec<String> = listed.iter().map(|p| format!("{p:?}")).collect();
    ctx.configure(&server.config(&format!("playlists = [{}]", quoted.join(", "))));

    let (_, stderr) = extract(&ctx, &[]);
    snapshot!(ctx, "extract_catalog", stderr);

    // Every seed row, in order, with its artists as a list and its release date typed.
    let landed = rows(
        &ctx,
        "SELECT playlist_name, position, track_name, artist_names, album_name, \
         CAST(album_release_date AS VARCHAR) AS released, album_release_date_precision AS precision \
         FROM raw.spotify_playlist_tracks ORDER BY playlist_name, position",
    );
    let seeds = seed_playlists();
    assert_eq!(
        landed.len(),
        seeds.iter().map(|(_, r)| r.len()).sum::<usize>()
    );
    let mut it = landed.iter();
    for (stem, seed_rows) in &seeds {
        for (i, seed) in seed_rows.iter().enumerate() {
            let row = it.next().unwrap();
            assert_eq!(row["playlist_name"], json!(stem));
            assert_eq!(row["position"], json!(i));
            assert_eq!(row["track_name"], json!(seed.name));
            assert_eq!(row["artist_names"], json!(seed.artists), "{stem} #{i}");
            assert_eq!(row["album_name"], json!(seed.album));
            let released = row["released"].as_str().unwrap();
            if seed.release.len() == 4 {
                assert_eq!(row["precision"], json!("year"));
                assert_eq!(released, format!("{}-01-01", seed.release));
            } else {
                assert_eq!(released, seed.release);
            }
        }
    }

    // Albums and artists: the batch GETs answered 403, so they came one by one.
    let albums: std::collections::BTreeSet<_> = seeds
        .iter()
        .flat_map(|(_, r)| r.iter().map(|s| s.album.clone()))
        .collect();
    let artists: std::collections::BTreeSet<_> = seeds
        .iter()
        .flat_map(|(_, r)| r.iter().flat_map(|s| s.artists.clone()))
        .collect();
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_albums WHERE label = 'Seed Records'"),
        albums.len().to_string()
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_artists WHERE genres[1] = 'seed pop'"),
        artists.len().to_string()
    );
    assert_eq!(server.requests("GET /v1/albums?").len(), 1);
    assert_eq!(server.requests("GET /v1/albums/").len(), albums.len());

    // A second run replaces the playlists' rows and fetches no album or artist again.
    server.clear_log();
    extract(&ctx, &[]);
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_playlist_tracks"),
        landed.len().to_string()
    );
    assert!(server.requests("/v1/albums").is_empty());
    assert!(server.requests("/v1/artists").is_empty());
    assert_eq!(ctx.version("raw.spotify_playlist_tracks"), 1);
}

/// A listener with plays, saved tracks, top items, follows and playlists; top artists retired.
pub(crate) fn listener_state() -> State {
    let mut state = seed_state();
    let seeds: Vec<_> = seed_playlists().into_iter().flat_map(|(_, r)| r).collect();
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00.123Z").unwrap();
    state.plays = (0..60)
        .map(|i| {
            let at = start + chrono::Duration::minutes(4 * i);
            json!({"played_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                   "track": track(&seeds[i as usize]),
                   "context": {"type": "playlist", "uri": "spotify:playlist:x"}})
        })
        .collect();
    state.saved = seeds[..30]
        .iter()
        .map(|s| json!({"added_at": "2025-02-01T08:00:00Z", "track": track(s)}))
        .collect();
    state.top_tracks = seeds[30..60].iter().map(track).collect();
    state.top_artists = seeds[..10].iter().map(|s| artist(&s.artists[0])).collect();
    state.retired.insert("/v1/me/top/artists".into());
    state.followed = seeds[..30]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut a = artist(&format!("{} (followed {i})", s.artists[0]));
            a["genres"] = json!(["telugu pop"]);
            a
        })
        .collect();
    state.my_playlists = (0..3)
        .map(|i| {
            let id = id_for("mine", &i.to_string());
            // Since 2026 a playlist's `tracks` is `items`; older answers and some proxies differ.
            let total_key = if i == 0 { "tracks" } else { "items" };
            json!({"id": id, "name": format!("Mine {i}"), "public": i == 1, "collaborative": false,
                   "owner": {"id": "me", "display_name": "Me Ü"}, "snapshot_id": "s",
                   total_key: {"total": 10 + i}, "uri": format!("spotify:playlist:{id}")})
        })
        .collect();
    state.expired.insert("stale-token".into());
    state.refresh_token = "refresh-0".into();
    state
}

pub(crate) fn write_token(ctx: &TestContext) {
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    ctx.write(
        ".lake/spotify-token.json",
        json!({"access_token": "stale-token", "expires_in": 3600,
               "expires_at": expires.to_rfc3339(), "refresh_token": "refresh-0", "scope": ""})
        .to_string(),
    );
}

on_both!(
    listener_streams_land_with_a_utc_cursor,
    listener_streams_land_with_a_utc_cursor_on
);
fn listener_streams_land_with_a_utc_cursor_on(ctx: TestContext) {
    let server = SpotifyServer::start(listener_state());
    ctx.configure(&server.config(""));
    write_token(&ctx);

    // The token is expired: lake refreshes it once, and keeps the rotated refresh token.
    let (_, stderr) = extract(&ctx, &[]);
    snapshot!(ctx, "extract_listener", stderr);
    assert!(
        stderr.contains("raw.spotify_top_artists")
            && stderr.contains("skipped: Spotify answered 403"),
        "{stderr}"
    );
    let token: Value = serde_json::from_str(
        &std::fs::read_to_string(ctx.path(".lake/spotify-token.json")).unwrap(),
    )
    .unwrap();
    assert_ne!(token["refresh_token"], json!("refresh-0"));
    assert_eq!(
        token["refresh_token"],
        json!(server.state.lock().unwrap().refresh_token)
    );
    let mode = std::fs::metadata(ctx.path(".lake/spotify-token.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_saved_tracks"),
        "30"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_followed_artists"),
        "30"
    );
    assert_eq!(
        ctx.scalar("SELECT string_agg(CAST(items_total AS VARCHAR), ';' ORDER BY name) FROM raw.spotify_playlists"),
        "10;11;12"
    );
    assert_eq!(
        ctx.scalar(
            "SELECT count(*) FROM raw.spotify_top_tracks WHERE snapshot_date = current_date()"
        ),
        "90"
    );
    // Spotify serves its window of the latest 50 plays, in pages of 25 here: all of it lands.
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_recently_played"),
        "50"
    );
    assert_eq!(
        ctx.scalar("SELECT min(played_at) FROM raw.spotify_recently_played"),
        "2026-11-20T10:40:00.123Z"
    );
    assert_eq!(
        ctx.scalar("SELECT max(played_at) FROM raw.spotify_recently_played"),
        "2026-11-20T13:56:00.123Z"
    );

    // 40 new plays: the next run reads the window again (10 known plays and the 40 new ones),
    // paging back by the `before` cursor in UTC milliseconds, and inserts what is new.
    {
        let mut s = server.state.lock().unwrap();
        let seeds: Vec<_> = seed_playlists().into_iter().flat_map(|(_, r)| r).collect();
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T15:00:00.5+01:00").unwrap();
        for i in 0..40 {
            let at = start + chrono::Duration::minutes(4 * (i + 60));
            s.plays.push(
                json!({"played_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                "track": track(&seeds[100 + i as usize])}),
            );
        }
    }
    server.clear_log();
    extract(
        &ctx,
        &["--stream", "recently_played", "--stream", "top_tracks"],
    );
    let requests = server.requests("recently-played");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[0].ends_with("recently-played?limit=50"),
        "{requests:?}"
    );
    // The oldest play of the first page, 25 plays back from the newest (at 4-minute steps).
    let newest = chrono::DateTime::parse_from_rfc3339("2026-11-20T14:00:00.5Z").unwrap()
        + chrono::Duration::minutes(4 * 99);
    let page_end = (newest - chrono::Duration::minutes(4 * 24)).timestamp_millis();
    assert!(
        requests[1].ends_with(&format!("recently-played?before={page_end}&limit=50")),
        "{requests:?}"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_recently_played"),
        "90"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM (SELECT DISTINCT played_at, track_id FROM raw.spotify_recently_played)"),
        "90"
    );
    // Same-day snapshots replace each other.
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_top_tracks"),
        "90"
    );

    // Nothing new: the window is read again, and nothing is committed.
    let version = ctx.version("raw.spotify_recently_played");
    extract(&ctx, &["--stream", "recently_played"]);
    assert_eq!(ctx.version("raw.spotify_recently_played"), version);
}

#[test]
fn a_failing_stream_commits_nothing_and_the_others_land() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    let server = SpotifyServer::start(listener_state());
    ctx.configure(&server.config(""));
    write_token(&ctx);
    extract(&ctx, &["--stream", "saved_tracks"]);
    let before = ctx.version("raw.spotify_saved_tracks");

    {
        let mut s = server.state.lock().unwrap();
        s.fail_always
            .insert("/v1/me/tracks?limit=50&offset=25".into());
        // A request that times out is retried.
        s.slow_once
            .insert("/v1/me/following?limit=50&type=artist".into());
    }
    let stderr = ctx
        .lake()
        .args([
            "extract",
            "spotify",
            "--stream",
            "saved_tracks,followed_artists",
        ])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let stderr = String::from_utf8(stderr).unwrap();
    assert!(
        stderr.contains("failed to extract 1 of 2 streams: raw.spotify_saved_tracks"),
        "{stderr}"
    );
    assert!(
        stderr.contains("500 Server error after 2 retries"),
        "{stderr}"
    );
    assert!(
        stderr.contains("retrying"),
        "the timeout was not retried: {stderr}"
    );
    assert_eq!(ctx.version("raw.spotify_saved_tracks"), before);
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_saved_tracks"),
        "30"
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_followed_artists"),
        "30"
    );
}

#[test]
fn secrets_and_tokens_never_reach_output_or_logs() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    let mut state = seed_state();
    state.playlists.retain(|_, (name, _)| name == "Dualipa");
    let pid = state.playlists.keys().next().unwrap().clone();
    let server = SpotifyServer::start(state);
    ctx.configure(&server.config(&format!("playlists = [\"{pid}\"]")));
    let (stdout, stderr) = succeeds(
        ctx.lake()
            .env("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET)
            .env("LAKE_LOG", "trace")
            .args(["extract", "spotify", "--stream", "playlist_tracks"]),
    );
    for text in [&stdout, &stderr] {
        assert!(!text.contains(CLIENT_SECRET));
        let leak = text.lines().find(|l| l.contains("app-token-"));
        assert!(leak.is_none(), "a token was logged: {leak:?}");
    }

    // A wrong secret is a clear error that does not echo it.
    let stderr = ctx.fails_with_env(
        &[("SPOTIFY_CLIENT_SECRET", "wrong-secret-1234")],
        &["extract", "spotify"],
    );
    assert!(
        stderr.contains("api/token") && stderr.contains("invalid_client"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret-1234"));
    // Nor does Debug output of the settings.
    let stderr = ctx.fails_with_env(&[], &["extract", "spotify", "--stream", "nope"]);
    assert!(stderr.contains("unknown stream `nope`"), "{stderr}");
}

#[test]
fn items_with_missing_fields_still_land() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    let mut state = seed_state();
    state.playlists.retain(|_, (name, _)| name == "Weekend");
    let pid = state.playlists.keys().next().unwrap().clone();
    {
        let entries = &mut state.playlists.get_mut(&pid).unwrap().1;
        // A track Spotify no longer serves, and one stripped of most fields.
        entries.push(json!({"added_at": "2024-01-01T00:00:00Z", "item": null}));
        entries.push(
            json!({"item": {"id": "sparse0000000000000000", "name": "Sparse", "type": "track"}}),
        );
    }
    let server = SpotifyServer::start(state);
    ctx.configure(&server.config(&format!("playlists = [\"{pid}\"]")));
    let (_, stderr) = extract(&ctx, &["--stream", "playlist_tracks"]);
    assert!(stderr.contains("55 rows of 55"), "{stderr}");
    let sparse = rows(
        &ctx,
        "SELECT track_name, artist_names, album_release_date, added_at, raw_json \
         FROM raw.spotify_playlist_tracks WHERE position >= 53 ORDER BY position",
    );
    assert_eq!(sparse[0]["track_name"], Value::Null);
    assert!(
        sparse[0]["raw_json"]
            .as_str()
            .unwrap()
            .contains("\"item\":null")
    );
    assert_eq!(sparse[1]["track_name"], json!("Sparse"));
    assert_eq!(sparse[1]["artist_names"], Value::Null);
    assert_eq!(sparse[1]["added_at"], Value::Null);
}

#[test]
fn auth_spotify_runs_pkce_and_keeps_the_token_private() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    let server = SpotifyServer::start(State::default());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ctx.configure(&server.config(&format!(
        "redirect_uri = \"http://127.0.0.1:{port}/callback\""
    )));
    let mut child = ctx
        .std_command()
        .args(["auth", "spotify", "--timeout", "60"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(u) = line
            .trim()
            .strip_prefix(&format!("{}/authorize?", server.url))
        {
            url = Some(u.to_string());
            break;
        }
        line.clear();
    }
    let query = url.expect("lake printed the authorize URL");
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["client_id"], crate::spotify_server::CLIENT_ID);
    assert!(params["scope"].contains("user-read-recently-played"));
    server.state.lock().unwrap().pkce = Some((params["code_challenge"].clone(), "the-code".into()));

    // The browser follows Spotify's redirect to the callback.
    let request = format!(
        "GET /callback?code=the-code&state={} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        params["state"]
    );
    let mut answered = false;
    for _ in 0..100 {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            conn.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            let _ = conn.read_to_string(&mut reply);
            answered = reply.starts_with("HTTP/1.1 200");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(answered);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("token saved to"), "{rest}");
    let path = ctx.path(".lake/spotify-token.json");
    let token: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let refresh = server.state.lock().unwrap().refresh_token.clone();
    assert_eq!(token["refresh_token"], json!(refresh));
    assert!(!rest.contains(&refresh) && !rest.contains("user-token-"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
