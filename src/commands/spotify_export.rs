//! `lake ingest spotify-export PATH`: the personal data export into raw.spotify_streams, merged
//! on each play's key so that re-imports and overlapping exports add no duplicates.

use std::sync::Arc;

use anyhow::Result;
use arrow::array::AsArray;
use arrow::datatypes::DataType;
use futures::StreamExt;

use super::Context;
use crate::cli::SpotifyExportArgs;
use crate::config::PersonalData;
use crate::extract::spotify_export::{ExportSource, discover};
use crate::lake::write::{BatchSource, WriteMode, write};
use crate::lake::{RAW, TableName};
use crate::progress;
use crate::query::LakeSession;
use std::sync::atomic::Ordering;

/// The table the export lands in.
pub const TABLE: &str = "spotify_streams";

pub async fn run(ctx: &Context, args: SpotifyExportArgs) -> Result<()> {
    let settings = ctx.settings()?;
    let personal = settings.spotify_export.personal_data;
    let files = discover(&args.path)?;
    let lake = ctx.lake().await?;
    let salt = match personal {
        PersonalData::Hash => Some(lake.salt().await?),
        _ => None,
    };
    let name = TableName::new(RAW, TABLE)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = progress::bytes_bar(ctx.quiet(), total, format!("ingesting into {name}"));
    let shown: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    // Plays already in the lake (as of one version) are left out as they are read; the new
    // ones are appended, or merged by key if another writer committed since that version.
    // The keys go straight from each batch into the set: 16 bytes a play.
    let mut source = ExportSource::new(files, personal, salt, bar.clone());
    let version = if lake.list_tables().await?.contains(&name) {
        let version = lake.table(&name, None, None).await?.version().unwrap_or(0);
        let session = LakeSession::new(lake.clone()).await?;
        let mut batches = session
            .sql(&format!(
                "SELECT stream_key FROM {}.\"{}@v{version}\"",
                name.schema(),
                name.name()
            ))
            .await?
            .execute_stream()
            .await?;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let keys = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
            source = source.skipping(keys.as_string::<i32>().iter().flatten());
        }
        Some(version)
    } else {
        None
    };
    let source = Arc::new(source);
    let metadata = vec![
        (
            "lake.command".to_string(),
            serde_json::json!("ingest spotify-export"),
        ),
        ("lake.inputs".to_string(), serde_json::json!(shown)),
    ];
    // A re-import that finds nothing new commits nothing: read until the first new play (with
    // every play known, that is the whole export once more, still cheaper than a merge).
    if let Some(version) = version {
        let probe = source.probe();
        let mut batches = probe.stream();
        let mut any_new = false;
        while let Some(batch) = batches.next().await {
            if batch.map_err(|e| anyhow::anyhow!(e))?.num_rows() > 0 {
                any_new = true;
                break;
            }
        }
        if !any_new {
            bar.finish_and_clear();
            if !ctx.quiet() {
                let plays = probe.counts().plays.load(Ordering::Relaxed);
                eprintln!("{}", unchanged(&name, version, plays, shown.len()));
            }
            return Ok(());
        }
    }
    // A play never changes: a re-import inserts only plays the lake lacks.
    let mode = WriteMode::AppendChecked {
        version,
        otherwise: Box::new(WriteMode::InsertNew(vec!["stream_key".into()])),
    };
    let outcome = write(&lake, &name, source.clone(), &mode, &metadata).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    if !ctx.quiet() {
        let counts = source.counts();
        let plays = counts.plays.load(Ordering::Relaxed);
        let known = counts.known.load(Ordering::Relaxed);
        let repeated = counts.repeated.load(Ordering::Relaxed);
        let inserted = outcome.merged.map_or(outcome.rows_read, |(i, _)| i);
        let files = shown.len();
        let mut line = if inserted == 0 {
            unchanged(&name, outcome.version as u64, plays, files)
        } else {
            let verb = if outcome.created { "created" } else { "wrote" };
            let of = if inserted == plays {
                String::new()
            } else {
                format!(" new of {plays}")
            };
            format!(
                "{verb} {name} version {}: {inserted}{of} plays from {files} files",
                outcome.version
            )
        };
        if known > 0 && inserted > 0 {
            line.push_str(&format!("; {known} were in the lake"));
        }
        if repeated > 0 {
            line.push_str(&format!("; {repeated} repeated within the export"));
        }
        eprintln!("{line}");
    }
    Ok(())
}

fn unchanged(name: &TableName, version: u64, plays: u64, files: usize) -> String {
    format!(
        "{name} unchanged at version {version}: all {plays} plays from {files} files are in the lake"
    )
}
