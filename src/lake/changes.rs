//! What a table's commits since a version did, read from the Delta log as delta-rs's own typed
//! actions: only rows added (and in which data files), or something that means the table must
//! be read in full. Transform reads a model's new input rows through it, and export upserts a
//! table's new rows.

use deltalake::DeltaTable;
use deltalake::kernel::{Action, Add};

use super::{LakeError, TableName};

/// What the commits after one version, up to another, did to a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// They only added rows, in these data files.
    Added(Vec<Add>),
    /// A commit rewrote or removed rows, so the added files alone are not the new rows.
    Rewritten {
        /// The commit.
        version: u64,
        /// Its operation, as the commit names it (`MERGE`, `DELETE`, `OPTIMIZE`, ...).
        operation: String,
    },
    /// The log no longer holds a commit in between (cleaned up after a checkpoint).
    Expired {
        /// The commit.
        version: u64,
    },
}

impl Changes {
    /// The files added, when that is all that happened.
    pub fn added(&self) -> Option<&[Add]> {
        match self {
            Changes::Added(files) => Some(files),
            _ => None,
        }
    }
}

impl std::fmt::Display for Changes {
    /// Why the table must be read in full, or how many files it gained.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Changes::Added(files) => write!(f, "{} files added", files.len()),
            Changes::Rewritten { version, operation } => {
                write!(f, "version {version} rewrote or removed rows ({operation})")
            }
            Changes::Expired { version } => write!(f, "the log no longer holds version {version}"),
        }
    }
}

/// What the commits of `table` after `from` up to `to` did to its rows. Compaction and
/// re-sorting (`dataChange: false`) change no rows and are left out, unless they folded in a
/// file added meanwhile, whose rows can then no longer be read apart.
pub async fn changes_since(
    name: &TableName,
    table: &DeltaTable,
    from: u64,
    to: u64,
) -> Result<Changes, LakeError> {
    let diff = diff_since(name, table, from, to).await?;
    Ok(match diff.incomplete {
        Some(changes) => changes,
        None => match diff.rewrite {
            Some((version, operation)) => Changes::Rewritten { version, operation },
            None => Changes::Added(diff.added),
        },
    })
}

/// The data files the commits after one version, up to another, added and removed.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    /// Files added with new or rewritten rows that are still in the table.
    pub added: Vec<Add>,
    /// Paths of files that were in the table at `from` and whose rows were removed or
    /// rewritten (a delete, an overwrite, a merge), as opposed to compacted.
    pub removed: Vec<String>,
    /// The first commit that removed rows, with its operation.
    pub rewrite: Option<(u64, String)>,
    /// Why the added and removed files do not tell the change: a commit the log no longer
    /// holds, or a compaction that folded in files added since `from`.
    pub incomplete: Option<Changes>,
}

/// The files the commits of `table` after `from` up to `to` added and removed, compactions
/// left out.
pub async fn diff_since(
    name: &TableName,
    table: &DeltaTable,
    from: u64,
    to: u64,
) -> Result<Diff, LakeError> {
    let store = table.log_store();
    let history = |source| LakeError::History {
        table: name.clone(),
        cause: Box::new(source),
    };
    let mut diff = Diff::default();
    let mut added: Vec<Add> = Vec::new();
    let mut added_paths = std::collections::HashSet::new();
    // Files a compaction wrote since `from`: old rows in new files.
    let mut compacted = std::collections::HashSet::new();
    for version in from + 1..=to {
        let Some(bytes) = store
            .read_commit_entry(version as _)
            .await
            .map_err(history)?
        else {
            diff.incomplete = Some(Changes::Expired { version });
            return Ok(diff);
        };
        let actions = deltalake::logstore::get_actions(version as _, &bytes).map_err(history)?;
        let operation = || {
            actions
                .iter()
                .find_map(|a| match a {
                    Action::CommitInfo(info) => info.operation.clone(),
                    _ => None,
                })
                .unwrap_or_else(|| "a rewrite".into())
        };
        for action in &actions {
            match action {
                Action::Remove(remove) if added_paths.contains(&remove.path) => {
                    if remove.data_change {
                        // Rows added and removed since: never read, and gone.
                        added_paths.remove(&remove.path);
                        added.retain(|a| a.path != remove.path);
                        diff.rewrite.get_or_insert_with(|| (version, operation()));
                    } else if diff.incomplete.is_none() {
                        diff.incomplete = Some(Changes::Rewritten {
                            version,
                            operation: format!("{}, of files added since", operation()),
                        });
                    }
                }
                Action::Remove(remove)
                    if remove.data_change && compacted.contains(&remove.path) =>
                {
                    if diff.incomplete.is_none() {
                        diff.incomplete = Some(Changes::Rewritten {
                            version,
                            operation: format!("{}, of files compacted since", operation()),
                        });
                    }
                }
                Action::Remove(remove) if remove.data_change => {
                    diff.removed.push(remove.path.clone());
                    diff.rewrite.get_or_insert_with(|| (version, operation()));
                }
                Action::Add(add) if add.data_change => {
                    added_paths.insert(add.path.clone());
                    added.push(add.clone());
                }
                Action::Add(add) => {
                    compacted.insert(add.path.clone());
                }
                _ => {}
            }
        }
    }
    diff.added = added;
    Ok(diff)
}

/// The add actions of `table`'s files, as its snapshot has them (path, size and statistics).
pub fn files(table: &DeltaTable) -> Vec<Add> {
    let Ok(state) = table.snapshot() else {
        return Vec::new();
    };
    state
        .log_data()
        .iter()
        .map(|f| Add {
            path: f.path().to_string(),
            size: f.size(),
            stats: f.stats(),
            data_change: true,
            ..Default::default()
        })
        .collect()
}

impl Diff {
    /// The add actions of the files it removed, as `before` (the table at `from`) has them.
    pub fn removed_files(&self, before: &DeltaTable) -> Vec<Add> {
        let paths: std::collections::HashSet<&str> =
            self.removed.iter().map(String::as_str).collect();
        files(before)
            .into_iter()
            .filter(|a| paths.contains(a.path.as_str()))
            .collect()
    }
}
