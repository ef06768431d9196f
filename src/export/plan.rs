//! Which tables an export takes, where each goes and on which key: a pure function of the
//! project, the lake's tables and the selection, so it is tested without a warehouse.

use super::{ExportError, Target};
use crate::lake::{CURATED, TableName};
use crate::transform::{Materialized, Project, select};

/// One table the export takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The lake table.
    pub table: TableName,
    /// Where it goes.
    pub target: Target,
    /// The key the warehouse table is unique on, for upserts and deletes: a model's
    /// `unique_key`, or else the columns of its first error-level `unique` test; empty for
    /// none.
    pub key: Vec<String>,
    /// Whether the table exists in the lake. A model marked for export that was never built
    /// fails on its own; the others are still exported.
    pub built: bool,
}

/// The tables to export: the selected ones (`select`/`exclude`, models or tables, marked or
/// not, unless marked `export = false`); with no selection, the models marked `export = true`,
/// or every curated table when none is marked.
pub fn plan(
    project: &Project,
    tables: &[TableName],
    select: &[String],
    exclude: &[String],
) -> Result<Vec<Planned>, ExportError> {
    let selected = if select.is_empty() && exclude.is_empty() {
        None
    } else {
        Some(select::resolve(project, select, exclude)?)
    };
    let not_refused = |t: &TableName| {
        project
            .model(t)
            .is_none_or(|m| m.config.export != Some(false))
    };
    let marked: Vec<TableName> = project
        .models
        .iter()
        .filter(|m| m.config.export == Some(true))
        .map(|m| m.name.clone())
        .collect();
    let candidates: Vec<TableName> = match &selected {
        Some(sel) => tables
            .iter()
            .filter(|t| sel.contains(*t) && not_refused(t))
            .cloned()
            .collect(),
        None if marked.is_empty() => tables
            .iter()
            .filter(|t| t.schema() == CURATED && not_refused(t))
            .cloned()
            .collect(),
        None => marked,
    };
    let mut planned = Vec::new();
    for table in candidates {
        let model = project.model(&table);
        if model.is_some_and(|m| m.config.materialized == Materialized::View) {
            return Err(ExportError::View(table));
        }
        let key = model.map(export_key).unwrap_or_default();
        planned.push(Planned {
            target: target(&table, model.and_then(|m| m.config.export_to.as_deref())),
            built: tables.contains(&table),
            table,
            key,
        });
    }
    if planned.is_empty() {
        return Err(ExportError::NothingToExport);
    }
    Ok(planned)
}

/// Where a table goes: its `export_to` (`name` or `schema.name`); a curated table under its
/// own name; another as `schema_name`.
pub fn target(table: &TableName, export_to: Option<&str>) -> Target {
    match export_to {
        Some(to) => match to.split_once('.') {
            Some((s, n)) => Target {
                schema: Some(s.to_string()),
                name: n.to_string(),
            },
            None => Target {
                schema: None,
                name: to.to_string(),
            },
        },
        None if table.schema() == CURATED => Target {
            schema: None,
            name: table.name().to_string(),
        },
        None => Target {
            schema: None,
            name: format!("{}_{}", table.schema(), table.name()),
        },
    }
}

/// A model's key in the warehouse: its `unique_key`, or else the columns of its first
/// error-level `unique` test, which a model must pass to be exported.
fn export_key(model: &crate::transform::Model) -> Vec<String> {
    if !model.config.unique_key.is_empty() {
        return model.config.unique_key.clone();
    }
    model
        .checks
        .iter()
        .filter(|c| c.severity == crate::transform::Severity::Error)
        .find_map(|c| match &c.kind {
            crate::transform::CheckKind::Unique(columns) => Some(columns.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project from `(file, sql)` pairs under `queries/`.
    fn project(files: &[(&str, &str)], tables: &[TableName]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        for (file, sql) in files {
            let path = dir.path().join("queries").join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, sql).unwrap();
        }
        Project::load(dir.path(), &dir.path().join("tests"), tables).unwrap()
    }

    fn name(s: &str) -> TableName {
        s.parse().unwrap()
    }

    fn names(plan: &[Planned]) -> Vec<String> {
        plan.iter().map(|p| p.table.to_string()).collect()
    }

    #[test]
    fn without_marks_every_curated_table_goes_under_its_own_name() {
        let tables = [name("raw.plays"), name("curated.a"), name("curated.b")];
        let p = project(
            &[
                ("curated/a.sql", "SELECT * FROM raw.plays"),
                ("curated/b.sql", "SELECT * FROM curated.a"),
            ],
            &tables,
        );
        let plan = plan(&p, &tables, &[], &[]).unwrap();
        assert_eq!(names(&plan), ["curated.a", "curated.b"]);
        assert_eq!(plan[0].target, target(&name("curated.a"), None));
        assert_eq!(plan[0].target.name, "a");
        assert!(plan.iter().all(|p| p.built && p.key.is_empty()));
    }

    #[test]
    fn marked_models_go_alone_and_an_unbuilt_one_is_planned_unbuilt() {
        let tables = [name("raw.plays"), name("curated.a"), name("curated.c")];
        let p = project(
            &[
                (
                    "curated/a.sql",
                    "/* lake\nexport = true\nexport_to = \"bi.listening\"\n*/\nSELECT * FROM raw.plays",
                ),
                (
                    "curated/b.sql",
                    "/* lake\nexport = true\nmaterialized = \"incremental\"\nunique_key = [\"id\"]\n*/\nSELECT 1 AS id FROM raw.plays",
                ),
                ("curated/c.sql", "SELECT * FROM raw.plays"),
            ],
            &tables,
        );
        let plan = plan(&p, &tables, &[], &[]).unwrap();
        assert_eq!(names(&plan), ["curated.a", "curated.b"]);
        assert_eq!(
            plan[0].target,
            Target {
                schema: Some("bi".into()),
                name: "listening".into()
            }
        );
        assert!(plan[0].built);
        assert!(!plan[1].built, "curated.b was never built");
        assert_eq!(plan[1].key, ["id"]);
    }

    #[test]
    fn a_selection_takes_unmarked_models_but_not_refused_ones_nor_views() {
        let tables = [name("raw.plays"), name("curated.a"), name("curated.no")];
        let p = project(
            &[
                ("curated/a.sql", "SELECT * FROM raw.plays"),
                (
                    "curated/no.sql",
                    "/* lake\nexport = false\n*/\nSELECT * FROM raw.plays",
                ),
                (
                    "curated/v.sql",
                    "/* lake\nmaterialized = \"view\"\n*/\nSELECT * FROM raw.plays",
                ),
            ],
            &tables,
        );
        let plan = plan(&p, &tables, &["curated.a".into()], &[]).unwrap();
        assert_eq!(names(&plan), ["curated.a"]);
        assert_eq!(target(&name("raw.plays"), None).name, "raw_plays");
        let refused = super::plan(&p, &tables, &["curated.no".into()], &[]);
        assert!(matches!(refused, Err(ExportError::NothingToExport)));
        let tables = [tables.as_slice(), &[name("curated.v")]].concat();
        let view = super::plan(&p, &tables, &["curated.v".into()], &[]);
        assert!(
            matches!(&view, Err(ExportError::View(t)) if t.to_string() == "curated.v"),
            "{view:?}"
        );
    }
}
