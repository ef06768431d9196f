//! SQLite, the embedded default: one transaction holds a load's drop, create and every row,
//! so readers see the old table or the new one; an upsert is `ON CONFLICT ... DO UPDATE`.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::postgres::on_conflict;
use super::{Backend, Batches, Connect, Load, any_table, bind_plain, insert_all};
use crate::export::ExportError;
use crate::export::types::Cell;

/// A SQLite warehouse file.
pub(crate) struct Sqlite {
    pool: SqlitePool,
}

impl Sqlite {
    /// Opens (or creates) the file the URL names, under the project when relative.
    pub async fn connect(c: &Connect<'_>) -> Result<Self, ExportError> {
        let path = crate::db::sqlite_path(c.url);
        if path.is_empty() {
            return Err(ExportError::Config(format!(
                "the URL {} names no database file",
                c.redacted
            )));
        }
        let o = SqliteConnectOptions::new()
            .filename(crate::paths::under(c.project_dir, path))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(o)
            .await
            .map_err(|e| c.failed(e))?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    async fn exists(&self, _schema: Option<&str>, name: &str) -> Result<bool, sqlx::Error> {
        let sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?";
        any_table(&self.pool, sql, &[Some(name)]).await
    }

    async fn replace(&self, load: &Load<'_>, batches: Batches<'_>) -> Result<u64, ExportError> {
        let fail = |e| load.failed(e);
        let table = &load.table;
        let mut tx = self.pool.begin().await.map_err(fail)?;
        run!(tx, load, "DROP TABLE IF EXISTS {table}");
        run!(tx, load, "CREATE TABLE {table} ({})", load.definitions());
        let head = format!("INSERT INTO {table} ({}) ", load.column_list());
        let rows = insert_all(&mut *tx, load, (&head, ""), batches, LIMITS, bind).await?;
        if !load.key.is_empty() {
            run!(
                tx,
                load,
                "CREATE UNIQUE INDEX {} ON {} ({})",
                load.quote(&format!("{}__lake_key", load.name)),
                load.quote(load.name),
                load.key_list()
            );
        }
        tx.commit().await.map_err(fail)?;
        Ok(rows)
    }

    async fn upsert(
        &self,
        load: &Load<'_>,
        batches: Batches<'_>,
        gone: Option<Batches<'_>>,
    ) -> Result<(u64, u64), ExportError> {
        let fail = |e| load.failed(e);
        let mut tx = self.pool.begin().await.map_err(fail)?;
        let mut deleted = 0;
        if let Some(gone) = gone {
            let temp = load.quote(&format!("{}__lake_gone", load.name));
            let key_schema = load.key_schema();
            let keys = load.of(&key_schema, temp.clone());
            run!(tx, load, "DROP TABLE IF EXISTS temp.{temp}");
            run!(
                tx,
                load,
                "CREATE TEMP TABLE {temp} AS SELECT {} FROM {} WHERE 0",
                load.key_list(),
                load.table
            );
            let head = format!("INSERT INTO {temp} ({}) ", load.key_list());
            insert_all(&mut *tx, &keys, (&head, ""), gone, LIMITS, bind).await?;
            // By the key's index; then the few rows whose key holds a null, null-safely.
            deleted = run!(
                tx,
                load,
                "DELETE FROM {} WHERE ({}) IN (SELECT {} FROM {temp})",
                load.table,
                load.key_list(),
                load.key_list()
            )
            .rows_affected();
            deleted += run!(
                tx,
                load,
                "DELETE FROM {} AS t WHERE ({}) AND EXISTS (SELECT 1 FROM {temp} AS g WHERE {})",
                load.table,
                load.key_has_null(),
                load.key_match("IS")
            )
            .rows_affected();
            run!(tx, load, "DROP TABLE temp.{temp}");
        }
        let head = format!("INSERT INTO {} ({}) ", load.table, load.column_list());
        let tail = format!(
            " ON CONFLICT ({}) DO {}",
            load.key_list(),
            on_conflict(load, "excluded")
        );
        let rows = insert_all(&mut *tx, load, (&head, &tail), batches, LIMITS, bind).await?;
        tx.commit().await.map_err(fail)?;
        Ok((rows, deleted))
    }
}

/// SQLite takes at most 32,766 parameters a statement; 500 rows is past the gain. A statement
/// a row cost 29 s for 626,000 rows (sqlx hands each statement to SQLite's worker thread).
const LIMITS: (usize, usize) = (500, 32_000);

/// Binds one cell as SQLite keeps it: unsigned integers as signed, dates and timestamps as
/// ISO 8601 text.
fn bind(b: &mut sqlx::query_builder::Separated<'_, sqlx::Sqlite, &'static str>, cell: Cell) {
    match bind_plain(b, cell) {
        Some(Cell::UInt(v)) => b.push_bind(v as i64),
        Some(Cell::Date(v)) => b.push_bind(v.format("%Y-%m-%d").to_string()),
        Some(Cell::Timestamp(v)) => b.push_bind(v.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()),
        _ => b,
    };
}
