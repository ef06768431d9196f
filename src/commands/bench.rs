//! `lake bench generate`: a deterministic export to import and query; `lake bench commits`: a
//! table with a long log.

#[cfg(feature = "bench")]
use anyhow::Context as _;
use anyhow::Result;

use super::Context;
use crate::cli::{BenchAction, BenchArgs, CommitsArgs};
#[cfg(feature = "bench")]
use crate::extract::spotify_export::generate;

pub async fn run(ctx: &Context, args: BenchArgs) -> Result<()> {
    match args.action {
        #[cfg(feature = "bench")]
        BenchAction::Generate(args) => generate(ctx, args),
        BenchAction::Commits(args) => commits(ctx, args).await,
    }
}

/// `lake bench generate`.
#[cfg(feature = "bench")]
fn generate(ctx: &Context, args: crate::cli::GenerateArgs) -> Result<()> {
    let shape = generate::Shape {
        users: args.users.max(1),
        artists: args.artists.max(1),
        session_every: (args.session_every.as_secs() as i64).max(1),
    };
    let started = std::time::Instant::now();
    let files = generate::extended(
        &args.out,
        args.seed,
        args.from..args.from + args.plays,
        args.per_file,
        &shape,
        false,
    )
    .with_context(|| format!("failed to write the export to {}", args.out.display()))?;
    if let Some(api) = &args.api {
        generate::api(api, args.seed, args.from + args.plays, &shape)
            .with_context(|| format!("failed to write the API rows to {}", api.display()))?;
        if !ctx.quiet() {
            eprintln!(
                "wrote recently_played.ndjson, playlist_tracks.ndjson and tracks.ndjson to {}",
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
            "wrote {} plays of {} listeners ({} a session interval) in {} files ({}) to {} in {:.1}s",
            args.plays,
            shape.users,
            shape.plays_per_interval(),
            files.len(),
            crate::output::human_bytes(bytes),
            args.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Appends `n` one-row commits, each as a writer would make it (post-commit hooks, so Delta's
/// own checkpoint every 100 commits, included).
async fn commits(ctx: &Context, args: CommitsArgs) -> Result<()> {
    use crate::lake::write::{MemorySource, WriteMode, write};
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    let lake = ctx.lake().await?;
    let table: crate::lake::TableName = args.table.parse()?;
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, false)]));
    let bar = crate::progress::bar(ctx.quiet(), args.n, "commits");
    let started = std::time::Instant::now();
    for i in 0..args.n {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(Int64Array::from(vec![i as i64]))],
        )?;
        let source = std::sync::Arc::new(MemorySource {
            schema: schema.clone(),
            batches: vec![batch],
        });
        write(&lake, &table, source, &WriteMode::Append, &[]).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !ctx.quiet() {
        eprintln!(
            "appended {} commits to {table} in {:.1}s",
            args.n,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
