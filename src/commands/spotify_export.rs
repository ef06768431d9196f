//! `lake ingest spotify-export PATH`: the personal data export into raw.spotify_streams, merged
//! on each play's key so that re-imports and overlapping exports add no duplicates.

use std::sync::Arc;

use anyhow::Result;

use super::Context;
use crate::cli::SpotifyExportArgs;
use crate::config::PersonalData;
use crate::extract::spotify_export::{ExportSource, discover};
use crate::lake::write::{WriteMode, write};
use crate::lake::{RAW, TableName};
use crate::progress;

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
    let source = Arc::new(ExportSource::new(files, personal, salt, bar.clone()));
    let metadata = vec![
        (
            "lake.command".to_string(),
            serde_json::json!("ingest spotify-export"),
        ),
        ("lake.inputs".to_string(), serde_json::json!(shown)),
    ];
    // A play never changes: a re-import inserts only plays the lake lacks.
    let mode = WriteMode::InsertNew(vec!["stream_key".into()]);
    let outcome = write(&lake, &name, source, &mode, &metadata).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    if !ctx.quiet() {
        let files = shown.len();
        match outcome.merged {
            Some((0, _)) => eprintln!(
                "{name} unchanged at version {}: all {} plays from {files} files are in the lake",
                outcome.version, outcome.rows_read
            ),
            Some((inserted, _)) => eprintln!(
                "wrote {name} version {}: {inserted} new plays, {} of the {} from {files} files \
                 were in the lake",
                outcome.version,
                outcome.rows_read - inserted,
                outcome.rows_read
            ),
            None => eprintln!(
                "created {name} version {}: {} plays from {files} files",
                outcome.version, outcome.rows_read
            ),
        }
    }
    Ok(())
}
