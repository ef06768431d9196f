//! The warehouse connection and the staged, swapped load of one table.

use std::path::Path;
use std::str::FromStr;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::ExposeSecret;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgPool, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Executor};

use super::ExportError;
use super::types::{Cell, Dialect, TextColumn, cells, copy_escape};
use crate::config::WarehouseSettings;

/// Where a table goes: a schema (PostgreSQL) or database (MySQL), and a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The schema or database; the connection's own when none.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// A connected warehouse.
pub struct Warehouse {
    pool: Pool,
    redacted: String,
    /// The `[warehouse] schema`, for targets that name none.
    pub default_schema: Option<String>,
    batch_rows: usize,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

impl Warehouse {
    /// Connects as the settings say; `project_dir` anchors a relative SQLite path.
    pub async fn connect(
        settings: &WarehouseSettings,
        project_dir: &Path,
    ) -> Result<Self, ExportError> {
        let url = settings
            .url
            .as_ref()
            .map(|u| u.expose_secret().to_string())
            .unwrap_or_else(|| "sqlite://warehouse.db".to_string());
        let redacted = crate::db::redact_url(&url);
        let connect_err = |source| ExportError::Connect {
            warehouse: redacted.clone(),
            source,
        };
        let config_err = |e: sqlx::Error| {
            // sqlx's URL errors can quote the URL; say only what kind of problem it is.
            ExportError::Config(format!(
                "the URL {redacted} does not parse: {}",
                match e {
                    sqlx::Error::Configuration(_) => "a bad URL or option".to_string(),
                    other => other.to_string().replace(&url, &redacted),
                }
            ))
        };
        let password = settings
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_string());
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let pool = match scheme.as_str() {
            "postgres" | "postgresql" => {
                let mut o = PgConnectOptions::from_str(&url).map_err(config_err)?;
                if let Some(p) = &password {
                    o = o.password(p);
                }
                if let Some(mode) = &settings.sslmode {
                    o = o.ssl_mode(PgSslMode::from_str(mode).map_err(|_| {
                        ExportError::Config(format!("sslmode `{mode}`: expected disable, allow, prefer, require, verify-ca or verify-full"))
                    })?);
                }
                if let Some(cert) = &settings.ssl_root_cert {
                    o = o.ssl_root_cert(crate::paths::under(project_dir, cert));
                }
                Pool::Postgres(crate::db::pool(o, 2).await.map_err(connect_err)?)
            }
            "mysql" | "mariadb" => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let mut o = MySqlConnectOptions::from_str(&url).map_err(config_err)?;
                if let Some(p) = &password {
                    o = o.password(p);
                }
                if let Some(mode) = &settings.sslmode {
                    let m = match mode.as_str() {
                        "disable" => MySqlSslMode::Disabled,
                        "prefer" => MySqlSslMode::Preferred,
                        "require" => MySqlSslMode::Required,
                        "verify-ca" => MySqlSslMode::VerifyCa,
                        "verify-full" => MySqlSslMode::VerifyIdentity,
                        other => {
                            return Err(ExportError::Config(format!(
                                "sslmode `{other}`: expected disable, prefer, require, verify-ca or verify-full"
                            )));
                        }
                    };
                    o = o.ssl_mode(m);
                }
                if let Some(cert) = &settings.ssl_root_cert {
                    o = o.ssl_ca(crate::paths::under(project_dir, cert));
                }
                Pool::MySql(crate::db::pool(o, 2).await.map_err(connect_err)?)
            }
            "sqlite" => {
                let path = crate::db::sqlite_path(&url);
                if path.is_empty() {
                    return Err(ExportError::Config(format!(
                        "the URL {redacted} names no database file"
                    )));
                }
                let o = SqliteConnectOptions::new()
                    .filename(crate::paths::under(project_dir, path))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(std::time::Duration::from_secs(30));
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(o)
                        .await
                        .map_err(connect_err)?,
                )
            }
            other => {
                return Err(ExportError::Config(format!(
                    "the URL {redacted} has scheme `{other}`; use postgres://, mysql:// or sqlite://"
                )));
            }
        };
        Ok(Self {
            pool,
            redacted,
            default_schema: settings.schema.clone(),
            batch_rows: settings.batch_rows.unwrap_or(1000).max(1) as usize,
        })
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::MySql(_) => Dialect::MySql,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The URL without its password.
    pub fn redacted(&self) -> String {
        self.redacted.clone()
    }

    /// `schema.name` as the warehouse sees it, quoted.
    fn qualified(&self, schema: Option<&str>, name: &str) -> String {
        let d = self.dialect();
        match schema.or(self.default_schema.as_deref()) {
            Some(s) if d != Dialect::Sqlite => format!("{}.{}", d.quote(s), d.quote(name)),
            _ => d.quote(name),
        }
    }

    /// The target as shown in output and records.
    pub fn describe(&self, target: &Target) -> String {
        match target.schema.as_ref().or(self.default_schema.as_ref()) {
            Some(s) if self.dialect() != Dialect::Sqlite => format!("{s}.{}", target.name),
            _ => target.name.clone(),
        }
    }

    /// Whether the target table exists.
    pub async fn exists(&self, target: &Target) -> Result<bool, ExportError> {
        let schema = target.schema.clone().or(self.default_schema.clone());
        let load_err = |source| ExportError::Load {
            target: self.describe(target),
            source,
        };
        let found: i64 = match &self.pool {
            Pool::Postgres(p) => sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2",
            )
            .bind(schema)
            .bind(&target.name)
            .fetch_one(p)
            .await
            .map_err(load_err)?,
            Pool::MySql(p) => sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = coalesce(?, database()) AND table_name = ?",
            )
            .bind(schema)
            .bind(&target.name)
            .fetch_one(p)
            .await
            .map_err(load_err)?,
            Pool::Sqlite(p) => sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
            )
            .bind(&target.name)
            .fetch_one(p)
            .await
            .map_err(load_err)?,
        };
        Ok(found > 0)
    }

    /// Loads `batches` into a staging table and swaps it in for `target`; returns the rows.
    pub async fn replace(
        &self,
        target: &Target,
        schema: &SchemaRef,
        key: &[String],
        batches: BoxStream<'_, Result<RecordBatch, ExportError>>,
    ) -> Result<u64, ExportError> {
        let d = self.dialect();
        let target_schema = target.schema.as_deref().or(self.default_schema.as_deref());
        let final_name = self.qualified(target_schema, &target.name);
        let staging_name = format!("{}__lake_staging", target.name);
        let staging = self.qualified(target_schema, &staging_name);
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let is_key = key.iter().any(|k| k == f.name());
                format!(
                    "{} {}",
                    d.quote(f.name()),
                    d.column_type(f.data_type(), is_key)
                )
            })
            .collect();
        let column_list: Vec<String> = schema.fields().iter().map(|f| d.quote(f.name())).collect();
        let column_list = column_list.join(", ");
        let key_list: Vec<String> = key.iter().map(|k| d.quote(k)).collect();
        let key_list = key_list.join(", ");
        let create = format!("CREATE TABLE {staging} ({})", columns.join(", "));
        let load_err = |source| ExportError::Load {
            target: self.describe(target),
            source,
        };
        match &self.pool {
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(load_err)?;
                if let Some(s) = target_schema {
                    conn.execute(AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS {}",
                        d.quote(s)
                    )))
                    .await
                    .map_err(load_err)?;
                }
                conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {staging}")))
                    .await
                    .map_err(load_err)?;
                conn.execute(AssertSqlSafe(create))
                    .await
                    .map_err(load_err)?;
                let rows = copy_into(&mut conn, &staging, &column_list, batches, || {
                    self.describe(target)
                })
                .await?;
                let index = format!("{}__lake_key", target.name);
                if !key.is_empty() {
                    // Text keys are indexed byte-wise (COLLATE "C"): equality is the same, so
                    // ON CONFLICT still finds the index, and the build takes half the time.
                    let indexed: Vec<String> = key
                        .iter()
                        .map(|k| {
                            let text = schema.field_with_name(k).is_ok_and(|f| {
                                matches!(
                                    f.data_type(),
                                    arrow::datatypes::DataType::Utf8
                                        | arrow::datatypes::DataType::LargeUtf8
                                        | arrow::datatypes::DataType::Utf8View
                                )
                            });
                            if text {
                                format!("{} COLLATE \"C\"", d.quote(k))
                            } else {
                                d.quote(k)
                            }
                        })
                        .collect();
                    conn.execute(AssertSqlSafe(format!(
                        "CREATE UNIQUE INDEX {} ON {staging} ({})",
                        d.quote(&format!("{index}_new")),
                        indexed.join(", ")
                    )))
                    .await
                    .map_err(load_err)?;
                }
                // The swap: one transaction, so readers see the old table or the new one.
                let mut swap = format!(
                    "BEGIN; DROP TABLE IF EXISTS {final_name}; ALTER TABLE {staging} RENAME TO {};",
                    d.quote(&target.name)
                );
                if !key.is_empty() {
                    let schema_prefix = target_schema
                        .map(|s| format!("{}.", d.quote(s)))
                        .unwrap_or_default();
                    swap.push_str(&format!(
                        " ALTER INDEX {schema_prefix}{} RENAME TO {};",
                        d.quote(&format!("{index}_new")),
                        d.quote(&index)
                    ));
                }
                swap.push_str(" COMMIT;");
                if let Err(e) = sqlx::raw_sql(AssertSqlSafe(swap)).execute(&mut *conn).await {
                    let _ = conn.execute("ROLLBACK").await;
                    return Err(load_err(e));
                }
                Ok(rows)
            }
            Pool::MySql(pool) => {
                let mut conn = pool.acquire().await.map_err(load_err)?;
                if let Some(s) = target_schema {
                    conn.execute(AssertSqlSafe(format!(
                        "CREATE DATABASE IF NOT EXISTS {}",
                        d.quote(s)
                    )))
                    .await
                    .map_err(load_err)?;
                }
                conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {staging}")))
                    .await
                    .map_err(load_err)?;
                let create = if key.is_empty() {
                    create
                } else {
                    format!(
                        "{}, UNIQUE KEY {} ({key_list}))",
                        create.trim_end_matches(')'),
                        d.quote("lake_key")
                    )
                };
                conn.execute(AssertSqlSafe(format!(
                    "{create} DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                )))
                .await
                .map_err(load_err)?;
                let rows = mysql_insert(
                    &mut conn,
                    &format!("INSERT INTO {staging} ({column_list}) "),
                    "",
                    self.batch_rows,
                    batches,
                    &self.describe(target),
                )
                .await?;
                let exists = self.exists(target).await?;
                let swap = if exists {
                    let old = self.qualified(target_schema, &format!("{}__lake_old", target.name));
                    conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                        .await
                        .map_err(load_err)?;
                    // Both renames in one statement: atomic for readers.
                    format!("RENAME TABLE {final_name} TO {old}, {staging} TO {final_name}")
                } else {
                    format!("RENAME TABLE {staging} TO {final_name}")
                };
                conn.execute(AssertSqlSafe(swap)).await.map_err(load_err)?;
                if exists {
                    let old = self.qualified(target_schema, &format!("{}__lake_old", target.name));
                    conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                        .await
                        .map_err(load_err)?;
                }
                Ok(rows)
            }
            Pool::Sqlite(pool) => {
                // One transaction holds the drop, the create and every row.
                let mut tx = pool.begin().await.map_err(load_err)?;
                tx.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {final_name}")))
                    .await
                    .map_err(load_err)?;
                tx.execute(AssertSqlSafe(format!(
                    "CREATE TABLE {final_name} ({})",
                    columns.join(", ")
                )))
                .await
                .map_err(load_err)?;
                let head = format!("INSERT INTO {final_name} ({column_list}) ");
                let rows =
                    sqlite_insert(&mut tx, &head, "", batches, &self.describe(target)).await?;
                if !key.is_empty() {
                    tx.execute(AssertSqlSafe(format!(
                        "CREATE UNIQUE INDEX {} ON {} ({key_list})",
                        d.quote(&format!("{}__lake_key", target.name)),
                        d.quote(&target.name)
                    )))
                    .await
                    .map_err(load_err)?;
                }
                tx.commit().await.map_err(load_err)?;
                Ok(rows)
            }
        }
    }
    /// Upserts `batches` into `target` on `key`, in one transaction.
    pub async fn upsert(
        &self,
        target: &Target,
        schema: &SchemaRef,
        key: &[String],
        batches: BoxStream<'_, Result<RecordBatch, ExportError>>,
    ) -> Result<u64, ExportError> {
        let d = self.dialect();
        let target_schema = target.schema.as_deref().or(self.default_schema.as_deref());
        let table = self.qualified(target_schema, &target.name);
        let names: Vec<String> = schema.fields().iter().map(|f| d.quote(f.name())).collect();
        let column_list = names.join(", ");
        let key_list: Vec<String> = key.iter().map(|k| d.quote(k)).collect();
        let key_list = key_list.join(", ");
        let others: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| !key.contains(f.name()))
            .map(|f| d.quote(f.name()))
            .collect();
        let load_err = |source| ExportError::Load {
            target: self.describe(target),
            source,
        };
        match &self.pool {
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(load_err)?;
                let temp = d.quote(&format!("{}__lake_upsert", target.name));
                conn.execute(AssertSqlSafe(format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table}); TRUNCATE {temp}"
                )))
                .await
                .map_err(load_err)?;
                let rows = copy_into(&mut conn, &temp, &column_list, batches, || {
                    self.describe(target)
                })
                .await?;
                let set = if others.is_empty() {
                    "NOTHING".to_string()
                } else {
                    let s: Vec<String> = others
                        .iter()
                        .map(|c| format!("{c} = EXCLUDED.{c}"))
                        .collect();
                    format!("UPDATE SET {}", s.join(", "))
                };
                conn.execute(AssertSqlSafe(format!(
                    "INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {temp} ON CONFLICT ({key_list}) DO {set}"
                )))
                .await
                .map_err(load_err)?;
                conn.execute(AssertSqlSafe(format!("DROP TABLE {temp}")))
                    .await
                    .map_err(load_err)?;
                Ok(rows)
            }
            Pool::MySql(pool) => {
                let mut conn = pool.acquire().await.map_err(load_err)?;
                let set: Vec<String> = if others.is_empty() {
                    names.iter().take(1).map(|c| format!("{c} = {c}")).collect()
                } else {
                    others
                        .iter()
                        .map(|c| format!("{c} = VALUES({c})"))
                        .collect()
                };
                conn.execute("START TRANSACTION").await.map_err(load_err)?;
                let result = mysql_insert(
                    &mut conn,
                    &format!("INSERT INTO {table} ({column_list}) "),
                    &format!(" ON DUPLICATE KEY UPDATE {}", set.join(", ")),
                    self.batch_rows,
                    batches,
                    &self.describe(target),
                )
                .await;
                match result {
                    Ok(rows) => {
                        conn.execute("COMMIT").await.map_err(load_err)?;
                        Ok(rows)
                    }
                    Err(e) => {
                        let _ = conn.execute("ROLLBACK").await;
                        Err(e)
                    }
                }
            }
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(load_err)?;
                let set = if others.is_empty() {
                    "NOTHING".to_string()
                } else {
                    let s: Vec<String> = others
                        .iter()
                        .map(|c| format!("{c} = excluded.{c}"))
                        .collect();
                    format!("UPDATE SET {}", s.join(", "))
                };
                let head = format!("INSERT INTO {table} ({column_list}) ");
                let tail = format!(" ON CONFLICT ({key_list}) DO {set}");
                let rows =
                    sqlite_insert(&mut tx, &head, &tail, batches, &self.describe(target)).await?;
                tx.commit().await.map_err(load_err)?;
                Ok(rows)
            }
        }
    }
}

/// Streams batches into a table with COPY (text format).
async fn copy_into(
    conn: &mut sqlx::PgConnection,
    table: &str,
    column_list: &str,
    mut batches: BoxStream<'_, Result<RecordBatch, ExportError>>,
    target: impl Fn() -> String,
) -> Result<u64, ExportError> {
    let load_err = |source| ExportError::Load {
        target: target(),
        source,
    };
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} ({column_list}) FROM STDIN"))
        .await
        .map_err(load_err)?;
    // Encoding the next batch overlaps with sending the last one: a small queue between a
    // producer and the COPY.
    let (mut tx, mut rx) = futures::channel::mpsc::channel::<Vec<u8>>(2);
    let target = &target;
    let producer = async move {
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let mut buf = Vec::with_capacity(1 << 20);
            encode_copy(&batch, &mut buf).map_err(|e| ExportError::Encode {
                target: target(),
                message: e.to_string(),
            })?;
            if futures::SinkExt::send(&mut tx, buf).await.is_err() {
                // The COPY stopped; its error is the one to report.
                break;
            }
        }
        Ok::<(), ExportError>(())
    };
    let consumer = async {
        while let Some(buf) = rx.next().await {
            copy.send(buf.as_slice()).await?;
        }
        Ok::<(), sqlx::Error>(())
    };
    let (produced, consumed) = futures::join!(producer, consumer);
    match (produced, consumed) {
        (_, Err(e)) => {
            let _ = copy.abort("the load failed").await;
            Err(load_err(e))
        }
        (Err(e), _) => {
            let _ = copy.abort("the lake read failed").await;
            Err(e)
        }
        (Ok(()), Ok(())) => copy.finish().await.map_err(load_err),
    }
}

/// Sends batches as multi-row INSERTs: `head` is `INSERT INTO t (cols) `, `tail` follows
/// each statement's VALUES.
async fn mysql_insert(
    conn: &mut sqlx::MySqlConnection,
    head: &str,
    tail: &str,
    batch_rows: usize,
    mut batches: BoxStream<'_, Result<RecordBatch, ExportError>>,
    target: &str,
) -> Result<u64, ExportError> {
    let load_err = |source| ExportError::Load {
        target: target.to_string(),
        source,
    };
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let columns = batch_cells(&batch, target.to_string())?;
        // MySQL takes at most 65,535 parameters a statement.
        let per_insert = batch_rows.min(60_000 / columns.len().max(1)).max(1);
        for rows_of_statement in statements(batch.num_rows(), per_insert) {
            let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(head.to_string());
            q.push_values(rows_of_statement, |mut b, row| {
                for col in &columns {
                    match col[row].clone() {
                        Cell::Null => b.push_bind(None::<String>),
                        Cell::Bool(v) => b.push_bind(v),
                        Cell::Int(v) => b.push_bind(v),
                        Cell::UInt(v) => b.push_bind(v),
                        Cell::Float(v) => b.push_bind(v),
                        Cell::Text(v) => b.push_bind(v),
                        Cell::Bytes(v) => b.push_bind(v),
                        Cell::Date(v) => b.push_bind(v),
                        Cell::Timestamp(v) => b.push_bind(v),
                    };
                }
            });
            q.push(tail);
            q.build().execute(&mut *conn).await.map_err(load_err)?;
        }
        rows += batch.num_rows() as u64;
    }
    Ok(rows)
}

/// Sends batches as multi-row INSERTs inside the caller's transaction: `head` is `INSERT INTO
/// t (cols) `, `tail` follows each statement's VALUES. A statement a row cost 29 s for 626,000
/// rows (sqlx hands each statement to SQLite's worker thread).
async fn sqlite_insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    head: &str,
    tail: &str,
    mut batches: BoxStream<'_, Result<RecordBatch, ExportError>>,
    target: &str,
) -> Result<u64, ExportError> {
    let load_err = |source| ExportError::Load {
        target: target.to_string(),
        source,
    };
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let columns = batch_cells(&batch, target.to_string())?;
        // SQLite takes at most 32,766 parameters a statement; 500 rows is past the gain.
        let per_insert = (32_000 / columns.len().max(1)).clamp(1, 500);
        for rows_of_statement in statements(batch.num_rows(), per_insert) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(head.to_string());
            q.push_values(rows_of_statement, |mut b, row| {
                for col in &columns {
                    match col[row].clone() {
                        Cell::Null => b.push_bind(None::<String>),
                        Cell::Bool(v) => b.push_bind(v),
                        Cell::Int(v) => b.push_bind(v),
                        Cell::UInt(v) => b.push_bind(v as i64),
                        Cell::Float(v) => b.push_bind(v),
                        Cell::Text(v) => b.push_bind(v),
                        Cell::Bytes(v) => b.push_bind(v),
                        Cell::Date(v) => b.push_bind(v.format("%Y-%m-%d").to_string()),
                        Cell::Timestamp(v) => {
                            b.push_bind(v.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
                        }
                    };
                }
            });
            q.push(tail);
            q.build().execute(&mut **tx).await.map_err(load_err)?;
        }
        rows += batch.num_rows() as u64;
    }
    Ok(rows)
}

/// The rows of each multi-row INSERT: `rows` split into runs of at most `per`.
fn statements(rows: usize, per: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let per = per.max(1);
    (0..rows)
        .step_by(per)
        .map(move |start| start..(start + per).min(rows))
}

/// Every column of a batch as cells.
fn batch_cells(batch: &RecordBatch, target: String) -> Result<Vec<Vec<Cell>>, ExportError> {
    batch
        .columns()
        .iter()
        .map(cells)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExportError::Encode {
            target,
            message: e.to_string(),
        })
}

/// A batch in PostgreSQL's COPY text format, written straight into `out`: strings are
/// escaped in place, other scalars formatted in place, nested values go as JSON.
fn encode_copy(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), arrow::error::ArrowError> {
    use std::io::Write as _;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    use arrow::util::display::ArrayFormatter;

    use super::types::{binary_value, for_text, is_binary, is_nested, text_options};

    enum Col<'a> {
        Str(&'a dyn Array),
        Plain(&'a dyn Array, ArrayFormatter<'a>),
        Json(TextColumn),
        Binary(arrow::array::ArrayRef),
    }
    // Prepared first, so the formatters can borrow.
    let prepared: Vec<arrow::array::ArrayRef> = batch
        .columns()
        .iter()
        .map(for_text)
        .collect::<Result<_, _>>()?;
    let options = text_options();
    let columns: Vec<Col> = prepared
        .iter()
        .map(|a| -> Result<Col, arrow::error::ArrowError> {
            Ok(match a.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Col::Str(a.as_ref()),
                t if is_binary(t) => Col::Binary(a.clone()),
                t if is_nested(t) => Col::Json(TextColumn::new(a)?),
                _ => Col::Plain(a.as_ref(), ArrayFormatter::try_new(a.as_ref(), &options)?),
            })
        })
        .collect::<Result<_, _>>()?;
    let io = |e: std::io::Error| arrow::error::ArrowError::ExternalError(Box::new(e));
    for row in 0..batch.num_rows() {
        for (i, col) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match col {
                Col::Str(a) if a.is_null(row) => out.extend_from_slice(b"\\N"),
                Col::Str(a) => {
                    let v = match a.data_type() {
                        DataType::Utf8 => a.as_string::<i32>().value(row),
                        DataType::LargeUtf8 => a.as_string::<i64>().value(row),
                        _ => a.as_string_view().value(row),
                    };
                    copy_escape(out, v);
                }
                Col::Plain(a, _) if a.is_null(row) => out.extend_from_slice(b"\\N"),
                Col::Plain(_, f) => write!(out, "{}", f.value(row)).map_err(io)?,
                Col::Json(t) => match t.get(row) {
                    None => out.extend_from_slice(b"\\N"),
                    Some(v) => copy_escape(out, v),
                },
                Col::Binary(a) if a.is_null(row) => out.extend_from_slice(b"\\N"),
                // bytea's hex input, `\x...`, with its backslash escaped for COPY.
                Col::Binary(a) => {
                    out.extend_from_slice(b"\\\\x");
                    out.extend_from_slice(hex::encode(binary_value(a, row)).as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn statements_cover_every_row_once() {
        let runs: Vec<_> = statements(5, 2).collect();
        assert_eq!(runs, vec![0..2, 2..4, 4..5]);
        assert_eq!(statements(0, 3).count(), 0);
        assert_eq!(statements(2, 0).collect::<Vec<_>>(), vec![0..1, 1..2]);
    }
}
