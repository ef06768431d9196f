//! What a database module implements ([`Driver`]), and the columns it plans: how each is
//! selected, read and typed, with the casts a source configures.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use chrono::DateTime;

use super::Sink;
use crate::lake::write::SourceError;

/// How a value is read from the database. Integers are read as 64 bits and floats as doubles,
/// then cast to the column's Arrow type, which keeps the source's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int,
    Float,
    /// Text, and anything read as its text: decimals (then cast), json, uuid, times.
    Text,
    Bytes,
    Date,
    /// A timestamp without a time zone.
    Timestamp,
    /// A point in time, read in UTC.
    TimestampUtc,
    /// A PostgreSQL array.
    List(Item),
}

/// The element of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Bool,
    Int,
    Float,
    Text,
}

impl Kind {
    /// The Arrow type the value is read into.
    pub(super) fn read_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Text => DataType::Utf8,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::List(item) => list(match item {
                Item::Bool => DataType::Boolean,
                Item::Int => DataType::Int64,
                Item::Float => DataType::Float64,
                Item::Text => DataType::Utf8,
            }),
        }
    }

    /// The kind a configured cast reads: `casts = { col = "text" }`.
    fn of_cast(cast: &str) -> Kind {
        match cast.to_ascii_lowercase().as_str() {
            "bigint" | "int8" | "int" | "integer" | "signed" => Kind::Int,
            "double precision" | "float8" | "double" | "float" | "real" => Kind::Float,
            "boolean" | "bool" => Kind::Bool,
            _ => Kind::Text,
        }
    }
}

pub(crate) fn list(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

/// One column of a source: how it is selected, read and typed.
#[derive(Debug, Clone)]
pub(crate) struct SqlColumn {
    /// Its name in the result.
    pub name: String,
    /// How it is read.
    pub kind: Kind,
    /// Its type in the lake.
    pub arrow: DataType,
    /// The expression that selects it from the source's result, aliased `q`.
    pub expr: String,
}

impl SqlColumn {
    pub fn new(name: &str, kind: Kind, arrow: DataType, expr: String) -> Self {
        SqlColumn {
            name: name.to_string(),
            kind,
            arrow,
            expr,
        }
    }

    /// A column read as it is, with the type it is read in.
    pub fn plain(name: &str, kind: Kind, expr: String) -> Self {
        SqlColumn::new(name, kind, kind.read_type(), expr)
    }
}

/// What a database module does; the rest of the extract is shared.
#[async_trait::async_trait]
pub(crate) trait Driver: Send + Sync + 'static {
    /// An identifier, quoted.
    fn quote(&self, ident: &str) -> String {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }

    /// `expr` cast to the SQL type `sql_type`, the way this database writes it.
    fn cast(&self, expr: &str, sql_type: &str) -> String {
        format!("CAST({expr} AS {sql_type})")
    }

    /// This database's name for a text type, for `casts = { col = "text" }`.
    fn text_type(&self) -> &'static str;

    /// The columns of `base` (a SELECT): each with its type's name and, where lake maps the
    /// type, how to read it (an expression over `q`). Configured casts are applied after.
    async fn plan(&self, base: &str) -> Result<Vec<Planned>, SourceError>;

    /// `expr` read as text, for `casts = { col = "text" }` on a column of type `type_name`.
    fn text_of(&self, expr: &str, _type_name: &str) -> String {
        self.cast(expr, self.text_type())
    }

    /// Runs `sql` inside one snapshot and sends every row to `sink`.
    async fn read(&self, sql: &str, sink: &mut Sink) -> Result<(), SourceError>;

    /// A literal of a timestamp, `micros` after the epoch, for the cursor's WHERE.
    fn timestamp_literal(&self, micros: i64, utc: bool) -> String {
        time_literal(micros, self.timestamp_format(utc))
    }

    /// How [`Driver::timestamp_literal`] writes a timestamp (chrono's `format`).
    fn timestamp_format(&self, utc: bool) -> &'static str {
        if utc {
            "%Y-%m-%d %H:%M:%S%.6f+00:00"
        } else {
            "%Y-%m-%d %H:%M:%S%.6f"
        }
    }

    /// `sql` limited to its first row.
    fn first_row(&self, sql: &str) -> String {
        format!("{sql} LIMIT 1")
    }

    /// `SELECT exprs FROM (base) AS q [WHERE filter]`.
    fn select(&self, exprs: &str, base: &str, filter: Option<&str>) -> String {
        match filter {
            Some(f) => format!("SELECT {exprs} FROM ({base}) AS q WHERE {f}"),
            None => format!("SELECT {exprs} FROM ({base}) AS q"),
        }
    }
}

/// A column as a database describes it.
pub(crate) struct Planned {
    /// Its name in the result.
    pub name: String,
    /// The database's name for its type.
    pub type_name: String,
    /// How lake reads it, or `None` for a type lake does not map.
    pub col: Option<SqlColumn>,
}

impl Planned {
    pub fn mapped(type_name: &str, col: SqlColumn) -> Self {
        Planned {
            name: col.name.clone(),
            type_name: type_name.to_string(),
            col: Some(col),
        }
    }

    pub fn unmapped(name: &str, type_name: &str) -> Self {
        Planned {
            name: name.to_string(),
            type_name: type_name.to_string(),
            col: None,
        }
    }
}

/// The columns of source `source`: as the driver reads them, or as `casts` say. A type lake
/// does not map, without a cast, is an error naming the column and the cast to add.
pub(super) fn apply_casts(
    driver: &dyn Driver,
    source: &str,
    planned: Vec<Planned>,
    casts: &BTreeMap<String, String>,
) -> Result<Vec<SqlColumn>, SourceError> {
    planned
        .into_iter()
        .map(|p| match (casts.get(&p.name), &p.col) {
            (Some(cast), _) => cast_col(driver, &p, cast),
            (None, Some(col)) => Ok(col.clone()),
            (None, None) => Err(format!(
                "column `{0}` has type {1}, which lake does not map; add `casts = {{ {0} = \"text\" }}` to [sources.{source}]",
                p.name, p.type_name
            )
            .into()),
        })
        .collect()
}

/// A configured cast, or an error if the cast is not a plain type name.
fn cast_col(driver: &dyn Driver, p: &Planned, cast: &str) -> Result<SqlColumn, SourceError> {
    if !cast
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c))
    {
        return Err(format!("casts.{} = `{cast}` is not a type name", p.name).into());
    }
    let expr = format!("q.{}", driver.quote(&p.name));
    let kind = Kind::of_cast(cast);
    let read = if kind == Kind::Text {
        driver.text_of(&expr, &p.type_name)
    } else {
        driver.cast(&expr, cast)
    };
    Ok(SqlColumn::plain(&p.name, kind, read))
}

/// The columns of `base` as the database describes it, without running it: each with the
/// expression that selects it from the subquery `q` (`q."name"`, quoted by `quote`).
pub(crate) async fn describe<DB>(
    pool: &sqlx::Pool<DB>,
    base: &str,
    quote: impl Fn(&str) -> String,
) -> Result<Vec<(DB::Column, String)>, SourceError>
where
    DB: sqlx::Database,
    DB::Column: Clone,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::{Column as _, Executor as _, SqlSafeStr as _, Statement as _};
    let described = pool
        .prepare(sqlx::AssertSqlSafe(base.to_string()).into_sql_str())
        .await
        .map_err(|e| format!("failed to read the columns: {e}"))?;
    Ok(described
        .columns()
        .iter()
        .map(|c| (c.clone(), format!("q.{}", quote(c.name()))))
        .collect())
}

/// A quoted literal of the instant `micros` after the epoch, written with `format`.
pub(crate) fn time_literal(micros: i64, format: &str) -> String {
    let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
    format!("'{}'", t.format(format))
}
