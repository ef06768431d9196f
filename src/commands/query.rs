//! `lake query "SQL"` and `lake query -f file.sql`.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context as _, Result};

use super::Context;
use crate::cli::QueryArgs;
use crate::output::{OutputFormat, run_sql};

pub async fn run(ctx: &Context, args: QueryArgs) -> Result<()> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(path)) => std::fs::read_to_string(crate::paths::existing(path)?)
            .with_context(|| format!("failed to read {}", path.display()))?,
        (None, None) => unreachable!("clap requires one"),
    };
    let session = ctx.app().await?.session().await?;
    let started = Instant::now();
    let output = args
        .output
        .as_deref()
        .map(crate::paths::new_file)
        .transpose()?;
    let rows = run_sql(&session, &sql, args.format, output.as_deref()).await?;
    if !ctx.quiet()
        && args.output.is_none()
        && args.format == OutputFormat::Table
        && std::io::stderr().is_terminal()
    {
        eprintln!("{rows} rows in {:.3}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}
