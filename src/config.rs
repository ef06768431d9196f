//! Settings, resolved once: defaults < lake.toml < `LAKE_*` environment < flags.
//!
//! Every key has one spelling in each layer: `s3.allow_http` in lake.toml is
//! `LAKE_S3_ALLOW_HTTP` in the environment and `--set s3.allow_http=true` on the command line.
//! Unknown keys are refused in every layer.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// The file lake looks for in the working directory and its parents.
pub const FILE_NAME: &str = "lake.toml";

/// Environment variables with a meaning of their own, not settings keys.
const RESERVED_ENV: &[&str] = &["LAKE_CONFIG", "LAKE_LOG"];

/// Every settings key, as written in lake.toml.
pub const KEYS: &[&str] = &[
    "root",
    "s3.endpoint",
    "s3.region",
    "s3.profile",
    "s3.allow_http",
    "s3.virtual_hosted_style",
    "spotify.client_id",
    "spotify.client_secret",
    "spotify.api_url",
    "spotify.accounts_url",
    "spotify.redirect_uri",
    "spotify.token_file",
    "spotify.playlists",
    "spotify.streams",
    "spotify.max_retries",
    "spotify.max_retry_after",
    "spotify_export.personal_data",
    "warehouse.url",
    "warehouse.password",
    "warehouse.schema",
    "warehouse.sslmode",
    "warehouse.ssl_root_cert",
    "warehouse.batch_rows",
    "maintain.after_refresh",
    "maintain.vacuum_retention",
    "maintain.target_file_size",
    "project.tests",
];

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
    #[error("failed to apply {origin}: unknown key `{key}` (known keys: {})", KEYS.join(", "))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it came from, such as `environment variable LAKE_ROOTT`.
        origin: String,
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
        expected: &'static str,
    },
}

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
    pub vacuum_retention: Option<String>,
    /// The size compaction aims for, in bytes [default: the table's, else 100 MiB].
    pub target_file_size: Option<u64>,
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
    pub warn_after: Option<String>,
    /// `lake status` fails when the target's last update is older than this (`50h`).
    pub error_after: Option<String>,
}

/// The fields of a source that the environment and `--set` can set.
pub const SOURCE_KEYS: &[&str] = &[
    "url",
    "password",
    "table",
    "query",
    "target",
    "mode",
    "cursor",
    "primary_key",
    "lookback",
    "batch_rows",
    "warn_after",
    "error_after",
];

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
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
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
    ) -> Result<Self, ConfigError> {
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
        let file = match &config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    cause: source,
                })?;
                toml::from_str::<FileSettings>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string().trim_end().to_string(),
                })?
            }
            None => FileSettings::default(),
        };
        let project_dir = match &config_file {
            Some(path) => path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| cwd.to_path_buf()),
            None => cwd.to_path_buf(),
        };
        let mut settings = Settings {
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
            schedule: file.schedule,
        };
        for (var, key) in SPOTIFY_ENV {
            if let Some((_, value)) = all.iter().find(|(k, _)| k == var) {
                settings.set(key, value, &format!("environment variable {var}"))?;
            }
        }

        let mut env_keys: Vec<_> = env
            .iter()
            .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
            .collect();
        env_keys.sort();
        // A source's keys are `sources.<name>.<field>`: LAKE_SOURCES_CRM_PASSWORD for a source
        // named crm in lake.toml.
        let source_keys: Vec<String> = settings
            .sources
            .keys()
            .flat_map(|n| SOURCE_KEYS.iter().map(move |f| format!("sources.{n}.{f}")))
            .collect();
        for (var, value) in env_keys {
            let key = KEYS
                .iter()
                .map(|k| k.to_string())
                .chain(source_keys.iter().cloned())
                .find(|key| env_name(key) == *var)
                .ok_or_else(|| ConfigError::UnknownKey {
                    key: var.clone(),
                    origin: format!("environment variable {var}"),
                })?;
            settings.set(&key, value, &format!("environment variable {var}"))?;
        }
        for pair in &overrides.set {
            let origin = format!("--set {pair}");
            let (key, value) = pair.split_once('=').ok_or_else(|| ConfigError::BadValue {
                key: pair.clone(),
                origin: origin.clone(),
                value: pair.clone(),
                expected: "KEY=VALUE",
            })?;
            settings.set(key.trim(), value.trim(), &origin)?;
        }
        if let Some(root) = &overrides.root {
            settings.set("root", root, "--root")?;
        }
        Ok(settings)
    }

    /// Sets one key from its text form.
    fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let text = || Some(value.to_string());
        let flag = || -> Result<Option<bool>, ConfigError> {
            match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(ConfigError::BadValue {
                    key: key.to_string(),
                    origin: origin.to_string(),
                    value: value.to_string(),
                    expected: "true or false",
                }),
            }
        };
        // Lists are comma-separated outside lake.toml.
        let list = || -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let number = || -> Result<u64, ConfigError> {
            value
                .parse::<u32>()
                .map(u64::from)
                .map_err(|_| ConfigError::BadValue {
                    key: key.to_string(),
                    origin: origin.to_string(),
                    value: value.to_string(),
                    expected: "a whole number",
                })
        };
        match key {
            "root" => self.root = value.to_string(),
            "s3.endpoint" => self.s3.endpoint = text(),
            "s3.region" => self.s3.region = text(),
            "s3.profile" => self.s3.profile = text(),
            "s3.allow_http" => self.s3.allow_http = flag()?,
            "s3.virtual_hosted_style" => self.s3.virtual_hosted_style = flag()?,
            "spotify.client_id" => self.spotify.client_id = text(),
            "spotify.client_secret" => {
                self.spotify.client_secret = Some(SecretString::from(value.to_string()))
            }
            "spotify.api_url" => self.spotify.api_url = text(),
            "spotify.accounts_url" => self.spotify.accounts_url = text(),
            "spotify.redirect_uri" => self.spotify.redirect_uri = text(),
            "spotify.token_file" => self.spotify.token_file = Some(PathBuf::from(value)),
            "spotify.playlists" => self.spotify.playlists = list(),
            "spotify.streams" => self.spotify.streams = Some(list()),
            "spotify.max_retries" => self.spotify.max_retries = Some(number()? as u32),
            "spotify.max_retry_after" => self.spotify.max_retry_after = Some(number()?),
            "spotify_export.personal_data" => {
                self.spotify_export.personal_data = match value.to_ascii_lowercase().as_str() {
                    "drop" => PersonalData::Drop,
                    "hash" => PersonalData::Hash,
                    "keep" => PersonalData::Keep,
                    _ => {
                        return Err(ConfigError::BadValue {
                            key: key.to_string(),
                            origin: origin.to_string(),
                            value: value.to_string(),
                            expected: "drop, hash or keep",
                        });
                    }
                }
            }
            "warehouse.url" => self.warehouse.url = Some(SecretString::from(value.to_string())),
            "warehouse.password" => {
                self.warehouse.password = Some(SecretString::from(value.to_string()))
            }
            "warehouse.schema" => self.warehouse.schema = text(),
            "warehouse.sslmode" => self.warehouse.sslmode = text(),
            "warehouse.ssl_root_cert" => self.warehouse.ssl_root_cert = Some(PathBuf::from(value)),
            "warehouse.batch_rows" => self.warehouse.batch_rows = Some(number()?),
            "maintain.after_refresh" => self.maintain.after_refresh = flag()?,
            "maintain.vacuum_retention" => self.maintain.vacuum_retention = text(),
            "maintain.target_file_size" => self.maintain.target_file_size = Some(number()?),
            "project.tests" => self.project.tests = Some(PathBuf::from(value)),
            source if source.starts_with("sources.") => {
                let unknown = || ConfigError::UnknownKey {
                    key: key.to_string(),
                    origin: origin.to_string(),
                };
                // `sources.<name>.casts.<column>`: one column's cast.
                if let Some((name, column)) = source["sources.".len()..]
                    .split_once(".casts.")
                    .filter(|(n, c)| !n.is_empty() && !c.is_empty())
                {
                    self.sources
                        .entry(name.to_string())
                        .or_default()
                        .casts
                        .insert(column.to_string(), value.to_string());
                    return Ok(());
                }
                let (name, field) = source["sources.".len()..]
                    .rsplit_once('.')
                    .ok_or_else(unknown)?;
                if name.is_empty() || !SOURCE_KEYS.contains(&field) {
                    return Err(unknown());
                }
                let batch_rows = if field == "batch_rows" {
                    Some(number()?)
                } else {
                    None
                };
                let mode = match (field, value.to_ascii_lowercase().as_str()) {
                    ("mode", "full") => Some(SourceMode::Full),
                    ("mode", "incremental") => Some(SourceMode::Incremental),
                    ("mode", _) => {
                        return Err(ConfigError::BadValue {
                            key: key.to_string(),
                            origin: origin.to_string(),
                            value: value.to_string(),
                            expected: "full or incremental",
                        });
                    }
                    _ => None,
                };
                let keys = list();
                let src = self.sources.entry(name.to_string()).or_default();
                match field {
                    "url" => src.url = Some(SecretString::from(value.to_string())),
                    "password" => src.password = Some(SecretString::from(value.to_string())),
                    "table" => src.table = text(),
                    "query" => src.query = text(),
                    "target" => src.target = text(),
                    "mode" => src.mode = mode.unwrap_or_default(),
                    "cursor" => src.cursor = text(),
                    "primary_key" => src.primary_key = keys,
                    "lookback" => src.lookback = text(),
                    "warn_after" => src.warn_after = text(),
                    "error_after" => src.error_after = text(),
                    _ => src.batch_rows = batch_rows,
                }
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_string(),
                    origin: origin.to_string(),
                });
            }
        }
        Ok(())
    }
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
