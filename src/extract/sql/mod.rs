//! SQL databases -> raw tables: `[sources.<name>]` in lake.toml, `lake extract sql [NAME ...]`.
//!
//! Each source is a table or a query on PostgreSQL, MySQL/MariaDB, SQLite or SQL Server. A
//! driver module per database plans the columns (the SELECT expression that reads each one and
//! its Arrow type) and streams rows inside one consistent snapshot; everything else is shared:
//! Arrow batches of `batch_rows` built here and sent through a queue of two, so memory stays
//! flat however large the table, and one Delta commit per extract.
//!
//! - `mode = "full"` replaces the target in one commit.
//! - `mode = "incremental"` reads the rows whose cursor is at or past the saved cursor minus
//!   the lookback and merges them on the primary key. The new cursor (the largest value, read
//!   before the rows) is saved in the metadata of the same commit as the rows, so a crash before
//!   the commit leaves the old cursor and the next run reads the rows again: a rerun, never a
//!   gap. The merge absorbs what is read twice.
//! - `--detect-deletes` reads the source's keys and marks rows whose key is gone: their
//!   `_deleted_at` is set, in a second commit.
//!
//! The type map, for every database, is in the README ("SQL sources").

mod batch;
mod cursor;
mod deletes;
mod driver;
mod mssql;
mod mysql;
mod postgres;
mod sqlite;

pub(crate) use batch::{Sink, SqlSource, append_sqlx, read_all, send_rows};
pub use cursor::{CursorKind, SourceCursor};
use cursor::{lookback, max_value, saved_cursor};
use deletes::mark_deleted;
use driver::apply_casts;
pub(crate) use driver::{Driver, Item, Kind, Planned, SqlColumn, describe};

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use secrecy::ExposeSecret;

use super::ExtractError;
use crate::config::{SourcePlan, SourceRead, SourceSettings};
use crate::lake::write::{WriteMode, write};
use crate::lake::{Lake, RAW, TableName};

/// The column an incremental target gains: when lake saw the row's key vanish at the source.
pub const DELETED_AT: &str = "_deleted_at";
/// The commit metadata key that holds an incremental source's cursor.
pub const SOURCE_CURSOR_KEY: &str = "lake.cursor";

/// What one source's extract did.
#[derive(Debug, Clone)]
pub struct SqlReport {
    /// The source's name.
    pub source: String,
    /// The raw table.
    pub table: TableName,
    /// Rows read and landed.
    pub rows: u64,
    /// The version committed last, or `None` when nothing was committed.
    pub version: Option<u64>,
    /// For an incremental source: the cursor before and after.
    pub cursor: Option<(Option<String>, Option<String>)>,
    /// For `--detect-deletes`: rows newly marked deleted.
    pub deleted: Option<u64>,
}

/// One line: `crm -> raw.crm version 3: 120 rows, cursor start -> 2024-01-02`.
impl std::fmt::Display for SqlReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(
                f,
                "{} -> {} version {v}: {} rows",
                self.source, self.table, self.rows
            )?,
            None => write!(
                f,
                "{} -> {}: no new rows, nothing committed",
                self.source, self.table
            )?,
        }
        if let Some((before, after)) = &self.cursor {
            let shown = |c: &Option<String>| c.clone().unwrap_or_else(|| "start".into());
            write!(f, ", cursor {} -> {}", shown(before), shown(after))?;
        }
        if let Some(d) = self.deleted {
            write!(f, ", {d} newly deleted at the source")?;
        }
        Ok(())
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct SqlOptions {
    /// Compare keys and mark rows deleted at the source.
    pub detect_deletes: bool,
}

pub(crate) fn fail(source: &str, message: impl std::fmt::Display) -> ExtractError {
    ExtractError::Sql {
        name: source.to_string(),
        message: message.to_string(),
    }
}

/// The raw table a source lands in.
pub fn target(name: &str, src: &SourceSettings) -> Result<TableName, ExtractError> {
    let t = src
        .target
        .clone()
        .unwrap_or_else(|| format!("{RAW}.{name}"));
    let (schema, table) = t
        .split_once('.')
        .ok_or_else(|| fail(name, format!("target `{t}`: write schema.name")))?;
    TableName::new(schema, table).map_err(|e| fail(name, e))
}

/// A source's handle: its driver, which connects on first use, and its URL without the
/// password, for messages.
#[derive(Clone)]
pub struct Source {
    driver: Arc<dyn Driver>,
    redacted: String,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// The handle of `[sources.<name>]`; nothing connects yet. `project_dir` anchors a
    /// relative SQLite path.
    pub fn open(
        name: &str,
        src: &SourceSettings,
        project_dir: &std::path::Path,
    ) -> Result<Self, ExtractError> {
        let url = src
            .url
            .as_ref()
            .map(|u| u.expose_secret().to_string())
            .ok_or_else(|| fail(name, "no `url`"))?;
        let password = src.password.as_ref().map(|p| p.expose_secret().to_string());
        let redacted = crate::db::redact_url(&url);
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let driver: Arc<dyn Driver> = match scheme.as_str() {
            "postgres" | "postgresql" => Arc::new(postgres::Postgres::new(&url, password)),
            "mysql" | "mariadb" => Arc::new(mysql::Mysql::new(&url, password)),
            "sqlite" => Arc::new(sqlite::Sqlite::new(&url, project_dir)),
            "mssql" | "sqlserver" => Arc::new(mssql::Mssql::new(&url, password)),
            other => {
                return Err(fail(
                    name,
                    format!(
                        "`{other}://` is not a SQL source lake reads; use postgres://, mysql://, sqlite:// or mssql://"
                    ),
                ));
            }
        };
        Ok(Self { driver, redacted })
    }

    /// The URL without its password.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// Extracts one source into its raw table: in full, or the rows past its cursor.
pub async fn extract(
    lake: &Lake,
    name: &str,
    src: &SourceSettings,
    source: &Source,
    options: SqlOptions,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<SqlReport, ExtractError> {
    let table = target(name, src)?;
    let (driver, redacted) = (source.driver.clone(), &source.redacted);
    let shape = src.shape(name).map_err(|e| fail(name, e))?;
    let (base, what) = match shape.read {
        SourceRead::Table(t) => (
            format!(
                "SELECT * FROM {}",
                t.split('.')
                    .map(|p| driver.quote(p))
                    .collect::<Vec<_>>()
                    .join(".")
            ),
            format!("table {t}"),
        ),
        SourceRead::Query(q) => (
            q.trim().trim_end_matches(';').to_string(),
            "the query".to_string(),
        ),
    };
    let cols = match driver.plan(&base).await {
        Ok(planned) => apply_casts(&*driver, name, planned, &src.casts),
        Err(e) => Err(e),
    }
    .map_err(|e| fail(name, format!("{e} (at {redacted}, reading {what})")))?;
    let fields: Vec<Field> = cols
        .iter()
        .map(|c| Field::new(&c.name, c.arrow.clone(), true))
        .collect();
    let exprs = cols
        .iter()
        .map(|c| format!("{} AS {}", c.expr, driver.quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let batch_rows = src.batch_rows.unwrap_or(8192).max(1) as usize;
    let metadata = vec![
        ("lake.command".to_string(), serde_json::json!("extract sql")),
        ("lake.source".to_string(), serde_json::json!(name)),
    ];

    let read = Read {
        name,
        table,
        driver,
        base,
        what,
        cols,
        fields,
        exprs,
        batch_rows,
        metadata,
        progress,
    };
    match shape.plan {
        SourcePlan::Full => full(lake, read).await,
        SourcePlan::Incremental {
            cursor,
            primary_key,
            lookback,
        } => {
            let by = Increment {
                cursor,
                primary_key,
                lookback,
            };
            incremental(lake, read, by, options.detect_deletes).await
        }
    }
}

/// What a source's extract reads, planned: shared by the full and the incremental path.
struct Read<'a> {
    name: &'a str,
    table: TableName,
    driver: Arc<dyn Driver>,
    /// The source's SELECT.
    base: String,
    /// `table crm.orders` or `the query`, for messages.
    what: String,
    cols: Vec<SqlColumn>,
    fields: Vec<Field>,
    /// Every column's SELECT expression.
    exprs: String,
    batch_rows: usize,
    metadata: Vec<(String, serde_json::Value)>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Read<'_> {
    /// The column `c`, which `role` (cursor, primary key) names.
    fn col(&self, c: &str, role: &str) -> Result<SqlColumn, ExtractError> {
        self.cols
            .iter()
            .find(|x| x.name == c)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = self.cols.iter().map(|x| x.name.as_str()).collect();
                fail(
                    self.name,
                    format!(
                        "the {role} column `{c}` is not a column of {}; its columns are: {}",
                        self.what,
                        names.join(", ")
                    ),
                )
            })
    }
}

/// `mode = "full"`: every row, replacing the target in one commit.
async fn full(lake: &Lake, read: Read<'_>) -> Result<SqlReport, ExtractError> {
    let source = Arc::new(SqlSource {
        sql: read.driver.select(&read.exprs, &read.base, None),
        driver: read.driver,
        cols: read.cols.into(),
        schema: Arc::new(Schema::new(read.fields)),
        batch_rows: read.batch_rows,
        progress: read.progress,
        keys_unique: false,
    });
    // The table mirrors the source: its rows and its columns, even when a column's type
    // changed or a column was dropped at the source.
    let rebuild = WriteMode::Rebuild(vec![]);
    let outcome = write(lake, &read.table, source, &rebuild, &read.metadata)
        .await
        .map_err(|e| fail(read.name, e))?;
    Ok(SqlReport {
        source: read.name.to_string(),
        table: read.table,
        rows: outcome.rows_read,
        version: Some(outcome.version),
        cursor: None,
        deleted: None,
    })
}

/// `mode = "incremental"`: the rows at or past the saved cursor (minus the lookback), merged on
/// the primary key, the new cursor saved in the same commit; then `--detect-deletes`.
/// What an incremental source reads by: its shape's keys.
struct Increment<'a> {
    cursor: &'a str,
    primary_key: &'a [String],
    lookback: Option<&'a str>,
}

async fn incremental(
    lake: &Lake,
    read: Read<'_>,
    by: Increment<'_>,
    detect_deletes: bool,
) -> Result<SqlReport, ExtractError> {
    let cursor_col = read.col(by.cursor, "cursor")?;
    let keys: Vec<SqlColumn> = by
        .primary_key
        .iter()
        .map(|k| read.col(k, "primary key"))
        .collect::<Result<_, _>>()?;
    let Read {
        name,
        table,
        driver,
        base,
        cols,
        mut fields,
        exprs,
        batch_rows,
        mut metadata,
        progress,
        ..
    } = read;
    let lookback = lookback(name, by.lookback, cursor_col.kind)?;
    if SourceCursor::of(&cursor_col, 0).is_none() {
        return Err(fail(
            name,
            format!(
                "the cursor column `{}` is {}; a cursor must be an integer, a date or a timestamp",
                cursor_col.name, cursor_col.arrow
            ),
        ));
    }
    let before = saved_cursor(lake, &table, name).await?;
    if let Some(b) = &before
        && b.column != cursor_col.name
    {
        return Err(fail(
            name,
            format!(
                "{table} was read with cursor `{}`, not `{}`; run it once with mode = \"full\" to start over",
                b.column, cursor_col.name
            ),
        ));
    }
    let filter = before
        .as_ref()
        .map(|c| c.filter(&*driver, &cursor_col, lookback));
    // The new cursor is read before the rows: every row up to it is then in the read, and a row
    // that commits later with a smaller value is what the lookback is for.
    let max_sql = driver.select(
        &format!("MAX({}) AS {}", cursor_col.expr, driver.quote("m")),
        &base,
        filter.as_deref(),
    );
    let max_col = SqlColumn::plain("m", cursor_col.kind, String::new());
    let max = read_all(&driver, max_sql, vec![max_col])
        .await
        .map_err(|e| {
            fail(
                name,
                format!("failed to read the largest `{}`: {e}", cursor_col.name),
            )
        })?;
    // Never backwards: when the rows at the saved cursor are gone, it stays where it was.
    let after = max_value(&max)
        .map(|v| before.as_ref().map_or(v, |b| v.max(b.value)))
        .and_then(|v| SourceCursor::of(&cursor_col, v));
    let mut report = SqlReport {
        source: name.to_string(),
        table: table.clone(),
        rows: 0,
        version: None,
        cursor: Some((
            before.as_ref().map(SourceCursor::display),
            after
                .as_ref()
                .or(before.as_ref())
                .map(SourceCursor::display),
        )),
        deleted: None,
    };
    let saved = after.clone().or(before.clone());
    // A cursor that has not moved, with no lookback to re-read, means nothing new: the rows at
    // the cursor itself were read last time.
    let nothing_new = lookback == 0 && before.is_some() && after == before;
    if let Some(after) = after.as_ref().filter(|_| !nothing_new) {
        fields.push(Field::new(DELETED_AT, Kind::TimestampUtc.read_type(), true));
        let schema = Arc::new(Schema::new(fields.clone()));
        metadata.push((
            SOURCE_CURSOR_KEY.to_string(),
            serde_json::to_value(after).expect("json"),
        ));
        // The database checks that the key is unique in what is read, so the merge need not
        // dedupe (which would hold the whole read in memory), and a key that is not one is an
        // error, not rows silently dropped.
        unique_keys(&driver, name, &base, &keys, filter.as_deref()).await?;
        let source = Arc::new(SqlSource {
            driver: driver.clone(),
            sql: driver.select(&exprs, &base, filter.as_deref()),
            cols: cols.clone().into(),
            schema,
            batch_rows,
            progress,
            keys_unique: true,
        });
        let outcome = write(
            lake,
            &table,
            source,
            &WriteMode::Merge(by.primary_key.to_vec()),
            &metadata,
        )
        .await
        .map_err(|e| fail(name, e))?;
        report.rows = outcome.rows_read;
        report.version = Some(outcome.version);
    }
    if detect_deletes && lake.table(&table, None, None).await.is_ok() {
        let (deleted, version) =
            mark_deleted(lake, &driver, name, &table, &base, &keys, saved.as_ref())
                .await
                .map_err(|e| match (e, report.version) {
                    // Say what did land.
                    (ExtractError::Sql { name, message }, Some(v)) => ExtractError::Sql {
                        name,
                        message: format!("{message}; the rows read landed as version {v}"),
                    },
                    (e, _) => e,
                })?;
        report.deleted = Some(deleted);
        if version.is_some() {
            report.version = version;
        }
    }
    Ok(report)
}

/// Fails, naming a repeated key, unless `keys` are unique among the rows `filter` selects.
async fn unique_keys(
    driver: &Arc<dyn Driver>,
    name: &str,
    base: &str,
    keys: &[SqlColumn],
    filter: Option<&str>,
) -> Result<(), ExtractError> {
    let selected: Vec<String> = keys
        .iter()
        .map(|k| format!("{} AS {}", k.expr, driver.quote(&k.name)))
        .collect();
    let grouped: Vec<&str> = keys.iter().map(|k| k.expr.as_str()).collect();
    let sql = driver.first_row(&format!(
        "{} GROUP BY {} HAVING COUNT(*) > 1",
        driver.select(&selected.join(", "), base, filter),
        grouped.join(", ")
    ));
    let repeated = read_all(driver, sql, keys.to_vec())
        .await
        .map_err(|e| fail(name, format!("failed to check the primary key: {e}")))?;
    let Some(batch) = repeated.iter().find(|b| b.num_rows() > 0) else {
        return Ok(());
    };
    let example = keys
        .iter()
        .zip(batch.columns())
        .map(|(k, c)| {
            let v = arrow::util::display::array_value_to_string(c, 0).unwrap_or_default();
            format!("{} = {v}", k.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(fail(
        name,
        format!(
            "the primary key ({}) is not unique at the source: {example} is on more than one row; set `primary_key` to the columns that identify a row",
            keys.iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}
