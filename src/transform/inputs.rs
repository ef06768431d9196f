//! The tables a model reads, opened at exact versions in a DataFusion session of its own.
//!
//! An incremental model's cursor is the version of each input it read, committed with its data
//! (`lake.model` in the commit). On the next run an incremental input is read as the files its
//! commits since then added; when those commits also removed files (an overwrite, a delete, a
//! compaction), "new rows" cannot be told apart and the input is read in full, which the merge
//! on the unique key absorbs.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Materialized, Model, Project, TransformError};
use crate::lake::changes::{Changes, changes_since};
use crate::lake::{Lake, TableName};
use crate::query::QueryError;

/// The commit metadata key holding a model's cursor.
pub const MODEL_STATE_KEY: &str = "lake.model";

/// What a model's commit records: the hash of its SQL and the version of each input it read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCursor {
    /// SHA-256 (hex, 16 bytes) of the SQL and the settings that shape the rows.
    pub sql: String,
    /// `schema.name` -> version read.
    pub inputs: BTreeMap<String, u64>,
}

/// How an input was read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadKind {
    /// Every row, at `version`.
    Full,
    /// The rows committed after `since`, up to `version`: `files` data files.
    New {
        /// The version read last time.
        since: u64,
        /// Files added since.
        files: usize,
    },
    /// Meant to be read incrementally, but read in full: why.
    FullInstead(String),
    /// A view, planned from its SQL.
    View,
}

/// One input of a run.
#[derive(Debug, Clone)]
pub struct Read {
    /// The table.
    pub table: TableName,
    /// The version read (none for a view).
    pub version: Option<u64>,
    /// How.
    pub kind: ReadKind,
}

impl Read {
    /// `raw.plays@v12 (new since v10, 2 files)`, for reports.
    pub fn describe(&self) -> String {
        let at = self.version.map(|v| format!("@v{v}")).unwrap_or_default();
        let how = match &self.kind {
            ReadKind::Full => String::new(),
            ReadKind::New { since, files } => format!(
                " (new since v{since}, {files} file{})",
                if *files == 1 { "" } else { "s" }
            ),
            ReadKind::FullInstead(why) => format!(" (in full: {why})"),
            ReadKind::View => " (view)".into(),
        };
        format!("{}{at}{how}", self.table)
    }
}

/// A DataFusion session holding exactly the tables one model (or test) reads.
pub struct Inputs {
    /// The session.
    pub ctx: SessionContext,
    /// What was registered, in order.
    pub reads: Vec<Read>,
    /// Tables opened at these versions instead of their latest.
    pub at: BTreeMap<TableName, u64>,
    /// Tables read through these filters (a group-scoped run's touched groups).
    pub filters: BTreeMap<TableName, datafusion::logical_expr::Expr>,
    /// Tables read as these files only (a merging run's new rows).
    pub only: BTreeMap<TableName, Vec<deltalake::kernel::Add>>,
}

impl Inputs {
    /// An empty session over `lake`, from its session factory.
    pub fn new(lake: &Lake) -> Result<Self, crate::lake::LakeError> {
        Ok(Self {
            ctx: lake.sessions().context(false)?,
            reads: Vec::new(),
            at: BTreeMap::new(),
            filters: BTreeMap::new(),
            only: BTreeMap::new(),
        })
    }

    /// The versions read, for the cursor and the run record.
    pub fn versions(&self) -> BTreeMap<String, u64> {
        self.reads
            .iter()
            .filter_map(|r| Some((r.table.to_string(), r.version?)))
            .collect()
    }

    pub(crate) fn has(&self, table: &TableName) -> bool {
        self.reads.iter().any(|r| &r.table == table)
    }

    fn register(
        &self,
        table: &TableName,
        provider: Arc<dyn TableProvider>,
    ) -> Result<(), TransformError> {
        let catalog = self
            .ctx
            .catalog("datafusion")
            .expect("the default catalog exists");
        let schema = match catalog.schema(table.schema()) {
            Some(s) => s,
            None => {
                let s = Arc::new(MemorySchemaProvider::new());
                catalog
                    .register_schema(table.schema(), s.clone())
                    .map_err(|e| sql_error(table, e))?;
                s
            }
        };
        schema
            .register_table(table.name().to_string(), provider)
            .map_err(|e| sql_error(table, e))?;
        Ok(())
    }

    /// Registers every table in `tables`: views of the project from their SQL (with what they
    /// read), other tables from the lake at their latest version. Tables in `since` are read
    /// as the rows committed after that version.
    pub fn add<'a>(
        &'a mut self,
        lake: &'a Lake,
        project: &'a Project,
        tables: &'a [TableName],
        since: &'a BTreeMap<TableName, u64>,
    ) -> BoxFuture<'a, Result<(), TransformError>> {
        Box::pin(async move {
            for table in tables {
                if self.has(table) {
                    continue;
                }
                if let Some(view) = project
                    .model(table)
                    .filter(|m| m.config.materialized == Materialized::View)
                {
                    let reads: Vec<TableName> =
                        view.reads.iter().map(|r| r.table.clone()).collect();
                    self.add(lake, project, &reads, &BTreeMap::new()).await?;
                    let df = self
                        .ctx
                        .sql(&view.sql)
                        .await
                        .map_err(|e| model_sql_error(view, e))?;
                    self.register(table, df.into_view())?;
                    self.reads.push(Read {
                        table: table.clone(),
                        version: None,
                        kind: ReadKind::View,
                    });
                    continue;
                }
                let delta = lake.table(table, self.at.get(table).copied(), None).await?;
                let version = delta.version().unwrap_or(0) as u64;
                let changes = match since.get(table) {
                    Some(&from) => Some((from, changes_since(table, &delta, from, version).await?)),
                    None => None,
                };
                let changes = match self.only.get(table) {
                    Some(files) => Some((version, Changes::Added(files.clone()))),
                    None => changes,
                };
                let (provider, kind) = match changes {
                    Some((from, Changes::Added(files))) => {
                        let n = files.len();
                        let provider = crate::lake::scan::provider(&delta, Some(&files))
                            .await
                            .map_err(|e| sql_error(table, e))?;
                        (
                            provider,
                            ReadKind::New {
                                since: from,
                                files: n,
                            },
                        )
                    }
                    other => (
                        crate::lake::scan::provider(&delta, None)
                            .await
                            .map_err(|e| sql_error(table, e))?,
                        match other {
                            Some((_, why)) => ReadKind::FullInstead(why.to_string()),
                            None => ReadKind::Full,
                        },
                    ),
                };
                let provider = match self.filters.get(table) {
                    Some(filter) => self
                        .ctx
                        .read_table(provider)
                        .and_then(|df| df.filter(filter.clone()))
                        .map_err(|e| sql_error(table, e))?
                        .into_view(),
                    None => provider,
                };
                self.register(table, provider)?;
                self.reads.push(Read {
                    table: table.clone(),
                    version: Some(version),
                    kind,
                });
            }
            Ok(())
        })
    }
}

/// The cursor a model's latest commit recorded, if its latest commit was made by a model run.
pub async fn cursor(table: &DeltaTable) -> Option<ModelCursor> {
    let latest: Vec<_> = table.history(Some(1)).try_collect().await.ok()?;
    let value = latest.first()?.info.get(MODEL_STATE_KEY)?.clone();
    serde_json::from_value(value).ok()
}

/// A registration failure: a name clash or a table that will not open.
pub(crate) fn sql_error(
    table: &TableName,
    e: datafusion::error::DataFusionError,
) -> TransformError {
    TransformError::Input {
        table: table.clone(),
        message: e.to_string(),
    }
}

/// A model's SQL failing to plan or run, with its position in the file.
pub fn model_sql_error(model: &Model, e: datafusion::error::DataFusionError) -> TransformError {
    sql_error_in(&model.display, model.header_lines, e)
}

/// A query's error with its position in `file`, whose SQL starts after `header_lines`.
pub fn sql_error_in(
    file: &str,
    header_lines: usize,
    e: datafusion::error::DataFusionError,
) -> TransformError {
    match QueryError::from_datafusion(e) {
        QueryError::Sql { message, position } => TransformError::Sql {
            file: file.to_string(),
            position: position.map(|(l, c)| (l as usize + header_lines, c as usize)),
            message,
        },
        QueryError::Lake(e) => TransformError::Lake(e),
    }
}
