//! SQLite sources: the file opened read-only, one read transaction per read (a consistent
//! snapshot), types from the columns' declared types as SQLite's affinity rules read them.

use std::path::PathBuf;

use arrow::datatypes::DataType;
use sqlx::sqlite::{SqliteColumn, SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Column, TypeInfo};
use tokio::sync::OnceCell;

use super::{Driver, Kind, Planned, Sink, SqlColumn, describe, send_rows};
use crate::lake::write::SourceError;

pub(crate) struct Sqlite {
    path: PathBuf,
    pool: OnceCell<SqlitePool>,
}

impl Sqlite {
    /// `sqlite://file.db`, relative to the project folder.
    pub fn new(url: &str, project_dir: &std::path::Path) -> Self {
        Sqlite {
            path: crate::paths::under(project_dir, crate::db::sqlite_path(url)),
            pool: OnceCell::new(),
        }
    }

    async fn pool(&self) -> Result<&SqlitePool, SourceError> {
        self.pool
            .get_or_try_init(|| async {
                if !self.path.is_file() {
                    return Err(format!(
                        "failed to open {}: no such file",
                        self.path.display()
                    ));
                }
                let options = SqliteConnectOptions::new()
                    .filename(&self.path)
                    .read_only(true)
                    .busy_timeout(std::time::Duration::from_secs(30));
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(options)
                    .await
                    .map_err(|e| format!("failed to open {}: {e}", self.path.display()))
            })
            .await
            .map_err(Into::into)
    }
}

#[async_trait::async_trait]
impl Driver for Sqlite {
    fn text_type(&self) -> &'static str {
        "TEXT"
    }

    /// SQLite compares timestamps as text: from the start of the second, so a value written
    /// without a fraction still compares at or after it. The merge absorbs the re-read.
    fn timestamp_format(&self, _utc: bool) -> &'static str {
        "%Y-%m-%d %H:%M:%S"
    }

    async fn plan(&self, base: &str) -> Result<Vec<Planned>, SourceError> {
        let pool = self.pool().await?;
        let mut cols = Vec::new();
        for (column, q) in &describe(pool, base, |n| self.quote(n)).await? {
            let name = column.name();
            let declared = match declared_type(pool, column).await {
                Some(d) => d,
                None => column.type_info().name().to_string(),
            };
            cols.push(Planned::mapped(
                &declared,
                map(name, &q, &declared.to_ascii_lowercase()),
            ));
        }
        Ok(cols)
    }

    async fn read(&self, sql: &str, sink: &mut Sink) -> Result<(), SourceError> {
        let pool = self.pool().await?;
        // A read transaction: one snapshot of the file for the whole read.
        let mut snapshot = pool.begin().await?;
        if send_rows::<sqlx::Sqlite>(&mut *snapshot, sql, sink).await? {
            snapshot.commit().await?;
        }
        Ok(())
    }
}

/// A column by its declared type, the way SQLite's affinity rules read it, with exact
/// DECIMAL(p,s) and dates and timestamps by name.
fn map(name: &str, q: &str, declared: &str) -> SqlColumn {
    let text = format!("CAST({q} AS TEXT)");
    let base = declared.split('(').next().unwrap_or_default().trim();
    if declared.contains("bool") {
        return SqlColumn::plain(name, Kind::Bool, q.to_string());
    }
    match base {
        "date" => return SqlColumn::plain(name, Kind::Date, q.to_string()),
        "datetime" | "timestamp" => return SqlColumn::plain(name, Kind::Timestamp, q.to_string()),
        "time" => return SqlColumn::plain(name, Kind::Text, text),
        "decimal" | "numeric" => {
            if let Some((p, s)) = precision(declared)
                && (1..=38).contains(&p)
                && s <= p
            {
                return SqlColumn::new(
                    name,
                    Kind::Text,
                    DataType::Decimal128(p as u8, s as i8),
                    text,
                );
            }
            return SqlColumn::plain(name, Kind::Float, format!("CAST({q} AS REAL)"));
        }
        _ => {}
    }
    if declared.contains("int") {
        SqlColumn::plain(name, Kind::Int, q.to_string())
    } else if declared.contains("char") || declared.contains("clob") || declared.contains("text") {
        SqlColumn::plain(name, Kind::Text, text)
    } else if declared.contains("blob") {
        SqlColumn::plain(name, Kind::Bytes, q.to_string())
    } else if declared.contains("real") || declared.contains("floa") || declared.contains("doub") {
        SqlColumn::plain(name, Kind::Float, q.to_string())
    } else {
        // No declared type, or one SQLite does not know (json, uuid): the value's text.
        SqlColumn::plain(name, Kind::Text, text)
    }
}

/// `(10,2)` of `decimal(10,2)`.
fn precision(declared: &str) -> Option<(u32, u32)> {
    let inner = declared.split_once('(')?.1.split_once(')')?.0;
    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// The declared type of a column that comes straight from a table.
async fn declared_type(pool: &SqlitePool, column: &SqliteColumn) -> Option<String> {
    let sqlx::ColumnOrigin::Table(origin) = column.origin() else {
        return None;
    };
    let (schema, table) = origin
        .table
        .split_once('.')
        .unwrap_or(("main", &origin.table));
    sqlx::query_scalar("SELECT type FROM pragma_table_info(?, ?) WHERE name = ?")
        .bind(table.to_string())
        .bind(schema.to_string())
        .bind(origin.name.to_string())
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_by_affinity() {
        let kind = |d: &str| map("c", "q.c", d);
        assert_eq!(kind("decimal(10,2)").arrow, DataType::Decimal128(10, 2));
        assert_eq!(kind("numeric").kind, Kind::Float);
        assert_eq!(kind("unsigned big int").kind, Kind::Int);
        assert_eq!(kind("varchar(20)").kind, Kind::Text);
        assert_eq!(kind("boolean").kind, Kind::Bool);
        assert_eq!(kind("datetime").kind, Kind::Timestamp);
        assert_eq!(kind("date").kind, Kind::Date);
        assert_eq!(kind("json").kind, Kind::Text);
        assert_eq!(kind("double precision").kind, Kind::Float);
    }
}
