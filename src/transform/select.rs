//! `--select` and `--exclude`: `name`, `name+` (and everything downstream), `+name` (and
//! everything upstream), `tag:x`, `path:queries/marts`.

use std::collections::BTreeSet;

use super::{Project, TransformError};
use crate::lake::{CURATED, TableName};

/// The models to run: every model when `select` is empty, less those `exclude` matches.
pub fn resolve(
    project: &Project,
    select: &[String],
    exclude: &[String],
) -> Result<BTreeSet<TableName>, TransformError> {
    let mut chosen: BTreeSet<TableName> = if select.is_empty() {
        project.models.iter().map(|m| m.name.clone()).collect()
    } else {
        let mut s = BTreeSet::new();
        for selector in select {
            s.extend(matching(project, selector)?);
        }
        s
    };
    for selector in exclude {
        for name in matching(project, selector)? {
            chosen.remove(&name);
        }
    }
    Ok(chosen)
}

fn matching(project: &Project, selector: &str) -> Result<BTreeSet<TableName>, TransformError> {
    let fail = |why: String| TransformError::Select {
        selector: selector.to_string(),
        why,
    };
    let selector = selector.trim();
    if let Some(tag) = selector.strip_prefix("tag:") {
        let found: BTreeSet<TableName> = project
            .models
            .iter()
            .filter(|m| m.config.tags.iter().any(|t| t == tag))
            .map(|m| m.name.clone())
            .collect();
        if found.is_empty() {
            return Err(fail(format!("no model has the tag `{tag}`")));
        }
        return Ok(found);
    }
    if let Some(path) = selector.strip_prefix("path:") {
        let path = path.trim_start_matches("./").trim_end_matches('/');
        let found: BTreeSet<TableName> = project
            .models
            .iter()
            .filter(|m| {
                m.display == path
                    || m.display
                        .strip_prefix(path)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(|m| m.name.clone())
            .collect();
        if found.is_empty() {
            return Err(fail(format!("no model file is at or under `{path}`")));
        }
        return Ok(found);
    }
    let (up, rest) = match selector.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, selector),
    };
    let (down, name) = match rest.strip_suffix('+') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let model = find(project, selector, name)?;
    let mut found = BTreeSet::from([model.clone()]);
    if up {
        walk(project, &model, &mut found, |p, n| p.upstream_of(n));
    }
    if down {
        walk(project, &model, &mut found, |p, n| p.downstream_of(n));
    }
    Ok(found)
}

/// A model by `name` (in `curated`, or the only schema that has it) or `schema.name`.
fn find(project: &Project, selector: &str, name: &str) -> Result<TableName, TransformError> {
    let fail = |why: String| TransformError::Select {
        selector: selector.to_string(),
        why,
    };
    if let Some((schema, table)) = name.split_once('.') {
        let t = TableName::new(schema, table).map_err(|e| fail(e.to_string()))?;
        return project
            .model(&t)
            .map(|m| m.name.clone())
            .ok_or_else(|| fail(format!("no model makes {t}")));
    }
    let all: Vec<&TableName> = project
        .models
        .iter()
        .map(|m| &m.name)
        .filter(|t| t.name() == name)
        .collect();
    match all.as_slice() {
        [] => Err(fail(format!("no model is named `{name}`"))),
        [one] => Ok((*one).clone()),
        many => many
            .iter()
            .find(|t| t.schema() == CURATED)
            .map(|t| (*t).clone())
            .ok_or_else(|| {
                let names: Vec<String> = many.iter().map(|t| t.to_string()).collect();
                fail(format!("`{name}` is ambiguous: {}", names.join(", ")))
            }),
    }
}

fn walk(
    project: &Project,
    from: &TableName,
    found: &mut BTreeSet<TableName>,
    next: impl Fn(&Project, &TableName) -> Vec<TableName> + Copy,
) {
    for n in next(project, from) {
        if found.insert(n.clone()) {
            walk(project, &n, found, next);
        }
    }
}
