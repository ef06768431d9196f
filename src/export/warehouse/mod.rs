//! The warehouse: one [`Backend`] per database (`postgres.rs`, `mysql.rs`, `sqlite.rs`), as
//! extract has one driver per source database. What they share is here: the connection
//! settings, target naming and quoting, the column lists of a load, and batching into
//! multi-row INSERTs.

/// Runs one statement of a load on `$conn` (a pooled connection or a transaction), its
/// error the load's: `run!(conn, load, "DROP TABLE IF EXISTS {staging}")`.
macro_rules! run {
    ($conn:expr, $load:expr, $($sql:tt)+) => {
        sqlx::Executor::execute(&mut *$conn, sqlx::AssertSqlSafe(format!($($sql)+)))
            .await
            .map_err(|e| $load.failed(e))?
    };
}

mod mysql;
mod postgres;
mod sqlite;

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use secrecy::ExposeSecret;

use super::ExportError;
use super::types::{Cell, Dialect, cells};
use crate::config::WarehouseSettings;

/// Where a table goes: a schema (PostgreSQL) or database (MySQL), and a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The schema or database; the connection's own when none.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

/// How a table is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Into a staging table, swapped in for the target: readers see the whole old table or
    /// the whole new one.
    Replace,
    /// Upserted into the target on the key, in one transaction.
    Upsert,
}

/// Rows on their way to the warehouse.
pub(crate) type Batches<'a> = BoxStream<'a, Result<RecordBatch, ExportError>>;

/// What one database does; the rest of the export is shared.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    /// Whether the table `name` exists in `schema` (the connection's own when none).
    async fn exists(&self, schema: Option<&str>, name: &str) -> Result<bool, sqlx::Error>;

    /// Loads `batches` into a staging table and swaps it in for the target, so readers see
    /// the whole old table or the whole new one; returns the rows.
    async fn replace(&self, load: &Load<'_>, batches: Batches<'_>) -> Result<u64, ExportError>;

    /// Deletes the rows whose key is among `gone` (batches of the key's columns) and upserts
    /// `batches` on the key, in one transaction; returns the rows upserted and deleted.
    async fn upsert(
        &self,
        load: &Load<'_>,
        batches: Batches<'_>,
        gone: Option<Batches<'_>>,
    ) -> Result<(u64, u64), ExportError>;
}

/// One table's load, as the backends need it spelled.
pub(crate) struct Load<'a> {
    dialect: Dialect,
    /// The target's schema, or the warehouse's default.
    pub schema: Option<&'a str>,
    /// The target table's own name.
    pub name: &'a str,
    /// The target, qualified and quoted.
    pub table: String,
    /// The target as shown in messages.
    pub shown: String,
    /// The rows' columns.
    pub columns: &'a SchemaRef,
    /// The unique key; empty for none.
    pub key: &'a [String],
    /// Rows per INSERT, where the backend sends INSERTs.
    pub batch_rows: usize,
}

impl Load<'_> {
    /// An identifier, quoted.
    pub fn quote(&self, ident: &str) -> String {
        self.dialect.quote(ident)
    }

    /// A table beside the target (`<name>__lake_staging`), qualified and quoted.
    pub fn beside(&self, suffix: &str) -> String {
        qualified(self.dialect, self.schema, &format!("{}{suffix}", self.name))
    }

    /// The column definitions: `"a" BIGINT, "b" TEXT`.
    pub fn definitions(&self) -> String {
        let d = self.dialect;
        let defs: Vec<String> = self
            .columns
            .fields()
            .iter()
            .map(|f| {
                let is_key = self.key.iter().any(|k| k == f.name());
                format!(
                    "{} {}",
                    d.quote(f.name()),
                    d.column_type(f.data_type(), is_key)
                )
            })
            .collect();
        defs.join(", ")
    }

    /// Every column, quoted: `"a", "b"`.
    pub fn column_list(&self) -> String {
        self.quoted(self.columns.fields().iter().map(|f| f.name().as_str()))
    }

    /// The key's columns, quoted.
    pub fn key_list(&self) -> String {
        self.quoted(self.key.iter().map(String::as_str))
    }

    /// The columns outside the key, quoted, each.
    pub fn others(&self) -> Vec<String> {
        self.columns
            .fields()
            .iter()
            .filter(|f| !self.key.contains(f.name()))
            .map(|f| self.quote(f.name()))
            .collect()
    }

    /// The key's columns, as a schema.
    pub fn key_schema(&self) -> SchemaRef {
        let fields: Vec<arrow::datatypes::FieldRef> = self
            .key
            .iter()
            .filter_map(|k| self.columns.field_with_name(k).ok())
            .map(|f| std::sync::Arc::new(f.clone()))
            .collect();
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields))
    }

    /// The same load of other columns into another table (a temporary one of keys, say).
    pub fn of<'b>(&'b self, columns: &'b SchemaRef, table: String) -> Load<'b> {
        Load {
            dialect: self.dialect,
            schema: self.schema,
            name: self.name,
            table,
            shown: self.shown.clone(),
            columns,
            key: self.key,
            batch_rows: self.batch_rows,
        }
    }

    /// `t.a <op> g.a AND t.b <op> g.b` over the key, for a join of the target (`t`) to a
    /// table of keys (`g`): `=`, which the key's unique index serves, or the dialect's
    /// null-safe equality.
    pub fn key_match(&self, op: &str) -> String {
        self.key
            .iter()
            .map(|k| {
                let k = self.quote(k);
                format!("t.{k} {op} g.{k}")
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `t.a IS NULL OR t.b IS NULL`: the target's rows a plain `=` on the key cannot match.
    pub fn key_has_null(&self) -> String {
        self.key
            .iter()
            .map(|k| format!("t.{} IS NULL", self.quote(k)))
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// A failed statement of this load.
    pub fn failed(&self, source: sqlx::Error) -> ExportError {
        ExportError::Load {
            target: self.shown.clone(),
            cause: source,
        }
    }

    /// Every column of a batch as cells.
    pub fn cells(&self, batch: &RecordBatch) -> Result<Vec<Vec<Cell>>, ExportError> {
        batch
            .columns()
            .iter()
            .map(cells)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ExportError::Encode {
                target: self.shown.clone(),
                cause: e,
            })
    }

    fn quoted<'s>(&self, names: impl Iterator<Item = &'s str>) -> String {
        names.map(|n| self.quote(n)).collect::<Vec<_>>().join(", ")
    }
}

/// `schema.name`, quoted; SQLite has no schemas.
fn qualified(d: Dialect, schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(s) if d != Dialect::Sqlite => format!("{}.{}", d.quote(s), d.quote(name)),
        _ => d.quote(name),
    }
}

/// The next batch as cells, with the rows of each of its multi-row INSERTs: at most
/// `max_rows` a statement and `max_params` values. None when the batches are done.
pub(crate) async fn next_inserts(
    batches: &mut Batches<'_>,
    load: &Load<'_>,
    max_rows: usize,
    max_params: usize,
) -> Result<Option<Inserts>, ExportError> {
    use futures::StreamExt as _;
    let Some(batch) = batches.next().await else {
        return Ok(None);
    };
    let batch = batch?;
    let columns = load.cells(&batch)?;
    let per = max_rows.min(max_params / columns.len().max(1)).max(1);
    Ok(Some(Inserts {
        statements: statements(batch.num_rows(), per).collect(),
        rows: batch.num_rows() as u64,
        columns,
    }))
}

/// Sends batches as multi-row INSERTs on `conn` (inside the caller's transaction, if any):
/// `head` is `INSERT INTO t (cols) `, `tail` follows each statement's VALUES, and a statement
/// holds at most `limits.0` rows and `limits.1` values. Returns the rows sent.
pub(crate) async fn insert_all<DB>(
    conn: &mut DB::Connection,
    load: &Load<'_>,
    (head, tail): (&str, &str),
    mut batches: Batches<'_>,
    limits: (usize, usize),
    bind: fn(&mut sqlx::query_builder::Separated<'_, DB, &'static str>, Cell),
) -> Result<u64, ExportError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let mut rows = 0u64;
    while let Some(batch) = next_inserts(&mut batches, load, limits.0, limits.1).await? {
        for statement in batch.statements.iter().cloned() {
            let mut q = insert_statement(head, tail, &batch.columns, statement, bind);
            q.build()
                .execute(&mut *conn)
                .await
                .map_err(|e| load.failed(e))?;
        }
        rows += batch.rows;
    }
    Ok(rows)
}

/// One multi-row INSERT: `head` (`INSERT INTO t (cols) `), the VALUES of `rows` with each cell
/// bound by `bind`, then `tail` (an `ON CONFLICT` clause, say).
pub(crate) fn insert_statement<DB: sqlx::Database>(
    head: &str,
    tail: &str,
    columns: &[Vec<Cell>],
    rows: std::ops::Range<usize>,
    bind: impl Fn(&mut sqlx::query_builder::Separated<'_, DB, &'static str>, Cell),
) -> sqlx::QueryBuilder<DB> {
    let mut q = sqlx::QueryBuilder::<DB>::new(head.to_string());
    q.push_values(rows, |mut b, row| {
        for col in columns {
            bind(&mut b, col[row].clone());
        }
    });
    q.push(tail.to_string());
    q
}

/// Binds a cell every database takes alike (nulls, flags, signed integers, floats, text and
/// bytes); the others come back for the backend to bind its own way.
pub(crate) fn bind_plain<DB>(
    b: &mut sqlx::query_builder::Separated<'_, DB, &'static str>,
    cell: Cell,
) -> Option<Cell>
where
    DB: sqlx::Database,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> f64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Vec<u8>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    match cell {
        Cell::Null => b.push_bind(None::<String>),
        Cell::Bool(v) => b.push_bind(v),
        Cell::Int(v) => b.push_bind(v),
        Cell::Float(v) => b.push_bind(v),
        Cell::Text(v) => b.push_bind(v),
        Cell::Bytes(v) => b.push_bind(v),
        other => return Some(other),
    };
    None
}

/// One batch, ready for multi-row INSERTs.
pub(crate) struct Inserts {
    /// Each column's cells.
    pub columns: Vec<Vec<Cell>>,
    /// The rows of each statement.
    pub statements: Vec<std::ops::Range<usize>>,
    /// Rows in the batch.
    pub rows: u64,
}

/// The rows of each multi-row INSERT: `rows` split into runs of at most `per`.
pub(crate) fn statements(rows: usize, per: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let per = per.max(1);
    (0..rows)
        .step_by(per)
        .map(move |start| start..(start + per).min(rows))
}

/// What a backend's `connect` is given.
pub(crate) struct Connect<'a> {
    /// The URL, password and all.
    pub url: &'a str,
    /// The URL without its password, for messages.
    pub redacted: &'a str,
    /// The password, when given apart from the URL.
    pub password: Option<String>,
    /// The rest of `[warehouse]`.
    pub settings: &'a WarehouseSettings,
    /// The folder relative paths are under.
    pub project_dir: &'a Path,
}

impl Connect<'_> {
    /// The connection failed.
    pub fn failed(&self, source: sqlx::Error) -> ExportError {
        ExportError::Connect {
            warehouse: self.redacted.to_string(),
            cause: source,
        }
    }

    /// The URL or an option does not parse; sqlx's messages can quote the URL, so only the
    /// kind of problem is said.
    pub fn bad_url(&self, e: sqlx::Error) -> ExportError {
        ExportError::Config(format!(
            "the URL {} does not parse: {}",
            self.redacted,
            match e {
                sqlx::Error::Configuration(_) => "a bad URL or option".to_string(),
                other => other.to_string().replace(self.url, self.redacted),
            }
        ))
    }
}

/// A connected warehouse.
pub struct Warehouse {
    backend: Box<dyn Backend>,
    dialect: Dialect,
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
        let connect = Connect {
            url: &url,
            redacted: &redacted,
            password: settings
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string()),
            settings,
            project_dir,
        };
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (backend, dialect): (Box<dyn Backend>, _) = match scheme.as_str() {
            "postgres" | "postgresql" => (
                Box::new(postgres::Postgres::connect(&connect).await?),
                Dialect::Postgres,
            ),
            "mysql" | "mariadb" => (
                Box::new(mysql::MySql::connect(&connect).await?),
                Dialect::MySql,
            ),
            "sqlite" => (
                Box::new(sqlite::Sqlite::connect(&connect).await?),
                Dialect::Sqlite,
            ),
            other => {
                return Err(ExportError::Config(format!(
                    "the URL {redacted} has scheme `{other}`; use postgres://, mysql:// or sqlite://"
                )));
            }
        };
        Ok(Self {
            backend,
            dialect,
            default_schema: settings.schema.clone(),
            batch_rows: settings.batch_rows.unwrap_or(1000).max(1) as usize,
            redacted,
        })
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL without its password.
    pub fn redacted(&self) -> String {
        self.redacted.clone()
    }

    /// The target as shown in output and records.
    pub fn describe(&self, target: &Target) -> String {
        match self.schema_of(target) {
            Some(s) if self.dialect() != Dialect::Sqlite => format!("{s}.{}", target.name),
            _ => target.name.clone(),
        }
    }

    /// Whether the target table exists.
    pub async fn exists(&self, target: &Target) -> Result<bool, ExportError> {
        self.backend
            .exists(self.schema_of(target), &target.name)
            .await
            .map_err(|source| ExportError::Load {
                target: self.describe(target),
                cause: source,
            })
    }

    /// Loads `batches` into `target` as `mode` says; returns the rows.
    pub async fn load(
        &self,
        target: &Target,
        schema: &SchemaRef,
        key: &[String],
        mode: LoadMode,
        batches: Batches<'_>,
    ) -> Result<u64, ExportError> {
        let load = self.load_of(target, schema, key);
        match mode {
            LoadMode::Replace => self.backend.replace(&load, batches).await,
            LoadMode::Upsert => Ok(self.backend.upsert(&load, batches, None).await?.0),
        }
    }

    /// Deletes from `target` the rows whose key is among `gone` and upserts `changed`, in one
    /// transaction: a table that changed only some rows gets only those. Returns the rows
    /// upserted and deleted.
    pub async fn sync(
        &self,
        target: &Target,
        schema: &SchemaRef,
        key: &[String],
        changed: Batches<'_>,
        gone: Batches<'_>,
    ) -> Result<(u64, u64), ExportError> {
        let load = self.load_of(target, schema, key);
        self.backend.upsert(&load, changed, Some(gone)).await
    }

    fn schema_of<'a>(&'a self, target: &'a Target) -> Option<&'a str> {
        target.schema.as_deref().or(self.default_schema.as_deref())
    }

    fn load_of<'a>(
        &'a self,
        target: &'a Target,
        columns: &'a SchemaRef,
        key: &'a [String],
    ) -> Load<'a> {
        let schema = self.schema_of(target);
        Load {
            dialect: self.dialect(),
            schema,
            name: &target.name,
            table: qualified(self.dialect(), schema, &target.name),
            shown: self.describe(target),
            columns,
            key,
            batch_rows: self.batch_rows,
        }
    }
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

/// Whether `sql`, a count of tables bound to `binds`, counts one or more: how a backend tells
/// that a table exists.
pub(crate) async fn any_table<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &'static str,
    binds: &[Option<&str>],
) -> Result<bool, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut query = sqlx::query_scalar::<DB, i64>(sql);
    for b in binds {
        query = query.bind(*b);
    }
    Ok(query.fetch_one(pool).await? > 0)
}
