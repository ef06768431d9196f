//! `lake schedule`'s plan: `[[schedule]]` jobs from lake.toml, their cron expressions parsed,
//! and when each runs next. Times are UTC, as in EventBridge; the process that runs the jobs is
//! `commands/schedule.rs`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::config::ScheduleJob;

/// Errors from reading the schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A job whose cron expression does not parse, or that never runs.
    #[error("failed to read [[schedule]] job {name}: cron `{cron}`: {why}")]
    Cron {
        /// The job.
        name: String,
        /// Its expression.
        cron: String,
        /// What is wrong.
        why: String,
    },
    /// Two jobs with one name, or a job without one.
    #[error("failed to read [[schedule]]: {0}")]
    Jobs(String),
}

/// A job ready to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its name.
    pub name: String,
    /// Its expression, parsed.
    pub cron: Cron,
    /// The `lake refresh` arguments it runs with.
    pub args: Vec<String>,
}

impl Job {
    /// The first time after `t` the job runs.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }
}

/// The jobs lake.toml declares, checked: names unique, every expression valid and due some day.
pub fn jobs(declared: &[ScheduleJob]) -> Result<Vec<Job>, ScheduleError> {
    let mut jobs: Vec<Job> = Vec::new();
    for d in declared {
        if d.name.trim().is_empty() {
            return Err(ScheduleError::Jobs("a job has no `name`".into()));
        }
        if jobs.iter().any(|j| j.name == d.name) {
            return Err(ScheduleError::Jobs(format!(
                "two jobs are named {}",
                d.name
            )));
        }
        let bad = |why: String| ScheduleError::Cron {
            name: d.name.clone(),
            cron: d.cron.clone(),
            why,
        };
        let cron = Cron::from_str(&d.cron).map_err(|e| bad(e.to_string()))?;
        let mut args = vec!["refresh".to_string()];
        for s in &d.select {
            args.extend(["--select".to_string(), s.clone()]);
        }
        for s in &d.exclude {
            args.extend(["--exclude".to_string(), s.clone()]);
        }
        if d.skip_extract {
            args.push("--skip-extract".into());
        }
        if d.skip_export {
            args.push("--skip-export".into());
        }
        let job = Job {
            name: d.name.clone(),
            cron,
            args,
        };
        if job.next_after(Utc::now()).is_none() {
            return Err(bad("it never runs".into()));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, cron: &str) -> ScheduleJob {
        ScheduleJob {
            name: name.into(),
            cron: cron.into(),
            select: vec!["daily+".into()],
            skip_export: true,
            ..Default::default()
        }
    }

    #[test]
    fn crontab_lines_plan_refreshes() {
        let jobs = jobs(&[job("nightly", "0 3 * * *"), job("often", "*/15 * * * * *")]).unwrap();
        let t = DateTime::parse_from_rfc3339("2026-11-26T02:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            jobs[0].next_after(t).unwrap().to_rfc3339(),
            "2026-11-26T03:00:00+00:00"
        );
        assert_eq!(
            jobs[1].next_after(t).unwrap().to_rfc3339(),
            "2026-11-26T02:59:15+00:00"
        );
        assert_eq!(
            jobs[0].args,
            ["refresh", "--select", "daily+", "--skip-export"]
        );
        let err = super::jobs(&[job("bad", "61 * * * *")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to read [[schedule]] job bad: cron `61 * * * *`"),
            "{err}"
        );
        let err = super::jobs(&[job("a", "@daily"), job("a", "@hourly")]).unwrap_err();
        assert!(err.to_string().contains("two jobs are named a"));
    }
}
