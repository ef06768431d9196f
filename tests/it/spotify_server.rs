//! A local stand-in for the Spotify Web API and accounts service, speaking their JSON shapes
//! (from the public API reference): paging objects with `next` and `total`, the
//! recently-played cursor, the followed-artists cursor, 429 with Retry-After, 401 for an
//! expired token, 403 on retired endpoints, and the token endpoint for client credentials,
//! PKCE codes and rotating refresh tokens. Each test starts its own.
//!
//! The catalog is built from the seed playlists in `fixtures/seed-playlists`, so that what
//! lake lands can be compared with what the original pipeline wrote.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde_json::{Value, json};
use sha2::Digest;

pub const CLIENT_ID: &str = "lake-test-client";
pub const CLIENT_SECRET: &str = "lake-test-client-secret-5f3a";
/// Pages never hold more than this, whatever limit is asked, so every stream pages.
const PAGE_CAP: usize = 25;

#[derive(Default)]
pub struct State {
    /// Playlists by id: name and entries.
    pub playlists: BTreeMap<String, (String, Vec<Value>)>,
    /// A playlist whose `total` claims one more entry than it serves.
    pub short_playlist: Option<String>,
    pub albums: BTreeMap<String, Value>,
    pub artists: BTreeMap<String, Value>,
    /// Plays in the order they reached Spotify. A play that synced late (offline, another
    /// device) comes after plays with a newer `played_at`.
    pub plays: Vec<Value>,
    /// How many of the latest plays (by arrival) recently-played serves; 50 when unset, as
    /// Spotify does.
    pub window: Option<usize>,
    pub saved: Vec<Value>,
    /// Saved tracks wrap their track as `item`, the 2026 spelling of playlist entries.
    pub saved_as_item: bool,
    /// Fields left out of every object served, at any depth (`external_ids`, `popularity`,
    /// `followers`, `label`), as Spotify drops them for Development Mode apps.
    pub dropped: BTreeSet<String>,
    /// When set, every track object served carries this `popularity`, null included (before
    /// `dropped`).
    pub popularity: Option<Value>,
    /// Every play served by recently-played: (`played_at` as sent, track id).
    pub served_plays: BTreeSet<(String, String)>,
    /// Every track object served, in order, as it was sent.
    pub served_tracks: Vec<Value>,
    pub top_tracks: Vec<Value>,
    pub top_artists: Vec<Value>,
    pub followed: Vec<Value>,
    pub my_playlists: Vec<Value>,
    /// The batch GETs (`/albums?ids=`, `/artists?ids=`) answer 403, as for Development Mode.
    pub batch_forbidden: bool,
    /// Paths that answer 403 (retired), such as `/v1/me/top/artists`.
    pub retired: BTreeSet<String>,
    /// Requests (path?query) that answer 429 with Retry-After: 1 the first time.
    pub rate_limit_once: BTreeSet<String>,
    /// Requests that answer 500 the first time.
    pub fail_once: BTreeSet<String>,
    /// Requests that always answer 500.
    pub fail_always: BTreeSet<String>,
    /// Requests answered only after 11 s the first time: past rspotify's 10 s timeout.
    pub slow_once: BTreeSet<String>,
    /// Access tokens that are accepted, and those that answer 401.
    pub valid: BTreeSet<String>,
    pub expired: BTreeSet<String>,
    /// The refresh token the accounts service accepts now; it rotates on use.
    pub refresh_token: String,
    /// The PKCE challenge of the pending authorization, and the code it will be traded for.
    pub pkce: Option<(String, String)>,
    /// Every request: `METHOD path?query`.
    pub log: Vec<String>,
    counter: u64,
}

pub struct SpotifyServer {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl SpotifyServer {
    pub fn start(state: State) -> Self {
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let serve_state = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(serve_state, tx));
        });
        let addr = rx.recv().expect("server started");
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// The `[spotify]` table pointing lake at this server, with `extra` lines in it.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "\n[spotify]\napi_url = \"{0}/v1/\"\naccounts_url = \"{0}/\"\nmax_retries = 2\nclient_id = \"{CLIENT_ID}\"\n{extra}\n",
            self.url
        )
    }

    /// Requests whose line contains `needle`.
    pub fn requests(&self, needle: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

async fn serve(state: Arc<Mutex<State>>, tx: std::sync::mpsc::Sender<SocketAddr>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    tx.send(listener.local_addr().expect("addr"))
        .expect("report");
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let handler = service_fn(move |req: Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let slow = state.lock().unwrap().slow_once.remove(&target_of(&parts));
                if slow {
                    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
                }
                let (status, headers, mut json) = handle(&state, &parts, &body);
                served(&mut state.lock().unwrap(), &mut json);
                let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
                *resp.status_mut() = status;
                resp.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                for (k, v) in headers {
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = http
            .serve_connection(TokioIo::new(socket), handler)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Applies the switches that shape every answer (`popularity`, `dropped`) and records the
/// tracks it carries.
fn served(s: &mut State, answer: &mut Value) {
    fn walk(s: &mut State, v: &mut Value) {
        match v {
            Value::Object(map) => {
                let is_track = map.get("type") == Some(&json!("track"));
                if is_track && let Some(p) = s.popularity.clone() {
                    map.insert("popularity".into(), p);
                }
                for field in &s.dropped {
                    map.remove(field);
                }
                for (_, child) in map.iter_mut() {
                    walk(s, child);
                }
                if is_track && map.contains_key("id") {
                    s.served_tracks.push(Value::Object(map.clone()));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(s, i)),
            _ => {}
        }
    }
    walk(s, answer);
}

/// `path?query` with the query parameters sorted, so tests can name a request whatever order a
/// client sends them in.
fn target_of(parts: &hyper::http::request::Parts) -> String {
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    pairs.sort();
    let sorted: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if sorted.is_empty() {
        parts.uri.path().to_string()
    } else {
        format!("{}?{}", parts.uri.path(), sorted.join("&"))
    }
}

type Answer = (StatusCode, Vec<(&'static str, String)>, Value);

fn error(status: u16, message: &str) -> Answer {
    (
        StatusCode::from_u16(status).unwrap(),
        vec![],
        json!({"error": {"status": status, "message": message}}),
    )
}

fn ok(v: Value) -> Answer {
    (StatusCode::OK, vec![], v)
}

fn handle(state: &Mutex<State>, parts: &hyper::http::request::Parts, body: &[u8]) -> Answer {
    let mut s = state.lock().unwrap();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let target = target_of(parts);
    s.log.push(format!("{} {target}", parts.method));

    if path == "/api/token" {
        return token(&mut s, parts, body);
    }
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    if s.expired.contains(&auth) {
        return error(401, "The access token expired");
    }
    if !s.valid.contains(&auth) {
        return error(401, "Invalid access token");
    }
    if s.rate_limit_once.remove(&target) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after", "1".into())],
            json!({"error": {"status": 429, "message": "API rate limit exceeded"}}),
        );
    }
    if s.fail_once.remove(&target) || s.fail_always.contains(&target) {
        return error(500, "Server error");
    }
    if s.retired.contains(&path) {
        return error(403, "Forbidden");
    }
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20)
        .min(PAGE_CAP);
    let offset: usize = query
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let base = format!(
        "http://{}",
        parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    );
    let parts_: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match parts_.as_slice() {
        ["playlists", id] => match s.playlists.get(*id) {
            Some((name, entries)) => ok(json!({
                "id": id, "name": name, "snapshot_id": format!("snap-{}", entries.len()),
                "type": "playlist", "uri": format!("spotify:playlist:{id}"),
            })),
            None => error(404, "Resource not found"),
        },
        ["playlists", id, "items"] => match s.playlists.get(*id) {
            Some((_, entries)) => {
                let mut total = entries.len();
                if s.short_playlist.as_deref() == Some(*id) {
                    total += 1;
                }
                ok(page(&base, &path, entries, offset, limit, total))
            }
            None => error(404, "Resource not found"),
        },
        ["albums"] | ["artists"] => {
            if s.batch_forbidden {
                return error(403, "Forbidden");
            }
            let kind = parts_[0];
            let map = if kind == "albums" {
                &s.albums
            } else {
                &s.artists
            };
            let items: Vec<Value> = query
                .get("ids")
                .map(|ids| {
                    ids.split(',')
                        .map(|id| map.get(id).cloned().unwrap_or(Value::Null))
                        .collect()
                })
                .unwrap_or_default();
            ok(json!({ kind: items }))
        }
        ["albums", id] => s
            .albums
            .get(*id)
            .cloned()
            .map_or_else(|| error(404, "Resource not found"), ok),
        ["artists", id] => s
            .artists
            .get(*id)
            .cloned()
            .map_or_else(|| error(404, "Resource not found"), ok),
        ["me", "player", "recently-played"] => {
            let ms = |p: &Value| {
                chrono::DateTime::parse_from_rfc3339(p["played_at"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis()
            };
            // Spotify serves a window of the latest plays to reach it, newest first: at most
            // `limit` of them before the `before` cursor, or the oldest after `after`.
            let n = s.plays.len();
            let mut window: Vec<Value> =
                s.plays[n.saturating_sub(s.window.unwrap_or(50))..].to_vec();
            window.sort_by_key(|p| std::cmp::Reverse(ms(p)));
            let after: Option<i64> = query.get("after").and_then(|a| a.parse().ok());
            let before: Option<i64> = query.get("before").and_then(|a| a.parse().ok());
            let eligible: Vec<Value> = window
                .into_iter()
                .filter(|p| after.is_none_or(|a| ms(p) > a) && before.is_none_or(|b| ms(p) < b))
                .collect();
            let items: Vec<Value> = if after.is_some() {
                let from = eligible.len().saturating_sub(limit);
                eligible[from..].to_vec()
            } else {
                eligible.iter().take(limit).cloned().collect()
            };
            let more = after.is_none() && eligible.len() > items.len();
            let cursors = if items.is_empty() {
                Value::Null
            } else {
                json!({"after": ms(&items[0]).to_string(), "before": ms(items.last().unwrap()).to_string()})
            };
            let next = match items.last() {
                Some(last) if more => {
                    json!(format!("{base}{path}?before={}&limit={limit}", ms(last)))
                }
                _ => Value::Null,
            };
            for p in &items {
                let id = p.pointer("/track/id").and_then(Value::as_str).unwrap_or("");
                s.served_plays
                    .insert((p["played_at"].as_str().unwrap().to_string(), id.to_string()));
            }
            ok(
                json!({"href": format!("{base}{path}"), "items": items, "limit": limit,
                      "next": next, "cursors": cursors}),
            )
        }
        ["me", "tracks"] => {
            let mut saved = s.saved.clone();
            if s.saved_as_item {
                for entry in saved.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(t) = entry.remove("track") {
                        entry.insert("item".into(), t);
                    }
                }
            }
            ok(page(&base, &path, &saved, offset, limit, saved.len()))
        }
        ["me", "top", "tracks"] => ok(page(
            &base,
            &path,
            &s.top_tracks,
            offset,
            limit,
            s.top_tracks.len(),
        )),
        ["me", "top", "artists"] => ok(page(
            &base,
            &path,
            &s.top_artists,
            offset,
            limit,
            s.top_artists.len(),
        )),
        ["me", "playlists"] => ok(page(
            &base,
            &path,
            &s.my_playlists,
            offset,
            limit,
            s.my_playlists.len(),
        )),
        ["me", "following"] => {
            let start = match query.get("after") {
                Some(a) => s
                    .followed
                    .iter()
                    .position(|f| f["id"] == json!(a))
                    .map_or(0, |i| i + 1),
                None => 0,
            };
            let items: Vec<Value> = s.followed.iter().skip(start).take(limit).cloned().collect();
            let last = items.last().map(|a| a["id"].clone()).unwrap_or(Value::Null);
            let more = start + items.len() < s.followed.len();
            ok(json!({"artists": {
                "href": format!("{base}{path}"), "items": items, "limit": limit,
                "next": if more { json!(format!("{base}{path}?type=artist&after={}", last.as_str().unwrap_or(""))) } else { Value::Null },
                "cursors": {"after": if more { last } else { Value::Null }},
                "total": s.followed.len(),
            }}))
        }
        _ => error(404, "Service not found"),
    }
}

fn page(base: &str, path: &str, all: &[Value], offset: usize, limit: usize, total: usize) -> Value {
    let items: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let end = offset + items.len();
    let next = if end < all.len() {
        json!(format!("{base}{path}?offset={end}&limit={limit}"))
    } else {
        Value::Null
    };
    json!({"href": format!("{base}{path}?offset={offset}&limit={limit}"), "items": items,
           "limit": limit, "next": next, "offset": offset, "previous": Value::Null, "total": total})
}

fn token(s: &mut State, parts: &hyper::http::request::Parts, body: &[u8]) -> Answer {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    s.counter += 1;
    let n = s.counter;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            );
            if parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(expected.as_str())
            {
                return error(400, "invalid_client");
            }
            let access = format!("app-token-{n}");
            s.valid.insert(access.clone());
            ok(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600}))
        }
        Some("authorization_code") => {
            let Some((challenge, code)) = s.pkce.clone() else {
                return error(400, "invalid_grant");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()));
            if form.get("code") != Some(&code)
                || computed != challenge
                || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            {
                return error(400, "invalid_grant");
            }
            let access = format!("user-token-{n}");
            s.valid.insert(access.clone());
            s.refresh_token = format!("refresh-{n}");
            ok(
                json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600,
                      "refresh_token": s.refresh_token, "scope": "user-read-recently-played user-top-read"}),
            )
        }
        Some("refresh_token") => {
            if form.get("refresh_token") != Some(&s.refresh_token) {
                return error(400, "invalid_grant");
            }
            let access = format!("user-token-{n}");
            s.valid.insert(access.clone());
            // Spotify may rotate the refresh token on use.
            s.refresh_token = format!("refresh-{n}");
            ok(
                json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600,
                      "refresh_token": s.refresh_token}),
            )
        }
        _ => error(400, "unsupported_grant_type"),
    }
}

/// A stable 22-character id for a name, like Spotify's base62 ids.
pub fn id_for(kind: &str, name: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{kind}:{name}").as_bytes());
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    digest
        .iter()
        .take(22)
        .map(|b| DIGITS[(*b as usize) % 62] as char)
        .collect()
}

/// One seed CSV row.
#[derive(Debug, Clone)]
pub struct SeedRow {
    pub name: String,
    pub artists: Vec<String>,
    pub album: String,
    pub release: String,
}

/// The seed playlists: (file stem, rows), read with the project's own CSV reader.
pub fn seed_playlists() -> Vec<(String, Vec<SeedRow>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seed-playlists");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let schema = Arc::new(arrow::datatypes::Schema::new(
        ["Name", "Artists", "Album", "Release Date"]
            .map(|n| arrow::datatypes::Field::new(n, arrow::datatypes::DataType::Utf8, true))
            .to_vec(),
    ));
    files
        .into_iter()
        .map(|f| {
            let reader = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_header(true)
                .build(std::fs::File::open(&f).unwrap())
                .unwrap();
            let mut rows = Vec::new();
            for batch in reader {
                let batch = batch.unwrap();
                let col =
                    |i: usize| arrow::array::AsArray::as_string::<i32>(batch.column(i)).clone();
                let (n, a, al, r) = (col(0), col(1), col(2), col(3));
                for i in 0..batch.num_rows() {
                    rows.push(SeedRow {
                        name: n.value(i).to_string(),
                        artists: a.value(i).split(',').map(String::from).collect(),
                        album: al.value(i).to_string(),
                        release: r.value(i).to_string(),
                    });
                }
            }
            (f.file_stem().unwrap().to_string_lossy().to_string(), rows)
        })
        .collect()
}

/// A simplified artist object.
pub fn artist(name: &str) -> Value {
    let id = id_for("artist", name);
    json!({"id": id, "name": name, "type": "artist", "uri": format!("spotify:artist:{id}"),
           "external_urls": {"spotify": format!("https://open.spotify.com/artist/{id}")}})
}

/// A full track object for a seed row, in the 2026 shape (no popularity, no
/// available_markets).
pub fn track(row: &SeedRow) -> Value {
    let id = id_for("track", &format!("{}|{}", row.name, row.album));
    let album_id = id_for("album", &row.album);
    let precision = if row.release.len() == 4 {
        "year"
    } else {
        "day"
    };
    json!({
        "id": id, "name": row.name, "type": "track", "uri": format!("spotify:track:{id}"),
        "duration_ms": 200_000, "explicit": false, "is_local": false, "disc_number": 1, "track_number": 1,
        "artists": row.artists.iter().map(|a| artist(a)).collect::<Vec<_>>(),
        "album": {"id": album_id, "name": row.album, "album_type": "album", "type": "album",
                  "uri": format!("spotify:album:{album_id}"), "release_date": row.release,
                  "release_date_precision": precision, "total_tracks": 10,
                  "artists": [artist(&row.artists[0])]},
    })
}

/// The catalog of the seed playlists: playlists, full albums and full artists.
pub fn seed_state() -> State {
    let mut s = State::default();
    for (stem, rows) in seed_playlists() {
        let pid = id_for("playlist", &stem);
        let entries: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = track(r);
                // Spotify renamed `track` to `item` in 2026; old proxies still send `track`.
                let key = if i % 2 == 0 { "item" } else { "track" };
                json!({"added_at": "2023-07-01T10:00:00Z", "added_by": {"id": "curator"},
                       "is_local": false, key: t})
            })
            .collect();
        for r in &rows {
            let t = track(r);
            let mut album = t["album"].clone();
            album["label"] = json!("Seed Records");
            s.albums.insert(album["id"].as_str().unwrap().into(), album);
            for a in &r.artists {
                let mut full = artist(a);
                full["genres"] = json!(["seed pop"]);
                full["images"] =
                    json!([{"url": "https://i.scdn.co/image/x", "height": 640, "width": 640}]);
                s.artists.insert(full["id"].as_str().unwrap().into(), full);
            }
        }
        s.playlists.insert(pid, (stem, entries));
    }
    s
}
