//! Data tests: the built-in kinds from a model's `[[tests]]`, and custom tests in `tests/*.sql`.
//!
//! Every test is a query that returns the failing rows; none means it passed. Failing rows are
//! kept in `audit.<model>__<test>`.

use std::path::Path;

use super::TransformError;
use super::model::{Severity, TestSpec, references, split_header};
use crate::lake::{TableName, quote_ident};

/// What a test checks.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// No two rows share these columns' values.
    Unique(Vec<String>),
    /// None of these columns is null.
    NotNull(Vec<String>),
    /// A column holds only these values (SQL literals) or null.
    AcceptedValues {
        /// The column.
        column: String,
        /// The values, as SQL literals.
        values: Vec<String>,
    },
    /// Every non-null value of `column` is in `to.field`.
    Relationship {
        /// The column.
        column: String,
        /// The table pointed to.
        to: TableName,
        /// Its column.
        field: String,
    },
    /// The row count lies within bounds.
    RowCount {
        /// Inclusive lower bound.
        min: Option<u64>,
        /// Inclusive upper bound.
        max: Option<u64>,
    },
    /// A query of the analyst's that returns the failing rows.
    Custom {
        /// The query.
        sql: String,
        /// Lines before the query in its file.
        header_lines: usize,
    },
}

/// One test of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Its name, unique within the model; part of the audit table's name.
    pub name: String,
    /// What a failure does.
    pub severity: Severity,
    /// What it checks.
    pub kind: CheckKind,
    /// The file that declares it, for messages.
    pub file: String,
    /// The 1-based line where it is declared.
    pub line: usize,
    /// The tables it reads besides its model, where it names them.
    pub reads: Vec<super::Reference>,
}

impl Check {
    /// The query returning the failing rows of `table`.
    pub fn sql(&self, table: &TableName) -> String {
        let cols = |c: &[String]| c.iter().map(|c| quote_ident(c)).collect::<Vec<_>>();
        match &self.kind {
            CheckKind::Unique(columns) => {
                let c = cols(columns).join(", ");
                format!(
                    "SELECT {c}, count(*) AS duplicates FROM {table} GROUP BY {c} HAVING count(*) > 1"
                )
            }
            CheckKind::NotNull(columns) => {
                let any_null = cols(columns)
                    .iter()
                    .map(|c| format!("{c} IS NULL"))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                format!("SELECT * FROM {table} WHERE {any_null}")
            }
            CheckKind::AcceptedValues { column, values } => format!(
                "SELECT {c}, count(*) AS rows FROM {table} WHERE {c} IS NOT NULL AND {c} NOT IN ({v}) GROUP BY {c}",
                c = quote_ident(column),
                v = values.join(", ")
            ),
            // The parent's distinct values first: a probe of a few keys, not of every parent row
            // (a tenth of the time on a 1 M-row parent).
            CheckKind::Relationship { column, to, field } => format!(
                "SELECT child.* FROM {table} AS child WHERE child.{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM (SELECT DISTINCT {f} AS v FROM {to}) AS parent WHERE parent.v = child.{c})",
                c = quote_ident(column),
                f = quote_ident(field)
            ),
            CheckKind::RowCount { min, max } => {
                let mut bad = Vec::new();
                if let Some(min) = min {
                    bad.push(format!("count(*) < {min}"));
                }
                if let Some(max) = max {
                    bad.push(format!("count(*) > {max}"));
                }
                format!(
                    "SELECT count(*) AS rows FROM {table} HAVING {}",
                    bad.join(" OR ")
                )
            }
            CheckKind::Custom { sql, .. } => sql.clone(),
        }
    }

    /// The audit table for the failing rows: `audit.<model>__<test>`, with the schema in front
    /// for models outside `curated`, shortened with a hash past the 63-character limit.
    pub fn audit_table(&self, model: &TableName) -> TableName {
        let base = if model.schema() == crate::lake::CURATED {
            format!("{}__{}", model.name(), self.name)
        } else {
            format!("{}_{}__{}", model.schema(), model.name(), self.name)
        };
        let name = if base.len() > 63 {
            use sha2::Digest;
            let hash = hex::encode(&sha2::Sha256::digest(base.as_bytes())[..4]);
            format!("{}_{hash}", &base[..54])
        } else {
            base
        };
        TableName::new(AUDIT, &name).expect("test names are valid name parts")
    }
}

/// The schema of failing rows.
pub const AUDIT: &str = "audit";

/// A test name part from column names: lowercase, `[a-z0-9_]`.
fn slug(parts: &[String]) -> String {
    let raw = parts.join("_").to_lowercase();
    let s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.trim_matches('_').to_string()
}

/// The checks of a model's `[[tests]]`; `text` is the model file and `header_offset` where its
/// TOML starts, to turn spans into lines.
pub(super) fn from_specs(
    specs: &[toml::Spanned<TestSpec>],
    file: &str,
    line_at: impl Fn(usize) -> usize,
) -> Result<Vec<Check>, TransformError> {
    let mut checks: Vec<Check> = Vec::new();
    for spanned in specs {
        let line = line_at(spanned.span().start);
        let invalid = |why: String| TransformError::Invalid {
            file: file.into(),
            line: Some(line),
            column: None,
            why,
        };
        let spec = spanned.get_ref();
        let mut kinds: Vec<(String, CheckKind)> = Vec::new();
        if let Some(c) = &spec.unique {
            kinds.push((format!("unique_{}", slug(c)), CheckKind::Unique(c.clone())));
        }
        if let Some(c) = &spec.not_null {
            kinds.push((
                format!("not_null_{}", slug(c)),
                CheckKind::NotNull(c.clone()),
            ));
        }
        if let Some(a) = &spec.accepted_values {
            let values = a
                .values
                .iter()
                .map(|v| {
                    literal(v).ok_or_else(|| {
                        invalid(format!(
                            "accepted_values takes strings, numbers or booleans, not {}",
                            v.type_str()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if values.is_empty() {
                return Err(invalid("accepted_values needs at least one value".into()));
            }
            kinds.push((
                format!("accepted_values_{}", slug(std::slice::from_ref(&a.column))),
                CheckKind::AcceptedValues {
                    column: a.column.clone(),
                    values,
                },
            ));
        }
        if let Some(r) = &spec.relationships {
            let to =
                r.to.split_once('.')
                    .ok_or_else(|| format!("relationships.to `{}`: write schema.name", r.to))
                    .and_then(|(s, n)| TableName::new(s, n).map_err(|e| e.to_string()))
                    .map_err(invalid)?;
            kinds.push((
                format!("relationships_{}", slug(std::slice::from_ref(&r.column))),
                CheckKind::Relationship {
                    column: r.column.clone(),
                    field: r.field.clone().unwrap_or_else(|| r.column.clone()),
                    to,
                },
            ));
        }
        if let Some(r) = &spec.row_count {
            if r.min.is_none() && r.max.is_none() {
                return Err(invalid("row_count needs `min`, `max` or both".into()));
            }
            if let (Some(lo), Some(hi)) = (r.min, r.max)
                && lo > hi
            {
                return Err(invalid(format!("row_count: min {lo} is above max {hi}")));
            }
            kinds.push((
                "row_count".into(),
                CheckKind::RowCount {
                    min: r.min,
                    max: r.max,
                },
            ));
        }
        let (derived, kind) = match kinds.len() {
            1 => kinds.pop().expect("one kind"),
            0 => {
                return Err(invalid(
                    "a test names one kind: unique, not_null, accepted_values, relationships or row_count"
                        .into(),
                ));
            }
            _ => {
                return Err(invalid(
                    "a test names one kind; write one [[tests]] entry per test".into(),
                ));
            }
        };
        if let CheckKind::Unique(c) | CheckKind::NotNull(c) = &kind
            && c.is_empty()
        {
            return Err(invalid("the test names no columns".into()));
        }
        let name = match &spec.name {
            Some(n) => {
                crate::lake::validate_part(n).map_err(|why| invalid(format!("name: {why}")))?;
                n.clone()
            }
            None => derived,
        };
        if checks.iter().any(|c| c.name == name) {
            return Err(invalid(format!(
                "two tests are named `{name}`; give one a `name`"
            )));
        }
        let reads = match &kind {
            CheckKind::Relationship { to, .. } => vec![super::Reference {
                table: to.clone(),
                line,
                column: 1,
            }],
            _ => Vec::new(),
        };
        checks.push(Check {
            name,
            severity: spec.severity,
            kind,
            file: file.into(),
            line,
            reads,
        });
    }
    Ok(checks)
}

/// A TOML value as a SQL literal; none for a table or an array.
fn literal(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(format!("'{}'", s.replace('\'', "''"))),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A custom test: `tests/<name>.sql`, a query returning failing rows, with an optional
/// `/* lake severity = "warn" */` header. It belongs to the model it reads that runs last.
pub struct CustomTest;

impl CustomTest {
    /// Reads and checks one test file.
    pub fn load(path: &Path, display: String) -> Result<Check, TransformError> {
        let text = std::fs::read_to_string(path).map_err(|source| TransformError::Read {
            file: display.clone(),
            cause: source,
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        crate::lake::validate_part(stem).map_err(|why| TransformError::Invalid {
            file: display.clone(),
            line: None,
            column: None,
            why: format!("the file name names the test: {why}"),
        })?;
        let (config, sql, header_lines) =
            split_header::<super::model::CustomTestConfig>(&text, &display)?;
        let reads = references(&sql, header_lines, &display)?;
        Ok(Check {
            name: stem.to_string(),
            severity: config.severity,
            kind: CheckKind::Custom { sql, header_lines },
            file: display,
            line: header_lines + 1,
            reads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> TableName {
        let (a, b) = s.split_once('.').unwrap();
        TableName::new(a, b).unwrap()
    }

    #[test]
    fn audit_names_fit() {
        let check = Check {
            name: "unique_play_id".into(),
            severity: Severity::Error,
            kind: CheckKind::Unique(vec!["play_id".into()]),
            file: "q.sql".into(),
            line: 1,
            reads: Vec::new(),
        };
        assert_eq!(
            check.audit_table(&name("curated.plays")).to_string(),
            "audit.plays__unique_play_id"
        );
        assert_eq!(
            check.audit_table(&name("marts.plays")).to_string(),
            "audit.marts_plays__unique_play_id"
        );
        let long = name(&format!("curated.{}", "x".repeat(60)));
        assert!(check.audit_table(&long).name().len() <= 63);
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(
            literal(&toml::Value::String("it's".into())).unwrap(),
            "'it''s'"
        );
        assert_eq!(literal(&toml::Value::Integer(3)).unwrap(), "3");
        assert!(literal(&toml::Value::Array(vec![])).is_none());
    }
}
