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
    let mode = WriteMode::Merge(vec!["stream_key".into()]);
    let outcome = write(&lake, &name, source, &mode, &metadata).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    if !ctx.quiet() {
        let verb = if outcome.created { "created" } else { "wrote" };
        eprintln!(
            "{verb} {name} version {}: {} plays from {} files",
            outcome.version,
            outcome.rows_read,
            shown.len()
        );
        if let Some((inserted, updated)) = outcome.merged {
            eprintln!("{inserted} new, {updated} already in the lake");
        }
    }
    Ok(())
}
