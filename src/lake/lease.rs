//! Leases: one holder at a time of a named lock on the lake, across processes and machines.
//!
//! A lease is a chain of generations, `<root>/_lake/leases/<name>/<generation>.json`, each
//! created with a put-if-absent (`PutMode::Create`), as Delta commits are: of two processes that
//! try to write the same generation, one wins. The newest generation says who holds the lease
//! and until when. Taking a free or expired lease, renewing it, and releasing it each write the
//! next generation, so a holder that was presumed dead and comes back learns it has lost the
//! lease (its renewal finds the generation taken) instead of running on beside the new holder.
//! Expiry is read against the reader's clock: keep the TTL well above the clock skew between
//! machines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};

use super::{Lake, LakeError};

/// The lease a refresh, a standalone maintenance or a scheduled job takes: one of them at a time
/// per lake.
pub const LAKE: &str = "lake";

/// Generations kept behind the newest, for a look at who held the lease before.
const KEEP: u64 = 8;

/// What a generation records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// This holder, unique per acquisition: `host:pid:random`.
    pub owner: String,
    /// The machine.
    pub host: String,
    /// The process.
    pub pid: u32,
    /// What it runs, such as `refresh`.
    pub command: String,
    /// When it took the lease.
    pub acquired_at: DateTime<Utc>,
    /// Until when it holds it, unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Set when the holder let go.
    pub released: bool,
}

impl LeaseInfo {
    /// Whether someone holds the lease at `now`.
    pub fn held_at(&self, now: DateTime<Utc>) -> bool {
        !self.released && self.expires_at > now
    }

    /// For messages: `refresh on host-a (pid 42) since 03:00:01 UTC, expires 03:10:01 UTC`.
    pub fn describe(&self) -> String {
        format!(
            "{} on {} (pid {}) since {}, expires {}",
            self.command,
            self.host,
            self.pid,
            self.acquired_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// A lease this process holds.
pub struct Lease {
    lake: Lake,
    name: String,
    generation: u64,
    info: LeaseInfo,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("info", &self.info)
            .finish()
    }
}

fn lease_err(name: &str, source: object_store::Error) -> LakeError {
    LakeError::Lease {
        name: name.to_string(),
        cause: source,
    }
}

fn generation_name(g: u64) -> String {
    format!("{g:020}.json")
}

impl Lake {
    fn lease_dir(&self, name: &str) -> StorePath {
        self.internal_path(&["leases", name])
    }

    /// The newest generation of a lease and what it says, if there is one.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(u64, LeaseInfo)>, LakeError> {
        let store = self.log_store(&self.root)?.root_object_store(None);
        let dir = self.lease_dir(name);
        let listed = super::list_names(&*store, &dir)
            .await
            .map_err(|e| lease_err(name, e))?;
        let Some(newest) = listed
            .iter()
            .filter_map(|n| n.strip_suffix(".json")?.parse::<u64>().ok())
            .max()
        else {
            return Ok(None);
        };
        let bytes = store
            .get(&dir.join(generation_name(newest)))
            .await
            .map_err(|e| lease_err(name, e))?
            .bytes()
            .await
            .map_err(|e| lease_err(name, e))?;
        let info: LeaseInfo = serde_json::from_slice(&bytes).map_err(|e| {
            lease_err(
                name,
                object_store::Error::Generic {
                    store: "lake",
                    source: Box::new(e),
                },
            )
        })?;
        Ok(Some((newest, info)))
    }

    /// Takes the lease `name` for `ttl` if nobody holds it; otherwise says who does.
    pub async fn try_lease(
        &self,
        name: &str,
        ttl: Duration,
        command: &str,
    ) -> Result<Result<Lease, LeaseInfo>, LakeError> {
        let host = hostname();
        let pid = std::process::id();
        let owner = format!("{host}:{pid}:{}", uuid::Uuid::new_v4().simple());
        // Another process may write the same generation between the read and the write; then
        // read again.
        for _ in 0..5 {
            let newest = self.lease_holder(name).await?;
            let now = Utc::now();
            if let Some((_, info)) = &newest
                && info.held_at(now)
            {
                return Ok(Err(info.clone()));
            }
            let generation = newest.map_or(0, |(g, _)| g + 1);
            let info = LeaseInfo {
                owner: owner.clone(),
                host: host.clone(),
                pid,
                command: command.to_string(),
                acquired_at: now,
                expires_at: now + ttl,
                released: false,
            };
            if self.write_generation(name, generation, &info).await? {
                let lease = Lease {
                    lake: self.clone(),
                    name: name.to_string(),
                    generation,
                    info,
                };
                lease.prune().await;
                return Ok(Ok(lease));
            }
        }
        match self.lease_holder(name).await? {
            Some((_, info)) => Ok(Err(info)),
            None => Err(lease_err(
                name,
                object_store::Error::Generic {
                    store: "lake",
                    source: "the lease kept changing".into(),
                },
            )),
        }
    }

    /// Takes the lease `name` for `command` and holds it (see [`HeldLease`]), waiting up to
    /// `wait` while another process holds it; `waiting` hears who, every couple of seconds.
    /// Past the wait: [`LakeError::LeaseHeld`].
    pub async fn hold_lease(
        &self,
        name: &str,
        command: &str,
        ttl: Duration,
        wait: Duration,
        waiting: &(dyn Fn(&LeaseInfo) + Send + Sync),
    ) -> Result<HeldLease, LakeError> {
        let deadline = Instant::now() + wait;
        loop {
            let holder = match self.try_lease(name, ttl, command).await? {
                Ok(lease) => return Ok(HeldLease::hold(lease, ttl)),
                Err(holder) => holder,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(LakeError::LeaseHeld {
                    name: name.to_string(),
                    holder: holder.describe(),
                });
            }
            waiting(&holder);
            tokio::time::sleep((deadline - now).min(Duration::from_secs(2))).await;
        }
    }

    /// Frees the lease if process `pid` of this machine holds it: for a parent that has seen
    /// that process exit (a killed refresh), so the next one need not wait for the expiry.
    /// Returns whether it did.
    pub async fn release_dead(&self, name: &str, pid: u32) -> Result<bool, LakeError> {
        let Some((generation, info)) = self.lease_holder(name).await? else {
            return Ok(false);
        };
        if info.released || info.pid != pid || info.host != hostname() {
            return Ok(false);
        }
        let freed = LeaseInfo {
            released: true,
            expires_at: Utc::now(),
            ..info
        };
        self.write_generation(name, generation + 1, &freed).await
    }

    /// Writes a generation if it does not exist yet; false if another process wrote it first.
    async fn write_generation(
        &self,
        name: &str,
        generation: u64,
        info: &LeaseInfo,
    ) -> Result<bool, LakeError> {
        let store = self.log_store(&self.root)?.root_object_store(None);
        let path = self.lease_dir(name).join(generation_name(generation));
        let body = serde_json::to_vec_pretty(info).expect("a lease is JSON");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store.put_opts(&path, body.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(lease_err(name, e)),
        }
    }
}

impl Lease {
    /// What the lease records now.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// Extends the lease to `ttl` from now. Fails with [`LakeError::LeaseLost`] if another
    /// process took it, which it can only have done after the lease expired.
    pub async fn renew(&mut self, ttl: Duration) -> Result<(), LakeError> {
        let mut info = self.info.clone();
        info.expires_at = Utc::now() + ttl;
        self.advance(info).await
    }

    /// Lets go of the lease, so the next process need not wait for it to expire.
    pub async fn release(mut self) -> Result<(), LakeError> {
        let mut info = self.info.clone();
        info.released = true;
        info.expires_at = Utc::now();
        self.advance(info).await
    }

    async fn advance(&mut self, info: LeaseInfo) -> Result<(), LakeError> {
        let next = self.generation + 1;
        if !self.lake.write_generation(&self.name, next, &info).await? {
            let holder = self
                .lake
                .lease_holder(&self.name)
                .await?
                .map(|(_, i)| i.describe())
                .unwrap_or_default();
            return Err(LakeError::LeaseLost {
                name: self.name.clone(),
                holder,
            });
        }
        self.generation = next;
        self.info = info;
        self.prune().await;
        Ok(())
    }

    /// Deletes generations older than the last few; a failure only leaves them behind.
    async fn prune(&self) {
        let Some(oldest_kept) = self.generation.checked_sub(KEEP) else {
            return;
        };
        let Ok(store) = self.lake.log_store(&self.lake.root) else {
            return;
        };
        let store = store.root_object_store(None);
        let dir = self.lake.lease_dir(&self.name);
        let Ok(names) = super::list_names(&*store, &dir).await else {
            return;
        };
        for n in names {
            if let Some(g) = n.strip_suffix(".json").and_then(|g| g.parse::<u64>().ok())
                && g < oldest_kept
            {
                let _ = store.delete(&dir.clone().join(n.as_str())).await;
            }
        }
    }
}

/// This machine's name, for messages about who holds a lease.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// A lease held for the length of some work. It renews itself every third of its TTL in the
/// background, so work longer than the TTL keeps it; it notes when another process took it
/// (only possible after it expired, say while the machine slept) so the work can stop at its
/// next step; it can release itself on SIGTERM or SIGINT; and it is released by
/// [`HeldLease::release`] or, at the latest, when dropped.
pub struct HeldLease {
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
    info: LeaseInfo,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    signals: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease")
            .field("info", &self.info)
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

impl HeldLease {
    /// Holds `lease`, renewing it to `ttl` every third of `ttl`.
    pub fn hold(lease: Lease, ttl: Duration) -> Self {
        let info = lease.info().clone();
        let lease = Arc::new(tokio::sync::Mutex::new(Some(lease)));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(lease.clone(), ttl, lost.clone()));
        Self {
            lease,
            info,
            lost,
            renewer,
            signals: None,
        }
    }

    /// Who took it, and until when at first.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// Whether another process took the lease: the work should stop before its next step.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// On SIGTERM or SIGINT, releases the lease (so the next holder need not wait for it to
    /// expire), then calls `then` with the exit code a shell gives the signal (143 or 130).
    pub fn release_on_signal(mut self, then: impl FnOnce(i32) + Send + 'static) -> Self {
        let lease = self.lease.clone();
        self.signals = Some(tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let code = tokio::select! {
                _ = term.recv() => 143,
                _ = int.recv() => 130,
            };
            if let Some(held) = lease.lock().await.take()
                && let Err(e) = held.release().await
            {
                tracing::warn!("failed to release the lease (it expires by itself): {e}");
            }
            then(code);
        }));
        self
    }

    /// Stops renewing and lets go of the lease.
    pub async fn release(mut self) -> Result<(), LakeError> {
        // Taking the lease waits for a renewal in flight, so the renewer stops between two
        // renewals, never inside one (which would leave a generation the release does not know).
        let held = self.lease.lock().await.take();
        self.stop();
        match held {
            Some(lease) => lease.release().await,
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        self.renewer.abort();
        if let Some(s) = self.signals.take() {
            s.abort();
        }
    }
}

impl Drop for HeldLease {
    /// Released in the background if the runtime is still there; else it expires by itself.
    fn drop(&mut self) {
        self.stop();
        let held = self.lease.try_lock().ok().and_then(|mut g| g.take());
        if let (Some(lease), Ok(runtime)) = (held, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                if let Err(e) = lease.release().await {
                    tracing::warn!("failed to release the lease (it expires by itself): {e}");
                }
            });
        }
    }
}

/// Renews the lease every third of its TTL; marks it lost if another process took it.
async fn renew(
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
    ttl: Duration,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let mut guard = lease.lock().await;
        let Some(lease) = guard.as_mut() else {
            return;
        };
        if let Err(e) = lease.renew(ttl).await {
            tracing::error!("{e}");
            if matches!(e, LakeError::LeaseLost { .. }) {
                lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_release_free_a_lease() {
        let now = Utc::now();
        let info = LeaseInfo {
            owner: "h:1:x".into(),
            host: "h".into(),
            pid: 1,
            command: "refresh".into(),
            acquired_at: now,
            expires_at: now + Duration::from_secs(60),
            released: false,
        };
        assert!(info.held_at(now));
        assert!(!info.held_at(now + Duration::from_secs(61)));
        assert!(
            !LeaseInfo {
                released: true,
                ..info.clone()
            }
            .held_at(now)
        );
        assert!(info.describe().starts_with("refresh on h (pid 1) since "));
    }
}
