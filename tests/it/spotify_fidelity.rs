//! Data fidelity of `lake extract spotify`: every play the API serves lands once, late-synced
//! plays included; a field Spotify stops sending keeps its stored value; entries in either
//! spelling (`track` / `item`) land whole. The last test drives the library through random
//! sequences of extracts against the stand-in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::{Backend, TestContext};
use crate::on_both;
use crate::spotify::{extract, listener_state, rows, write_token};
use crate::spotify_server::{SpotifyServer, State, seed_playlists, track};

const T0: &str = "2026-11-20T10:00:00.123Z";

/// A play of seed track `n` at `T0 + minutes` (and `seconds`).
fn play(n: usize, minutes: i64, seconds: i64) -> Value {
    let seeds: Vec<_> = seed_playlists().into_iter().flat_map(|(_, r)| r).collect();
    let at = chrono::DateTime::parse_from_rfc3339(T0).unwrap()
        + chrono::Duration::minutes(minutes)
        + chrono::Duration::seconds(seconds);
    let mut t = track(&seeds[n % seeds.len()]);
    t["external_ids"] = json!({"isrc": format!("ISRC{}", t["id"].as_str().unwrap())});
    json!({"played_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "track": t,
           "context": null})
}

/// The plays in the lake as (UTC milliseconds, track id), with how often each is there.
fn landed(ctx: &TestContext) -> BTreeMap<(i64, String), usize> {
    let mut out = BTreeMap::new();
    for r in rows(
        ctx,
        "SELECT CAST(played_at AS BIGINT) / 1000 AS ms, track_id FROM raw.spotify_recently_played",
    ) {
        let key = (
            r["ms"].as_i64().unwrap(),
            r["track_id"].as_str().unwrap().to_string(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn served(server: &SpotifyServer) -> BTreeMap<(i64, String), usize> {
    let s = server.state.lock().unwrap();
    s.served_plays
        .iter()
        .map(|(at, id)| {
            let ms = chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .timestamp_millis();
            ((ms, id.clone()), 1)
        })
        .collect()
}

on_both!(late_synced_plays_land, late_synced_plays_land_on);
fn late_synced_plays_land_on(ctx: TestContext) {
    let mut state = State::default();
    state.plays = (0..30).map(|i| play(i, 4 * i as i64, 0)).collect();
    state.valid.insert("stale-token".into());
    state.refresh_token = "refresh-0".into();
    let server = SpotifyServer::start(state);
    ctx.configure(&server.config(""));
    write_token(&ctx);
    extract(&ctx, &["--stream", "recently_played"]);
    assert_eq!(landed(&ctx).len(), 30);

    // 7 plays reach Spotify: 4 new ones, and 3 that were played earlier, offline, and synced
    // late, with a played_at older than the newest play stored.
    {
        let mut s = server.state.lock().unwrap();
        for i in 30..34 {
            s.plays.push(play(i, 4 * i as i64, 0));
        }
        for (n, minutes) in [(40, 10), (41, 50), (42, 101)] {
            s.plays.push(play(n, minutes, 7));
        }
    }
    let (_, stderr) = extract(&ctx, &["--stream", "recently_played"]);
    assert!(stderr.contains("raw.spotify_recently_played"), "{stderr}");
    let lake = landed(&ctx);
    assert_eq!(lake.len(), 37, "{lake:?}");
    assert!(lake.values().all(|n| *n == 1), "a play landed twice");
    assert_eq!(lake, served(&server));
    // The late plays sit in their place in time.
    let all = rows(
        &ctx,
        "SELECT played_at FROM raw.spotify_recently_played ORDER BY played_at",
    );
    let at: Vec<&str> = all
        .iter()
        .map(|r| r["played_at"].as_str().unwrap())
        .filter(|t| t.contains(":07."))
        .collect();
    assert_eq!(
        at,
        [
            "2026-11-20T10:10:07.123Z",
            "2026-11-20T10:50:07.123Z",
            "2026-11-20T11:41:07.123Z"
        ]
    );

    // A rerun adds nothing and commits nothing.
    let version = ctx.version("raw.spotify_recently_played");
    extract(&ctx, &["--stream", "recently_played"]);
    assert_eq!(ctx.version("raw.spotify_recently_played"), version);
    assert_eq!(landed(&ctx).len(), 37);
}

/// Adds `external_ids` to every track object, as Extended Quota Mode apps get them.
fn with_isrc(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("type") == Some(&json!("track"))
                && let Some(id) = map.get("id").and_then(Value::as_str).map(String::from)
            {
                map.insert("external_ids".into(), json!({"isrc": format!("ISRC{id}")}));
            }
            map.values_mut().for_each(with_isrc);
        }
        Value::Array(items) => items.iter_mut().for_each(with_isrc),
        _ => {}
    }
}

on_both!(
    fields_spotify_stops_sending_keep_their_values,
    fields_spotify_stops_sending_keep_their_values_on
);
fn fields_spotify_stops_sending_keep_their_values_on(ctx: TestContext) {
    // Extended Quota Mode: tracks with ISRCs and popularity, artists with followers.
    let mut state = listener_state();
    state.retired.clear();
    for v in state.plays.iter_mut().chain(state.saved.iter_mut()) {
        with_isrc(v);
    }
    state.top_tracks.iter_mut().for_each(with_isrc);
    for (i, a) in state
        .followed
        .iter_mut()
        .chain(state.top_artists.iter_mut())
        .enumerate()
    {
        a["followers"] = json!({"href": null, "total": 1000 + i});
        a["popularity"] = json!(50);
    }
    state.popularity = Some(json!(40));
    let artists: BTreeSet<String> = state
        .followed
        .iter()
        .chain(&state.top_artists)
        .map(|a| a["id"].to_string())
        .collect();
    let server = SpotifyServer::start(state);
    ctx.configure(&server.config(""));
    write_token(&ctx);
    let streams =
        "saved_tracks,recently_played,top_tracks,top_artists,followed_artists,tracks,artists";
    extract(&ctx, &["--stream", streams]);
    let tracks = ctx.scalar("SELECT count(*) FROM raw.spotify_tracks");
    let known = |ctx: &TestContext| {
        (
            ctx.scalar("SELECT count(*) FROM raw.spotify_tracks WHERE isrc = 'ISRC' || track_id"),
            ctx.scalar("SELECT count(*) FROM raw.spotify_tracks WHERE popularity = 40"),
            ctx.scalar(
                "SELECT count(*) FROM raw.spotify_artists WHERE followers >= 1000 AND popularity = 50",
            ),
        )
    };
    let before = known(&ctx);
    // The list of absent fields steers the merge and is never written.
    let columns = ctx.ok(&["describe", "raw.spotify_tracks"]);
    assert!(
        columns.contains("isrc") && !columns.contains("__lake"),
        "{columns}"
    );
    assert_eq!(before.0, tracks);
    assert_eq!(before.1, tracks);
    assert_eq!(
        before.2,
        artists.len().to_string(),
        "the followed and top artists"
    );

    // Development Mode: Spotify stops sending them. The merges keep what the lake knew.
    let version = ctx.version("raw.spotify_tracks");
    server.state.lock().unwrap().dropped = ["external_ids", "popularity", "followers"]
        .map(String::from)
        .into();
    extract(&ctx, &["--stream", streams]);
    assert_eq!(ctx.version("raw.spotify_tracks"), version + 1);
    assert_eq!(known(&ctx), before);
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_tracks"),
        tracks
    );
    // The raw JSON is the latest answer, as sent.
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_tracks WHERE raw_json LIKE '%external_ids%'"),
        "0"
    );
    // The commit records which fields were absent, and in how many rows.
    if ctx.backend == Backend::Local {
        let log = ctx.path(&format!(
            "lake/raw/spotify_tracks/_delta_log/{:020}.json",
            version + 1
        ));
        let text = std::fs::read_to_string(log).unwrap();
        let info: Value = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|a| a.get("commitInfo").is_some())
            .unwrap();
        let absent = &info["commitInfo"]["lake.absent_fields"];
        assert_eq!(
            absent["isrc"],
            json!(tracks.parse::<u64>().unwrap()),
            "{info}"
        );
        assert_eq!(absent["popularity"], absent["isrc"]);
    }

    // A field sent again overwrites, and a field sent as null says it is null.
    {
        let mut s = server.state.lock().unwrap();
        s.dropped.remove("popularity");
        s.popularity = Some(Value::Null);
    }
    extract(&ctx, &["--stream", "recently_played,tracks"]);
    let played = ctx.scalar("SELECT count(DISTINCT track_id) FROM raw.spotify_recently_played");
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_tracks WHERE popularity IS NULL"),
        played
    );
    assert_eq!(
        ctx.scalar("SELECT count(*) FROM raw.spotify_tracks WHERE isrc = 'ISRC' || track_id"),
        tracks
    );
}

#[test]
fn saved_tracks_in_the_item_spelling_land_whole() {
    let ctx = TestContext::new(Backend::Local);
    let mut state = listener_state();
    state.saved_as_item = true;
    // An entry whose object is under no known name: kept, counted and reported.
    state
        .saved
        .push(json!({"added_at": "2025-03-01T08:00:00Z", "episode": {"id": "e1"}}));
    let expected: Vec<Value> = state.saved[..30]
        .iter()
        .map(|e| e["track"]["name"].clone())
        .collect();
    let server = SpotifyServer::start(state);
    ctx.configure(&server.config(""));
    write_token(&ctx);
    let (_, stderr) = extract(&ctx, &["--stream", "saved_tracks"]);
    assert!(
        stderr.contains("me/tracks: 1 of 31 entries carry no object under `item` or `track`"),
        "{stderr}"
    );
    let landed = rows(
        &ctx,
        "SELECT track_id, track_name, raw_json FROM raw.spotify_saved_tracks ORDER BY added_at, track_name",
    );
    assert_eq!(landed.len(), 31);
    let names: Vec<Value> = landed[..30]
        .iter()
        .map(|r| r["track_name"].clone())
        .collect();
    let mut want = expected.clone();
    want.sort_by_key(|v| v.as_str().unwrap().to_string());
    let mut got = names.clone();
    got.sort_by_key(|v| v.as_str().unwrap().to_string());
    assert_eq!(got, want);
    assert!(landed[..30].iter().all(|r| r["track_id"].is_string()));
    assert_eq!(landed[30]["track_id"], Value::Null);
    assert!(
        landed[30]["raw_json"]
            .as_str()
            .unwrap()
            .contains("\"episode\"")
    );
}

/// One step of the property test: plays reach Spotify, fields come and go, and maybe an
/// extract runs.
#[derive(Debug, Clone)]
struct Step {
    new: usize,
    /// Late plays: each lands between two earlier plays (index into those made so far).
    late: Vec<usize>,
    drop_isrc: bool,
    drop_popularity: bool,
    /// The popularity Spotify sends now; `None` for null.
    popularity: Option<i64>,
    extract: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..8usize,
        proptest::collection::vec(0..1000usize, 0..4),
        any::<bool>(),
        any::<bool>(),
        proptest::option::weighted(0.8, 0..100i64),
        proptest::bool::weighted(0.75),
    )
        .prop_map(
            |(new, late, drop_isrc, drop_popularity, popularity, extract)| Step {
                new,
                late,
                drop_isrc,
                drop_popularity,
                popularity,
                extract,
            },
        )
}

/// The last value of `pointer` in the track objects served with `id`, among those that carried
/// it; null when none did.
fn last_known(served: &[Value], id: &str, key: &str, pointer: &str) -> Value {
    served
        .iter()
        .rfind(|t| t["id"] == json!(id) && t.get(key).is_some())
        .map_or(Value::Null, |t| {
            t.pointer(pointer).cloned().unwrap_or(Value::Null)
        })
}

#[test]
fn random_extracts_keep_every_play_once_and_every_last_known_value() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 16,
        failure_persistence: None,
        ..Default::default()
    });
    runner
        .run(&proptest::collection::vec(step(), 1..6), |steps| {
            runtime.block_on(check(&steps));
            Ok(())
        })
        .unwrap();
}

/// Runs `steps` against a fresh lake and stand-in through the library, checking after each
/// extract that the lake's plays are exactly those served, each once, and that every track
/// field holds its last known value.
async fn check(steps: &[Step]) {
    use lake::extract::spotify::{Outcome, Stream, extract};
    let ctx = TestContext::new(Backend::Local);
    let mut state = State::default();
    let mut made = 40usize;
    state.plays = (0..made).map(|i| play(i, 4 * i as i64, 0)).collect();
    state.valid.insert("stale-token".into());
    state.refresh_token = "refresh-0".into();
    let server = SpotifyServer::start(state);
    ctx.configure(&server.config(""));
    write_token(&ctx);
    let overrides = lake::config::Overrides {
        config: Some(ctx.path("lake.toml")),
        ..Default::default()
    };
    let settings =
        lake::config::Settings::resolve(&overrides, std::iter::empty(), ctx.dir.path()).unwrap();
    let lake = Arc::new(lake::lake::Lake::open(&settings).await.unwrap());
    let mut late_count = 0i64;
    for step in steps {
        {
            let mut s = server.state.lock().unwrap();
            for _ in 0..step.new {
                s.plays.push(play(made, 4 * made as i64, 0));
                made += 1;
            }
            for &at in &step.late {
                late_count += 1;
                let before = at % made;
                s.plays.push(play(
                    made + 100 + late_count as usize,
                    4 * before as i64,
                    late_count,
                ));
            }
            s.dropped = BTreeSet::new();
            if step.drop_isrc {
                s.dropped.insert("external_ids".into());
            }
            if step.drop_popularity {
                s.dropped.insert("popularity".into());
            }
            s.popularity = Some(step.popularity.map_or(Value::Null, Value::from));
        }
        if !step.extract {
            continue;
        }
        let reports = extract(
            &lake,
            &settings,
            &[Stream::RecentlyPlayed, Stream::Tracks],
            &|_| indicatif::ProgressBar::hidden(),
        )
        .await
        .unwrap();
        for r in &reports {
            assert!(
                !matches!(r.outcome, Outcome::Failed(_) | Outcome::Skipped(_)),
                "{r:?}"
            );
        }

        let session = lake::query::LakeSession::new(lake.clone()).await.unwrap();
        let plays = session
            .strings(
                "SELECT CAST(CAST(played_at AS BIGINT) / 1000 AS VARCHAR) || '|' || track_id \
                 FROM raw.spotify_recently_played",
            )
            .await
            .unwrap();
        let landed: BTreeSet<String> = plays.iter().cloned().collect();
        assert_eq!(landed.len(), plays.len(), "a play landed twice");
        let served: BTreeSet<String> = served(&server)
            .into_keys()
            .map(|(ms, id)| format!("{ms}|{id}"))
            .collect();
        assert_eq!(landed, served, "steps: {steps:?}");

        let tracks = session
            .strings(
                "SELECT track_id || '|' || coalesce(isrc, '-') || '|' || \
                 coalesce(CAST(popularity AS VARCHAR), '-') FROM raw.spotify_tracks",
            )
            .await
            .unwrap();
        let served_tracks = server.state.lock().unwrap().served_tracks.clone();
        let ids: BTreeSet<&str> = served_tracks
            .iter()
            .filter_map(|t| t["id"].as_str())
            .collect();
        assert_eq!(tracks.len(), ids.len());
        for row in &tracks {
            let parts: Vec<&str> = row.split('|').collect();
            let text = |v: Value| match v {
                Value::Null => "-".to_string(),
                Value::String(s) => s,
                other => other.to_string(),
            };
            let isrc = text(last_known(
                &served_tracks,
                parts[0],
                "external_ids",
                "/external_ids/isrc",
            ));
            let popularity = text(last_known(
                &served_tracks,
                parts[0],
                "popularity",
                "/popularity",
            ));
            assert_eq!(
                (parts[1], parts[2]),
                (isrc.as_str(), popularity.as_str()),
                "track {} after steps {steps:?}",
                parts[0]
            );
        }
    }
}
