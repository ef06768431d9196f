//! MySQL and MariaDB sources: one `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` at
//! REPEATABLE READ per read (InnoDB's snapshot), session time zone UTC, rows streamed.

use crate::db::LazyPool;
use arrow::datatypes::DataType;
use sqlx::mysql::{MySqlColumn, MySqlPool};
use sqlx::{Column, Connection, Executor, TypeInfo};

use super::{Driver, Kind, Planned, Sink, SqlColumn, describe, send_rows};
use crate::lake::write::SourceError;

/// sqlx sets each session's time zone to UTC, so TIMESTAMP columns read as UTC.
pub(crate) struct Mysql {
    pool: LazyPool<sqlx::MySql>,
}

impl Mysql {
    pub fn new(url: &str, password: Option<String>) -> Self {
        Mysql {
            pool: LazyPool::new(&url.replacen("mariadb://", "mysql://", 1), password),
        }
    }

    async fn pool(&self) -> Result<&MySqlPool, SourceError> {
        self.pool.get(2).await.map_err(Into::into)
    }
}

#[async_trait::async_trait]
impl Driver for Mysql {
    fn quote(&self, ident: &str) -> String {
        format!("`{}`", ident.replace('`', "``"))
    }

    fn text_type(&self) -> &'static str {
        "CHAR"
    }

    fn text_of(&self, expr: &str, type_name: &str) -> String {
        // Spatial values have no CAST to text; their text is WKT.
        if type_name == "GEOMETRY" {
            format!("ST_AsText({expr})")
        } else {
            self.cast(expr, self.text_type())
        }
    }

    /// The session is in UTC; MariaDB takes no offset in a literal.
    fn timestamp_format(&self, _utc: bool) -> &'static str {
        "%Y-%m-%d %H:%M:%S%.6f"
    }

    async fn plan(&self, base: &str) -> Result<Vec<Planned>, SourceError> {
        let pool = self.pool().await?;
        let mut cols = Vec::new();
        for (column, q) in &describe(pool, base, |n| self.quote(n)).await? {
            let name = column.name();
            let signed = format!("CAST({q} AS SIGNED)");
            let text = format!("CAST({q} AS CHAR)");
            let type_name = column.type_info().name();
            let col = match type_name {
                "BOOLEAN" => SqlColumn::plain(name, Kind::Bool, q.clone()),
                "TINYINT" => SqlColumn::new(name, Kind::Int, DataType::Int8, signed),
                "TINYINT UNSIGNED" | "SMALLINT" | "YEAR" => {
                    SqlColumn::new(name, Kind::Int, DataType::Int16, signed)
                }
                "SMALLINT UNSIGNED" | "MEDIUMINT" | "MEDIUMINT UNSIGNED" | "INT" => {
                    SqlColumn::new(name, Kind::Int, DataType::Int32, signed)
                }
                "INT UNSIGNED" | "BIGINT" | "BIT" => SqlColumn::plain(name, Kind::Int, signed),
                "BIGINT UNSIGNED" => {
                    SqlColumn::new(name, Kind::Text, DataType::Decimal128(20, 0), text)
                }
                "FLOAT" => SqlColumn::new(
                    name,
                    Kind::Float,
                    DataType::Float32,
                    format!("CAST({q} AS DOUBLE)"),
                ),
                "DOUBLE" => SqlColumn::plain(name, Kind::Float, format!("CAST({q} AS DOUBLE)")),
                "DECIMAL" => {
                    let t = match origin_of(pool, column).await {
                        Some(Origin {
                            precision: Some(p),
                            scale: Some(s),
                            ..
                        }) if (1..=38).contains(&p) => DataType::Decimal128(p as u8, s as i8),
                        _ => DataType::Utf8,
                    };
                    SqlColumn::new(name, Kind::Text, t, text)
                }
                "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
                | "SET" | "JSON" | "TIME" => SqlColumn::plain(name, Kind::Text, text),
                "DATE" => SqlColumn::plain(name, Kind::Date, q.clone()),
                "DATETIME" => SqlColumn::plain(name, Kind::Timestamp, q.clone()),
                "TIMESTAMP" => SqlColumn::plain(name, Kind::TimestampUtc, q.clone()),
                "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                    // Text in a `_bin` collation (MariaDB's JSON is one) carries the binary
                    // flag too; the table's column says whether it has a character set.
                    match origin_of(pool, column).await {
                        Some(info) if info.charset.is_some() => {
                            SqlColumn::plain(name, Kind::Text, text)
                        }
                        _ => SqlColumn::plain(name, Kind::Bytes, q.clone()),
                    }
                }
                other => {
                    cols.push(Planned::unmapped(name, other));
                    continue;
                }
            };
            cols.push(Planned::mapped(type_name, col));
        }
        Ok(cols)
    }

    async fn read(&self, sql: &str, sink: &mut Sink) -> Result<(), SourceError> {
        let pool = self.pool().await?;
        let mut conn = pool.acquire().await?;
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        let mut snapshot = conn
            .begin_with("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await?;
        if send_rows::<sqlx::MySql>(&mut *snapshot, sql, sink).await? {
            snapshot.commit().await?;
        }
        Ok(())
    }
}

/// What information_schema says of a column that comes straight from a table.
struct Origin {
    precision: Option<u64>,
    scale: Option<u64>,
    charset: Option<String>,
}

async fn origin_of(pool: &MySqlPool, column: &MySqlColumn) -> Option<Origin> {
    let sqlx::ColumnOrigin::Table(origin) = column.origin() else {
        return None;
    };
    let (schema, table) = match origin.table.split_once('.') {
        Some((s, t)) => (Some(s.to_string()), t.to_string()),
        None => (None, origin.table.to_string()),
    };
    let row: (Option<u64>, Option<u64>, Option<String>) = sqlx::query_as(
        "SELECT CAST(NUMERIC_PRECISION AS UNSIGNED), CAST(NUMERIC_SCALE AS UNSIGNED), CHARACTER_SET_NAME
         FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND COLUMN_NAME = ?",
    )
    .bind(schema)
    .bind(table)
    .bind(origin.name.to_string())
    .fetch_one(pool)
    .await
    .ok()?;
    Some(Origin {
        precision: row.0,
        scale: row.1,
        charset: row.2,
    })
}
