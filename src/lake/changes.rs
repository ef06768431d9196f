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

/// What the commits of `table` after `from` up to `to` did.
pub async fn changes_since(
    name: &TableName,
    table: &DeltaTable,
    from: u64,
    to: u64,
) -> Result<Changes, LakeError> {
    let store = table.log_store();
    let history = |source| LakeError::History {
        table: name.clone(),
        cause: Box::new(source),
    };
    let mut files = Vec::new();
    for version in from + 1..=to {
        let Some(bytes) = store
            .read_commit_entry(version as _)
            .await
            .map_err(history)?
        else {
            return Ok(Changes::Expired { version });
        };
        let actions = deltalake::logstore::get_actions(version as _, &bytes).map_err(history)?;
        if actions.iter().any(|a| matches!(a, Action::Remove(_))) {
            let operation = actions
                .iter()
                .find_map(|a| match a {
                    Action::CommitInfo(info) => info.operation.clone(),
                    _ => None,
                })
                .unwrap_or_else(|| "a rewrite".into());
            return Ok(Changes::Rewritten { version, operation });
        }
        files.extend(actions.into_iter().filter_map(|a| match a {
            Action::Add(add) if add.data_change => Some(add),
            _ => None,
        }));
    }
    Ok(Changes::Added(files))
}
