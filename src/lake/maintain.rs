//! Table maintenance, `lake maintain`: compaction of small files, a checkpoint when the log has
//! grown, and vacuum of files no version within the retention needs.
//!
//! Each step is its own Delta operation: compaction commits a rewrite (readers of older
//! versions still find the old files), a checkpoint summarizes the log so opening the table
//! reads one Parquet file instead of every commit, and vacuum deletes only files that were
//! removed longer ago than the retention, so a reader or a time-travel query within it never
//! loses a file.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;

use super::layout::{self, Layout};
use super::{Lake, LakeError, TableName};

/// Delta's own default retention: seven days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shorter than this, a long query could lose files it is reading.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// Commits after the last checkpoint that make maintenance write a new one.
pub const CHECKPOINT_EVERY: u64 = 10;

/// What maintenance does.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Keep removed files this long.
    pub retention: Duration,
    /// The size compaction aims for, when set.
    pub target_file_size: Option<u64>,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    /// Allow a retention under [`MIN_RETENTION`].
    pub unsafe_retention: bool,
}

impl Default for MaintainOptions {
    fn default() -> Self {
        MaintainOptions {
            retention: DEFAULT_RETENTION,
            target_file_size: None,
            dry_run: false,
            unsafe_retention: false,
        }
    }
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default)]
pub struct MaintainReport {
    /// The table.
    pub table: String,
    /// Files compacted away, and files written in their place.
    pub compacted: (u64, u64),
    /// The version a checkpoint was written at.
    pub checkpoint: Option<u64>,
    /// Files vacuum deleted (or would delete, in a dry run).
    pub vacuumed: usize,
    /// How long it took.
    pub duration: Duration,
}

impl MaintainReport {
    /// `compacted 12 files into 1, checkpoint at version 40, vacuumed 12 old files (0.41s)`;
    /// `dry_run` says what vacuum would delete.
    pub fn summary(&self, dry_run: bool) -> String {
        let mut parts = Vec::new();
        if self.compacted.0 > 0 {
            parts.push(format!(
                "compacted {} files into {}",
                self.compacted.0, self.compacted.1
            ));
        }
        if let Some(v) = self.checkpoint {
            parts.push(format!("checkpoint at version {v}"));
        }
        if self.vacuumed > 0 || dry_run {
            parts.push(format!(
                "{} {} old files",
                if dry_run { "would vacuum" } else { "vacuumed" },
                self.vacuumed
            ));
        }
        if parts.is_empty() {
            parts.push("nothing to do".into());
        }
        format!("{} ({:.2}s)", parts.join(", "), self.duration.as_secs_f64())
    }
}

fn failed(table: &TableName, step: &str, e: impl std::fmt::Display) -> LakeError {
    LakeError::Maintain {
        table: table.clone(),
        why: format!("{step}: {e}"),
    }
}

impl Lake {
    /// Compacts, checkpoints and vacuums one table.
    pub async fn maintain(
        &self,
        name: &TableName,
        options: &MaintainOptions,
    ) -> Result<MaintainReport, LakeError> {
        if options.retention < MIN_RETENTION && !options.unsafe_retention {
            return Err(failed(
                name,
                "vacuum",
                format!(
                    "a retention of {} could delete files a running query still reads; use 1h or more (or --unsafe-retention)",
                    humantime::format_duration(options.retention)
                ),
            ));
        }
        let started = Instant::now();
        let mut report = MaintainReport {
            table: name.to_string(),
            ..Default::default()
        };
        let table = self.table(name, None, None).await?;
        let commit = || {
            CommitProperties::default()
                .with_metadata([("lake.command".to_string(), serde_json::json!("maintain"))])
        };

        // Compaction. A sorted table is sorted again when its files overlap (delta-rs's
        // compaction would merge them unsorted); others get small files into files of the
        // target size.
        let sort = layout::sort_state(&table).map_err(|e| failed(name, "compaction", e))?;
        let table = if options.dry_run {
            table
        } else if let Some(sort) = sort {
            if sort.one_run {
                table
            } else {
                let layout = Layout {
                    sort_by: sort.key,
                    target_file_size: options.target_file_size,
                    keys: layout::table_keys(&table),
                    span: layout::table_span(&table),
                };
                let ctx = self.sessions().delta_context()?;
                let (removed, added, _) = layout::sort_again(&table, &ctx, &layout, commit())
                    .await
                    .map_err(|e| failed(name, "sorting", e))?;
                report.compacted = (removed as u64, added as u64);
                self.table(name, None, None).await?
            }
        } else {
            let mut optimize = table.optimize().with_commit_properties(commit());
            if let Some(size) = options.target_file_size.and_then(NonZeroU64::new) {
                optimize = optimize.with_target_size(size);
            }
            let (table, metrics) = optimize.await.map_err(|e| failed(name, "compaction", e))?;
            report.compacted = (metrics.num_files_removed, metrics.num_files_added);
            table
        };

        // A checkpoint when enough commits came since the last one.
        let version = table.version().unwrap_or(0);
        let last = last_checkpoint(&table).await;
        let due = match last {
            Some(v) => version >= v + CHECKPOINT_EVERY,
            None => version + 1 >= CHECKPOINT_EVERY,
        };
        if due && !options.dry_run {
            deltalake::checkpoints::create_checkpoint(&table, None)
                .await
                .map_err(|e| failed(name, "checkpoint", e))?;
            report.checkpoint = Some(version);
        }

        // Vacuum: files removed longer ago than the retention.
        let retention =
            chrono::Duration::from_std(options.retention).map_err(|e| failed(name, "vacuum", e))?;
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_dry_run(options.dry_run)
            .with_commit_properties(commit())
            .await
            .map_err(|e| failed(name, "vacuum", e))?;
        report.vacuumed = metrics.files_deleted.len();
        report.duration = started.elapsed();
        Ok(report)
    }
}

/// The version of the table's last checkpoint, from `_delta_log/_last_checkpoint`.
async fn last_checkpoint(table: &DeltaTable) -> Option<u64> {
    let store = table.log_store().object_store(None);
    let bytes = store
        .get(&StorePath::from("_delta_log/_last_checkpoint"))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("version")?.as_u64()
}
