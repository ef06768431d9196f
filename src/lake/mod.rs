//! The lake: Delta tables under one root, on a local folder or S3, stored as
//! `<root>/<schema>/<name>/`.
//!
//! This module knows where tables live and how to open, list and describe them. Writing is in
//! [`write`]; reading with SQL is in [`crate::query`].

pub mod changes;
pub mod keys;
pub mod layout;
pub mod lease;
pub mod maintain;
mod name;
pub mod scan;
pub mod sessions;
pub mod write;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::logstore::LogStoreRef;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::config::Settings;
pub use name::{CURATED, INTERNAL, PartError, RAW, TableName, quote_ident, validate_part};
pub use sessions::Sessions;

/// Errors from the lake stage.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A table name that is not `schema.name` with safe parts.
    #[error("invalid table name `{name}`: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        why: String,
    },
    /// The spill folder cannot be made or locked.
    #[error("failed to create the spill folder under {} ([query] spill_dir)", path.display())]
    Spill {
        /// The spill directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        cause: std::io::Error,
    },
    /// The root setting cannot be used.
    #[error("failed to use lake root `{root}`: {why}")]
    InvalidRoot {
        /// The root as configured.
        root: String,
        /// Why.
        why: String,
    },
    /// A table that does not exist.
    #[error("table {0} does not exist")]
    NotFound(TableName),
    /// Delta could not open a table.
    #[error("failed to open table {table}: {cause}")]
    Open {
        /// The table.
        table: String,
        /// Why.
        cause: Box<DeltaTableError>,
    },
    /// The salt object could not be read or created.
    #[error("failed to read the salt of lake {root}: {cause}")]
    Salt {
        /// The root.
        root: String,
        /// Why.
        cause: object_store::Error,
    },
    /// Listing the lake failed.
    #[error("failed to list tables under {root}: {cause}")]
    List {
        /// The root.
        root: String,
        /// Why.
        cause: object_store::Error,
    },
    /// Reading a table's log failed.
    #[error("failed to read the history of {table}: {cause}")]
    History {
        /// The table.
        table: TableName,
        /// Why.
        cause: Box<DeltaTableError>,
    },
    /// An incoming column's type cannot go into the table's column.
    #[error(
        "failed to write {table}: column `{column}` is {table_type} in the table but {incoming_type} in the input; the table is unchanged"
    )]
    IncompatibleType {
        /// The table.
        table: TableName,
        /// The column.
        column: String,
        /// Its type in the table.
        table_type: String,
        /// Its type in the input.
        incoming_type: String,
    },
    /// A merge key that the input or table lacks, or that has nulls.
    #[error("failed to merge into {table}: {why}")]
    MergeKey {
        /// The table.
        table: TableName,
        /// Why.
        why: String,
    },
    /// A view's definition could not be read or written.
    #[error("failed to read or write {name}: {cause}")]
    View {
        /// The view.
        name: String,
        /// Why.
        cause: object_store::Error,
    },
    /// A maintenance step failed; what it had committed before stays.
    #[error("failed to maintain {table}: {why}")]
    Maintain {
        /// The table.
        table: TableName,
        /// The step and why.
        why: String,
    },
    /// A lease could not be read or written.
    #[error("failed to read or write lease {name}: {cause}")]
    Lease {
        /// The lease.
        name: String,
        /// Why.
        cause: object_store::Error,
    },
    /// Another process holds a lease this process wanted, past the wait it was given.
    #[error("failed to take lease {name}: another process holds the lake: {holder}")]
    LeaseHeld {
        /// The lease.
        name: String,
        /// Who holds it (described).
        holder: String,
    },
    /// Another process took a lease this process held, after it expired.
    #[error("failed to keep lease {name}: it expired and was taken by {holder}")]
    LeaseLost {
        /// The lease.
        name: String,
        /// Who holds it now.
        holder: String,
    },
    /// The write itself failed; nothing was committed.
    #[error("failed to write {table}: {cause}; the table is unchanged")]
    Write {
        /// The table.
        table: TableName,
        /// Why.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A `Result` whose error is a [`LakeError`].
pub type Result<T, E = LakeError> = std::result::Result<T, E>;

impl LakeError {
    fn open(table: impl ToString, source: DeltaTableError) -> Self {
        Self::Open {
            table: table.to_string(),
            cause: Box::new(source),
        }
    }
}

/// A lake: a root location plus the storage options to reach it.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    /// Options for deltalake's object store factory. They may hold an endpoint and a profile
    /// name but never credentials; those come from the AWS environment.
    options: HashMap<String, String>,
    /// Where every DataFusion session over this lake comes from.
    sessions: Sessions,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .finish_non_exhaustive()
    }
}

/// Facts about one table, for `lake tables` and `lake describe`.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The table.
    pub name: TableName,
    /// The current version.
    pub version: u64,
    /// Rows, from the file statistics.
    pub rows: u64,
    /// Data files.
    pub files: usize,
    /// Bytes of data files.
    pub bytes: u64,
    /// When the current version was committed.
    pub last_commit: Option<DateTime<Utc>>,
}

/// One commit, for `lake history`.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The version it created.
    pub version: u64,
    /// When.
    pub timestamp: Option<DateTime<Utc>>,
    /// The operation, such as `WRITE` or `MERGE`.
    pub operation: String,
    /// Its parameters, as JSON.
    pub parameters: String,
    /// Its metrics, as JSON, where the writer recorded them.
    pub metrics: String,
}

impl Lake {
    /// Opens the lake the settings describe. Nothing is read until a table is used, except the
    /// credentials of an AWS profile named in `s3.profile`.
    pub async fn open(settings: &Settings) -> Result<Self> {
        let invalid = |why: String| LakeError::InvalidRoot {
            root: settings.root.clone(),
            why,
        };
        let root = &settings.root;
        let Some((scheme, _)) = root.split_once("://") else {
            let path = crate::paths::under(&settings.project_dir, root);
            std::fs::create_dir_all(&path)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            let path = path.canonicalize().map_err(|e| invalid(e.to_string()))?;
            let url = Url::from_directory_path(&path)
                .map_err(|()| invalid("not an absolute path".into()))?;
            return Ok(Self {
                root: url,
                options: HashMap::new(),
                sessions: Sessions::new(&settings.query, &settings.project_dir),
            });
        };
        if !matches!(scheme, "s3" | "s3a") {
            return Err(invalid(format!(
                "`{scheme}://` is not supported; use a folder or s3://bucket/prefix"
            )));
        }
        let mut url = Url::parse(root).map_err(|e| invalid(e.to_string()))?;
        if url.host_str().unwrap_or("").is_empty() {
            return Err(invalid("the URL names no bucket".into()));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let s3 = &settings.s3;
        let mut options = HashMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                options.insert(k.to_string(), v);
            }
        };
        put("AWS_ENDPOINT_URL", s3.endpoint.clone());
        put("AWS_ALLOW_HTTP", s3.allow_http.map(|b| b.to_string()));
        put(
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
            s3.virtual_hosted_style.map(|b| b.to_string()),
        );
        // Fail within seconds, not minutes, when an endpoint does not answer.
        put("max_retries", Some("3".into()));
        put("retry_timeout", Some("20s".into()));
        let mut region = s3.region.clone();
        if let Some(profile) = &s3.profile {
            // The AWS SDK reads the profile as the AWS CLI does (static keys, SSO,
            // credential_process, assume-role chains); its credentials and region are used.
            let (creds, profile_region) = profile_credentials(root, profile).await?;
            put("AWS_ACCESS_KEY_ID", Some(creds.access_key_id().to_string()));
            put(
                "AWS_SECRET_ACCESS_KEY",
                Some(creds.secret_access_key().to_string()),
            );
            put(
                "AWS_SESSION_TOKEN",
                creds.session_token().map(str::to_string),
            );
            region = region.or(profile_region);
        } else if std::env::var_os("AWS_PROFILE").is_some() {
            // Let the SDK's default chain resolve AWS_PROFILE even for a non-AWS endpoint.
            put("AWS_FORCE_CREDENTIAL_LOAD", Some("true".into()));
        }
        put("AWS_REGION", region);
        Ok(Self {
            root: url,
            options,
            sessions: Sessions::new(&settings.query, &settings.project_dir),
        })
    }

    /// Adds a storage option, such as credentials for a library caller that holds them
    /// already. Options are never printed.
    pub fn with_storage_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// The factory of DataFusion sessions over this lake.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The root URL, ending in `/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The root without credentials or trailing slash, for messages.
    pub fn display_root(&self) -> String {
        self.root.as_str().trim_end_matches('/').to_string()
    }

    /// Where a table lives.
    pub fn table_url(&self, name: &TableName) -> Url {
        // Both parts are validated to `[a-z0-9_]`, so joining cannot escape the root.
        self.root
            .join(&format!("{}/{}/", name.schema(), name.name()))
            .expect("validated names join")
    }

    /// The storage options for a URL in this lake (tables and input files alike).
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The object store at the root, and the root's path within it.
    pub fn log_store(&self, url: &Url) -> Result<LogStoreRef> {
        DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| b.with_storage_options(self.options.clone()).build_storage())
            .map_err(|source| LakeError::open(url, source))
    }

    /// A handle on a table that may not exist yet, with its state loaded if it does.
    pub async fn table_or_new(&self, name: &TableName) -> Result<DeltaTable> {
        let url = self.table_url(name);
        if let Ok(path) = url.to_file_path() {
            // delta-kernel refuses a local location that does not exist yet.
            std::fs::create_dir_all(&path).map_err(|e| {
                let why = DeltaTableError::Generic(format!("{}: {e}", path.display()));
                LakeError::open(name, why)
            })?;
        }
        let open_err = |source| LakeError::open(name, source);
        let mut table = DeltaTableBuilder::from_url(url)
            .and_then(|b| b.with_storage_options(self.options.clone()).build())
            .map_err(open_err)?;
        match table.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
            Err(e) => Err(open_err(e)),
        }
    }

    /// Opens an existing table at its latest version, or at `version`, or as of `at`.
    pub async fn table(
        &self,
        name: &TableName,
        version: Option<u64>,
        at: Option<DateTime<Utc>>,
    ) -> Result<DeltaTable> {
        let mut builder = DeltaTableBuilder::from_url(self.table_url(name))
            .map_err(|source| LakeError::open(name, source))?
            .with_storage_options(self.options.clone());
        if let Some(v) = version {
            builder = builder.with_version(v);
        }
        if let Some(at) = at {
            builder = builder.with_timestamp(at);
        }
        builder.load().await.map_err(|e| match e {
            e if is_missing(&e) => LakeError::NotFound(name.clone()),
            source => LakeError::open(name, source),
        })
    }

    /// The lake's own random salt, for hashing personal data, created on first use. Two
    /// processes creating it at once agree: the second create fails and reads the first.
    pub async fn salt(&self) -> Result<String> {
        let store = self.log_store(&self.root)?.root_object_store(None);
        let path = self.internal_path(&["salt"]);
        let salt_err = |source| LakeError::Salt {
            root: self.display_root(),
            cause: source,
        };
        for _ in 0..3 {
            match store.get(&path).await {
                Ok(found) => {
                    let bytes = found.bytes().await.map_err(salt_err)?;
                    return Ok(String::from_utf8_lossy(&bytes).trim().to_string());
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(salt_err(e)),
            }
            let fresh = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            let opts = object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            match store.put_opts(&path, fresh.clone().into(), opts).await {
                Ok(_) => return Ok(fresh),
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(salt_err(e)),
            }
        }
        Err(salt_err(object_store::Error::Generic {
            store: "lake",
            source: "the salt object kept changing".into(),
        }))
    }

    /// Where lake keeps its own objects: `<root>/_lake/<parts...>`.
    fn internal_path(&self, parts: &[&str]) -> StorePath {
        let mut path = StorePath::from_url_path(self.root.path())
            .unwrap_or_default()
            .join(INTERNAL);
        for p in parts {
            path = path.join(*p);
        }
        path
    }

    /// The views the models define, sorted, each with its SQL. A view is a file
    /// `<root>/_lake/views/<schema>.<name>.sql`, so ad-hoc queries see it too.
    pub async fn views(&self) -> Result<Vec<(TableName, String)>> {
        let store = self.log_store(&self.root)?.root_object_store(None);
        let dir = self.internal_path(&["views"]);
        let view_err = |source| LakeError::View {
            name: "the views under _lake/views".into(),
            cause: source,
        };
        let listing: Vec<_> = store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(view_err)?;
        let mut out = Vec::new();
        for meta in listing {
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let Some((schema, name)) = file
                .strip_suffix(".sql")
                .and_then(|stem| stem.split_once('.'))
            else {
                continue;
            };
            let Ok(table) = TableName::new(schema, name) else {
                continue;
            };
            let bytes = store
                .get(&meta.location)
                .await
                .map_err(view_err)?
                .bytes()
                .await
                .map_err(view_err)?;
            out.push((table, String::from_utf8_lossy(&bytes).into_owned()));
        }
        out.sort();
        Ok(out)
    }

    /// Defines (or redefines) a view, in one PUT.
    pub async fn put_view(&self, name: &TableName, sql: &str) -> Result<()> {
        let store = self.log_store(&self.root)?.root_object_store(None);
        let path = self.internal_path(&["views", &format!("{name}.sql")]);
        store
            .put(&path, sql.to_string().into())
            .await
            .map_err(|source| LakeError::View {
                name: format!("view {name}"),
                cause: source,
            })?;
        Ok(())
    }

    /// Removes a view's definition, if there is one.
    pub async fn drop_view(&self, name: &TableName) -> Result<()> {
        let store = self.log_store(&self.root)?.root_object_store(None);
        let path = self.internal_path(&["views", &format!("{name}.sql")]);
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(LakeError::View {
                name: format!("view {name}"),
                cause: source,
            }),
        }
    }

    /// Every table in the lake, sorted. Costs one listing per schema and per table folder.
    pub async fn list_tables(&self) -> Result<Vec<TableName>> {
        let store = self.log_store(&self.root)?.root_object_store(None);
        let base = StorePath::from_url_path(self.root.path()).unwrap_or_default();
        let list_err = |source| LakeError::List {
            root: self.display_root(),
            cause: source,
        };
        let mut tables = Vec::new();
        for schema in child_dirs(store.as_ref(), &base).await.map_err(list_err)? {
            if validate_part(&schema).is_err() {
                continue;
            }
            let schema_path = base.clone().join(schema.as_str());
            for name in child_dirs(store.as_ref(), &schema_path)
                .await
                .map_err(list_err)?
            {
                let Ok(table) = TableName::new(&schema, &name) else {
                    continue;
                };
                let log = schema_path.clone().join(name.as_str());
                if child_dirs(store.as_ref(), &log)
                    .await
                    .map_err(list_err)?
                    .iter()
                    .any(|d| d == "_delta_log")
                {
                    tables.push(table);
                }
            }
        }
        tables.sort();
        Ok(tables)
    }

    /// Version, rows, files, size and last commit of a table.
    pub async fn info(&self, name: &TableName) -> Result<TableInfo> {
        let table = self.table(name, None, None).await?;
        Ok(table_info(name, &table))
    }

    /// The commits of a table, newest first.
    pub async fn history(&self, name: &TableName, limit: Option<usize>) -> Result<Vec<Commit>> {
        let table = self.table(name, None, None).await?;
        let current = table.version().unwrap_or(0);
        let infos: Vec<_> =
            table
                .history(limit)
                .try_collect()
                .await
                .map_err(|source| LakeError::History {
                    table: name.clone(),
                    cause: Box::new(source),
                })?;
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| Commit {
                version: info
                    .info
                    .get("version")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(current.saturating_sub(i as u64)),
                timestamp: info.timestamp.and_then(DateTime::from_timestamp_millis),
                operation: info.operation.unwrap_or_default(),
                parameters: info
                    .operation_parameters
                    .map(|p| {
                        serde_json::to_string(
                            &p.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                        )
                        .unwrap_or_default()
                    })
                    .unwrap_or_default(),
                metrics: info
                    .info
                    .get("operationMetrics")
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            })
            .collect())
    }
}

/// Summarizes a loaded table.
pub fn table_info(name: &TableName, table: &DeltaTable) -> TableInfo {
    let (mut rows, mut files, mut bytes) = (0u64, 0usize, 0u64);
    let mut last_commit = None;
    if let Ok(state) = table.snapshot() {
        for file in state.log_data().iter() {
            files += 1;
            bytes += file.size().max(0) as u64;
            rows += file.num_records().unwrap_or(0) as u64;
        }
        last_commit = state
            .version_timestamp(state.version())
            .and_then(DateTime::from_timestamp_millis);
    }
    TableInfo {
        name: name.clone(),
        version: table.version().unwrap_or(0),
        rows,
        files,
        bytes,
        last_commit,
    }
}

/// Loads a named profile's credentials and region from the AWS config files, as the AWS CLI's
/// `--profile` does (static keys, SSO, credential_process, assume-role chains).
async fn profile_credentials(
    root: &str,
    profile: &str,
) -> Result<(aws_credential_types::Credentials, Option<String>)> {
    use aws_config::meta::region::ProvideRegion;
    use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
    use aws_credential_types::provider::ProvideCredentials;
    let provider = ProfileFileCredentialsProvider::builder()
        .profile_name(profile)
        .build();
    let creds = provider.provide_credentials().await.map_err(|e| {
        let why =
            if let aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(
                _,
            ) = e
            {
                format!(
                    "AWS profile `{profile}` was not found in ~/.aws/config or ~/.aws/credentials \
                 (or the files AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE name)"
                )
            } else {
                // The SDK's top-level message is generic; its causes say what is wrong.
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why = format!("{why}: {c}");
                    cause = c.source();
                }
                format!("failed to load credentials of AWS profile `{profile}`: {why}")
            };
        LakeError::InvalidRoot {
            root: root.to_string(),
            why,
        }
    })?;
    let region = ProfileFileRegionProvider::builder()
        .profile_name(profile)
        .build()
        .region()
        .await;
    Ok((creds, region.map(|r| r.to_string())))
}

/// Whether opening failed because there is no table at the location.
fn is_missing(e: &DeltaTableError) -> bool {
    match e {
        DeltaTableError::NotATable(_) => true,
        // delta-kernel reports a missing local folder or an empty log this way.
        other => {
            let text = other.to_string();
            text.contains("does not exist") || text.contains("No files in log segment")
        }
    }
}

/// The names of the objects directly under `prefix`.
async fn list_names(
    store: &dyn ObjectStore,
    prefix: &StorePath,
) -> Result<Vec<String>, object_store::Error> {
    let listing = store.list_with_delimiter(Some(prefix)).await?;
    Ok(listing
        .objects
        .iter()
        .filter_map(|o| o.location.filename().map(str::to_string))
        .collect())
}

/// The names of the folders directly under `prefix`.
async fn child_dirs(
    store: &dyn ObjectStore,
    prefix: &StorePath,
) -> Result<Vec<String>, object_store::Error> {
    let listing = store.list_with_delimiter(Some(prefix)).await?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

/// Shared handle type used by the query and write paths.
pub type SharedLake = Arc<Lake>;
