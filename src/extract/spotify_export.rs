//! The personal data export ("Download your data"): a folder or `my_spotify_data.zip`, read
//! without unpacking, into `raw.spotify_streams`.
//!
//! - Legacy `StreamingHistory*.json` (`endTime`, `artistName`, `trackName`, `msPlayed`, and
//!   `podcastName`/`episodeName` in the podcast files).
//! - Extended `Streaming_History_Audio_*.json`, `Streaming_History_Video_*.json` and the older
//!   `endsong_*.json`, with `username`, `user_agent_decrypted`, `ip_addr_decrypted` accepted.
//!
//! Every row gets a `stream_key` (a hash of end time, duration and item) so that importing the
//! same export twice, or an overlapping newer one, merges instead of duplicating. Personal
//! fields are dropped, hashed with the lake's salt, or kept, as `spotify_export.personal_data`
//! says.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use indicatif::ProgressBar;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::ExtractError;
use super::spotify::rows::{self, Col};
use crate::config::PersonalData;
use crate::lake::write::{BatchSource, SourceError};

/// Rows per batch handed to the writer.
const BATCH_ROWS: usize = 65_536;

/// The columns of `raw.spotify_streams`.
pub const COLUMNS: &[(&str, Col)] = &[
    ("stream_key", Col::Text),
    ("ended_at", Col::Time),
    ("ms_played", Col::Int),
    ("kind", Col::Text),
    ("track_name", Col::Text),
    ("artist_name", Col::Text),
    ("album_name", Col::Text),
    ("track_uri", Col::Text),
    ("track_id", Col::Text),
    ("episode_name", Col::Text),
    ("show_name", Col::Text),
    ("episode_uri", Col::Text),
    ("audiobook_title", Col::Text),
    ("audiobook_uri", Col::Text),
    ("audiobook_chapter_uri", Col::Text),
    ("audiobook_chapter_title", Col::Text),
    ("platform", Col::Text),
    ("conn_country", Col::Text),
    ("reason_start", Col::Text),
    ("reason_end", Col::Text),
    ("shuffle", Col::Bool),
    ("skipped", Col::Bool),
    ("offline", Col::Bool),
    ("offline_at", Col::Time),
    ("incognito_mode", Col::Bool),
    ("ip_addr", Col::Text),
    ("username", Col::Text),
    ("user_agent", Col::Text),
    ("extra_json", Col::Text),
    ("source_file", Col::Text),
    ("source_format", Col::Text),
    ("_extracted_at", Col::Time),
];

/// Fields of the extended format mapped to a column as they are.
const EXTENDED_TEXT: &[(&str, &str)] = &[
    ("master_metadata_track_name", "track_name"),
    ("master_metadata_album_artist_name", "artist_name"),
    ("master_metadata_album_album_name", "album_name"),
    ("spotify_track_uri", "track_uri"),
    ("episode_name", "episode_name"),
    ("episode_show_name", "show_name"),
    ("spotify_episode_uri", "episode_uri"),
    ("audiobook_title", "audiobook_title"),
    ("audiobook_uri", "audiobook_uri"),
    ("audiobook_chapter_uri", "audiobook_chapter_uri"),
    ("audiobook_chapter_title", "audiobook_chapter_title"),
    ("platform", "platform"),
    ("conn_country", "conn_country"),
    ("reason_start", "reason_start"),
    ("reason_end", "reason_end"),
];

/// Every field lake knows, so the rest can be kept in `extra_json`.
const KNOWN: &[&str] = &[
    "ts",
    "ms_played",
    "shuffle",
    "skipped",
    "offline",
    "offline_timestamp",
    "incognito_mode",
    "ip_addr",
    "ip_addr_decrypted",
    "username",
    "user_agent_decrypted",
    "endTime",
    "artistName",
    "trackName",
    "msPlayed",
    "podcastName",
    "episodeName",
];

/// Which layout a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `StreamingHistory*.json`: minute precision, names only.
    Legacy,
    /// `Streaming_History_Audio_*.json` and kin: the full record.
    Extended,
}

impl Layout {
    /// The layout a file name implies, if it is a streaming history file at all.
    pub fn of(file_name: &str) -> Option<Self> {
        let lower = file_name.to_ascii_lowercase();
        if !lower.ends_with(".json") {
            return None;
        }
        if lower.starts_with("streaminghistory") {
            Some(Layout::Legacy)
        } else if lower.starts_with("streaming_history_audio_")
            || lower.starts_with("streaming_history_video_")
            || lower.starts_with("endsong")
        {
            Some(Layout::Extended)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Layout::Legacy => "legacy",
            Layout::Extended => "extended",
        }
    }
}

#[derive(Debug, Clone)]
enum Location {
    File(PathBuf),
    Zip { archive: PathBuf, index: usize },
}

/// One streaming history file of the export.
#[derive(Debug, Clone)]
pub struct ExportFile {
    /// The file as shown to the user: a path, or `archive.zip!/inner/path`.
    pub display: String,
    /// Its bare name, as recorded in `source_file`.
    pub name: String,
    /// Its layout.
    pub layout: Layout,
    /// Its size in bytes, uncompressed.
    pub size: u64,
    location: Location,
}

impl ExportFile {
    fn read(&self) -> Result<Vec<u8>, ExtractError> {
        match &self.location {
            Location::File(path) => std::fs::read(path).map_err(|source| ExtractError::Io {
                path: path.clone(),
                source,
            }),
            Location::Zip { archive, index } => {
                let io = |source| ExtractError::Io {
                    path: archive.clone(),
                    source,
                };
                let mut zip = open_zip(archive)?;
                let mut entry = zip.by_index(*index).map_err(|e| zip_err(archive, e))?;
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).map_err(io)?;
                Ok(bytes)
            }
        }
    }
}

fn open_zip(archive: &Path) -> Result<zip::ZipArchive<std::fs::File>, ExtractError> {
    let file = std::fs::File::open(archive).map_err(|source| ExtractError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    zip::ZipArchive::new(file).map_err(|e| zip_err(archive, e))
}

fn zip_err(archive: &Path, e: zip::result::ZipError) -> ExtractError {
    ExtractError::Format {
        file: archive.display().to_string(),
        why: format!("not a readable zip archive: {e}"),
    }
}

/// Finds the streaming history files under a folder (recursively) or in a zip.
pub fn discover(path: &Path) -> Result<Vec<ExportFile>, ExtractError> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| ExtractError::Io {
                path: dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| ExtractError::Io {
                    path: dir.clone(),
                    source,
                })?;
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(layout) = Layout::of(&name) {
                    files.push(ExportFile {
                        display: p.display().to_string(),
                        name,
                        layout,
                        size: entry.metadata().map(|m| m.len()).unwrap_or(0),
                        location: Location::File(p),
                    });
                } else if name.to_ascii_lowercase().ends_with(".zip") {
                    files.extend(discover(&p)?);
                }
            }
        }
    } else if path.is_file() {
        let mut zip = open_zip(path)?;
        for index in 0..zip.len() {
            let entry = zip.by_index(index).map_err(|e| zip_err(path, e))?;
            if !entry.is_file() {
                continue;
            }
            let inner = entry.name().map_err(|e| zip_err(path, e))?.to_string();
            let name = inner.rsplit('/').next().unwrap_or(&inner).to_string();
            if let Some(layout) = Layout::of(&name) {
                files.push(ExportFile {
                    display: format!("{}!/{inner}", path.display()),
                    name,
                    layout,
                    size: entry.size(),
                    location: Location::Zip {
                        archive: path.to_path_buf(),
                        index,
                    },
                });
            }
        }
    } else {
        return Err(ExtractError::NotFound {
            input: path.display().to_string(),
            why: "no such folder or zip file".into(),
        });
    }
    if files.is_empty() {
        return Err(ExtractError::NotFound {
            input: path.display().to_string(),
            why: "no StreamingHistory*.json, Streaming_History_Audio_*.json, \
                  Streaming_History_Video_*.json or endsong_*.json in it"
                .into(),
        });
    }
    files.sort_by(|a, b| a.display.cmp(&b.display));
    Ok(files)
}

/// The export as a source for [`crate::lake::write::write`]; files are read one at a time.
pub struct ExportSource {
    files: Vec<ExportFile>,
    schema: SchemaRef,
    personal: PersonalData,
    salt: Option<String>,
    extracted_at: String,
    progress: ProgressBar,
}

impl ExportSource {
    /// A source over `files`. `salt` is needed when personal fields are hashed.
    pub fn new(
        files: Vec<ExportFile>,
        personal: PersonalData,
        salt: Option<String>,
        progress: ProgressBar,
    ) -> Self {
        Self {
            files,
            schema: rows::schema(COLUMNS),
            personal,
            salt,
            extracted_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            progress,
        }
    }

    /// The files it reads.
    pub fn files(&self) -> &[ExportFile] {
        &self.files
    }
}

impl BatchSource for ExportSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Plays are deduped on their key as they are read (the first of a key stays), keeping
    /// 16 bytes a play rather than the plays themselves.
    fn keys_unique(&self) -> bool {
        true
    }

    fn stream(&self) -> BoxStream<'static, Result<RecordBatch, SourceError>> {
        self.progress.set_position(0);
        let files = self.files.clone();
        let ctx = std::sync::Arc::new(RowContext {
            schema: self.schema.clone(),
            personal: self.personal,
            salt: self.salt.clone(),
            extracted_at: self.extracted_at.clone(),
            seen: Mutex::default(),
        });
        let progress = self.progress.clone();
        futures::stream::iter(files)
            .then(move |file| {
                let ctx = ctx.clone();
                let progress = progress.clone();
                async move {
                    let size = file.size;
                    let batches = tokio::task::spawn_blocking(move || ctx.read(&file))
                        .await
                        .map_err(|e| SourceError::from(e.to_string()))?
                        .map_err(SourceError::from)?;
                    progress.inc(size);
                    Ok::<_, SourceError>(futures::stream::iter(batches.into_iter().map(Ok)))
                }
            })
            .map(|r| match r {
                Ok(s) => s.boxed(),
                Err(e) => futures::stream::iter([Err(e)]).boxed(),
            })
            .flatten()
            .boxed()
    }
}

struct RowContext {
    schema: SchemaRef,
    personal: PersonalData,
    salt: Option<String>,
    extracted_at: String,
    /// The keys read so far in this pass over the files.
    seen: Mutex<HashSet<[u8; 16]>>,
}

impl RowContext {
    fn read(&self, file: &ExportFile) -> Result<Vec<RecordBatch>, ExtractError> {
        let bytes = file.read()?;
        let parse = |line, column, message: String| ExtractError::Parse {
            file: file.display.clone(),
            line,
            column,
            message,
        };
        let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| {
            parse(
                Some(e.line()),
                Some(e.column()),
                format!("{e} (expected a JSON array of plays)"),
            )
        })?;
        let mut batches = Vec::new();
        for (chunk_no, chunk) in items.chunks(BATCH_ROWS).enumerate() {
            let mut out = Vec::with_capacity(chunk.len());
            for (i, item) in chunk.iter().enumerate() {
                let Value::Object(obj) = item else {
                    return Err(parse(
                        None,
                        None,
                        format!(
                            "play #{} is not a JSON object",
                            chunk_no * BATCH_ROWS + i + 1
                        ),
                    ));
                };
                if let Some(row) = self.row(obj, file) {
                    out.push(row);
                }
            }
            let batch =
                rows::to_batch(&self.schema, &out).map_err(|e| parse(None, None, e.to_string()))?;
            batches.push(batch);
        }
        Ok(batches)
    }

    fn personal(&self, v: Option<&Value>) -> Value {
        let Some(Value::String(s)) = v else {
            return Value::Null;
        };
        match self.personal {
            PersonalData::Drop => Value::Null,
            PersonalData::Keep => Value::String(s.clone()),
            PersonalData::Hash => {
                let mut h = Sha256::new();
                h.update(self.salt.as_deref().unwrap_or_default().as_bytes());
                h.update(b":");
                h.update(s.as_bytes());
                Value::String(hex::encode(h.finalize()))
            }
        }
    }

    /// The play as a row, or `None` when a play with its key was read already.
    fn row(&self, obj: &Map<String, Value>, file: &ExportFile) -> Option<Value> {
        let v = Value::Object(obj.clone());
        let mut r = Map::new();
        let (ended_at, ms_played) = match file.layout {
            Layout::Extended => {
                for (from, to) in EXTENDED_TEXT {
                    r.insert((*to).into(), rows::text(&v, &format!("/{from}")));
                }
                let flag = |k: &str| match obj.get(k) {
                    Some(Value::Bool(b)) => Value::Bool(*b),
                    Some(Value::Number(n)) => Value::Bool(n.as_i64() != Some(0)),
                    _ => Value::Null,
                };
                for k in ["shuffle", "skipped", "offline", "incognito_mode"] {
                    r.insert(k.into(), flag(k));
                }
                r.insert(
                    "offline_at".into(),
                    offline_at(obj.get("offline_timestamp")),
                );
                let ip = obj.get("ip_addr").or_else(|| obj.get("ip_addr_decrypted"));
                r.insert("ip_addr".into(), self.personal(ip));
                r.insert("username".into(), self.personal(obj.get("username")));
                r.insert(
                    "user_agent".into(),
                    self.personal(obj.get("user_agent_decrypted")),
                );
                (rows::time(&v, "/ts"), rows::int(&v, "/ms_played"))
            }
            Layout::Legacy => {
                r.insert("track_name".into(), rows::text(&v, "/trackName"));
                r.insert("artist_name".into(), rows::text(&v, "/artistName"));
                r.insert("episode_name".into(), rows::text(&v, "/episodeName"));
                r.insert("show_name".into(), rows::text(&v, "/podcastName"));
                (legacy_time(obj.get("endTime")), rows::int(&v, "/msPlayed"))
            }
        };
        let some = |k: &str| r.get(k).is_some_and(|v| !v.is_null());
        let kind = if some("episode_uri") || some("episode_name") {
            "episode"
        } else if some("audiobook_chapter_uri") || some("audiobook_uri") || some("audiobook_title")
        {
            "audiobook"
        } else if some("track_uri") || some("track_name") {
            "track"
        } else {
            "unknown"
        };
        let track_id = r
            .get("track_uri")
            .and_then(Value::as_str)
            .and_then(|u| u.strip_prefix("spotify:track:"))
            .map_or(Value::Null, |id| Value::String(id.into()));
        r.insert("track_id".into(), track_id);
        // The item: its URI where there is one, else its names.
        let item = ["track_uri", "episode_uri", "audiobook_chapter_uri"]
            .iter()
            .find_map(|k| r.get(*k).and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| {
                ["artist_name", "track_name", "show_name", "episode_name"]
                    .iter()
                    .map(|k| r.get(*k).and_then(Value::as_str).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\u{1f}")
            });
        let mut h = Sha256::new();
        h.update(ended_at.as_str().unwrap_or("").as_bytes());
        h.update(b"|");
        h.update(ms_played.to_string().as_bytes());
        h.update(b"|");
        h.update(item.as_bytes());
        let key: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
        if !self.seen.lock().expect("poisoned").insert(key) {
            return None;
        }
        r.insert("stream_key".into(), json!(hex::encode(key)));
        r.insert("ended_at".into(), ended_at);
        r.insert("ms_played".into(), ms_played);
        r.insert("kind".into(), json!(kind));
        let extra: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| {
                !KNOWN.contains(&k.as_str()) && !EXTENDED_TEXT.iter().any(|(f, _)| f == k)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !extra.is_empty() {
            r.insert("extra_json".into(), json!(Value::Object(extra).to_string()));
        }
        r.insert("source_file".into(), json!(file.name));
        r.insert("source_format".into(), json!(file.layout.name()));
        r.insert("_extracted_at".into(), json!(self.extracted_at));
        Some(Value::Object(r))
    }
}

/// `endTime` of the legacy files: `YYYY-MM-DD HH:MM` in UTC.
fn legacy_time(v: Option<&Value>) -> Value {
    v.and_then(Value::as_str)
        .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").ok())
        .map_or(Value::Null, |t| {
            Value::String(format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S")))
        })
}

/// `offline_timestamp`: epoch seconds in older exports, milliseconds in newer ones; 0 means
/// none.
fn offline_at(v: Option<&Value>) -> Value {
    let Some(n) = v.and_then(Value::as_i64).filter(|n| *n > 0) else {
        return Value::Null;
    };
    let ms = if n < 100_000_000_000 { n * 1000 } else { n };
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

pub mod generate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_pick_the_layout() {
        assert_eq!(Layout::of("StreamingHistory0.json"), Some(Layout::Legacy));
        assert_eq!(
            Layout::of("StreamingHistory_music_3.json"),
            Some(Layout::Legacy)
        );
        assert_eq!(
            Layout::of("Streaming_History_Audio_2019-2020_0.json"),
            Some(Layout::Extended)
        );
        assert_eq!(
            Layout::of("Streaming_History_Video_2021.json"),
            Some(Layout::Extended)
        );
        assert_eq!(Layout::of("endsong_0.json"), Some(Layout::Extended));
        assert_eq!(Layout::of("Playlist1.json"), None);
        assert_eq!(Layout::of("ReadMeFirst.pdf"), None);
    }

    #[test]
    fn offline_timestamps_in_seconds_or_millis() {
        assert_eq!(
            offline_at(Some(&json!(1_600_000_000))),
            json!("2020-09-13T12:26:40.000Z")
        );
        assert_eq!(
            offline_at(Some(&json!(1_600_000_000_123u64))),
            json!("2020-09-13T12:26:40.123Z")
        );
        assert_eq!(offline_at(Some(&json!(0))), Value::Null);
        assert_eq!(
            legacy_time(Some(&json!("2023-01-05 14:32"))),
            json!("2023-01-05T14:32:00Z")
        );
    }
}
