//! The Spotify Web API into raw tables, one table per stream.
//!
//! Each stream is fetched whole and lands in one Delta commit, so a stream that fails part-way
//! commits nothing. `recently_played` reads Spotify's whole window of recent plays every run and
//! inserts the plays whose key is new, so late-synced plays land and a rerun adds nothing twice.
//! The catalog tables are merged keeping the values of fields Spotify did not send. Streams fail
//! alone: a 403 or 404 from an endpoint Spotify retired for the app is reported and the other
//! streams carry on.

pub mod api;
pub mod auth;
pub mod rows;
pub mod token;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::prelude::{col, lit};
use indicatif::ProgressBar;
use serde_json::{Map, Value, json};

pub use api::Api;
use rows::{ABSENT, Col, Field, TAIL, TRACK};

use crate::config::Settings;
use crate::extract::ExtractError;
use crate::lake::write::{MemorySource, WriteMode, write};
use crate::lake::{Lake, RAW, TableName};
use crate::query::LakeSession;

/// A stream of the Web API and the raw table it lands in (`raw.spotify_<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// The tracks of the playlists in `spotify.playlists` (client credentials).
    PlaylistTracks,
    /// The listener's playlists.
    Playlists,
    /// The listener's saved tracks.
    SavedTracks,
    /// The listener's recent plays, incrementally.
    RecentlyPlayed,
    /// The listener's top tracks per time range, as a dated snapshot.
    TopTracks,
    /// The listener's top artists per time range, as a dated snapshot.
    TopArtists,
    /// The artists the listener follows.
    FollowedArtists,
    /// Every track the other streams saw.
    Tracks,
    /// The albums of the tracks in raw.spotify_tracks not yet in the lake.
    Albums,
    /// The artists of those tracks not yet in the lake.
    Artists,
}

impl Stream {
    /// Every stream, in the order they run.
    pub const ALL: [Stream; 10] = [
        Stream::PlaylistTracks,
        Stream::Playlists,
        Stream::SavedTracks,
        Stream::RecentlyPlayed,
        Stream::TopTracks,
        Stream::TopArtists,
        Stream::FollowedArtists,
        Stream::Tracks,
        Stream::Albums,
        Stream::Artists,
    ];

    /// Its name on the command line and in lake.toml.
    pub fn name(self) -> &'static str {
        match self {
            Stream::PlaylistTracks => "playlist_tracks",
            Stream::Playlists => "playlists",
            Stream::SavedTracks => "saved_tracks",
            Stream::RecentlyPlayed => "recently_played",
            Stream::TopTracks => "top_tracks",
            Stream::TopArtists => "top_artists",
            Stream::FollowedArtists => "followed_artists",
            Stream::Tracks => "tracks",
            Stream::Albums => "albums",
            Stream::Artists => "artists",
        }
    }

    /// The raw table it lands in.
    pub fn table(self) -> TableName {
        TableName::new(RAW, &format!("spotify_{}", self.name())).expect("a valid name")
    }

    /// Whether it needs the listener's token from `lake auth spotify`.
    pub fn needs_user(self) -> bool {
        !matches!(
            self,
            Stream::PlaylistTracks | Stream::Tracks | Stream::Albums | Stream::Artists
        )
    }

    /// The stream of a name.
    pub fn parse(name: &str) -> Result<Self, ExtractError> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| ExtractError::Config {
                message: format!(
                    "unknown stream `{name}` (streams: {})",
                    Self::ALL.map(Stream::name).join(", ")
                ),
            })
    }
}

/// Which streams to run: those named, else `spotify.streams`, else every stream the
/// configuration allows (the playlists when some are configured, the listener's streams when
/// there is a token file, and the catalog tables that follow from them).
pub fn select(settings: &Settings, named: &[String]) -> Result<Vec<Stream>, ExtractError> {
    let names: Option<Vec<String>> = if named.is_empty() {
        settings.spotify.streams.clone()
    } else {
        Some(named.to_vec())
    };
    let mut chosen: BTreeSet<Stream> = BTreeSet::new();
    match names {
        Some(names) => {
            for n in names {
                chosen.insert(Stream::parse(&n)?);
            }
        }
        None => {
            if !settings.spotify.playlists.is_empty() {
                chosen.insert(Stream::PlaylistTracks);
            }
            if token::path(settings).is_file() {
                chosen.extend(Stream::ALL.into_iter().filter(|s| s.needs_user()));
            }
            if chosen.is_empty() {
                return Err(ExtractError::Config {
                    message: "nothing to extract: list playlists in `spotify.playlists`, or run \
                              `lake auth spotify` for the listener's streams"
                        .into(),
                });
            }
            chosen.extend([Stream::Tracks, Stream::Albums, Stream::Artists]);
        }
    }
    if chosen.contains(&Stream::PlaylistTracks) && settings.spotify.playlists.is_empty() {
        return Err(ExtractError::Config {
            message: "stream playlist_tracks needs playlists: set `spotify.playlists` in lake.toml"
                .into(),
        });
    }
    Ok(chosen.into_iter().collect())
}

/// What became of one stream.
#[derive(Debug)]
pub enum Outcome {
    /// Landed in one commit.
    Written {
        /// The table version.
        version: u64,
        /// Rows written.
        rows: u64,
    },
    /// Nothing new to land.
    Unchanged,
    /// Spotify does not serve it to this app; the reason says what answered.
    Skipped(String),
    /// It failed; nothing of it was committed.
    Failed(String),
}

/// One stream's report.
#[derive(Debug)]
pub struct StreamReport {
    /// The stream.
    pub stream: Stream,
    /// What happened.
    pub outcome: Outcome,
    /// What Spotify said it had (`total`), where it says.
    pub expected: Option<u64>,
    /// Rows fetched.
    pub fetched: u64,
    /// Count mismatches and skipped items: reported, never swallowed.
    pub warnings: Vec<String>,
}

/// Rows of one stream, ready to land.
struct Landing {
    schema: SchemaRef,
    rows: Vec<Value>,
    mode: WriteMode,
    expected: Option<u64>,
    warnings: Vec<String>,
    metadata: Vec<(String, Value)>,
}

impl Landing {
    fn new(cols: &[(&str, Col)], mode: WriteMode) -> Self {
        Self {
            schema: rows::schema(&[cols, TAIL].concat()),
            rows: Vec::new(),
            mode,
            expected: None,
            warnings: Vec::new(),
            metadata: Vec::new(),
        }
    }

    /// A landing for a catalog table, merged on `key`: the fields Spotify did not send keep
    /// their stored values.
    fn catalog(fields: &[Field], key: &str) -> Self {
        let cols = [&rows::columns(fields)[..], &[ABSENT]].concat();
        Self::new(&cols, WriteMode::Merge(vec![key.into()]))
    }

    /// Warns about entries of `what` that wrap no object under any known name: they land with
    /// their `raw_json` and null columns, and are counted, never silent.
    fn unwrapped(&mut self, what: &str, entries: usize, missing: usize) {
        if missing > 0 {
            self.warnings.push(format!(
                "{what}: {missing} of {entries} entries carry no object under `{}`; they \
                 landed with their raw_json and null columns",
                rows::WRAPPERS.join("` or `")
            ));
        }
    }

    /// Checks what arrived from `what` against the `total` Spotify reported for it: a
    /// mismatch is a warning, never swallowed.
    fn count(&mut self, what: &str, total: Option<u64>, arrived: usize) {
        let Some(t) = total else {
            return;
        };
        if t != arrived as u64 {
            self.warnings.push(format!(
                "{what}: Spotify reported {t} items but {arrived} arrived"
            ));
        }
        self.expected = Some(self.expected.unwrap_or(0) + t);
    }
}

/// Track and artist objects the streams saw, for the catalog tables.
#[derive(Default)]
struct Seen {
    tracks: Vec<Value>,
    artists: Vec<Value>,
}

/// Runs `streams` and lands each in its table. `bar` makes a progress bar for a stream.
pub async fn extract(
    lake: &Arc<Lake>,
    settings: &Settings,
    streams: &[Stream],
    bar: &dyn Fn(&str) -> ProgressBar,
) -> Result<Vec<StreamReport>, ExtractError> {
    let needs_user = streams.iter().any(|s| s.needs_user());
    let user = if needs_user {
        Some(Api::user(&settings.spotify, token::path(settings))?)
    } else {
        None
    };
    let catalog = streams.iter().any(|s| !s.needs_user());
    // The catalog takes the app's token; without a secret, the listener's serves (and without
    // either, Api::app names what is missing).
    let app = if catalog && (settings.spotify.client_secret.is_some() || user.is_none()) {
        Some(Api::app(&settings.spotify).await?)
    } else {
        None
    };
    let catalog_api = app.as_ref().or(user.as_ref()).cloned();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut seen = Seen::default();
    let mut reports = Vec::new();
    for &stream in streams {
        let pb = bar(&format!("{}", stream.table()));
        let api = if stream.needs_user() {
            user.clone()
        } else {
            catalog_api.clone()
        }
        .expect("a client for every selected stream");
        let fetched = fetch(stream, &api, lake, settings, &at, &mut seen, &pb).await;
        let report = match fetched {
            Ok(landing) => land(lake, stream, landing, &pb).await,
            Err(ExtractError::Unavailable {
                endpoint,
                status,
                message,
            }) => {
                let why = format!(
                    "Spotify answered {status} on {endpoint} ({message}); endpoints retired for \
                     Development Mode apps answer 403 or 404"
                );
                StreamReport {
                    stream,
                    outcome: Outcome::Skipped(why),
                    expected: None,
                    fetched: 0,
                    warnings: Vec::new(),
                }
            }
            Err(e) => StreamReport {
                stream,
                outcome: Outcome::Failed(e.to_string()),
                expected: None,
                fetched: 0,
                warnings: Vec::new(),
            },
        };
        pb.finish_and_clear();
        reports.push(report);
    }
    Ok(reports)
}

async fn land(
    lake: &Arc<Lake>,
    stream: Stream,
    mut landing: Landing,
    pb: &ProgressBar,
) -> StreamReport {
    let fetched = landing.rows.len() as u64;
    let mut report = StreamReport {
        stream,
        outcome: Outcome::Unchanged,
        expected: landing.expected,
        fetched,
        warnings: std::mem::take(&mut landing.warnings),
    };
    if landing.rows.is_empty() && landing.mode.keys().is_some() {
        return report;
    }
    pb.set_message(format!("{}: writing {fetched} rows", stream.table()));
    let batch = match rows::to_batch(&landing.schema, &landing.rows) {
        Ok(b) => b,
        Err(e) => {
            report.outcome = Outcome::Failed(format!("failed to build rows: {e}"));
            return report;
        }
    };
    let mut metadata = vec![
        ("lake.command".to_string(), json!("extract spotify")),
        ("lake.stream".to_string(), json!(stream.name())),
        ("lake.rows".to_string(), json!(fetched)),
    ];
    if let Some(e) = landing.expected {
        metadata.push(("lake.expected".to_string(), json!(e)));
    }
    // Which fields Spotify left out, and in how many rows: their stored values were kept.
    let mut absent: BTreeMap<&str, u64> = BTreeMap::new();
    for row in &landing.rows {
        for name in row[ABSENT.0].as_array().into_iter().flatten() {
            *absent.entry(name.as_str().unwrap_or_default()).or_default() += 1;
        }
    }
    if !absent.is_empty() {
        tracing::info!(table = %stream.table(), ?absent, "fields Spotify did not send kept their stored values");
        metadata.push(("lake.absent_fields".to_string(), json!(absent)));
    }
    metadata.append(&mut landing.metadata);
    let source = Arc::new(MemorySource {
        schema: landing.schema.clone(),
        batches: vec![batch],
    });
    report.outcome = match write(lake, &stream.table(), source, &landing.mode, &metadata).await {
        Ok(o) if o.merged == Some((0, 0)) => Outcome::Unchanged,
        Ok(o) => Outcome::Written {
            version: o.version,
            rows: o.rows_read,
        },
        Err(e) => Outcome::Failed(e.to_string()),
    };
    report
}

async fn fetch(
    stream: Stream,
    api: &Api,
    lake: &Arc<Lake>,
    settings: &Settings,
    at: &str,
    seen: &mut Seen,
    pb: &ProgressBar,
) -> Result<Landing, ExtractError> {
    match stream {
        Stream::PlaylistTracks => {
            playlist_tracks(api, &settings.spotify.playlists, at, seen, pb).await
        }
        Stream::Playlists => {
            let mut l = Landing::new(rows::PLAYLISTS, WriteMode::Overwrite);
            let (items, total) = pages(api, "me/playlists", &[], 50, None, pb).await?;
            l.count("me/playlists", total, items.len());
            l.rows = items.iter().map(|p| rows::playlist_row(p, at)).collect();
            Ok(l)
        }
        Stream::SavedTracks => {
            let cols = [&[("added_at", Col::Time)][..], &rows::columns(TRACK)].concat();
            let mut l = Landing::new(&cols, WriteMode::Overwrite);
            let (items, total) = pages(api, "me/tracks", &[], 50, None, pb).await?;
            l.count("me/tracks", total, items.len());
            let mut missing = 0;
            for item in &items {
                let mut r = rows::row(item, at);
                r.insert("added_at".into(), rows::time(item, "/added_at"));
                let track = rows::entry_item(item);
                rows::track_into(&mut r, track.unwrap_or(&Value::Null));
                match track {
                    Some(t) => seen.tracks.push(t.clone()),
                    None => missing += 1,
                }
                l.rows.push(Value::Object(r));
            }
            l.unwrapped("me/tracks", items.len(), missing);
            Ok(l)
        }
        Stream::RecentlyPlayed => recently_played(api, lake, at, seen, pb).await,
        Stream::TopTracks | Stream::TopArtists => {
            let today = at[..10].to_string();
            let head = [
                ("snapshot_date", Col::Date),
                ("time_range", Col::Text),
                ("rank", Col::Int),
            ];
            let (path, body) = if stream == Stream::TopTracks {
                ("me/top/tracks", rows::columns(TRACK))
            } else {
                ("me/top/artists", rows::columns(&rows::artists()))
            };
            let predicate = col("snapshot_date").eq(lit(datafusion::scalar::ScalarValue::Date32(
                Some(days(&today)),
            )));
            let mut l = Landing::new(&[&head[..], &body].concat(), WriteMode::Replace(predicate));
            for range in ["short_term", "medium_term", "long_term"] {
                let q = [("time_range", range.to_string())];
                let (items, total) = pages(api, path, &q, 50, None, pb).await?;
                l.count(&format!("{path} ({range})"), total, items.len());
                for (i, item) in items.iter().enumerate() {
                    let mut r = rows::row(item, at);
                    r.insert("snapshot_date".into(), json!(today));
                    r.insert("time_range".into(), json!(range));
                    r.insert("rank".into(), json!(i + 1));
                    if stream == Stream::TopTracks {
                        rows::track_into(&mut r, item);
                        seen.tracks.push(item.clone());
                    } else {
                        rows::fill(&mut r, &rows::artists(), item);
                        seen.artists.push(item.clone());
                    }
                    l.rows.push(Value::Object(r));
                }
            }
            Ok(l)
        }
        Stream::FollowedArtists => {
            let mut l = Landing::new(&rows::columns(&rows::artists()), WriteMode::Overwrite);
            let q = [("type", "artist".to_string())];
            let (items, total) = pages(api, "me/following", &q, 50, Some("artists"), pb).await?;
            l.count("me/following", total, items.len());
            for item in &items {
                l.rows.push(rows::artist_row(item, at));
                seen.artists.push(item.clone());
            }
            Ok(l)
        }
        Stream::Tracks => {
            let fields = rows::tracks();
            let mut l = Landing::catalog(&fields, "track_id");
            l.rows = by_id(&seen.tracks)
                .values()
                .map(|t| rows::catalog_row(t, &fields, at))
                .collect();
            Ok(l)
        }
        Stream::Albums => {
            let mut wanted: BTreeSet<String> = seen
                .tracks
                .iter()
                .filter_map(|t| t.pointer("/album/id").and_then(Value::as_str))
                .map(String::from)
                .collect();
            missing(
                lake,
                &mut wanted,
                "SELECT DISTINCT album_id FROM raw.spotify_tracks",
                Stream::Albums,
                "SELECT album_id FROM raw.spotify_albums",
            )
            .await?;
            let columns = rows::albums();
            let mut l = Landing::catalog(&columns, "album_id");
            let found = by_ids(api, "albums", &wanted, 20, &mut l.warnings, pb).await?;
            l.rows = found
                .iter()
                .map(|a| rows::catalog_row(a, &columns, at))
                .collect();
            Ok(l)
        }
        Stream::Artists => {
            let columns = rows::artists();
            let mut l = Landing::catalog(&columns, "artist_id");
            let full = by_id(&seen.artists);
            let mut wanted: BTreeSet<String> = seen
                .tracks
                .iter()
                .filter_map(|t| t.get("artists").and_then(Value::as_array))
                .flatten()
                .filter_map(|a| a.get("id").and_then(Value::as_str))
                .map(String::from)
                .collect();
            missing(
                lake,
                &mut wanted,
                "SELECT DISTINCT unnest(artist_ids) FROM raw.spotify_tracks",
                Stream::Artists,
                "SELECT artist_id FROM raw.spotify_artists",
            )
            .await?;
            wanted.retain(|id| !full.contains_key(id));
            let found = by_ids(api, "artists", &wanted, 50, &mut l.warnings, pb).await?;
            l.rows = full
                .values()
                .copied()
                .chain(found.iter())
                .map(|a| rows::catalog_row(a, &columns, at))
                .collect();
            Ok(l)
        }
    }
}

/// Objects by id, the last of each id winning; objects without an id are left out.
fn by_id(objects: &[Value]) -> BTreeMap<String, &Value> {
    objects
        .iter()
        .filter_map(|o| match rows::id(o) {
            Value::String(id) => Some((id, o)),
            _ => None,
        })
        .collect()
}

/// Days since the epoch of a `YYYY-MM-DD` date.
fn days(date: &str) -> i32 {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .expect("a date")
        .to_epoch_days()
}

/// Adds the ids `referenced` (a query over raw.spotify_tracks) returns to `wanted`, then
/// leaves out those `have` (a query over `table`'s table) finds: only ids not in the lake are
/// fetched.
async fn missing(
    lake: &Arc<Lake>,
    wanted: &mut BTreeSet<String>,
    referenced: &str,
    table: Stream,
    have: &str,
) -> Result<(), ExtractError> {
    let session = session(lake).await?;
    wanted.extend(ids_in(&session, Stream::Tracks, referenced).await?);
    let have = ids_in(&session, table, have).await?;
    wanted.retain(|id| !have.contains(id));
    Ok(())
}

/// A session over the lake as it is now, after the streams committed so far.
async fn session(lake: &Arc<Lake>) -> Result<LakeSession, ExtractError> {
    Ok(LakeSession::new(lake.clone()).await?)
}

/// The values a query over `stream`'s table returns, or none when the table does not exist yet.
async fn ids_in(
    session: &LakeSession,
    stream: Stream,
    sql: &str,
) -> Result<HashSet<String>, ExtractError> {
    if !session.tables().contains(&stream.table()) {
        return Ok(HashSet::new());
    }
    Ok(session.strings(sql).await?.into_iter().collect())
}

/// Every item of an offset-paged endpoint, and the `total` Spotify reports. `wrap` names the
/// object the page sits in (`artists` for followed artists, which pages by cursor).
async fn pages(
    api: &Api,
    path: &str,
    query: &[(&str, String)],
    limit: usize,
    wrap: Option<&str>,
    pb: &ProgressBar,
) -> Result<(Vec<Value>, Option<u64>), ExtractError> {
    let mut items = Vec::new();
    let mut total = None;
    let mut offset = 0usize;
    let mut after: Option<String> = None;
    loop {
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.push(("limit", limit.to_string()));
        match &after {
            Some(a) => q.push(("after", a.clone())),
            None if wrap.is_none() => q.push(("offset", offset.to_string())),
            None => {}
        }
        let answer = api.get(path, &q).await?;
        let page = match wrap {
            Some(w) => answer.get(w).cloned().unwrap_or(Value::Null),
            None => answer,
        };
        if total.is_none() {
            total = page.get("total").and_then(Value::as_u64);
        }
        let batch = page
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let n = batch.len();
        items.extend(batch);
        pb.set_message(format!(
            "{path}: {}{}",
            items.len(),
            total.map(|t| format!("/{t}")).unwrap_or_default()
        ));
        let more = match page.get("next") {
            Some(Value::String(_)) => true,
            Some(_) => false,
            None => total.is_some_and(|t| (items.len() as u64) < t),
        };
        if n == 0 || !more {
            break;
        }
        offset += n;
        if wrap.is_some() {
            after = page
                .pointer("/cursors/after")
                .and_then(Value::as_str)
                .map(String::from);
            if after.is_none() {
                break;
            }
        }
    }
    Ok((items, total))
}

/// Full objects for `ids`, through the batch endpoint while Spotify serves it, then one GET
/// per id (the batch GETs answer 403 for Development Mode apps since February 2026). An id
/// Spotify does not know is a warning.
async fn by_ids(
    api: &Api,
    kind: &str,
    ids: &BTreeSet<String>,
    chunk: usize,
    warnings: &mut Vec<String>,
    pb: &ProgressBar,
) -> Result<Vec<Value>, ExtractError> {
    let ids: Vec<&String> = ids.iter().collect();
    let mut out = Vec::new();
    let mut batch_ok = true;
    let mut missing = Vec::new();
    for group in ids.chunks(chunk) {
        pb.set_message(format!("{kind}: {}/{}", out.len(), ids.len()));
        if batch_ok {
            let q = [(
                "ids",
                group
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )];
            match api.get(kind, &q).await {
                Ok(answer) => {
                    let items = answer
                        .get(kind)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for (id, item) in group
                        .iter()
                        .zip(items.iter().chain(std::iter::repeat(&Value::Null)))
                    {
                        if item.is_null() {
                            missing.push((*id).clone());
                        } else {
                            out.push(item.clone());
                        }
                    }
                    continue;
                }
                Err(ExtractError::Unavailable { status, .. }) => {
                    tracing::info!("GET {kind}?ids= answered {status}; fetching one by one");
                    batch_ok = false;
                }
                Err(e) => return Err(e),
            }
        }
        for id in group {
            match api.get(&format!("{kind}/{id}"), &[]).await {
                Ok(item) => out.push(item),
                Err(ExtractError::Unavailable { status: 404, .. }) => missing.push((*id).clone()),
                Err(e) => return Err(e),
            }
        }
    }
    if !missing.is_empty() {
        warnings.push(format!(
            "Spotify does not know {} of the {kind} asked for: {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    Ok(out)
}

/// A playlist's id from its URL, URI or bare id.
pub fn playlist_id(entry: &str) -> Result<String, ExtractError> {
    let e = entry.trim();
    let id: String = if let Some(rest) = e.strip_prefix("spotify:playlist:") {
        rest.to_string()
    } else if let Ok(url) = url::Url::parse(e)
        && url.host_str().is_some()
    {
        let segments: Vec<&str> = url.path_segments().into_iter().flatten().collect();
        segments
            .iter()
            .position(|s| *s == "playlist")
            .and_then(|i| segments.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_default()
    } else {
        e.to_string()
    };
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(ExtractError::Config {
            message: format!(
                "`spotify.playlists` entry {entry:?} is not a playlist URL, URI or ID"
            ),
        })
    }
}

async fn playlist_tracks(
    api: &Api,
    playlists: &[String],
    at: &str,
    seen: &mut Seen,
    pb: &ProgressBar,
) -> Result<Landing, ExtractError> {
    let head = [
        ("playlist_id", Col::Text),
        ("playlist_name", Col::Text),
        ("snapshot_id", Col::Text),
        ("position", Col::Int),
        ("added_at", Col::Time),
        ("added_by", Col::Text),
        ("item_type", Col::Text),
    ];
    let ids = playlists
        .iter()
        .map(|p| playlist_id(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut landed_ids = Vec::new();
    let mut l = Landing::new(
        &[&head[..], &rows::columns(TRACK)].concat(),
        WriteMode::Append,
    );
    for id in &ids {
        let meta = match api
            .get(
                &format!("playlists/{id}"),
                &[("fields", "id,name,snapshot_id".to_string())],
            )
            .await
        {
            Ok(m) => m,
            Err(ExtractError::Unavailable {
                endpoint,
                status,
                message,
            }) => {
                l.warnings.push(format!(
                    "playlist {id} skipped: Spotify answered {status} on {endpoint} ({message}); \
                     Spotify's own editorial and algorithmic playlists answer 404 to Development \
                     Mode apps"
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let path = format!("playlists/{id}/items");
        let (items, total) = pages(api, &path, &[], 100, None, pb).await?;
        l.count(
            &format!("playlist {id}"),
            total.or(Some(items.len() as u64)),
            items.len(),
        );
        let mut missing = 0;
        for (position, entry) in items.iter().enumerate() {
            let mut r: Map<String, Value> = rows::row(entry, at);
            let item = rows::entry_item(entry).unwrap_or(&Value::Null);
            missing += usize::from(item.is_null());
            r.insert("playlist_id".into(), json!(id));
            r.insert("playlist_name".into(), rows::text(&meta, "/name"));
            r.insert("snapshot_id".into(), rows::text(&meta, "/snapshot_id"));
            r.insert("position".into(), json!(position));
            r.insert("added_at".into(), rows::time(entry, "/added_at"));
            r.insert("added_by".into(), rows::text(entry, "/added_by/id"));
            r.insert("item_type".into(), rows::text(item, "/type"));
            rows::track_into(&mut r, item);
            if item.get("type").and_then(Value::as_str) != Some("episode") && !item.is_null() {
                seen.tracks.push(item.clone());
            }
            l.rows.push(Value::Object(r));
        }
        l.unwrapped(&format!("playlist {id}"), items.len(), missing);
        landed_ids.push(id.clone());
    }
    // Replace exactly the playlists that were fetched; a skipped one keeps its old rows.
    l.mode = WriteMode::Replace(
        col("playlist_id").in_list(landed_ids.iter().map(|i| lit(i.as_str())).collect(), false),
    );
    l.metadata
        .push(("lake.playlists".into(), json!(landed_ids)));
    if landed_ids.is_empty() {
        l.mode = WriteMode::Merge(vec!["playlist_id".into()]);
    }
    Ok(l)
}

/// The plays Spotify still serves: its whole window of recent plays (about the last 50), newest
/// first, paged back by the `before` cursor. Every run reads all of it and the write inserts
/// the plays whose (`played_at`, `track_id`) is not in the table, so a play that synced late
/// (offline, another device, a car), with a `played_at` older than the newest one stored,
/// still lands in its place, and a rerun adds nothing twice. The newest play stored before the
/// run is only reported.
async fn recently_played(
    api: &Api,
    lake: &Arc<Lake>,
    at: &str,
    seen: &mut Seen,
    pb: &ProgressBar,
) -> Result<Landing, ExtractError> {
    let cols = [
        &[("played_at", Col::Time)][..],
        &rows::columns(TRACK),
        &[("context_type", Col::Text), ("context_uri", Col::Text)],
    ]
    .concat();
    let mut l = Landing::new(
        &cols,
        WriteMode::InsertNew(vec!["played_at".into(), "track_id".into()]),
    );
    let newest = ids_in(
        &session(lake).await?,
        Stream::RecentlyPlayed,
        "SELECT CAST(CAST(max(played_at) AS BIGINT) / 1000 AS VARCHAR) FROM raw.spotify_recently_played",
    )
    .await?;
    let stored_newest: Option<i64> = newest.iter().next().and_then(|s| s.parse().ok());
    let mut before: Option<i64> = None;
    let mut oldest_served: Option<i64> = None;
    let mut missing = 0;
    for _ in 0..100 {
        let mut q = vec![("limit", "50".to_string())];
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        let page = api.get("me/player/recently-played", &q).await?;
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut page_oldest: Option<i64> = None;
        for item in &items {
            let mut r = rows::row(item, at);
            let played = rows::time(item, "/played_at");
            if let Some(ms) = played
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp_millis())
            {
                page_oldest = Some(page_oldest.map_or(ms, |o: i64| o.min(ms)));
            }
            r.insert("played_at".into(), played);
            let track = rows::entry_item(item);
            rows::track_into(&mut r, track.unwrap_or(&Value::Null));
            if r.get("track_id").is_none_or(Value::is_null) {
                r.insert("track_id".into(), json!(""));
            }
            r.insert("context_type".into(), rows::text(item, "/context/type"));
            r.insert("context_uri".into(), rows::text(item, "/context/uri"));
            match track {
                Some(t) => seen.tracks.push(t.clone()),
                None => missing += 1,
            }
            l.rows.push(Value::Object(r));
        }
        pb.set_message(format!("me/player/recently-played: {}", l.rows.len()));
        if let Some(o) = page_oldest {
            oldest_served = Some(oldest_served.map_or(o, |p: i64| p.min(o)));
        }
        // Page back while Spotify says there is more and the cursor moves back in time.
        let more = matches!(page.get("next"), Some(Value::String(_)));
        let cursor = page
            .pointer("/cursors/before")
            .and_then(|c| c.as_str().and_then(|s| s.parse().ok()).or(c.as_i64()))
            .or(page_oldest);
        if items.is_empty() || !more || cursor.is_none() || (before.is_some() && cursor >= before) {
            break;
        }
        before = cursor;
    }
    let served = l.rows.len();
    l.unwrapped("me/player/recently-played", served, missing);
    l.rows
        .retain(|r| !r.get("played_at").is_none_or(Value::is_null));
    if l.rows.len() < served {
        l.warnings.push(format!(
            "{} plays without a readable played_at were left out (no key to dedupe them on)",
            served - l.rows.len()
        ));
    }
    // The window moved past the newest stored play: plays in between are gone from the API.
    if let (Some(stored), Some(oldest)) = (stored_newest, oldest_served)
        && oldest > stored
        && served >= 50
    {
        let time = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        l.warnings.push(format!(
            "Spotify's window of recent plays starts at {}, after the newest play in the lake \
             ({}): plays in between may be missing; run extracts more often, or import the \
             personal data export, which has them",
            time(oldest),
            time(stored)
        ));
    }
    l.metadata
        .push(("lake.newest_before_ms".into(), json!(stored_newest)));
    l.metadata
        .push(("lake.window_oldest_ms".into(), json!(oldest_served)));
    Ok(l)
}
