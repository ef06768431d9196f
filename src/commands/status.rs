//! `lake status`: each table's freshness, its last data update and age, against the
//! `warn_after` / `error_after` its source (`[sources.<name>]`) or model header sets. Exits 1
//! when a table is past its `error_after`, so a monitor can run it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::{Context, Exit, exit};
use crate::lake::TableName;

/// Operations that keep the data as it is.
const MAINTENANCE: &[&str] = &["OPTIMIZE", "VACUUM START", "VACUUM END"];

/// How fresh a table must be.
#[derive(Debug, Clone, Default)]
struct Thresholds {
    warn_after: Option<Duration>,
    error_after: Option<Duration>,
}

pub async fn run(ctx: &Context) -> Result<()> {
    let app = ctx.app().await?;
    let (settings, lake) = (app.settings(), app.lake());
    let tables = lake.list_tables().await?;
    let mut thresholds: BTreeMap<TableName, Thresholds> = BTreeMap::new();
    for (name, src) in &settings.sources {
        thresholds.insert(
            crate::extract::sql::target(name, src)?,
            Thresholds {
                warn_after: src.warn_after,
                error_after: src.error_after,
            },
        );
    }
    if settings.queries_dir().is_dir() {
        let project = app.project().await?;
        for m in &project.models {
            thresholds.insert(
                m.name.clone(),
                Thresholds {
                    warn_after: m.config.warn_after,
                    error_after: m.config.error_after,
                },
            );
        }
    }

    let now = Utc::now();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "table",
        "last update",
        "age",
        "warn_after",
        "error_after",
        "status",
    ]);
    let mut errors = Vec::new();
    for name in &tables {
        let updated = last_update(&lake, name).await;
        let limits = thresholds.get(name).cloned().unwrap_or_default();
        let age = updated.map(|t| (now - t).to_std().unwrap_or_default());
        let status = match age {
            None => "unknown",
            Some(a) if limits.error_after.is_some_and(|e| a > e) => "error",
            Some(a) if limits.warn_after.is_some_and(|w| a > w) => "warn",
            Some(_) if limits.warn_after.is_none() && limits.error_after.is_none() => "-",
            Some(_) => "ok",
        };
        if status == "error" {
            errors.push(name.to_string());
        }
        let show = |d: Option<Duration>| d.map(human).unwrap_or_default();
        table.add_row([
            name.to_string(),
            updated
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default(),
            show(age),
            show(limits.warn_after),
            show(limits.error_after),
            status.to_string(),
        ]);
    }
    crate::output::print(table)?;
    if !errors.is_empty() {
        return Err(Exit {
            code: exit::FAILED,
            message: format!("stale past error_after: {}", errors.join(", ")),
        }
        .into());
    }
    Ok(())
}

/// When the table's data last changed: its newest commit that is not maintenance.
async fn last_update(lake: &crate::lake::Lake, name: &TableName) -> Option<DateTime<Utc>> {
    let commits = lake.history(name, Some(50)).await.ok()?;
    commits
        .into_iter()
        .find(|c| !MAINTENANCE.contains(&c.operation.as_str()))
        .and_then(|c| c.timestamp)
}

/// `3h 5m`, to the minute (seconds under a minute).
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let rounded = if secs >= 60 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}
