//! Transform: the analysts' SQL models in `queries/`, ordered by what they read.
//!
//! This step loads and checks the models: their headers, the tables they read (from
//! DataFusion's SQL parser, no templating), unknown tables, duplicate names and cycles, and
//! the order they run in. Running them (`lake run`) builds on it.

pub mod checks;
pub mod groups;
pub mod inputs;
pub mod merge;
pub mod model;
pub mod run;
pub mod runs;
pub mod scope;
pub mod select;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use checks::AUDIT;

pub use checks::{Check, CheckKind, CustomTest};
pub use model::{IncrementalBy, Materialized, Model, ModelConfig, Reference, Severity};

use crate::lake::TableName;

/// Errors from the transform stage; each names the model file, and the line and column where
/// there are some.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A model file that cannot be read.
    #[error("failed to read model {file}: {cause}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A model whose header or SQL is wrong.
    #[error("failed to load model {file}{}: {why}", position(*line, *column))]
    Invalid {
        /// The file.
        file: String,
        /// The 1-based line, where known.
        line: Option<usize>,
        /// The 1-based column, where known.
        column: Option<usize>,
        /// What is wrong.
        why: String,
    },
    /// A table that neither exists nor is made by a model.
    #[error(
        "failed to resolve {table} in {file}:{line}:{column}: no such table in the lake, and no model makes it"
    )]
    UnknownTable {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// The column.
        column: usize,
        /// The table as written.
        table: TableName,
    },
    /// Two files that make the same table.
    #[error("failed to load models: {first} and {second} both make {table}")]
    Duplicate {
        /// The table.
        table: TableName,
        /// One file.
        first: String,
        /// The other.
        second: String,
    },
    /// Models that read each other in a circle.
    #[error("failed to order models: they read each other (or their tests do) in a cycle: {}", models.join(" -> "))]
    Cycle {
        /// The models of the cycle, the first repeated at the end.
        models: Vec<String>,
    },
    /// A model's or test's SQL that does not plan or fails while it runs.
    #[error("failed to run {file}{}: {message}", position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Sql {
        /// The file.
        file: String,
        /// 1-based line and column in the file, where DataFusion gives them.
        position: Option<(usize, usize)>,
        /// DataFusion's message.
        message: String,
    },
    /// An input that cannot be opened for a model.
    #[error("failed to open input {table}: {message}")]
    Input {
        /// The table.
        table: TableName,
        /// Why.
        message: String,
    },
    /// A selector that matches nothing or does not parse.
    #[error("failed to select `{selector}`: {why}")]
    Select {
        /// The selector as typed.
        selector: String,
        /// Why.
        why: String,
    },
    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
}

/// A `Result` whose error is a [`TransformError`].
pub type Result<T, E = TransformError> = std::result::Result<T, E>;

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// The models of a project, in the order they run.
#[derive(Debug)]
pub struct Project {
    /// Models, each after every model it reads (and every model its tests read).
    pub models: Vec<Model>,
}

impl Project {
    /// Loads every `*.sql` under `<dir>/queries` and the custom tests under `tests` (a
    /// folder, `<dir>/tests` by default), and orders them. `lake_tables` are the tables that
    /// exist already.
    pub fn load(dir: &Path, tests: &Path, lake_tables: &[TableName]) -> Result<Self> {
        let queries = dir.join("queries");
        let display = |path: &Path| path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let mut models: BTreeMap<TableName, Model> = BTreeMap::new();
        for path in sql_files(&queries)? {
            let rel = path.strip_prefix(&queries).unwrap_or(&path);
            let model = Model::load(&path, rel, display(&path))?;
            if let Some(other) = models.get(&model.name) {
                return Err(TransformError::Duplicate {
                    table: model.name.clone(),
                    first: other.display.clone(),
                    second: model.display,
                });
            }
            models.insert(model.name.clone(), model);
        }
        let made: BTreeSet<TableName> = models.keys().cloned().collect();
        // Every table read must exist or be made by a model.
        let resolve = |file: &str, reads: &mut dyn Iterator<Item = &Reference>| {
            let mut unknown =
                reads.filter(|r| !made.contains(&r.table) && !lake_tables.contains(&r.table));
            match unknown.next() {
                Some(r) => Err(TransformError::UnknownTable {
                    file: file.to_string(),
                    line: r.line,
                    column: r.column,
                    table: r.table.clone(),
                }),
                None => Ok(()),
            }
        };
        for model in models.values() {
            let check_reads = model.checks.iter().flat_map(|c| &c.reads);
            resolve(&model.display, &mut model.reads.iter().chain(check_reads))?;
            for input in model.incremental_inputs() {
                if models
                    .get(input)
                    .is_some_and(|m| m.config.materialized == Materialized::View)
                {
                    return Err(TransformError::Invalid {
                        file: model.display.clone(),
                        line: Some(1),
                        column: None,
                        why: format!(
                            "{input} is a view, which has no versions to read incrementally; read it in full or make it a table"
                        ),
                    });
                }
            }
        }
        let order = order(&models)?;
        // A custom test belongs to the model it reads that runs last, so it runs once every
        // table it reads is built.
        for path in sql_files(tests)? {
            let check = CustomTest::load(&path, display(&path))?;
            resolve(&check.file, &mut check.reads.iter())?;
            let Some(owner) = order
                .iter()
                .rev()
                .find(|m| check.reads.iter().any(|r| &r.table == *m))
            else {
                return Err(TransformError::Invalid {
                    file: check.file,
                    line: None,
                    column: None,
                    why: "a test reads at least one model".into(),
                });
            };
            let model = models.get_mut(owner).expect("ordered models exist");
            if model.checks.iter().any(|c| c.name == check.name) {
                return Err(TransformError::Invalid {
                    file: check.file.clone(),
                    line: None,
                    column: None,
                    why: format!("{} already has a test named `{}`", model.name, check.name),
                });
            }
            model.checks.push(check);
        }
        Ok(Self {
            models: order
                .into_iter()
                .map(|n| models.remove(&n).expect("ordered models exist"))
                .collect(),
        })
    }

    /// The width of the longest model name, to align output.
    pub fn name_width(&self) -> usize {
        self.models
            .iter()
            .map(|m| m.name.to_string().len())
            .max()
            .unwrap_or(0)
    }

    /// The model that makes a table.
    pub fn model(&self, name: &TableName) -> Option<&Model> {
        self.models.iter().find(|m| &m.name == name)
    }

    /// The models that `name` waits for.
    pub fn upstream_of(&self, name: &TableName) -> Vec<TableName> {
        self.model(name)
            .map(|m| self.upstream(m))
            .unwrap_or_default()
    }

    /// The models that wait for `name`.
    pub fn downstream_of(&self, name: &TableName) -> Vec<TableName> {
        self.models
            .iter()
            .filter(|m| self.upstream(m).contains(name))
            .map(|m| m.name.clone())
            .collect()
    }

    /// The models a model waits for: those it reads and those its tests read.
    pub fn upstream(&self, model: &Model) -> Vec<TableName> {
        let mut out: Vec<TableName> = Vec::new();
        let check_reads = model.checks.iter().flat_map(|c| &c.reads);
        for r in model.reads.iter().chain(check_reads) {
            if r.table != model.name && self.model(&r.table).is_some() && !out.contains(&r.table) {
                out.push(r.table.clone());
            }
        }
        out
    }
}

fn sql_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    collect(dir, &mut files).map_err(|source| TransformError::Read {
        file: dir.display().to_string(),
        cause: source,
    })?;
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
    Ok(())
}

/// Kahn's order, ties broken by name so that the order is stable.
fn order(models: &BTreeMap<TableName, Model>) -> Result<Vec<TableName>> {
    let deps: BTreeMap<&TableName, BTreeSet<&TableName>> = models
        .iter()
        .map(|(name, m)| {
            let d = m
                .reads
                .iter()
                .chain(m.checks.iter().flat_map(|c| &c.reads))
                .map(|r| &r.table)
                .filter(|t| models.contains_key(*t) && *t != name)
                .collect();
            (name, d)
        })
        .collect();
    let mut done: BTreeSet<&TableName> = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < models.len() {
        let ready: Vec<&TableName> = deps
            .iter()
            .filter(|(n, d)| !done.contains(*n) && d.iter().all(|x| done.contains(x)))
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            return Err(TransformError::Cycle {
                models: cycle(&deps, &done),
            });
        }
        for n in ready {
            done.insert(n);
            out.push(n.clone());
        }
    }
    // A model that reads itself is a cycle of one.
    if let Some((name, _)) = models
        .iter()
        .find(|(n, m)| m.reads.iter().any(|r| &r.table == *n))
    {
        return Err(TransformError::Cycle {
            models: vec![name.to_string(), name.to_string()],
        });
    }
    Ok(out)
}

/// One cycle among the models not yet ordered: follow unfinished dependencies until a model
/// repeats.
fn cycle(
    deps: &BTreeMap<&TableName, BTreeSet<&TableName>>,
    done: &BTreeSet<&TableName>,
) -> Vec<String> {
    let start = deps
        .keys()
        .find(|n| !done.contains(*n))
        .expect("an unfinished model");
    let mut path: Vec<&TableName> = vec![start];
    loop {
        let last = path.last().expect("a model");
        let next = deps[last]
            .iter()
            .find(|d| !done.contains(*d))
            .expect("an unfinished model waits on another");
        if let Some(i) = path.iter().position(|p| p == next) {
            let mut names: Vec<String> = path[i..].iter().map(|t| t.to_string()).collect();
            names.push(next.to_string());
            return names;
        }
        path.push(next);
    }
}
