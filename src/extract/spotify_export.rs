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
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use futures::StreamExt;
use futures::stream::BoxStream;
use indicatif::ProgressBar;
use serde_json::Map;
use serde_json_borrow::{ObjectAsVec, Value};
use sha2::{Digest, Sha256};

use super::spotify::rows::{self, Col};
use super::{ExtractError, UTF8_BOM};
use crate::config::PersonalData;
use crate::lake::layout;
use crate::lake::write::{BatchSource, SourceError, WriteMode, write_laid_out};
use crate::lake::{Lake, RAW, TableName};

/// The table the export lands in, under `raw`.
pub const TABLE: &str = "spotify_streams";

/// Rows per batch handed to the writer.
const BATCH_ROWS: usize = 65_536;

/// The plays' sort key: by listener, then time. Per-listener windows (sessions, gaps) and
/// per-listener aggregates read each listener's plays in order from one file.
pub const SORT_BY: [&str; 2] = ["username", "ended_at"];

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
                cause: source,
            }),
            Location::Zip { archive, index } => {
                let io = |source| ExtractError::Io {
                    path: archive.clone(),
                    cause: source,
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
        cause: source,
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
    let canonical = crate::paths::existing(path).map_err(|e| match e {
        crate::paths::PathError::NotFound { .. } => ExtractError::NotFound {
            input: path.display().to_string(),
            why: "no such folder or zip file".into(),
        },
        e => e.into(),
    })?;
    if canonical.is_dir() {
        for (shown, file) in crate::paths::files_under(path)? {
            let name = shown
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if let Some(layout) = Layout::of(&name) {
                let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                files.push(ExportFile {
                    display: shown.display().to_string(),
                    name,
                    layout,
                    size,
                    location: Location::File(file),
                });
            } else if name.to_ascii_lowercase().ends_with(".zip") {
                files.extend(discover(&shown)?);
            }
        }
    } else {
        let mut zip = open_zip(&canonical)?;
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
                        archive: canonical.clone(),
                        index,
                    },
                });
            }
        }
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
#[derive(Clone)]
pub struct ExportSource {
    files: Vec<ExportFile>,
    schema: SchemaRef,
    personal: PersonalData,
    salt: Option<String>,
    extracted_at: String,
    progress: ProgressBar,
    known: Arc<HashSet<[u8; 16]>>,
    counts: Arc<Counts>,
}

/// What the last pass over the files found.
#[derive(Debug, Default)]
pub struct Counts {
    /// Plays in the files.
    pub plays: AtomicU64,
    /// Plays whose key was in the lake already.
    pub known: AtomicU64,
    /// Plays that repeat another play of the same import.
    pub repeated: AtomicU64,
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
            known: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// Leaves out plays whose `stream_key` (hex) is among `keys`: those already in the lake.
    /// Called again, it adds to the keys.
    pub fn skipping<'a>(mut self, keys: impl IntoIterator<Item = &'a str>) -> Self {
        Arc::make_mut(&mut self.known).extend(
            keys.into_iter()
                .filter_map(|k| <[u8; 16]>::try_from(hex::decode(k).ok()?).ok()),
        );
        self
    }

    /// A copy that counts apart and shows no progress: to look ahead without touching this
    /// one's counts.
    pub fn probe(&self) -> Self {
        Self {
            progress: ProgressBar::hidden(),
            counts: Arc::default(),
            ..self.clone()
        }
    }

    /// The files it reads.
    pub fn files(&self) -> &[ExportFile] {
        &self.files
    }

    /// What the last pass found.
    pub fn counts(&self) -> &Counts {
        &self.counts
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
            known: self.known.clone(),
            counts: self.counts.clone(),
        });
        for c in [
            &self.counts.plays,
            &self.counts.known,
            &self.counts.repeated,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        let progress = self.progress.clone();
        // Two files at a time: parsing is the work, and it is per file.
        futures::stream::iter(files)
            .map(move |file| {
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
            .buffered(2)
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
    /// The keys in the lake already.
    known: Arc<HashSet<[u8; 16]>>,
    counts: Arc<Counts>,
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
        // A UTF-8 byte-order mark (Windows editors and some re-zipped exports add one) is not
        // part of the JSON.
        let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(&bytes);
        // Borrowed from `bytes`: field names and most strings are never copied.
        let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
            parse(
                Some(e.line()),
                Some(e.column()),
                format!("{e} (expected a JSON array of plays)"),
            )
        })?;
        let mut batches = Vec::new();
        for (chunk_no, chunk) in items.chunks(BATCH_ROWS).enumerate() {
            let mut columns = Columns::new(chunk.len());
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
                let play = Play::read(obj, file.layout);
                self.counts.plays.fetch_add(1, Ordering::Relaxed);
                if self.known.contains(&play.key) {
                    self.counts.known.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if !self.seen.lock().expect("poisoned").insert(play.key) {
                    self.counts.repeated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                columns.push(&play, self, &file.name, file.layout);
            }
            let batch = columns
                .finish(&self.schema, &self.extracted_at)
                .map_err(|e| parse(None, None, e.to_string()))?;
            batches.push(batch);
        }
        Ok(batches)
    }

    fn personal(&self, v: Option<&str>) -> Option<String> {
        let s = v?;
        match self.personal {
            PersonalData::Drop => None,
            PersonalData::Keep => Some(s.to_string()),
            PersonalData::Hash => {
                let mut h = Sha256::new();
                h.update(self.salt.as_deref().unwrap_or_default().as_bytes());
                h.update(b":");
                h.update(s.as_bytes());
                Some(hex::encode(h.finalize()))
            }
        }
    }
}

/// One play, read leniently from its JSON object: a missing or mistyped field is `None`.
struct Play<'a> {
    key: [u8; 16],
    ended_at: Option<i64>,
    ms_played: Option<i64>,
    kind: &'static str,
    /// The [`EXTENDED_TEXT`] columns, in that order.
    text: [Option<&'a str>; EXTENDED_TEXT.len()],
    flags: [Option<bool>; 4],
    offline_at: Option<i64>,
    ip_addr: Option<&'a str>,
    username: Option<&'a str>,
    user_agent: Option<&'a str>,
    extra: Option<String>,
}

/// The position of a column in [`EXTENDED_TEXT`], found at compile time.
const fn text_index(column: &str) -> usize {
    let mut i = 0;
    while i < EXTENDED_TEXT.len() {
        let (a, b) = (EXTENDED_TEXT[i].1.as_bytes(), column.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a text column")
}

const TRACK_NAME: usize = text_index("track_name");
const ARTIST_NAME: usize = text_index("artist_name");
const TRACK_URI: usize = text_index("track_uri");
const EPISODE_NAME: usize = text_index("episode_name");
const SHOW_NAME: usize = text_index("show_name");
const EPISODE_URI: usize = text_index("episode_uri");
const AUDIOBOOK_TITLE: usize = text_index("audiobook_title");
const AUDIOBOOK_URI: usize = text_index("audiobook_uri");
const AUDIOBOOK_CHAPTER_URI: usize = text_index("audiobook_chapter_uri");

impl<'a> Play<'a> {
    /// Reads the fields in one pass over the object; a field given twice counts as its last.
    fn read(obj: &'a ObjectAsVec<'a>, layout: Layout) -> Self {
        let legacy = layout == Layout::Legacy;
        let mut text = [None; EXTENDED_TEXT.len()];
        let (mut ts, mut ms_played, mut offline_ts) = (None, None, None);
        let mut flags = [None; 4];
        let (mut ip_addr, mut ip_decrypted, mut username, mut user_agent) =
            (None, None, None, None);
        let mut extra: Map<String, serde_json::Value> = Map::new();
        let flag = |v: &Value| match v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => Some(n.as_i64() != Some(0)),
            _ => None,
        };
        for (k, v) in obj.iter() {
            match k {
                "ts" if !legacy => ts = v.as_str(),
                "endTime" if legacy => ts = v.as_str(),
                "ms_played" if !legacy => ms_played = v.as_i64(),
                "msPlayed" if legacy => ms_played = v.as_i64(),
                "trackName" if legacy => text[TRACK_NAME] = v.as_str(),
                "artistName" if legacy => text[ARTIST_NAME] = v.as_str(),
                "episodeName" if legacy => text[EPISODE_NAME] = v.as_str(),
                "podcastName" if legacy => text[SHOW_NAME] = v.as_str(),
                "shuffle" => flags[0] = flag(v),
                "skipped" => flags[1] = flag(v),
                "offline" => flags[2] = flag(v),
                "incognito_mode" => flags[3] = flag(v),
                "offline_timestamp" => offline_ts = v.as_i64(),
                "ip_addr" => ip_addr = v.as_str(),
                "ip_addr_decrypted" => ip_decrypted = v.as_str(),
                "username" => username = v.as_str(),
                "user_agent_decrypted" => user_agent = v.as_str(),
                // Known to one layout: not extra in the other either.
                "ts" | "endTime" | "ms_played" | "msPlayed" | "trackName" | "artistName"
                | "episodeName" | "podcastName" => {}
                _ => match EXTENDED_TEXT.iter().position(|(from, _)| *from == k) {
                    Some(i) if !legacy => text[i] = v.as_str(),
                    Some(_) => {}
                    None => {
                        extra.insert(k.to_string(), v.into());
                    }
                },
            }
        }
        let ended_at = ts.and_then(if legacy { legacy_time } else { parse_utc });
        let has = |i: usize| text[i].is_some();
        let kind = if has(EPISODE_URI) || has(EPISODE_NAME) {
            "episode"
        } else if has(AUDIOBOOK_CHAPTER_URI) || has(AUDIOBOOK_URI) || has(AUDIOBOOK_TITLE) {
            "audiobook"
        } else if has(TRACK_URI) || has(TRACK_NAME) {
            "track"
        } else {
            "unknown"
        };
        // The item: its URI where there is one, else its names.
        let item = [TRACK_URI, EPISODE_URI, AUDIOBOOK_CHAPTER_URI]
            .iter()
            .find_map(|i| text[*i].map(String::from))
            .unwrap_or_else(|| {
                [ARTIST_NAME, TRACK_NAME, SHOW_NAME, EPISODE_NAME]
                    .iter()
                    .map(|i| text[*i].unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\u{1f}")
            });
        let mut h = Sha256::new();
        h.update(
            ended_at
                .map(|t| t.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(b"|");
        h.update(
            ms_played
                .map(|m| m.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(b"|");
        h.update(item.as_bytes());
        let key: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
        let extra = (!extra.is_empty()).then(|| serde_json::Value::Object(extra).to_string());
        Play {
            key,
            ended_at,
            ms_played,
            kind,
            text,
            flags,
            offline_at: offline_at(offline_ts),
            ip_addr: ip_addr.or(ip_decrypted),
            username,
            user_agent,
            extra,
        }
    }
}

/// Column builders for a batch of plays, in [`COLUMNS`] order.
struct Columns {
    key: StringBuilder,
    ended_at: TimestampMicrosecondBuilder,
    ms_played: Int64Builder,
    kind: StringBuilder,
    text: Vec<StringBuilder>,
    track_id: StringBuilder,
    flags: Vec<BooleanBuilder>,
    offline_at: TimestampMicrosecondBuilder,
    personal: Vec<StringBuilder>,
    extra: StringBuilder,
    source_file: StringBuilder,
    source_format: StringBuilder,
}

impl Columns {
    fn new(n: usize) -> Self {
        let text = || StringBuilder::with_capacity(n, n * 16);
        Self {
            key: text(),
            ended_at: TimestampMicrosecondBuilder::with_capacity(n),
            ms_played: Int64Builder::with_capacity(n),
            kind: text(),
            text: (0..EXTENDED_TEXT.len()).map(|_| text()).collect(),
            track_id: text(),
            flags: (0..4).map(|_| BooleanBuilder::with_capacity(n)).collect(),
            offline_at: TimestampMicrosecondBuilder::with_capacity(n),
            personal: (0..3).map(|_| text()).collect(),
            extra: text(),
            source_file: text(),
            source_format: text(),
        }
    }

    fn push(&mut self, p: &Play, ctx: &RowContext, file: &str, layout: Layout) {
        self.key.append_value(hex::encode(p.key));
        self.ended_at.append_option(p.ended_at);
        self.ms_played.append_option(p.ms_played);
        self.kind.append_value(p.kind);
        for (b, v) in self.text.iter_mut().zip(p.text) {
            b.append_option(v);
        }
        let uri = p.text[TRACK_URI];
        self.track_id
            .append_option(uri.and_then(|u| u.strip_prefix("spotify:track:")));
        for (b, v) in self.flags.iter_mut().zip(p.flags) {
            b.append_option(v);
        }
        self.offline_at.append_option(p.offline_at);
        for (b, v) in self
            .personal
            .iter_mut()
            .zip([p.ip_addr, p.username, p.user_agent])
        {
            b.append_option(ctx.personal(v));
        }
        self.extra.append_option(p.extra.as_deref());
        self.source_file.append_value(file);
        self.source_format.append_value(layout.name());
    }

    fn finish(mut self, schema: &SchemaRef, extracted_at: &str) -> Result<RecordBatch, ArrowError> {
        let n = self.key.len();
        let utc = |mut b: TimestampMicrosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let at = parse_utc(extracted_at);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.key.finish()),
            utc(self.ended_at),
            Arc::new(self.ms_played.finish()),
            Arc::new(self.kind.finish()),
        ];
        let mut text: Vec<ArrayRef> = self
            .text
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        // COLUMNS puts track_id right after the track's own fields.
        let rest = text.split_off(EPISODE_NAME);
        columns.extend(text);
        columns.push(Arc::new(self.track_id.finish()));
        columns.extend(rest);
        columns.extend(
            self.flags[..3]
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(utc(self.offline_at));
        columns.push(Arc::new(self.flags[3].finish()));
        columns.extend(
            self.personal
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.extra.finish()));
        columns.push(Arc::new(self.source_file.finish()));
        columns.push(Arc::new(self.source_format.finish()));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![at; n]).with_timezone("UTC"),
        ));
        RecordBatch::try_new(schema.clone(), columns)
    }
}

/// An RFC 3339 time as UTC microseconds.
fn parse_utc(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// `endTime` of the legacy files: `YYYY-MM-DD HH:MM` in UTC, as UTC microseconds.
fn legacy_time(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

/// `offline_timestamp`: epoch seconds in older exports, milliseconds in newer ones; 0 means
/// none. As UTC microseconds.
fn offline_at(v: Option<i64>) -> Option<i64> {
    let n = v.filter(|n| *n > 0)?;
    let ms = if n < 100_000_000_000 { n * 1000 } else { n };
    ms.checked_mul(1000)
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The table.
    pub table: TableName,
    /// Its version after the import (as it was, when nothing was new).
    pub version: u64,
    /// Whether this import created the table.
    pub created: bool,
    /// Plays added.
    pub inserted: u64,
    /// Plays in the files.
    pub plays: u64,
    /// Plays that were in the lake already.
    pub known: u64,
    /// Plays that repeat another play of the same export.
    pub repeated: u64,
    /// Files read.
    pub files: usize,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, files, plays) = (&self.table, self.files, self.plays);
        if self.inserted == 0 {
            write!(
                f,
                "{name} unchanged at version {}: all {plays} plays from {files} files are in the lake",
                self.version
            )?;
        } else {
            let verb = if self.created { "created" } else { "wrote" };
            let of = if self.inserted == plays {
                String::new()
            } else {
                format!(" new of {plays}")
            };
            write!(
                f,
                "{verb} {name} version {}: {}{of} plays from {files} files",
                self.version, self.inserted
            )?;
            if self.known > 0 {
                write!(f, "; {} were in the lake", self.known)?;
            }
        }
        if self.repeated > 0 {
            write!(f, "; {} repeated within the export", self.repeated)?;
        }
        Ok(())
    }
}

/// Imports the export's `files` into `raw.spotify_streams`, merged on each play's key so that
/// re-imports and overlapping exports add no duplicates. `progress` counts the bytes read.
///
/// Plays already in the lake (as of one version) are left out as they are read, and the new
/// ones appended; if another writer committed since that version, they are merged by key
/// instead. A re-import that finds nothing new commits nothing.
pub async fn import(
    lake: &Arc<Lake>,
    files: Vec<ExportFile>,
    personal: PersonalData,
    progress: ProgressBar,
) -> Result<Imported, ExtractError> {
    let salt = match personal {
        PersonalData::Hash => Some(lake.salt().await?),
        _ => None,
    };
    let name = TableName::new(RAW, TABLE).expect("a valid name");
    let shown: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let mut source = ExportSource::new(files, personal, salt, progress);
    // The keys go straight from each batch into the set: 16 bytes a play.
    let version = if lake.list_tables().await?.contains(&name) {
        let version = lake.table(&name, None, None).await?.version().unwrap_or(0) as u64;
        let session = crate::query::LakeSession::new(lake.clone()).await?;
        let mut batches = session
            .sql(&format!(
                "SELECT stream_key FROM {}.\"{}@v{version}\"",
                name.schema(),
                name.name()
            ))
            .await?
            .execute_stream()
            .await
            .map_err(crate::query::QueryError::from_datafusion)?;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(crate::query::QueryError::from_datafusion)?;
            let keys = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| crate::query::QueryError::from_datafusion(e.into()))?;
            source = source.skipping(
                arrow::array::AsArray::as_string::<i32>(&keys)
                    .iter()
                    .flatten(),
            );
        }
        Some(version)
    } else {
        None
    };
    let source = Arc::new(source);
    let counted = |source: &ExportSource, version: u64, created: bool, inserted: u64| {
        let counts = source.counts();
        Imported {
            table: name.clone(),
            version,
            created,
            inserted,
            plays: counts.plays.load(Ordering::Relaxed),
            known: counts.known.load(Ordering::Relaxed),
            repeated: counts.repeated.load(Ordering::Relaxed),
            files: shown.len(),
        }
    };
    // Read until the first new play: with every play known, that is the whole export once
    // more, still cheaper than a merge.
    if let Some(version) = version {
        let probe = source.probe();
        let mut batches = probe.stream();
        let mut any_new = false;
        while let Some(batch) = batches.next().await {
            // The files' own errors (a cut-off file, with its line) come as they are.
            let batch = batch.map_err(|e| match e.downcast::<ExtractError>() {
                Ok(e) => *e,
                Err(source) => ExtractError::Lake(crate::lake::LakeError::Write {
                    table: name.clone(),
                    cause: source,
                }),
            })?;
            if batch.num_rows() > 0 {
                any_new = true;
                break;
            }
        }
        if !any_new {
            return Ok(counted(&probe, version, false, 0));
        }
    }
    let metadata = vec![
        (
            "lake.command".to_string(),
            serde_json::json!("ingest spotify-export"),
        ),
        ("lake.inputs".to_string(), serde_json::json!(shown)),
    ];
    // A play never changes: a re-import inserts only plays the lake lacks.
    let mode = WriteMode::AppendChecked {
        version,
        otherwise: Box::new(WriteMode::InsertNew(vec!["stream_key".into()])),
    };
    let layout = layout::Layout::sorted_by(SORT_BY);
    let outcome = write_laid_out(lake, &name, source.clone(), &mode, &metadata, &layout).await?;
    let inserted = outcome.merged.map_or(outcome.rows_read, |(i, _)| i);
    Ok(counted(
        &source,
        outcome.version as u64,
        outcome.created,
        inserted,
    ))
}

#[cfg(feature = "bench")]
pub mod generate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_maps_fields_by_layout_and_keeps_the_rest() {
        let json = r#"{"ts": "2024-01-01T00:00:00Z", "ms_played": 5, "ip_addr": null,
            "ip_addr_decrypted": "10.0.0.1", "endTime": "2023-01-05 14:32", "skipped": 1,
            "master_metadata_track_name": "A \"q\"", "new_field": {"a": [1]}}"#;
        let obj: Value = serde_json::from_str(json).unwrap();
        let obj = obj.as_object().unwrap();
        let play = Play::read(obj, Layout::Extended);
        assert_eq!(play.ended_at, parse_utc("2024-01-01T00:00:00Z"));
        assert_eq!(play.ms_played, Some(5));
        assert_eq!(play.ip_addr, Some("10.0.0.1"));
        assert_eq!(play.text[TRACK_NAME], Some("A \"q\""));
        assert_eq!(play.flags[1], Some(true));
        assert_eq!(play.extra.as_deref(), Some(r#"{"new_field":{"a":[1]}}"#));
        // The legacy layout reads its own names and leaves the extended ones out of extra.
        let play = Play::read(obj, Layout::Legacy);
        assert_eq!(play.ended_at, legacy_time("2023-01-05 14:32"));
        assert_eq!(play.ms_played, None);
        assert_eq!(play.text[TRACK_NAME], None);
        assert_eq!(play.extra.as_deref(), Some(r#"{"new_field":{"a":[1]}}"#));
    }

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
        let micros = |s: &str| parse_utc(s).unwrap();
        assert_eq!(
            offline_at(Some(1_600_000_000)),
            Some(micros("2020-09-13T12:26:40Z"))
        );
        assert_eq!(
            offline_at(Some(1_600_000_000_123)),
            Some(micros("2020-09-13T12:26:40.123Z"))
        );
        assert_eq!(offline_at(Some(0)), None);
        assert_eq!(
            legacy_time("2023-01-05 14:32"),
            Some(micros("2023-01-05T14:32:00Z"))
        );
    }
}
