//! `lake bench generate`: a deterministic export to import and query.

use anyhow::{Context as _, Result};

use super::Context;
use crate::cli::{BenchAction, BenchArgs};
use crate::extract::spotify_export::generate;

pub fn run(ctx: &Context, args: BenchArgs) -> Result<()> {
    let BenchAction::Generate(args) = args.action;
    let started = std::time::Instant::now();
    let files = generate::extended(&args.out, args.seed, 0..args.plays, args.per_file, false)
        .with_context(|| format!("failed to write the export to {}", args.out.display()))?;
    if let Some(api) = &args.api {
        generate::api(api, args.seed, args.plays)
            .with_context(|| format!("failed to write the API rows to {}", api.display()))?;
        if !ctx.quiet() {
            eprintln!(
                "wrote recently_played.ndjson and playlist_tracks.ndjson to {}",
                api.display()
            );
        }
    }
    if !ctx.quiet() {
        let bytes: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        eprintln!(
            "wrote {} plays in {} files ({}) to {} in {:.1}s",
            args.plays,
            files.len(),
            crate::output::human_bytes(bytes),
            args.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
