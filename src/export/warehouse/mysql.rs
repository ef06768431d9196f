//! MySQL and MariaDB (and RDS): rows go as multi-row INSERTs; a load swaps the staging table
//! in with one `RENAME TABLE` of both; an upsert is `ON DUPLICATE KEY UPDATE` in a
//! transaction.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlSslMode};
use sqlx::{AssertSqlSafe, Executor};

use super::{Backend, Batches, Connect, Load, any_table, next_inserts};
use crate::export::ExportError;
use crate::export::types::{Cell, Dialect};

/// A MySQL or MariaDB warehouse.
pub(crate) struct MySql {
    pool: MySqlPool,
}

impl MySql {
    /// Connects, with the URL's or `[warehouse]`'s TLS settings.
    pub async fn connect(c: &Connect<'_>) -> Result<Self, ExportError> {
        let url = c.url.replacen("mariadb:", "mysql:", 1);
        let mut o = MySqlConnectOptions::from_str(&url).map_err(|e| c.bad_url(e))?;
        if let Some(p) = &c.password {
            o = o.password(p);
        }
        if let Some(mode) = &c.settings.sslmode {
            o = o.ssl_mode(match mode.as_str() {
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
            });
        }
        if let Some(cert) = &c.settings.ssl_root_cert {
            o = o.ssl_ca(crate::paths::under(c.project_dir, cert));
        }
        Ok(Self {
            pool: crate::db::pool(o, 2).await.map_err(|e| c.failed(e))?,
        })
    }
}

#[async_trait::async_trait]
impl Backend for MySql {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }

    async fn exists(&self, schema: Option<&str>, name: &str) -> Result<bool, sqlx::Error> {
        let sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = coalesce(?, database()) AND table_name = ?";
        any_table(&self.pool, sql, &[schema, Some(name)]).await
    }

    async fn replace(&self, load: &Load<'_>, batches: Batches<'_>) -> Result<u64, ExportError> {
        let fail = |e| load.failed(e);
        let (staging, old) = (load.beside("__lake_staging"), load.beside("__lake_old"));
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        if let Some(s) = load.schema {
            let create = format!("CREATE DATABASE IF NOT EXISTS {}", load.quote(s));
            conn.execute(AssertSqlSafe(create)).await.map_err(fail)?;
        }
        conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {staging}")))
            .await
            .map_err(fail)?;
        let key = if load.key.is_empty() {
            String::new()
        } else {
            format!(
                ", UNIQUE KEY {} ({})",
                load.quote("lake_key"),
                load.key_list()
            )
        };
        conn.execute(AssertSqlSafe(format!(
            "CREATE TABLE {staging} ({}{key}) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            load.definitions()
        )))
        .await
        .map_err(fail)?;
        let head = format!("INSERT INTO {staging} ({}) ", load.column_list());
        let rows = insert(&mut conn, load, &head, "", batches).await?;
        let exists = self.exists(load.schema, load.name).await.map_err(fail)?;
        let table = &load.table;
        let swap = if exists {
            conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                .await
                .map_err(fail)?;
            // Both renames in one statement: atomic for readers.
            format!("RENAME TABLE {table} TO {old}, {staging} TO {table}")
        } else {
            format!("RENAME TABLE {staging} TO {table}")
        };
        conn.execute(AssertSqlSafe(swap)).await.map_err(fail)?;
        if exists {
            conn.execute(AssertSqlSafe(format!("DROP TABLE IF EXISTS {old}")))
                .await
                .map_err(fail)?;
        }
        Ok(rows)
    }

    async fn upsert(&self, load: &Load<'_>, batches: Batches<'_>) -> Result<u64, ExportError> {
        let fail = |e| load.failed(e);
        let others = load.others();
        let set: Vec<String> = if others.is_empty() {
            // Every column is in the key: a no-op update that still counts as a match.
            let first = load.quote(load.columns.field(0).name());
            vec![format!("{first} = {first}")]
        } else {
            others
                .iter()
                .map(|c| format!("{c} = VALUES({c})"))
                .collect()
        };
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        conn.execute("START TRANSACTION").await.map_err(fail)?;
        let head = format!("INSERT INTO {} ({}) ", load.table, load.column_list());
        let tail = format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "));
        match insert(&mut conn, load, &head, &tail, batches).await {
            Ok(rows) => {
                conn.execute("COMMIT").await.map_err(fail)?;
                Ok(rows)
            }
            Err(e) => {
                let _ = conn.execute("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

/// Sends batches as multi-row INSERTs: `head` is `INSERT INTO t (cols) `, `tail` follows
/// each statement's VALUES.
async fn insert(
    conn: &mut sqlx::MySqlConnection,
    load: &Load<'_>,
    head: &str,
    tail: &str,
    mut batches: Batches<'_>,
) -> Result<u64, ExportError> {
    let mut rows = 0u64;
    // MySQL takes at most 65,535 parameters a statement.
    while let Some(batch) = next_inserts(&mut batches, load, load.batch_rows, 60_000).await? {
        for statement in batch.statements.iter().cloned() {
            let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(head);
            q.push_values(statement, |mut b, row| {
                for col in &batch.columns {
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
            q.build()
                .execute(&mut *conn)
                .await
                .map_err(|e| load.failed(e))?;
        }
        rows += batch.rows;
    }
    Ok(rows)
}
