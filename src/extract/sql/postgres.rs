//! PostgreSQL sources: one REPEATABLE READ, READ ONLY transaction per read, rows streamed
//! from the server as they come.

use crate::db::LazyPool;
use arrow::array::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::DataType;
use futures::StreamExt;
use sqlx::postgres::{PgColumn, PgPool, PgTypeKind};
use sqlx::{AssertSqlSafe, Column, Row, TypeInfo};

use super::{Driver, Item, Kind, Planned, Sink, SqlColumn, append_sqlx, describe};
use crate::lake::write::SourceError;

pub(crate) struct Postgres {
    pool: LazyPool<sqlx::Postgres>,
}

impl Postgres {
    pub fn new(url: &str, password: Option<String>) -> Self {
        Postgres {
            pool: LazyPool::new(url, password),
        }
    }

    async fn pool(&self) -> Result<&PgPool, SourceError> {
        self.pool.get(2).await.map_err(Into::into)
    }
}

#[async_trait::async_trait]
impl Driver for Postgres {
    fn cast(&self, expr: &str, sql_type: &str) -> String {
        format!("{expr}::{sql_type}")
    }

    fn text_type(&self) -> &'static str {
        "text"
    }

    async fn plan(&self, base: &str) -> Result<Vec<Planned>, SourceError> {
        let pool = self.pool().await?;
        let mut cols = Vec::new();
        for (column, q) in &describe(pool, base, |n| self.quote(n)).await? {
            let name = column.name();
            let type_name = column.type_info().name().to_ascii_uppercase();
            let cast = |t: &str| format!("{q}::{t}");
            let col = match type_name.as_str() {
                "BOOL" => SqlColumn::plain(name, Kind::Bool, q.clone()),
                "INT2" => SqlColumn::new(name, Kind::Int, DataType::Int16, cast("int8")),
                "INT4" => SqlColumn::new(name, Kind::Int, DataType::Int32, cast("int8")),
                "INT8" | "OID" => SqlColumn::plain(name, Kind::Int, cast("int8")),
                "FLOAT4" => SqlColumn::new(name, Kind::Float, DataType::Float32, cast("float8")),
                "FLOAT8" => SqlColumn::plain(name, Kind::Float, q.clone()),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UUID" | "JSON" | "JSONB"
                | "INTERVAL" | "INET" | "CIDR" | "MONEY" | "XML" | "TIME" | "TIMETZ" => {
                    SqlColumn::plain(name, Kind::Text, cast("text"))
                }
                "NUMERIC" => {
                    let t = match numeric_typmod(pool, column).await {
                        Some((p, s)) if (1..=38).contains(&p) => {
                            DataType::Decimal128(p as u8, s as i8)
                        }
                        _ => DataType::Utf8,
                    };
                    SqlColumn::new(name, Kind::Text, t, cast("text"))
                }
                "DATE" => SqlColumn::plain(name, Kind::Date, q.clone()),
                "TIMESTAMP" => SqlColumn::plain(name, Kind::Timestamp, q.clone()),
                "TIMESTAMPTZ" => SqlColumn::plain(name, Kind::TimestampUtc, q.clone()),
                "BYTEA" => SqlColumn::plain(name, Kind::Bytes, q.clone()),
                "BOOL[]" => SqlColumn::plain(name, Kind::List(Item::Bool), cast("bool[]")),
                "INT2[]" | "INT4[]" | "INT8[]" => {
                    SqlColumn::plain(name, Kind::List(Item::Int), cast("int8[]"))
                }
                "FLOAT4[]" | "FLOAT8[]" | "NUMERIC[]" => {
                    SqlColumn::plain(name, Kind::List(Item::Float), cast("float8[]"))
                }
                "TEXT[]" | "VARCHAR[]" | "BPCHAR[]" | "UUID[]" => {
                    SqlColumn::plain(name, Kind::List(Item::Text), cast("text[]"))
                }
                _ if matches!(column.type_info().kind(), PgTypeKind::Enum(_)) => {
                    SqlColumn::plain(name, Kind::Text, cast("text"))
                }
                other => {
                    cols.push(Planned::unmapped(name, other));
                    continue;
                }
            };
            cols.push(Planned::mapped(&type_name, col));
        }
        Ok(cols)
    }

    async fn read(&self, sql: &str, sink: &mut Sink) -> Result<(), SourceError> {
        let pool = self.pool().await?;
        // One consistent snapshot for the whole read; a transaction dropped on an error rolls
        // back.
        let mut snapshot = pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        {
            let mut rows = sqlx::query(AssertSqlSafe(sql.to_string())).fetch(&mut *snapshot);
            while let Some(row) = rows.next().await {
                let row = row?;
                let b = sink.row();
                append_sqlx(&row, b)?;
                for i in 0..b.cols().len() {
                    let Kind::List(item) = b.cols()[i].kind else {
                        continue;
                    };
                    let named = |e: sqlx::Error| -> SourceError {
                        format!("failed to read column `{}`: {e}", row.columns()[i].name()).into()
                    };
                    match item {
                        Item::Bool => {
                            b.list::<BooleanBuilder, bool>(i, row.try_get(i).map_err(named)?)
                        }
                        Item::Int => b.list::<Int64Builder, i64>(i, row.try_get(i).map_err(named)?),
                        Item::Float => {
                            b.list::<Float64Builder, f64>(i, row.try_get(i).map_err(named)?)
                        }
                        Item::Text => {
                            b.list::<StringBuilder, String>(i, row.try_get(i).map_err(named)?)
                        }
                    }
                }
                if !sink.end_row().await? {
                    return Ok(());
                }
            }
        }
        snapshot.commit().await?;
        Ok(())
    }
}

/// numeric(p,s) of a column that comes straight from a table.
async fn numeric_typmod(pool: &PgPool, column: &PgColumn) -> Option<(u32, u32)> {
    let (rel, att) = (column.relation_id()?, column.relation_attribute_no()?);
    let typmod: i32 = sqlx::query_scalar(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
    )
    .bind(rel)
    .bind(att)
    .fetch_one(pool)
    .await
    .ok()?;
    if typmod < 4 {
        return None;
    }
    let t = (typmod - 4) as u32;
    Some(((t >> 16) & 0xffff, t & 0xffff))
}
