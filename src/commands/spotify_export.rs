//! `lake ingest spotify-export PATH`: the personal data export into raw.spotify_streams
//! ([`crate::extract::spotify_export::import`]), with a bar of the bytes read.

use anyhow::Result;

use super::Context;
use crate::cli::SpotifyExportArgs;
use crate::extract::spotify_export::{discover, import};
use crate::progress;

pub async fn run(ctx: &Context, args: SpotifyExportArgs) -> Result<()> {
    let files = discover(&args.path)?;
    let app = ctx.app().await?;
    let personal = app.settings().spotify_export.personal_data;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = progress::bytes_bar(
        ctx.quiet(),
        total,
        "ingesting into raw.spotify_streams".into(),
    );
    let imported = import(app.lake(), files, personal, bar.clone()).await;
    bar.finish_and_clear();
    let imported = imported?;
    if !ctx.quiet() {
        eprintln!("{imported}");
    }
    Ok(())
}
