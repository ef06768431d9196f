//! MySQL and MariaDB (and RDS): rows go as multi-row INSERTs; a load swaps the staging table
//! in with one `RENAME TABLE` of both; an upsert is `ON DUPLICATE KEY UPDATE` in a
//! transaction.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlSslMode};
use sqlx::{AssertSqlSafe, Executor};

use super::{Backend, Batches, Connect, Load, any_table, bind_plain, insert_all};
use crate::export::ExportError;
use crate::export::types::Cell;

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
        run!(conn, load, "DROP TABLE IF EXISTS {staging}");
        let key = if load.key.is_empty() {
            String::new()
        } else {
            format!(
                ", UNIQUE KEY {} ({})",
                load.quote("lake_key"),
                load.key_list()
            )
        };
        run!(
            conn,
            load,
            "CREATE TABLE {staging} ({}{key}) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            load.definitions()
        );
        let head = format!("INSERT INTO {staging} ({}) ", load.column_list());
        let limits = (load.batch_rows, MAX_PARAMS);
        let rows = insert_all(&mut *conn, load, (&head, ""), batches, limits, bind).await?;
        let exists = self.exists(load.schema, load.name).await.map_err(fail)?;
        let table = &load.table;
        let swap = if exists {
            run!(conn, load, "DROP TABLE IF EXISTS {old}");
            // Both renames in one statement: atomic for readers.
            format!("RENAME TABLE {table} TO {old}, {staging} TO {table}")
        } else {
            format!("RENAME TABLE {staging} TO {table}")
        };
        conn.execute(AssertSqlSafe(swap)).await.map_err(fail)?;
        if exists {
            run!(conn, load, "DROP TABLE IF EXISTS {old}");
        }
        Ok(rows)
    }

    async fn upsert(
        &self,
        load: &Load<'_>,
        batches: Batches<'_>,
        gone: Option<Batches<'_>>,
    ) -> Result<(u64, u64), ExportError> {
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
        let limits = (load.batch_rows, MAX_PARAMS);
        let work = async {
            let mut deleted = 0;
            if let Some(gone) = gone {
                // A temporary table is the connection's own and commits nothing.
                let temp = load.quote(&format!("{}__lake_gone", load.name));
                let key_schema = load.key_schema();
                let keys = load.of(&key_schema, temp.clone());
                run!(conn, load, "DROP TEMPORARY TABLE IF EXISTS {temp}");
                run!(
                    conn,
                    load,
                    "CREATE TEMPORARY TABLE {temp} AS SELECT {} FROM {} LIMIT 0",
                    load.key_list(),
                    load.table
                );
                let head = format!("INSERT INTO {temp} ({}) ", load.key_list());
                insert_all(&mut *conn, &keys, (&head, ""), gone, limits, bind).await?;
                // By the key's index; then the few rows whose key holds a null.
                deleted = run!(
                    conn,
                    load,
                    "DELETE t FROM {} AS t JOIN {temp} AS g ON {}",
                    load.table,
                    load.key_match("=")
                )
                .rows_affected();
                deleted += run!(
                    conn,
                    load,
                    "DELETE t FROM {} AS t JOIN {temp} AS g ON {} WHERE {}",
                    load.table,
                    load.key_match("<=>"),
                    load.key_has_null()
                )
                .rows_affected();
                run!(conn, load, "DROP TEMPORARY TABLE {temp}");
            }
            let rows = insert_all(&mut *conn, load, (&head, &tail), batches, limits, bind).await?;
            Ok::<_, ExportError>((rows, deleted))
        };
        match work.await {
            Ok(done) => {
                conn.execute("COMMIT").await.map_err(fail)?;
                Ok(done)
            }
            Err(e) => {
                let _ = conn.execute("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

/// MySQL takes at most 65,535 parameters a statement.
const MAX_PARAMS: usize = 60_000;

/// Binds one cell as MySQL takes it: unsigned integers, dates and timestamps as they are.
fn bind(b: &mut sqlx::query_builder::Separated<'_, sqlx::MySql, &'static str>, cell: Cell) {
    match bind_plain(b, cell) {
        Some(Cell::UInt(v)) => b.push_bind(v),
        Some(Cell::Date(v)) => b.push_bind(v),
        Some(Cell::Timestamp(v)) => b.push_bind(v),
        _ => b,
    };
}
