//! Settings, resolved once: defaults < lake.toml < `LAKE_*` environment < flags.
//!
//! Every key has one spelling in each layer: `s3.allow_http` in lake.toml is
//! `LAKE_S3_ALLOW_HTTP` in the environment and `--set s3.allow_http=true` on the command line.
//! Unknown keys are refused in every layer.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

/// The file lake looks for in the working directory and its parents.
pub const FILE_NAME: &str = "lake.toml";

/// The lake.toml `lake init` writes: every key it shows is in [`KEYS`] (a test checks).
pub const TEMPLATE: &str = r#"# lake.toml: where the lake is and how to reach it.
# Every key can be overridden by a LAKE_* environment variable (root -> LAKE_ROOT,
# s3.region -> LAKE_S3_REGION) or by a flag (--root, --set s3.region=...).

# A folder, relative to this file, or s3://bucket/prefix.
root = "lake"

# Options for an s3:// root. Unset options fall back to the standard AWS environment
# and profiles (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
# Credentials are never read from this file.
[s3]
# endpoint = "http://127.0.0.1:9000"
# region = "eu-west-1"
# profile = "analytics"
# allow_http = false
# virtual_hosted_style = false

# The Spotify Web API (`lake extract spotify`). The client ID and secret may instead come
# from SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET; keep the secret out of version control.
[spotify]
# client_id = "your app's client ID"
# Playlists whose tracks land in raw.spotify_playlist_tracks: URLs, URIs or IDs.
# playlists = ["https://open.spotify.com/playlist/...", "spotify:playlist:..."]
# The listener's streams need `lake auth spotify` once; the redirect URI must be
# registered for the app.
# redirect_uri = "http://127.0.0.1:8888/callback"
# token_file = ".lake/spotify-token.json"
# streams = ["playlist_tracks", "recently_played", "saved_tracks", "top_tracks"]

# Memory and spilling, shared by every query, model and export of one lake process. Past
# the limit, sorts, aggregates, repartitions and large joins spill to disk.
[query]
# memory_limit = "8GiB"      # default: half the machine's memory
# spill_dir = "/var/tmp"     # default: the system temp folder

# The personal data export (`lake ingest spotify-export my_spotify_data.zip`).
[spotify_export]
# IP address, username and user agent: "drop" (default), "hash" (with this lake's salt)
# or "keep".
# personal_data = "drop"
"#;

/// Environment variables with a meaning of their own, not settings keys.
const RESERVED_ENV: &[&str] = &["LAKE_CONFIG", "LAKE_LOG"];

/// How a key's text, from the environment or `--set`, becomes its value in lake.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (durations such as `168h` included, parsed as the file's are).
    Text,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Flag,
    /// A whole number.
    Number,
    /// A size: `64MiB`, `2GiB`, or bytes.
    Size,
    /// A list, comma-separated outside lake.toml.
    List,
    /// One of a few words.
    Choice(&'static [&'static str]),
}

/// One settings key: its dotted name in lake.toml (its `LAKE_*` name and `--set` name follow
/// from it, see [`env_name`]) and the kind of its value. The one table the environment, the
/// flags and the test of the file's shape all read.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// As written in lake.toml: `s3.allow_http`.
    pub name: &'static str,
    /// The kind of its value.
    pub kind: Kind,
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key { name, kind }
}

/// Every settings key but those of `[sources.<name>]` ([`SOURCE_KEYS`]) and `[[schedule]]`
/// (lake.toml only).
pub const KEYS: &[Key] = &[
    key("root", Kind::Text),
    key("s3.endpoint", Kind::Text),
    key("s3.region", Kind::Text),
    key("s3.profile", Kind::Text),
    key("s3.allow_http", Kind::Flag),
    key("s3.virtual_hosted_style", Kind::Flag),
    key("spotify.client_id", Kind::Text),
    key("spotify.client_secret", Kind::Text),
    key("spotify.api_url", Kind::Text),
    key("spotify.accounts_url", Kind::Text),
    key("spotify.redirect_uri", Kind::Text),
    key("spotify.token_file", Kind::Text),
    key("spotify.playlists", Kind::List),
    key("spotify.streams", Kind::List),
    key("spotify.max_retries", Kind::Number),
    key("spotify.max_retry_after", Kind::Number),
    key(
        "spotify_export.personal_data",
        Kind::Choice(&["drop", "hash", "keep"]),
    ),
    key("warehouse.url", Kind::Text),
    key("warehouse.password", Kind::Text),
    key("warehouse.schema", Kind::Text),
    key("warehouse.sslmode", Kind::Text),
    key("warehouse.ssl_root_cert", Kind::Text),
    key("warehouse.batch_rows", Kind::Number),
    key("maintain.after_refresh", Kind::Flag),
    key("maintain.vacuum_retention", Kind::Text),
    key("maintain.target_file_size", Kind::Number),
    key("project.tests", Kind::Text),
    key("query.memory_limit", Kind::Size),
    key("query.spill_dir", Kind::Text),
];

/// The keys of one `[sources.<name>]`: `sources.<name>.<key>`, and `sources.<name>.casts.<column>`
/// for one column's cast.
pub const SOURCE_KEYS: &[Key] = &[
    key("url", Kind::Text),
    key("password", Kind::Text),
    key("table", Kind::Text),
    key("query", Kind::Text),
    key("target", Kind::Text),
    key("mode", Kind::Choice(&["full", "incremental"])),
    key("cursor", Kind::Text),
    key("primary_key", Kind::List),
    key("lookback", Kind::Text),
    key("batch_rows", Kind::Number),
    key("warn_after", Kind::Text),
    key("error_after", Kind::Text),
];

fn known_keys() -> String {
    let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    format!("{}, sources.<name>.<key>", names.join(", "))
}

/// The environment variables Spotify's own tools read, honoured like the AWS ones: above
/// lake.toml, below `LAKE_*`.
const SPOTIFY_ENV: &[(&str, &str)] = &[
    ("SPOTIFY_CLIENT_ID", "spotify.client_id"),
    ("SPOTIFY_CLIENT_SECRET", "spotify.client_secret"),
    ("SPOTIFY_REDIRECT_URI", "spotify.redirect_uri"),
];

/// Errors while resolving settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("failed to read config {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown key or a bad value.
    #[error("failed to parse config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment variable or flag names a key lake does not have.
    #[error(
        "failed to apply {origin}: unknown key `{key}` (known keys: {})",
        known_keys()
    )]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it came from, such as `environment variable LAKE_ROOTT`.
        origin: String,
    },
    /// A `[sources.<name>]` whose keys do not make one shape.
    #[error("failed to read [sources.{name}]: {why}")]
    Source {
        /// The source.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A value that lake.toml's shape refuses for its key.
    #[error("failed to apply {origin}: `{key}`: {message}")]
    Invalid {
        /// The key.
        key: String,
        /// Where it came from.
        origin: String,
        /// Why.
        message: String,
    },
    /// A value that does not fit its key.
    #[error("failed to apply {origin}: `{key}` expects {expected}, got {value:?}")]
    BadValue {
        /// The key.
        key: String,
        /// Where it came from.
        origin: String,
        /// The value as given.
        value: String,
        /// What was expected.
        expected: String,
    },
}

/// A `Result` whose error is a [`ConfigError`].
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The `[s3]` table: options for an `s3://` root. Anything not set here falls back to the
/// standard AWS environment and profiles, as in the AWS CLI (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_PROFILE`, `AWS_ACCESS_KEY_ID`, ...). Credentials are never read from lake.toml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// An S3-compatible endpoint, such as `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The AWS profile to take credentials and region from.
    pub profile: Option<String>,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: Option<bool>,
    /// Use `bucket.host` URLs instead of `host/bucket`.
    pub virtual_hosted_style: Option<bool>,
}

/// The `[spotify]` table: the Web API client. The client ID and secret may also come from
/// `SPOTIFY_CLIENT_ID` and `SPOTIFY_CLIENT_SECRET`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotifySettings {
    /// The app's client ID.
    pub client_id: Option<String>,
    /// The app's client secret (client-credentials flow). Never printed.
    pub client_secret: Option<SecretString>,
    /// The Web API base URL [default: https://api.spotify.com/v1/].
    pub api_url: Option<String>,
    /// The accounts service base URL [default: https://accounts.spotify.com/].
    pub accounts_url: Option<String>,
    /// The redirect URI registered for the app [default: http://127.0.0.1:8888/callback].
    pub redirect_uri: Option<String>,
    /// Where `lake auth spotify` keeps the user's refresh token [default:
    /// `.lake/spotify-token.json` in the project].
    pub token_file: Option<PathBuf>,
    /// Playlists to extract with their tracks: URLs, URIs or IDs.
    #[serde(default)]
    pub playlists: Vec<String>,
    /// The streams `lake extract spotify` runs [default: every stream the credentials allow].
    pub streams: Option<Vec<String>>,
    /// Retries of a 5xx answer or a timeout [default: 5].
    pub max_retries: Option<u32>,
    /// The longest Retry-After, in seconds, that lake waits out; longer fails [default: 300].
    pub max_retry_after: Option<u64>,
}

/// What happens to the export's personal fields: IP address, username and user agent.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PersonalData {
    /// Leave them out (null).
    #[default]
    Drop,
    /// Keep a SHA-256 of each, salted with the lake's own salt.
    Hash,
    /// Keep them as they are.
    Keep,
}

/// The `[spotify_export]` table: `lake ingest spotify-export`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotifyExportSettings {
    /// `drop` (default), `hash` or `keep`.
    #[serde(default)]
    pub personal_data: PersonalData,
}

/// The `[warehouse]` table: where `lake export` sends curated tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseSettings {
    /// `postgres://`, `mysql://` or `sqlite://` [default: `sqlite://warehouse.db` in the
    /// project]. It may hold a password, so it is kept secret too.
    pub url: Option<SecretString>,
    /// The password, when the URL has none; best given as `LAKE_WAREHOUSE_PASSWORD`.
    pub password: Option<SecretString>,
    /// The schema (PostgreSQL) or database (MySQL) tables go to [default: the connection's].
    pub schema: Option<String>,
    /// TLS: `disable`, `prefer`, `require`, `verify-ca` or `verify-full` (RDS: `verify-full`
    /// with its CA bundle) [default: the URL's, else prefer].
    pub sslmode: Option<String>,
    /// The CA bundle to verify the server with, such as RDS's `global-bundle.pem`.
    pub ssl_root_cert: Option<PathBuf>,
    /// Rows per INSERT on MySQL and per transaction step on SQLite [default: 1000 on MySQL].
    pub batch_rows: Option<u64>,
}

/// The `[maintain]` table: what `lake maintain` does, and whether a refresh ends with it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainSettings {
    /// Run `lake maintain` at the end of every `lake refresh` [default: false].
    pub after_refresh: Option<bool>,
    /// How long removed data files are kept for readers and time travel before vacuum deletes
    /// them: `168h` [default: 7 days, Delta's own; less than 1 hour is refused].
    #[serde(default, with = "humantime_serde")]
    pub vacuum_retention: Option<Duration>,
    /// The size compaction aims for, in bytes [default: the table's, else 100 MiB].
    pub target_file_size: Option<u64>,
}

/// The `[query]` table: the memory and spill folder every DataFusion session of the process
/// shares (queries, models, tests, the export's reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    /// The memory all sessions of a process may hold, as `2GiB` or bytes; sorts, aggregates,
    /// repartitions and large joins spill to disk beyond it [default: half the memory of the
    /// machine, or of its cgroup].
    pub memory_limit: Option<bytesize::ByteSize>,
    /// Where spill files go, relative to the project [default: the system temp folder].
    pub spill_dir: Option<PathBuf>,
}

/// The `[project]` table: where the project's files are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// The folder of custom SQL data tests, relative to the project [default: `tests`]. A
    /// repository that keeps Rust or other tests in `tests/` names another.
    pub tests: Option<PathBuf>,
}

/// One `[[schedule]]` job for `lake schedule`: a refresh on a cron expression (UTC).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleJob {
    /// The job's name, in logs.
    pub name: String,
    /// When: `0 3 * * *` (minute hour day month weekday, UTC), or six fields with seconds.
    pub cron: String,
    /// The models to run and export, as `--select` takes them [default: all].
    #[serde(default)]
    pub select: Vec<String>,
    /// Models to leave out, as `--exclude` takes them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Leave out the extract.
    #[serde(default)]
    pub skip_extract: bool,
    /// Leave out the export.
    #[serde(default)]
    pub skip_export: bool,
}

/// How a SQL source is read.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// Every row, each run; the target is replaced.
    #[default]
    Full,
    /// Rows past the saved cursor (minus the lookback), merged on the primary key.
    Incremental,
}

/// One `[sources.<name>]` table: a SQL database table or query landed in a raw table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// `postgres://`, `mysql://`, `sqlite://` or `mssql://`; may hold a password, so secret.
    pub url: Option<SecretString>,
    /// The password, when the URL has none; best as `LAKE_SOURCES_<NAME>_PASSWORD`.
    pub password: Option<SecretString>,
    /// A table (`schema.table` or `table`) to read whole.
    pub table: Option<String>,
    /// Or a query to read.
    pub query: Option<String>,
    /// The raw table it lands in [default: `raw.<name>`].
    pub target: Option<String>,
    /// `full` (default) or `incremental`.
    #[serde(default)]
    pub mode: SourceMode,
    /// For incremental: the column that grows (an `updated_at` timestamp or an increasing id).
    pub cursor: Option<String>,
    /// For incremental: the columns the merge matches on.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// For incremental: how far behind the cursor to read again, for late rows: `30s`, `15m`,
    /// `2h`, `1d`, or a number for an id cursor [default: none].
    pub lookback: Option<String>,
    /// Rows per Arrow batch [default: 8192].
    pub batch_rows: Option<u64>,
    /// Per-column casts for types lake does not map: `{ col = "text" }`.
    #[serde(default)]
    pub casts: std::collections::BTreeMap<String, String>,
    /// `lake status` warns when the target's last update is older than this (`26h`).
    #[serde(default, with = "humantime_serde")]
    pub warn_after: Option<Duration>,
    /// `lake status` fails when the target's last update is older than this (`50h`).
    #[serde(default, with = "humantime_serde")]
    pub error_after: Option<Duration>,
}

/// What a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRead<'a> {
    /// A table, `schema.table` or `table`, read whole.
    Table(&'a str),
    /// A query.
    Query(&'a str),
}

/// How a source is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePlan<'a> {
    /// Every row, each run; the target is replaced.
    Full,
    /// The rows past the saved cursor (minus the lookback), merged on the primary key.
    Incremental {
        /// The column that grows.
        cursor: &'a str,
        /// The columns the merge matches on; never empty.
        primary_key: &'a [String],
        /// How far behind the cursor to read again.
        lookback: Option<&'a str>,
    },
}

/// A `[sources.<name>]` as the one shape its keys may take: checked when the settings load,
/// so a wrong combination stops every command before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceShape<'a> {
    /// What it reads.
    pub read: SourceRead<'a>,
    /// How.
    pub plan: SourcePlan<'a>,
}

impl SourceSettings {
    /// Its shape, or what is wrong with the combination of its keys.
    pub fn shape(&self, name: &str) -> Result<SourceShape<'_>> {
        let bad = |why: &str| ConfigError::Source {
            name: name.to_string(),
            why: why.to_string(),
        };
        let read = match (&self.table, &self.query) {
            (Some(t), None) => SourceRead::Table(t),
            (None, Some(q)) => SourceRead::Query(q),
            _ => return Err(bad("give exactly one of `table` and `query`")),
        };
        let plan = match self.mode {
            SourceMode::Full => {
                let given: Vec<&str> = [
                    ("cursor", self.cursor.is_some()),
                    ("primary_key", !self.primary_key.is_empty()),
                    ("lookback", self.lookback.is_some()),
                ]
                .into_iter()
                .filter_map(|(k, set)| set.then_some(k))
                .collect();
                if !given.is_empty() {
                    return Err(bad(&format!(
                        "`{}` only apply to mode = \"incremental\"; set that mode, or leave them out",
                        given.join("`, `")
                    )));
                }
                SourcePlan::Full
            }
            SourceMode::Incremental => SourcePlan::Incremental {
                cursor: self.cursor.as_deref().ok_or_else(|| {
                    bad("mode = \"incremental\" needs `cursor`, the column that grows")
                })?,
                primary_key: match self.primary_key.as_slice() {
                    [] => {
                        return Err(bad(
                            "mode = \"incremental\" needs `primary_key`, the columns the merge matches on",
                        ));
                    }
                    keys => keys,
                },
                lookback: self.lookback.as_deref(),
            },
        };
        Ok(SourceShape { read, plan })
    }
}

/// The file's shape. Every field is optional; defaults fill the gaps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    root: Option<String>,
    #[serde(default)]
    s3: S3Settings,
    #[serde(default)]
    spotify: SpotifySettings,
    #[serde(default)]
    spotify_export: SpotifyExportSettings,
    #[serde(default)]
    warehouse: WarehouseSettings,
    #[serde(default)]
    sources: std::collections::BTreeMap<String, SourceSettings>,
    #[serde(default)]
    maintain: MaintainSettings,
    #[serde(default)]
    project: ProjectSettings,
    #[serde(default)]
    query: QuerySettings,
    #[serde(default)]
    schedule: Vec<ScheduleJob>,
}

/// What the command line says about settings.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--root ROOT`.
    pub root: Option<String>,
    /// `--set KEY=VALUE`, in order.
    pub set: Vec<String>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The folder that relative paths are resolved against: the config file's folder, or the
    /// working directory when there is no config file.
    pub project_dir: PathBuf,
    /// The config file in use, if any.
    pub config_file: Option<PathBuf>,
    /// Where the lake is: a folder (relative to the project) or `s3://bucket/prefix`.
    pub root: String,
    /// S3 options.
    pub s3: S3Settings,
    /// The Spotify Web API client.
    pub spotify: SpotifySettings,
    /// The personal data export.
    pub spotify_export: SpotifyExportSettings,
    /// The warehouse.
    pub warehouse: WarehouseSettings,
    /// Table maintenance.
    pub maintain: MaintainSettings,
    /// Where the project's files are.
    pub project: ProjectSettings,
    /// Memory and spilling of every query.
    pub query: QuerySettings,
    /// `lake schedule`'s jobs (lake.toml only).
    pub schedule: Vec<ScheduleJob>,
    /// SQL sources, by name.
    pub sources: std::collections::BTreeMap<String, SourceSettings>,
}

impl Settings {
    /// The folder of the project's models.
    pub fn queries_dir(&self) -> PathBuf {
        self.project_dir.join("queries")
    }

    /// The folder of the project's custom SQL data tests.
    pub fn tests_dir(&self) -> PathBuf {
        crate::paths::under(
            &self.project_dir,
            self.project.tests.as_deref().unwrap_or(Path::new("tests")),
        )
    }

    /// Resolves settings from the process environment and working directory.
    pub fn load(overrides: &Overrides) -> Result<Self> {
        let cwd = std::env::current_dir().map_err(|source| ConfigError::Read {
            path: PathBuf::from("."),
            cause: source,
        })?;
        Self::resolve(overrides, std::env::vars(), &cwd)
    }

    /// Resolves settings from explicit inputs, so that tests need not touch the process.
    pub fn resolve(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
        cwd: &Path,
    ) -> Result<Self> {
        let all: Vec<(String, String)> = env.into_iter().collect();
        let env: Vec<(String, String)> = all
            .iter()
            .filter(|(k, _)| k.starts_with("LAKE_"))
            .cloned()
            .collect();
        let named = overrides.config.clone().or_else(|| {
            env.iter()
                .find(|(k, _)| k == "LAKE_CONFIG")
                .map(|(_, v)| PathBuf::from(v))
        });
        let config_file = match named {
            // `..` resolved, so the project folder and a local root under it are plain paths.
            Some(path) => {
                let joined = crate::paths::under(cwd, path);
                Some(std::fs::canonicalize(&joined).unwrap_or(joined))
            }
            None => find_upwards(cwd),
        };
        // The file is read through the settings' own shape (so an error names its line), and
        // kept as TOML for the overrides to be laid over it.
        let mut table = match &config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    cause: source,
                })?;
                let parse_error = |e: toml::de::Error| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string().trim_end().to_string(),
                };
                toml::from_str::<FileSettings>(&text).map_err(parse_error)?;
                toml::from_str::<toml::Table>(&text).map_err(parse_error)?
            }
            None => toml::Table::new(),
        };
        let project_dir = match &config_file {
            Some(path) => path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| cwd.to_path_buf()),
            None => cwd.to_path_buf(),
        };

        // The overrides, lowest first: Spotify's own variables, LAKE_*, --set, --root.
        let mut layers: Vec<(String, String, String)> = Vec::new();
        for (var, key) in SPOTIFY_ENV {
            if let Some((_, value)) = all.iter().find(|(k, _)| k == var) {
                layers.push((
                    key.to_string(),
                    value.clone(),
                    format!("environment variable {var}"),
                ));
            }
        }
        let mut env_keys: Vec<_> = env
            .iter()
            .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
            .collect();
        env_keys.sort();
        // A source's keys are `sources.<name>.<key>`: LAKE_SOURCES_CRM_PASSWORD for a source
        // named crm in lake.toml, LAKE_SOURCES_CRM_CASTS_AMOUNT for its column `amount`.
        let sources: Vec<String> = table
            .get("sources")
            .and_then(toml::Value::as_table)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        for (var, value) in env_keys {
            let origin = format!("environment variable {var}");
            let named = KEYS
                .iter()
                .map(|k| k.name.to_string())
                .chain(sources.iter().flat_map(|n| {
                    SOURCE_KEYS
                        .iter()
                        .map(move |k| format!("sources.{n}.{}", k.name))
                }))
                .find(|key| env_name(key) == *var);
            let cast = || {
                sources.iter().find_map(|n| {
                    let column = var.strip_prefix(&env_name(&format!("sources.{n}.casts.")))?;
                    (!column.is_empty())
                        .then(|| format!("sources.{n}.casts.{}", column.to_ascii_lowercase()))
                })
            };
            let key = named.or_else(cast).ok_or_else(|| ConfigError::UnknownKey {
                key: var.clone(),
                origin: origin.clone(),
            })?;
            layers.push((key, value.clone(), origin));
        }
        for pair in &overrides.set {
            let origin = format!("--set {pair}");
            let (key, value) = pair.split_once('=').ok_or_else(|| ConfigError::BadValue {
                key: pair.clone(),
                origin: origin.clone(),
                value: pair.clone(),
                expected: "KEY=VALUE".into(),
            })?;
            layers.push((key.trim().to_string(), value.trim().to_string(), origin));
        }
        if let Some(root) = &overrides.root {
            layers.push(("root".into(), root.clone(), "--root".into()));
        }
        for (key, value, origin) in &layers {
            apply(&mut table, key, value, origin)?;
        }
        let file = FileSettings::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Invalid {
                key: "(settings)".into(),
                origin: "the overrides".into(),
                message: e.to_string(),
            }
        })?;
        for (name, source) in &file.sources {
            source.shape(name)?;
        }
        Ok(Settings {
            project_dir,
            config_file,
            root: file.root.unwrap_or_else(|| "lake".to_string()),
            s3: file.s3,
            spotify: file.spotify,
            spotify_export: file.spotify_export,
            warehouse: file.warehouse,
            sources: file.sources,
            maintain: file.maintain,
            project: file.project,
            query: file.query,
            schedule: file.schedule,
        })
    }
}

/// Lays one override over the file's TOML: the key's text turned into its value by the key's
/// kind, then checked against lake.toml's shape alone, so that an error names its origin.
fn apply(table: &mut toml::Table, key: &str, value: &str, origin: &str) -> Result<()> {
    let unknown = || ConfigError::UnknownKey {
        key: key.to_string(),
        origin: origin.to_string(),
    };
    // `sources.<name>.<key>` or `sources.<name>.casts.<column>`; every other key is in KEYS.
    let (path, kind): (Vec<&str>, Kind) = match key.strip_prefix("sources.") {
        Some(rest) => match rest.split_once(".casts.") {
            Some((name, column)) if !name.is_empty() && !column.is_empty() => {
                (vec!["sources", name, "casts", column], Kind::Text)
            }
            _ => {
                let (name, field) = rest.rsplit_once('.').ok_or_else(unknown)?;
                let k = SOURCE_KEYS.iter().find(|k| k.name == field);
                match k {
                    Some(k) if !name.is_empty() => (vec!["sources", name, k.name], k.kind),
                    _ => return Err(unknown()),
                }
            }
        },
        None => {
            let k = KEYS.iter().find(|k| k.name == key).ok_or_else(unknown)?;
            (k.name.split('.').collect(), k.kind)
        }
    };
    let bad = |expected: String| ConfigError::BadValue {
        key: key.to_string(),
        origin: origin.to_string(),
        value: value.to_string(),
        expected,
    };
    let typed = match kind {
        Kind::Text => toml::Value::String(value.to_string()),
        // Bytes as a number; `2GiB` as the text the file would hold.
        Kind::Size => match value.parse::<i64>() {
            Ok(n) => toml::Value::Integer(n),
            Err(_) => toml::Value::String(value.to_string()),
        },
        Kind::Flag => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => toml::Value::Boolean(true),
            "false" | "0" | "no" => toml::Value::Boolean(false),
            _ => return Err(bad("true or false".into())),
        },
        Kind::Number => value
            .parse::<u64>()
            .ok()
            .and_then(|n| i64::try_from(n).ok())
            .map(toml::Value::Integer)
            .ok_or_else(|| bad("a whole number".into()))?,
        Kind::List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Choice(words) => {
            let word = value.to_ascii_lowercase();
            if !words.contains(&word.as_str()) {
                let (last, rest) = words.split_last().expect("a choice has words");
                return Err(bad(format!("{} or {last}", rest.join(", "))));
            }
            toml::Value::String(word)
        }
    };
    // Alone, against the shape: a value the key refuses (a duration that does not parse, say)
    // is this override's error.
    let mut alone = toml::Table::new();
    insert(&mut alone, &path, typed.clone());
    FileSettings::deserialize(toml::Value::Table(alone)).map_err(|e| ConfigError::Invalid {
        key: key.to_string(),
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    insert(table, &path, typed);
    Ok(())
}

/// Sets `path` in `table`, making the tables on the way.
fn insert(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("a key has a name");
    let mut at = table;
    for p in parents {
        let entry = at
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        at = entry.as_table_mut().expect("made a table");
    }
    at.insert(last.to_string(), value);
}

/// `s3.allow_http` -> `LAKE_S3_ALLOW_HTTP`.
pub fn env_name(key: &str) -> String {
    format!("LAKE_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn find_upwards(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sources_take_env_and_flags_and_keep_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "[sources.crm_db]\nurl = \"postgres://reader@db/crm\"\ntable = \"public.customers\"\nmode = \"incremental\"\ncursor = \"updated_at\"\nprimary_key = [\"id\"]\n",
        )
        .unwrap();
        let flags = Overrides {
            set: vec!["sources.crm_db.lookback=2h".into()],
            ..Default::default()
        };
        let s = Settings::resolve(
            &flags,
            env(&[("LAKE_SOURCES_CRM_DB_PASSWORD", "s3cret-pw")]),
            dir.path(),
        )
        .unwrap();
        let crm = &s.sources["crm_db"];
        assert_eq!(crm.mode, SourceMode::Incremental);
        assert_eq!(crm.primary_key, ["id"]);
        assert_eq!(crm.lookback.as_deref(), Some("2h"));
        assert!(crm.password.is_some());
        assert!(!format!("{s:?}").contains("s3cret-pw"));
        assert!(!format!("{s:?}").contains("reader@db"));
        let err = Settings::resolve(
            &Overrides::default(),
            env(&[("LAKE_SOURCES_NOPE_PASSWORD", "x")]),
            dir.path(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("LAKE_SOURCES_NOPE_PASSWORD"),
            "{err}"
        );
        std::fs::write(dir.path().join(FILE_NAME), "[sources.crm]\ntabel = \"x\"\n").unwrap();
        let err = Settings::resolve(&Overrides::default(), env(&[]), dir.path()).unwrap_err();
        assert!(err.to_string().contains("tabel"), "{err}");
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "root = \"from-file\"\n[s3]\nregion = \"eu-west-1\"\nallow_http = false\n",
        )
        .unwrap();
        let none = Overrides::default();
        let s = Settings::resolve(&none, env(&[]), dir.path()).unwrap();
        assert_eq!(s.root, "from-file");
        assert_eq!(s.s3.region.as_deref(), Some("eu-west-1"));

        let s = Settings::resolve(
            &none,
            env(&[("LAKE_ROOT", "from-env"), ("LAKE_S3_ALLOW_HTTP", "true")]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(s.root, "from-env");
        assert_eq!(s.s3.allow_http, Some(true));

        let flags = Overrides {
            root: Some("from-flag".into()),
            set: vec!["s3.region=us-east-2".into()],
            ..Default::default()
        };
        let s = Settings::resolve(
            &flags,
            env(&[("LAKE_ROOT", "from-env"), ("LAKE_S3_REGION", "x")]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(s.root, "from-flag");
        assert_eq!(s.s3.region.as_deref(), Some("us-east-2"));

        let s = Settings::resolve(&none, env(&[]), &dir.path().join("sub/dir")).unwrap();
        assert_eq!(s.project_dir, dir.path());
    }

    #[test]
    fn spotify_credentials_layer_and_stay_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "[spotify]\nclient_id = \"from-file\"\nplaylists = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let none = Overrides::default();
        let s = Settings::resolve(
            &none,
            env(&[
                ("SPOTIFY_CLIENT_ID", "from-spotify-env"),
                ("SPOTIFY_CLIENT_SECRET", "s3cr3t-value"),
            ]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(s.spotify.client_id.as_deref(), Some("from-spotify-env"));
        assert_eq!(s.spotify.playlists, ["a", "b"]);
        assert!(!format!("{s:?}").contains("s3cr3t-value"));
        let s = Settings::resolve(
            &none,
            env(&[
                ("SPOTIFY_CLIENT_ID", "from-spotify-env"),
                ("LAKE_SPOTIFY_CLIENT_ID", "from-lake-env"),
                ("LAKE_SPOTIFY_PLAYLISTS", "x, y"),
            ]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(s.spotify.client_id.as_deref(), Some("from-lake-env"));
        assert_eq!(s.spotify.playlists, ["x", "y"]);
    }

    /// The key tables, the file's shape, the environment and `--set` agree: every key sets the
    /// same value from each of the three, and every field of lake.toml's shape is a key.
    #[test]
    fn every_key_is_the_same_key_in_the_file_the_environment_and_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        // An incremental source that reads a table; for `table` and `query` themselves, one
        // that reads neither yet.
        let reading =
            "[sources.crm]\nmode = \"incremental\"\ncursor = \"c\"\nprimary_key = [\"id\"]\n";
        let with_table = format!("{reading}table = \"t\"\n");
        let resolve = |file: &str, env: Vec<(String, String)>, set: Vec<String>| {
            std::fs::write(dir.path().join(FILE_NAME), file).unwrap();
            let flags = Overrides {
                set,
                ..Default::default()
            };
            let s = Settings::resolve(&flags, env, dir.path());
            format!("{:?}", s.unwrap_or_else(|e| panic!("{file:?}: {e}")))
        };
        let unset = resolve(&with_table, Vec::new(), Vec::new());
        let sources = SOURCE_KEYS
            .iter()
            .map(|k| Key {
                name: Box::leak(format!("sources.crm.{}", k.name).into_boxed_str()),
                kind: k.kind,
            })
            .chain([key("sources.crm.casts.amount", Kind::Text)]);
        for k in KEYS.iter().copied().chain(sources) {
            // A text each kind takes (a duration, for the keys that are one).
            let (text, value) = match k.kind {
                Kind::Text => ("2h".to_string(), toml::Value::from("2h")),
                Kind::Size => ("64MiB".to_string(), toml::Value::from("64MiB")),
                Kind::Flag => ("true".into(), toml::Value::from(true)),
                Kind::Number => ("7".into(), toml::Value::from(7)),
                Kind::List => ("a, b".into(), toml::Value::from(vec!["a", "b"])),
                Kind::Choice(words) => {
                    let w = words.last().unwrap();
                    (w.to_string(), toml::Value::from(*w))
                }
            };
            let base = if matches!(k.name, "sources.crm.table" | "sources.crm.query") {
                reading.to_string()
            } else {
                with_table.clone()
            };
            // The file form: the base with the key set in it.
            let mut table: toml::Table = toml::from_str(&base).unwrap();
            let path: Vec<&str> = k.name.split('.').collect();
            insert(&mut table, &path, value);
            let file = toml::to_string(&table).unwrap();
            let from_file = resolve(&file, Vec::new(), Vec::new());
            let from_env = resolve(&base, vec![(env_name(k.name), text.clone())], Vec::new());
            let from_flag = resolve(&base, Vec::new(), vec![format!("{}={text}", k.name)]);
            // `mode` can only be set to what the base's other keys fit: incremental.
            if k.name != "sources.crm.mode" {
                assert_ne!(from_file, unset, "{} set nothing", k.name);
            }
            assert_eq!(from_file, from_env, "{} from the environment", k.name);
            assert_eq!(from_file, from_flag, "{} from --set", k.name);
        }
        // The other way: serde's own list of each table's fields, every one a key.
        let fields = |toml: &str| -> Vec<String> {
            let e = toml::from_str::<FileSettings>(toml)
                .unwrap_err()
                .to_string();
            // "expected one of `a`, `b`", or "expected `a`" for a table of one field.
            let list = &e[e.find("unknown field").expect("a list of fields")..];
            let list = &list[list.find("expected").expect("a list of fields")..];
            list.split('`')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect()
        };
        let named = |name: String| {
            KEYS.iter().any(|k| k.name == name)
                || name
                    .strip_prefix("sources.crm.")
                    .is_some_and(|f| f == "casts" || SOURCE_KEYS.iter().any(|k| k.name == f))
        };
        for section in [
            "s3",
            "spotify",
            "spotify_export",
            "warehouse",
            "maintain",
            "project",
            "query",
        ] {
            for f in fields(&format!("[{section}]\nnot_a_key = 1\n")) {
                assert!(
                    named(format!("{section}.{f}")),
                    "{section}.{f} is not in KEYS"
                );
            }
        }
        for f in fields("[sources.crm]\nnot_a_key = 1\n") {
            assert!(
                named(format!("sources.crm.{f}")),
                "sources.{f} is not in SOURCE_KEYS"
            );
        }
    }

    /// `lake init`'s lake.toml parses, and with its examples uncommented still does: each key
    /// it shows is one lake knows.
    #[test]
    fn the_template_shows_only_known_keys() {
        toml::from_str::<FileSettings>(TEMPLATE).unwrap();
        let uncommented: String = TEMPLATE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.contains("->") => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = toml::from_str::<FileSettings>(&uncommented);
        assert!(parsed.is_ok(), "{uncommented}\n{parsed:?}");
        assert!(uncommented.contains("\nclient_id = "), "{uncommented}");
    }

    /// A source's keys make one shape, or the settings do not load, naming the source.
    #[test]
    fn a_source_is_one_shape_or_no_settings() {
        let dir = tempfile::tempdir().unwrap();
        let load = |source: &str| {
            std::fs::write(
                dir.path().join(FILE_NAME),
                format!("[sources.crm]\n{source}"),
            )
            .unwrap();
            Settings::resolve(&Overrides::default(), env(&[]), dir.path())
        };
        let s = load("query = \"SELECT 1\"\n").unwrap();
        assert_eq!(
            s.sources["crm"].shape("crm").unwrap(),
            SourceShape {
                read: SourceRead::Query("SELECT 1"),
                plan: SourcePlan::Full
            }
        );
        let s = load("table = \"t\"\nmode = \"incremental\"\ncursor = \"c\"\nprimary_key = [\"id\"]\nlookback = \"1h\"\n").unwrap();
        assert!(matches!(
            s.sources["crm"].shape("crm").unwrap().plan,
            SourcePlan::Incremental {
                cursor: "c",
                lookback: Some("1h"),
                ..
            }
        ));
        for (keys, why) in [
            (
                "table = \"t\"\nquery = \"q\"\n",
                "exactly one of `table` and `query`",
            ),
            ("target = \"raw.x\"\n", "exactly one of `table` and `query`"),
            (
                "table = \"t\"\nmode = \"incremental\"\nprimary_key = [\"id\"]\n",
                "needs `cursor`",
            ),
            (
                "table = \"t\"\nmode = \"incremental\"\ncursor = \"c\"\n",
                "needs `primary_key`",
            ),
            (
                "table = \"t\"\ncursor = \"c\"\nlookback = \"1h\"\n",
                "`cursor`, `lookback` only apply to mode = \"incremental\"",
            ),
        ] {
            let err = load(keys).unwrap_err().to_string();
            assert!(
                err.contains("[sources.crm]") && err.contains(why),
                "{keys}: {err}"
            );
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::resolve(&Overrides::default(), env(&[]), dir.path()).unwrap();
        assert_eq!(s.root, "lake");
        assert_eq!(s.config_file, None);
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "root = \"x\"\n[s3]\nendpont = \"y\"\n",
        )
        .unwrap();
        let err = Settings::resolve(&Overrides::default(), env(&[]), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("endpont") && err.contains("line 3"), "{err}");

        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let err = Settings::resolve(
            &Overrides::default(),
            env(&[("LAKE_ROTO", "x")]),
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("LAKE_ROTO"), "{err}");
        let flags = Overrides {
            set: vec!["s3.nope=1".into()],
            ..Default::default()
        };
        let err = Settings::resolve(&flags, env(&[]), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3.nope"), "{err}");
        let err = Settings::resolve(
            &Overrides::default(),
            env(&[("LAKE_S3_ALLOW_HTTP", "maybe")]),
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("LAKE_S3_ALLOW_HTTP") && err.contains("maybe"),
            "{err}"
        );
    }
}
