//! One model: a `queries/**/*.sql` file holding one SELECT, with its settings in a TOML header.
//!
//! ```sql
//! /* lake
//! materialized = "incremental"        # table (default) | incremental | view
//! unique_key = ["played_at", "track_id"]
//! partition_by = ["day"]
//! tags = ["daily"]
//! export = true
//! description = "Every play, deduped."
//! incremental_inputs = ["raw.spotify_streams"]   # the rest are read in full
//!
//! [[tests]]
//! unique = ["played_at", "track_id"]
//! [[tests]]
//! accepted_values = { column = "kind", values = ["track", "episode"] }
//! severity = "warn"
//! */
//! SELECT ...
//! ```
//!
//! `queries/plays.sql` becomes `curated.plays`; `queries/marts/x.sql` becomes `marts.x`.

use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::ast::{Spanned, Statement, visit_relations};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::TransformError;
use super::checks::{self, Check};
use crate::lake::{CURATED, TableName};

/// How a model is kept.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Materialized {
    /// Replaced whole on each run, in one commit.
    #[default]
    Table,
    /// New input rows merged on the unique key.
    Incremental,
    /// Not stored: defined for downstream models and queries.
    View,
}

impl Materialized {
    /// Its name, as written in the header.
    pub fn name(self) -> &'static str {
        match self {
            Materialized::Table => "table",
            Materialized::Incremental => "incremental",
            Materialized::View => "view",
        }
    }
}

/// `incremental_by`: the group key a table model is recomputed by, or `"full"`.
#[derive(Debug, Clone, PartialEq)]
pub enum IncrementalBy {
    /// Rebuilt whole on every change.
    Full,
    /// Recomputed by these output columns' groups.
    Columns(Vec<String>),
}

impl<'de> Deserialize<'de> for IncrementalBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Columns(Vec<String>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected \"full\" or a list of output columns")
        })? {
            Raw::Word(w) if w == "full" => Ok(IncrementalBy::Full),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected \"full\" or a list of output columns, found \"{w}\""
            ))),
            Raw::Columns(c) if c.is_empty() => Err(serde::de::Error::custom(
                "name at least one output column, or \"full\"",
            )),
            Raw::Columns(c) => Ok(IncrementalBy::Columns(c)),
        }
    }
}

/// A model's header.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `table`, `incremental` or `view`.
    #[serde(default)]
    pub materialized: Materialized,
    /// The columns that identify a row; required for `incremental`.
    #[serde(default)]
    pub unique_key: Vec<String>,
    /// Partition columns.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Columns a table model's rows are written sorted by, so that its files hold ranges of
    /// them: a filter on the leading column then reads few files.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// With `sort_by` led by a date or timestamp column: a span of it (`"day"`, `"month"` or
    /// `"year"`) no file crosses, so that recent rows sit in files of their own and a
    /// recompute of them replaces those files only.
    pub files_by: Option<crate::lake::layout::FileSpan>,
    /// Tags, for `--select tag:x`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether `lake export` sends it to the warehouse.
    pub export: Option<bool>,
    /// Where `lake export` puts it: `table` or `schema.table` in the warehouse [default: the
    /// model's name, `<schema>_<name>` outside curated].
    pub export_to: Option<String>,
    /// What the table holds.
    pub description: Option<String>,
    /// For an incremental model that reads several tables: the ones read as new rows only.
    /// The others are read in full on every run. With one input, that input.
    #[serde(default)]
    pub incremental_inputs: Vec<String>,
    /// For a table model: the output columns its groups are recomputed by, when lake cannot
    /// work them out from the plan (`["day"]`), or `"full"` to rebuild it whole every time.
    pub incremental_by: Option<IncrementalBy>,
    /// For a table model recomputed by groups whose rows each cover a span of this column
    /// (sessions, runs, streaks, from their start on): a touched group is recomputed from
    /// its last row that starts at or before the earliest changed input row, not whole. The
    /// column is an output column and a column of each input the groups come from; an
    /// output row's value is the smallest of its input rows', and depends on no input row
    /// before it. lake trusts this, as it trusts `incremental_by`.
    pub recompute_from: Option<String>,
    /// Data tests, run after the model is built.
    #[serde(default)]
    pub tests: Vec<toml::Spanned<TestSpec>>,
    /// `lake status` warns when the table's last update is older than this (`26h`).
    #[serde(default, with = "humantime_serde")]
    pub warn_after: Option<std::time::Duration>,
    /// `lake status` fails when the table's last update is older than this (`50h`).
    #[serde(default, with = "humantime_serde")]
    pub error_after: Option<std::time::Duration>,
}

/// How a failing test counts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Stops the models downstream and marks the model not exportable.
    #[default]
    Error,
    /// Reported, nothing stops.
    Warn,
}

/// One `[[tests]]` entry: exactly one kind, with a severity and an optional name.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// No two rows share these columns' values.
    pub unique: Option<Vec<String>>,
    /// None of these columns is null.
    pub not_null: Option<Vec<String>>,
    /// A column holds only these values (or null).
    pub accepted_values: Option<AcceptedValues>,
    /// Every non-null value of a column is found in another table's column.
    pub relationships: Option<Relationship>,
    /// The table's row count lies within bounds.
    pub row_count: Option<RowCount>,
    /// `error` (default) or `warn`.
    #[serde(default)]
    pub severity: Severity,
    /// The test's name in reports and in `audit.<model>__<name>`; derived when absent.
    pub name: Option<String>,
}

/// `accepted_values = { column = "kind", values = ["track", "episode"] }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValues {
    /// The column.
    pub column: String,
    /// Strings, numbers or booleans.
    pub values: Vec<toml::Value>,
}

/// `relationships = { column = "artist_id", to = "curated.artists", field = "artist_id" }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Relationship {
    /// The column of this model.
    pub column: String,
    /// The table it points to, as `schema.name`.
    pub to: String,
    /// The column there; the same name when absent.
    pub field: Option<String>,
}

/// `row_count = { min = 1, max = 1000000 }`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RowCount {
    /// At least this many rows.
    pub min: Option<u64>,
    /// At most this many rows.
    pub max: Option<u64>,
}

/// The header of a custom test in `tests/*.sql`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomTestConfig {
    /// `error` (default) or `warn`.
    #[serde(default)]
    pub severity: Severity,
    /// What the test checks.
    pub description: Option<String>,
}

/// A table a model reads, where the model names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The table.
    pub table: TableName,
    /// 1-based line and column in the file.
    pub line: usize,
    /// The column.
    pub column: usize,
}

/// A parsed model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The table it becomes.
    pub name: TableName,
    /// Its file.
    pub path: PathBuf,
    /// The file as shown in messages, relative to the project.
    pub display: String,
    /// The SELECT, without the header.
    pub sql: String,
    /// Lines before the SELECT (the header), to report positions in the file.
    pub header_lines: usize,
    /// Its settings.
    pub config: ModelConfig,
    /// The `schema.name` tables it reads.
    pub reads: Vec<Reference>,
    /// Its data tests.
    pub checks: Vec<Check>,
}

impl Model {
    /// Reads and checks one model file. `rel` is its path under `queries/`.
    pub fn load(path: &Path, rel: &Path, display: String) -> Result<Self, TransformError> {
        let text = std::fs::read_to_string(path).map_err(|source| TransformError::Read {
            file: display.clone(),
            cause: source,
        })?;
        let name = table_name(rel, &display)?;
        let (config, sql, header_lines) = split_header::<ModelConfig>(&text, &display)?;
        let invalid = |why: String| TransformError::Invalid {
            file: display.clone(),
            line: Some(1),
            column: None,
            why,
        };
        let incremental = config.materialized == Materialized::Incremental;
        if incremental && config.unique_key.is_empty() {
            return Err(invalid("an incremental model needs `unique_key`".into()));
        }
        if !incremental && !config.incremental_inputs.is_empty() {
            return Err(invalid(
                "`incremental_inputs` is for materialized = \"incremental\"".into(),
            ));
        }
        if config.incremental_by.is_some() && config.materialized != Materialized::Table {
            return Err(invalid(
                "`incremental_by` is for table models; an incremental model merges on `unique_key`"
                    .into(),
            ));
        }
        if config.files_by.is_some() && config.sort_by.is_empty() {
            return Err(invalid(
                "`files_by` cuts files by a span of the leading `sort_by` column: name `sort_by` too".into(),
            ));
        }
        if config.recompute_from.is_some() && config.materialized != Materialized::Table {
            return Err(invalid(
                "`recompute_from` is for table models recomputed by groups".into(),
            ));
        }
        if config.recompute_from.is_some() && config.incremental_by == Some(IncrementalBy::Full) {
            return Err(invalid(
                "`recompute_from` recomputes part of each group; `incremental_by = \"full\"` rebuilds everything: choose one".into(),
            ));
        }
        let reads = references(&sql, header_lines, &display)?;
        for input in &config.incremental_inputs {
            if !reads.iter().any(|r| r.table.to_string() == *input) {
                return Err(invalid(format!(
                    "incremental_inputs names `{input}`, which the query does not read"
                )));
            }
        }
        if incremental && reads.len() > 1 && config.incremental_inputs.is_empty() {
            let names: Vec<String> = reads.iter().map(|r| r.table.to_string()).collect();
            return Err(invalid(format!(
                "this incremental model reads {}: name the ones read as new rows only in `incremental_inputs`; the rest are read in full",
                names.join(", ")
            )));
        }
        let header_start = header_offset(&text);
        let checks = checks::from_specs(&config.tests, &display, |span| {
            line_of(&text, header_start + span)
        })?;
        Ok(Self {
            name,
            path: path.to_path_buf(),
            display,
            sql,
            header_lines,
            config,
            reads,
            checks,
        })
    }

    /// The tables read as new rows only, on an incremental run.
    pub fn incremental_inputs(&self) -> Vec<&TableName> {
        if self.config.materialized != Materialized::Incremental {
            return Vec::new();
        }
        self.reads
            .iter()
            .map(|r| &r.table)
            .filter(|t| {
                self.config.incremental_inputs.is_empty()
                    || self.config.incremental_inputs.contains(&t.to_string())
            })
            .collect()
    }
}

/// Where the header's TOML starts in the file (after `/* lake`).
fn header_offset(text: &str) -> usize {
    let trimmed = text.trim_start();
    let lead = text.len() - trimmed.len();
    lead + if trimmed.starts_with("/* lake") {
        "/* lake".len()
    } else {
        "/*lake".len()
    }
}

/// `marts/x.sql` -> `marts.x`; `x.sql` -> `curated.x`.
fn table_name(rel: &Path, display: &str) -> Result<TableName, TransformError> {
    let invalid = |why: String| TransformError::Invalid {
        file: display.to_string(),
        line: None,
        column: None,
        why,
    };
    let stem = rel
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| invalid("the file name is not UTF-8".into()))?;
    let parts: Vec<&str> = rel
        .parent()
        .into_iter()
        .flat_map(|p| p.iter())
        .filter_map(|s| s.to_str())
        .collect();
    let schema = match parts.as_slice() {
        [] => CURATED,
        [one] => one,
        _ => {
            return Err(invalid(
                "models sit in queries/ or one folder below it, which names the schema".into(),
            ));
        }
    };
    TableName::new(schema, stem).map_err(|e| invalid(e.to_string()))
}

/// The TOML header, the SQL after it, and how many lines the header took.
pub(super) fn split_header<T: DeserializeOwned + Default>(
    text: &str,
    file: &str,
) -> Result<(T, String, usize), TransformError> {
    let trimmed = text.trim_start();
    let lead = text.len() - trimmed.len();
    let Some(rest) = trimmed
        .strip_prefix("/* lake")
        .or_else(|| trimmed.strip_prefix("/*lake"))
    else {
        return Ok((T::default(), text.to_string(), 0));
    };
    let Some(end) = rest.find("*/") else {
        return Err(TransformError::Invalid {
            file: file.into(),
            line: Some(line_of(text, lead)),
            column: None,
            why: "the `/* lake` header has no closing `*/`".into(),
        });
    };
    let toml_text = &rest[..end];
    let toml_start = lead + text[lead..].len() - rest.len();
    debug_assert_eq!(toml_start, header_offset(text));
    let config: T = toml::from_str(toml_text).map_err(|e| {
        let offset = toml_start + e.span().map_or(0, |s| s.start);
        TransformError::Invalid {
            file: file.into(),
            line: Some(line_of(text, offset)),
            column: Some(column_of(text, offset)),
            why: e.message().to_string(),
        }
    })?;
    let sql_start = toml_start + end + 2;
    let header_lines = text[..sql_start].matches('\n').count();
    // Keep the SELECT's columns where they are in the file, so positions need only the line
    // offset.
    let first_line_tail = &text[sql_start..];
    let column_pad = sql_start - text[..sql_start].rfind('\n').map_or(0, |i| i + 1);
    let sql = format!("{}{first_line_tail}", " ".repeat(column_pad));
    Ok((config, sql, header_lines))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn column_of(text: &str, offset: usize) -> usize {
    let before = &text[..offset.min(text.len())];
    before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1
}

/// The `schema.name` tables a SELECT reads. Single-part names (CTEs, table functions) are not
/// tables of the lake and are left to DataFusion.
pub(super) fn references(
    sql: &str,
    header_lines: usize,
    file: &str,
) -> Result<Vec<Reference>, TransformError> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| {
        let (message, line, column) = sql_position(&e.to_string());
        // An error at the end of the text ("found: EOF") comes without a position.
        let trimmed = sql.trim_end();
        let end_line = trimmed.matches('\n').count() + 1;
        let end_column = trimmed.len() - trimmed.rfind('\n').map_or(0, |i| i + 1) + 1;
        TransformError::Invalid {
            file: file.into(),
            line: Some(line.unwrap_or(end_line) + header_lines),
            column: Some(column.unwrap_or(end_column)),
            why: message,
        }
    })?;
    let query = match statements.as_slice() {
        [Statement::Query(q)] => q,
        _ => {
            return Err(TransformError::Invalid {
                file: file.into(),
                line: Some(header_lines + 1),
                column: None,
                why: "a model holds exactly one SELECT (WITH ... SELECT is fine)".into(),
            });
        }
    };
    let mut refs: Vec<Reference> = Vec::new();
    let mut bad: Option<TransformError> = None;
    let _ = visit_relations(query.as_ref(), |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
            .collect();
        let span = name.span();
        let (line, column) = (
            span.start.line as usize + header_lines,
            span.start.column as usize,
        );
        if parts.len() == 2 {
            match TableName::new(&parts[0], &parts[1]) {
                Ok(table) => {
                    if !refs.iter().any(|r| r.table == table) {
                        refs.push(Reference {
                            table,
                            line,
                            column,
                        });
                    }
                }
                Err(e) => {
                    bad.get_or_insert(TransformError::Invalid {
                        file: file.into(),
                        line: Some(line),
                        column: Some(column),
                        why: e.to_string(),
                    });
                }
            }
        } else if parts.len() > 2 {
            bad.get_or_insert(TransformError::Invalid {
                file: file.into(),
                line: Some(line),
                column: Some(column),
                why: format!("`{name}`: name tables as schema.name"),
            });
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    match bad {
        Some(e) => Err(e),
        None => Ok(refs),
    }
}

/// sqlparser's "... at Line: 3, Column: 7" split into the message and the position.
fn sql_position(message: &str) -> (String, Option<usize>, Option<usize>) {
    let Some(i) = message.rfind(" at Line: ") else {
        return (message.to_string(), None, None);
    };
    let tail = &message[i + " at Line: ".len()..];
    let mut nums = tail
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok());
    (message[..i].to_string(), nums.next(), nums.next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_settings_and_positions() {
        let text = "/* lake\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n*/\nSELECT a.id\nFROM raw.plays a JOIN curated.tracks t ON a.id = t.id\n";
        let (config, sql, lines) = split_header::<ModelConfig>(text, "q.sql").unwrap();
        assert_eq!(config.materialized, Materialized::Incremental);
        assert_eq!(lines, 3);
        let refs = references(&sql, lines, "q.sql").unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(
            (refs[0].table.to_string(), refs[0].line, refs[0].column),
            ("raw.plays".into(), 6, 6)
        );
    }

    #[test]
    fn unknown_settings_name_their_line() {
        let text = "/* lake\nmaterialized = \"table\"\nmaterialised = \"view\"\n*/\nSELECT 1\n";
        let err = split_header::<ModelConfig>(text, "q.sql")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("q.sql:3:1") && err.contains("materialised"),
            "{err}"
        );
        let text = "/* lake\nmaterialized = \"tabel\"\n*/\nSELECT 1\n";
        let err = split_header::<ModelConfig>(text, "q.sql")
            .unwrap_err()
            .to_string();
        assert!(err.contains("q.sql:2:") && err.contains("tabel"), "{err}");
    }

    #[test]
    fn ctes_and_functions_are_not_dependencies() {
        let sql =
            "WITH recent AS (SELECT * FROM raw.plays) SELECT * FROM recent, generate_series(1, 3)";
        let refs = references(sql, 0, "q.sql").unwrap();
        assert_eq!(refs.len(), 1);
        assert!(references("SELECT 1; SELECT 2", 0, "q.sql").is_err());
        assert!(references("DELETE FROM raw.plays", 0, "q.sql").is_err());
        let err = references("SELECT *\nFROM raw.plays WHERE", 0, "q.sql")
            .unwrap_err()
            .to_string();
        assert!(err.contains("q.sql:2:"), "{err}");
    }

    #[test]
    fn names_follow_folders() {
        assert_eq!(
            table_name(Path::new("plays.sql"), "t").unwrap().to_string(),
            "curated.plays"
        );
        assert_eq!(
            table_name(Path::new("marts/x.sql"), "t")
                .unwrap()
                .to_string(),
            "marts.x"
        );
        assert!(table_name(Path::new("a/b/x.sql"), "t").is_err());
        assert!(table_name(Path::new("Bad-Name.sql"), "t").is_err());
    }
}
