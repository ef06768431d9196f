//! `lake schedule`: a long-running process that runs `lake refresh` on the cron expressions of
//! lake.toml's `[[schedule]]` jobs (UTC). Each run is a child `lake refresh` process, so a run
//! that crashes takes nothing else down; runs of one job never overlap (a run still going
//! when its job is due again makes that occurrence skipped, and logged); runs of different
//! jobs wait for each other through the lake's lock. SIGTERM or Ctrl-C stops it: no new runs,
//! a running one gets `--stop-timeout` to finish and is then stopped, which leaves the last
//! committed state.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use super::Context;
use crate::cli::ScheduleArgs;
use crate::schedule::{Job, jobs};

/// A run in progress.
struct Running {
    child: Child,
    started: Instant,
}

pub async fn run(ctx: &Context, args: ScheduleArgs) -> Result<()> {
    let settings = ctx.settings()?;
    let jobs = jobs(&settings.schedule)?;
    if jobs.is_empty() {
        bail!("failed to schedule: lake.toml has no [[schedule]] jobs");
    }
    let exe = std::env::current_exe()?;
    // The config file in use, whether given or found, so a child reads the same one.
    let mut base = ctx.child_args();
    if let Some(file) = &settings.config_file {
        base.extend(["--config".to_string(), file.display().to_string()]);
    }
    let mut next: Vec<Option<DateTime<Utc>>> =
        jobs.iter().map(|j| j.next_after(Utc::now())).collect();
    let mut running: Vec<Option<Running>> = jobs.iter().map(|_| None).collect();
    for (job, at) in jobs.iter().zip(&next) {
        tracing::info!(job = %job.name, next = ?at, "job scheduled");
        if !ctx.quiet() {
            eprintln!(
                "{}: next run at {}",
                job.name,
                at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "never".into())
            );
        }
    }
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        reap(&jobs, &mut running);
        let now = Utc::now();
        let wake = next
            .iter()
            .flatten()
            .min()
            .map(|t| (*t - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(60));
        // Wake at least every second to notice runs that ended.
        tokio::select! {
            _ = tokio::time::sleep(wake.min(Duration::from_secs(1))) => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        let now = Utc::now();
        for (i, job) in jobs.iter().enumerate() {
            let Some(due) = next[i] else { continue };
            if due > now {
                continue;
            }
            next[i] = job.next_after(now);
            reap(&jobs, &mut running);
            if running[i].is_some() {
                tracing::warn!(job = %job.name, "skipped: the job's previous run is still going");
                continue;
            }
            match start(&exe, &base, job) {
                Ok(child) => {
                    tracing::info!(job = %job.name, pid = child.id(), "job started");
                    running[i] = Some(Running {
                        child,
                        started: Instant::now(),
                    });
                }
                Err(e) => tracing::error!(job = %job.name, "failed to start the job: {e}"),
            }
        }
    }
    tracing::info!(
        stop_timeout_s = args.stop_timeout.as_secs(),
        "stopping: no new runs; a running one may finish"
    );
    for (job, run) in jobs.iter().zip(running.iter_mut()) {
        let Some(mut r) = run.take() else { continue };
        match tokio::time::timeout(args.stop_timeout, r.child.wait()).await {
            Ok(status) => finished(job, status.ok().and_then(|s| s.code()), r.started),
            Err(_) => {
                let pid = r.child.id();
                let _ = r.child.kill().await;
                tracing::warn!(
                    job = %job.name,
                    "stopped the run after --stop-timeout; it left the last committed state"
                );
                // The run is gone: free its lock, so the next refresh need not wait it out.
                if let Some(pid) = pid
                    && let Ok(lake) = ctx.lake().await
                    && let Err(e) = lake.release_dead(crate::lake::lease::LAKE, pid).await
                {
                    tracing::warn!("failed to free the stopped run's lease (it expires): {e}");
                }
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn start(exe: &std::path::Path, base: &[String], job: &Job) -> std::io::Result<Child> {
    Command::new(exe)
        .args(base)
        .args(&job.args)
        .args(["--wait", "30m"])
        .kill_on_drop(false)
        .spawn()
}

/// Logs and clears the runs that ended.
fn reap(jobs: &[Job], running: &mut [Option<Running>]) {
    for (job, run) in jobs.iter().zip(running.iter_mut()) {
        let Some(r) = run else { continue };
        if let Ok(Some(status)) = r.child.try_wait() {
            finished(job, status.code(), r.started);
            *run = None;
        }
    }
}

fn finished(job: &Job, code: Option<i32>, started: Instant) {
    let duration_ms = started.elapsed().as_millis() as u64;
    match code {
        Some(0) => tracing::info!(job = %job.name, exit_code = 0, duration_ms, "job finished"),
        Some(c) => tracing::warn!(job = %job.name, exit_code = c, duration_ms, "job finished"),
        None => tracing::warn!(job = %job.name, duration_ms, "job finished by a signal"),
    }
}
