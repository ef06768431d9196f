//! Transform: the analysts' SQL models in `queries/`, ordered by what they read.
//!
//! This step loads and checks the models: their headers, the tables they read (from
//! DataFusion's SQL parser, no templating), unknown tables, duplicate names and cycles, and
//! the order they run in. Running them (`lake run`) builds on it.

pub mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use model::{Materialized, Model, ModelConfig, Reference};

use crate::lake::TableName;

/// Errors from the transform stage; each names the model file, and the line and column where
/// there are some.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A model file that cannot be read.
    #[error("failed to read model {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
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
    #[error("failed to order models: they read each other in a cycle: {}", models.join(" -> "))]
    Cycle {
        /// The models of the cycle, the first repeated at the end.
        models: Vec<String>,
    },
}

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
    /// Models, each after every model it reads.
    pub models: Vec<Model>,
}

impl Project {
    /// Loads every `*.sql` under `queries` (shown relative to `base` in messages) and orders
    /// them. `lake_tables` are the tables that exist already.
    pub fn load(
        queries: &Path,
        base: &Path,
        lake_tables: &[TableName],
    ) -> Result<Self, TransformError> {
        let mut files = Vec::new();
        collect(queries, &mut files).map_err(|source| TransformError::Read {
            file: queries.display().to_string(),
            source,
        })?;
        files.sort();
        let mut models: BTreeMap<TableName, Model> = BTreeMap::new();
        for path in files {
            let rel = path.strip_prefix(queries).unwrap_or(&path);
            let display = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            let model = Model::load(&path, rel, display)?;
            if let Some(other) = models.get(&model.name) {
                return Err(TransformError::Duplicate {
                    table: model.name.clone(),
                    first: other.display.clone(),
                    second: model.display,
                });
            }
            models.insert(model.name.clone(), model);
        }
        for model in models.values() {
            for r in &model.reads {
                if !models.contains_key(&r.table) && !lake_tables.contains(&r.table) {
                    return Err(TransformError::UnknownTable {
                        file: model.display.clone(),
                        line: r.line,
                        column: r.column,
                        table: r.table.clone(),
                    });
                }
            }
        }
        let order = order(&models)?;
        Ok(Self {
            models: order
                .into_iter()
                .map(|n| models.remove(&n).expect("ordered models exist"))
                .collect(),
        })
    }
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
fn order(models: &BTreeMap<TableName, Model>) -> Result<Vec<TableName>, TransformError> {
    let deps: BTreeMap<&TableName, BTreeSet<&TableName>> = models
        .iter()
        .map(|(name, m)| {
            let d = m
                .reads
                .iter()
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
