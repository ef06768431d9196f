//! A DataFusion session over every table in the lake.
//!
//! Each table is registered under its schema (`raw.plays`, `curated.top_artists`) when the
//! session starts, from one listing of the lake; it is opened only when a query uses it.
//! Earlier versions are read by suffixing the name: `raw."plays@v3"` is version 3, and
//! `raw."plays@2026-11-01T12:00:00Z"` is the table as it stood at that instant.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub mod coalesce;
pub mod distinct;
pub mod joins;
pub mod keyset;
pub(crate) mod utc;
pub mod windows;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::TableType;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::lake::{CURATED, Lake, LakeError, RAW, TableName};

/// `plan` with `f` applied to every part of each of its own expressions, from the leaves up,
/// each expression keeping the name it had (lake's logical rules rewrite through this). The
/// caller recomputes the plan's schema where something changed.
pub(crate) fn rewrite_expressions(
    plan: datafusion::logical_expr::LogicalPlan,
    mut f: impl FnMut(
        datafusion::logical_expr::Expr,
    ) -> datafusion::common::Result<
        datafusion::common::tree_node::Transformed<datafusion::logical_expr::Expr>,
    >,
) -> datafusion::common::Result<
    datafusion::common::tree_node::Transformed<datafusion::logical_expr::LogicalPlan>,
> {
    use datafusion::common::tree_node::TreeNode;
    let names = datafusion::logical_expr::expr_rewriter::NamePreserver::new(&plan);
    plan.map_expressions(|e| {
        let saved = names.save(&e);
        Ok(e.transform_up(&mut f)?.update_data(|e| saved.restore(e)))
    })
}

/// Errors from the query stage.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The lake could not be listed or opened.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// SQL that does not parse or plan, or fails while running.
    #[error("failed to run query: {message}{}", position.map(|(l, c)| format!(" (at line {l}, column {c})")).unwrap_or_default())]
    Sql {
        /// DataFusion's message.
        message: String,
        /// 1-based line and column, where DataFusion gives one.
        position: Option<(u64, u64)>,
    },
}

/// A `Result` whose error is a [`QueryError`].
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl QueryError {
    /// Wraps a DataFusion error, keeping its position where it has one.
    pub fn from_datafusion(e: DataFusionError) -> Self {
        let position = e
            .diagnostic()
            .and_then(|d| d.span)
            .filter(|s| s.start.line > 0)
            .map(|s| (s.start.line, s.start.column))
            .or_else(|| parse_position(&e.to_string()));
        let message = match e.find_root() {
            DataFusionError::External(inner) => inner.to_string(),
            _ => e.to_string(),
        };
        // The default catalog's name means nothing to a user.
        let message = message.replace("'datafusion.", "'");
        // DataFusion names its own setting; lake's is `[query] memory_limit`.
        let message = message.replace("'runtime.memory_limit'", "'[query] memory_limit'");
        Self::Sql { message, position }
    }

    /// The statement with a caret under the error's position, for a terminal.
    pub fn caret(&self, sql: &str) -> Option<String> {
        let QueryError::Sql {
            position: Some((line, col)),
            ..
        } = self
        else {
            return None;
        };
        let text = sql.lines().nth(line.checked_sub(1)? as usize)?;
        Some(format!(
            "  {text}\n  {}^",
            " ".repeat(col.saturating_sub(1) as usize)
        ))
    }
}

/// sqlparser writes positions into its messages as `Line: 1, Column: 8`.
fn parse_position(message: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find("Line: ")? + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

/// A session over a lake.
pub struct LakeSession {
    ctx: SessionContext,
    tables: Vec<TableName>,
}

impl LakeSession {
    /// Lists the lake and registers every table, without opening any.
    pub async fn new(lake: Arc<Lake>) -> Result<Self> {
        let tables = lake.list_tables().await?;
        let ctx = lake.sessions().context(true)?;
        let mut schemas: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in [RAW, CURATED] {
            schemas.entry(s.to_string()).or_default();
        }
        for t in &tables {
            schemas
                .entry(t.schema().to_string())
                .or_default()
                .push(t.name().to_string());
        }
        let views = lake.views().await?;
        for (v, _) in &views {
            schemas.entry(v.schema().to_string()).or_default();
        }
        let catalog = ctx
            .catalog("datafusion")
            .expect("the default catalog exists");
        let mut providers: HashMap<String, Arc<LakeSchema>> = HashMap::new();
        for (schema, names) in schemas {
            let provider = Arc::new(LakeSchema {
                lake: lake.clone(),
                schema: schema.clone(),
                names,
                opened: Mutex::default(),
            });
            catalog
                .register_schema(&schema, provider.clone())
                .map_err(QueryError::from_datafusion)?;
            providers.insert(schema, provider);
        }
        // Views may read views: plan those whose inputs are there, until none is left or no
        // pass makes progress; the last error then says what is missing.
        let mut left = views;
        while !left.is_empty() {
            let before = left.len();
            let mut failed = Vec::new();
            let mut last_error = None;
            for (name, sql) in std::mem::take(&mut left) {
                match ctx.sql(&sql).await {
                    Ok(df) => providers[name.schema()].add_view(name.name(), df.into_view()),
                    Err(e) => {
                        last_error = Some(e);
                        failed.push((name, sql));
                    }
                }
            }
            if failed.len() == before {
                let names: Vec<String> = failed.iter().map(|(n, _)| n.to_string()).collect();
                tracing::warn!(
                    "views {} do not plan and are left out: {}",
                    names.join(", "),
                    last_error.map(|e| e.to_string()).unwrap_or_default()
                );
                break;
            }
            left = failed;
        }
        Ok(Self { ctx, tables })
    }

    /// The tables in the lake when the session started.
    pub fn tables(&self) -> &[TableName] {
        &self.tables
    }

    /// The DataFusion context, for callers that need more than SQL.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans a statement.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        self.ctx.sql(sql).await.map_err(QueryError::from_datafusion)
    }

    /// Runs a query and returns its first column as text, nulls left out: the ids already in a
    /// table, say.
    pub async fn strings(&self, sql: &str) -> Result<Vec<String>> {
        let batches = self
            .sql(sql)
            .await?
            .collect()
            .await
            .map_err(QueryError::from_datafusion)?;
        let mut out = Vec::new();
        for batch in batches {
            let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| QueryError::from_datafusion(e.into()))?;
            let column = arrow::array::AsArray::as_string::<i32>(&column);
            out.extend(column.iter().flatten().map(String::from));
        }
        Ok(out)
    }
}

/// One schema of the lake: its table names, the tables opened so far, and its views.
struct LakeSchema {
    lake: Arc<Lake>,
    schema: String,
    names: Vec<String>,
    opened: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl LakeSchema {
    /// A view of the models; it shadows a table of the same name.
    fn add_view(&self, name: &str, view: Arc<dyn TableProvider>) {
        self.opened
            .lock()
            .expect("poisoned")
            .insert(name.to_string(), view);
    }
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema")
            .field("schema", &self.schema)
            .field("names", &self.names)
            .finish()
    }
}

/// Which state of a table a name asks for.
#[derive(Debug, PartialEq)]
enum AsOf {
    Latest,
    Version(u64),
    Time(DateTime<Utc>),
}

/// Splits `plays@v3` or `plays@2026-11-01T12:00:00Z` into a name and a state.
fn split_as_of(name: &str) -> Result<(&str, AsOf), DataFusionError> {
    let Some((base, spec)) = name.split_once('@') else {
        return Ok((name, AsOf::Latest));
    };
    if let Some(v) = spec.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()) {
        return Ok((base, AsOf::Version(v)));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(spec) {
        return Ok((base, AsOf::Time(t.with_timezone(&Utc))));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(spec, format) {
            return Ok((base, AsOf::Time(t.and_utc())));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(spec, "%Y-%m-%d") {
        return Ok((
            base,
            AsOf::Time(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
        ));
    }
    Err(DataFusionError::Plan(format!(
        "`{name}`: after `@` write a version such as `v3` or a UTC time such as `2026-11-01T12:00:00Z`"
    )))
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.names.clone();
        for n in self.opened.lock().expect("poisoned").keys() {
            if !n.contains('@') && !names.contains(n) {
                names.push(n.clone());
            }
        }
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(p) = self.opened.lock().expect("poisoned").get(name) {
            return Ok(Some(p.clone()));
        }
        let (base, as_of) = split_as_of(name)?;
        if !self.table_exist(base) {
            return Ok(None);
        }
        let table_name =
            TableName::new(&self.schema, base).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let (version, at) = match as_of {
            AsOf::Latest => (None, None),
            AsOf::Version(v) => (Some(v), None),
            AsOf::Time(t) => (None, Some(t)),
        };
        let table = self
            .lake
            .table(&table_name, version, at)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let provider = crate::lake::scan::provider(&table, None).await?;
        self.opened
            .lock()
            .expect("poisoned")
            .insert(name.to_string(), provider.clone());
        Ok(Some(provider))
    }

    /// Every lake table is a base table; answering without opening it keeps
    /// `information_schema.tables` cheap.
    async fn table_type(&self, name: &str) -> Result<Option<TableType>, DataFusionError> {
        if let Some(p) = self.opened.lock().expect("poisoned").get(name) {
            return Ok(Some(p.table_type()));
        }
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.opened.lock().expect("poisoned").contains_key(name)
            || split_as_of(name).is_ok_and(|(base, _)| self.names.iter().any(|n| n == base))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Err(DataFusionError::Plan(format!(
            "cannot create {}.{name}: lake tables are written with `lake ingest` and models",
            self.schema
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_forms() {
        assert_eq!(split_as_of("plays").unwrap(), ("plays", AsOf::Latest));
        assert_eq!(
            split_as_of("plays@v3").unwrap(),
            ("plays", AsOf::Version(3))
        );
        let (_, t) = split_as_of("plays@2026-11-01T12:00:00Z").unwrap();
        assert_eq!(t, AsOf::Time("2026-11-01T12:00:00Z".parse().unwrap()));
        let (_, d) = split_as_of("plays@2026-11-01").unwrap();
        assert_eq!(d, AsOf::Time("2026-11-01T00:00:00Z".parse().unwrap()));
        assert!(split_as_of("plays@yesterday").is_err());
    }

    #[test]
    fn positions_from_parser_messages() {
        assert_eq!(
            parse_position("sql parser error: Expected: end, found: x at Line: 2, Column: 15"),
            Some((2, 15))
        );
        assert_eq!(parse_position("no position"), None);
    }
}
