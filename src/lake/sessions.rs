//! The one place DataFusion sessions are made. Every session lake opens (`query`, `shell`, a
//! model's inputs, a test, the export's reads, extract's anti-joins) comes from the lake's
//! [`Sessions`], so what they share is decided here once: UTC time functions, source
//! positions in errors, lake's planner rules, and one memory pool with spilling to disk.
//!
//! Memory. All sessions of a process share one pool of `[query] memory_limit` bytes (default:
//! half the physical memory, or of the cgroup's limit). Sorts, aggregates and repartitions
//! spill to a folder of their own under `[query] spill_dir` (default: the system temp
//! folder), `lake-spill-<pid>-<id>`, which is removed when the process ends; a folder left by a
//! killed process is removed by the next process that makes a session, told by the lock its
//! owner held. A join whose smaller side would not fit the pool is planned as a sort-merge
//! join, which spills ([`crate::query::joins`]). What still cannot fit fails with an error
//! that names the limit and the setting.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::optimizer::Optimizer;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::{LakeError, Result};
use crate::config::QuerySettings;

/// The prefix of each process's spill folder under the spill directory.
const SPILL_PREFIX: &str = "lake-spill-";

/// Makes the lake's DataFusion sessions.
#[derive(Debug, Clone)]
pub struct Sessions {
    limit: usize,
    spill_dir: PathBuf,
    runtime: Arc<Mutex<Option<Runtime>>>,
}

/// What every session of the process shares, made with the first session.
#[derive(Debug)]
struct Runtime {
    env: Arc<RuntimeEnv>,
    /// Held for the process's life; dropping it removes the folder.
    _spill: SpillFolder,
}

impl Sessions {
    /// Sessions under the `[query]` settings; relative paths are under `project_dir`.
    pub fn new(settings: &QuerySettings, project_dir: &Path) -> Self {
        let limit = settings
            .memory_limit
            .map(|b| b.as_u64())
            .unwrap_or_else(default_memory_limit);
        let spill_dir = match &settings.spill_dir {
            Some(dir) => crate::paths::under(project_dir, dir),
            None => std::env::temp_dir(),
        };
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            spill_dir,
            runtime: Arc::default(),
        }
    }

    /// The memory the sessions share, in bytes.
    pub fn memory_limit(&self) -> usize {
        self.limit
    }

    /// The spill directory; each opened lake spills into a folder of its own under it.
    pub fn spill_dir(&self) -> &Path {
        &self.spill_dir
    }

    /// A fresh session: UTC time functions registered, source positions kept for error
    /// messages, `information_schema` on when `catalog` is set (for `lake query` and `shell`).
    pub fn context(&self, catalog: bool) -> Result<SessionContext> {
        let mut config = SessionConfig::new().with_information_schema(catalog);
        config.options_mut().sql_parser.collect_spans = true;
        // An input already split by a prefix of the keys an aggregate or a window needs (lake's
        // scan splits a sorted table by key ranges of even size) is not split again, on a
        // machine of few cores too: DataFusion's threshold of 4 partitions assumes more.
        let partitions = config.target_partitions();
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.subset_repartition_threshold = optimizer
            .subset_repartition_threshold
            .min(partitions.max(2));
        let env = self.runtime()?;
        // lake's rules: coalesce of a column without nulls as the column (first, so that the
        // table's order shows through), grouped count(DISTINCT) in memory proportional to its
        // pairs (before DataFusion's own single-distinct rule), dates of UTC timestamps by
        // division, joins that fit the pool, and windows a batch at a time.
        let mut rules = Optimizer::new().rules;
        let at = rules
            .iter()
            .position(|r| r.name() == "single_distinct_aggregation_to_group_by")
            .unwrap_or(rules.len());
        rules.insert(at, Arc::new(crate::query::distinct::DistinctToGroupBy));
        rules.insert(0, Arc::new(crate::query::coalesce::NullFreeCoalesce));
        // Last, after the pushdowns have put each cast where it will run.
        rules.push(Arc::new(crate::query::utc::UtcDates));
        let mut physical = PhysicalOptimizer::new().rules;
        physical.insert(
            0,
            Arc::new(crate::query::joins::JoinsThatFit::new(self.limit)),
        );
        // Windows computed a batch at a time, once DataFusion's rules have placed and rebuilt
        // the window operators (they look inside the expressions this rule wraps).
        let at = physical
            .iter()
            .position(|r| r.name() == "SanityCheckPlan")
            .unwrap_or(physical.len());
        physical.insert(at, Arc::new(crate::query::windows::BatchWindows));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(env)
            .with_default_features()
            .with_optimizer_rules(rules)
            .with_physical_optimizer_rules(physical)
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::query::utc::register(&ctx);
        Ok(ctx)
    }

    /// A session of delta-rs's own planner (writes and merges plan through it), sharing the
    /// process's memory pool and spill folder.
    pub fn delta_context(&self) -> Result<SessionContext> {
        let env = self.runtime()?;
        Ok(deltalake::delta_datafusion::DeltaSessionContext::with_runtime_env(env).into_inner())
    }

    /// The process's runtime: made once, after sweeping folders of processes that are gone.
    fn runtime(&self) -> Result<Arc<RuntimeEnv>> {
        let mut runtime = self.runtime.lock().expect("poisoned");
        if let Some(r) = runtime.as_ref() {
            return Ok(r.env.clone());
        }
        let spill_error = |cause: std::io::Error| LakeError::Spill {
            path: self.spill_dir.clone(),
            cause,
        };
        sweep(&self.spill_dir);
        let spill = SpillFolder::create(&self.spill_dir).map_err(spill_error)?;
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(self.limit),
            std::num::NonZeroUsize::new(3).expect("3 is not zero"),
        );
        let env = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(LimitPool {
                inner: pool,
                limit: self.limit,
            }))
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![spill.path.clone()])),
            )
            .build_arc()
            .map_err(|e| match e {
                DataFusionError::IoError(cause) => spill_error(cause),
                other => spill_error(std::io::Error::other(other)),
            })?;
        *runtime = Some(Runtime {
            env: env.clone(),
            _spill: spill,
        });
        Ok(env)
    }
}

/// Half the physical memory, or of the cgroup's limit where that is lower.
fn default_memory_limit() -> u64 {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    let system = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let total = system
        .cgroup_limits()
        .map(|c| c.total_memory)
        .filter(|&c| c > 0)
        .map_or(system.total_memory(), |c| c.min(system.total_memory()));
    // A machine that does not say: 4 GiB.
    if total == 0 { 4 << 30 } else { total / 2 }
}

/// A process's spill folder, locked while the process lives and removed when it ends.
#[derive(Debug)]
struct SpillFolder {
    path: PathBuf,
    _lock: File,
}

impl SpillFolder {
    fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // One per lake opened in the process (a library caller may open several).
        let path = dir.join(format!(
            "{SPILL_PREFIX}{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir(&path)?;
        let lock = File::create(path.join(".lock"))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::Error(e) => e,
            std::fs::TryLockError::WouldBlock => {
                std::io::Error::other(format!("{} is held by another process", path.display()))
            }
        })?;
        Ok(Self { path, _lock: lock })
    }
}

impl Drop for SpillFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the spill folders of processes that are gone: those whose lock can be taken.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(SPILL_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(lock) = File::open(path.join(".lock")) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            tracing::debug!("removing {}, left by a process that ended", path.display());
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The pool, with errors that say which setting bounds it.
#[derive(Debug)]
struct LimitPool<P> {
    inner: P,
    limit: usize,
}

impl<P: MemoryPool> std::fmt::Display for LimitPool<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lake({})", self.inner)
    }
}

impl<P: MemoryPool> MemoryPool for LimitPool<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        self.inner.try_grow(reservation, additional).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "the query needs more memory than [query] memory_limit = {} allows; raise it \
                 (lake.toml, LAKE_QUERY_MEMORY_LIMIT or --set query.memory_limit=...). {}",
                bytesize::ByteSize(self.limit as u64).display().iec(),
                e.strip_backtrace()
                    .trim_start_matches("Resources exhausted: ")
            ))
        })
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_folder_is_swept_and_a_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A folder whose owner is gone: its lock file is there, unlocked.
        let dead = dir.path().join(format!("{SPILL_PREFIX}999999999"));
        std::fs::create_dir_all(dead.join("datafusion-x")).unwrap();
        File::create(dead.join(".lock")).unwrap();
        std::fs::write(dead.join("datafusion-x/spill.arrow"), b"x").unwrap();
        // A live one: locked.
        let live = dir.path().join(format!("{SPILL_PREFIX}999999998"));
        std::fs::create_dir_all(&live).unwrap();
        let held = File::create(live.join(".lock")).unwrap();
        held.lock().unwrap();
        // Something that is not lake's.
        std::fs::create_dir_all(dir.path().join("other")).unwrap();

        sweep(dir.path());
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(dir.path().join("other").exists());

        // This process's own folder goes when its runtime does.
        let own = SpillFolder::create(dir.path()).unwrap();
        let path = own.path.clone();
        assert!(path.join(".lock").exists());
        drop(own);
        assert!(!path.exists());
    }
}
