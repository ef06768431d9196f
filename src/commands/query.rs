//! `lake query "SQL"` and `lake query -f file.sql`.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow};

use super::Context;
use crate::cli::QueryArgs;
use crate::output::{OutputError, OutputFormat, write_stream};
use crate::query::{LakeSession, QueryError};

pub async fn run(ctx: &Context, args: QueryArgs) -> Result<()> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(path)) => std::fs::read_to_string(crate::paths::existing(path)?)
            .with_context(|| format!("failed to read {}", path.display()))?,
        (None, None) => unreachable!("clap requires one"),
    };
    let session = LakeSession::new(ctx.lake().await?).await?;
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

/// Runs one statement and writes its results; shared with the shell.
pub async fn run_sql(
    session: &LakeSession,
    sql: &str,
    format: OutputFormat,
    output: Option<&std::path::Path>,
) -> Result<u64> {
    let with_caret = |e: QueryError| match e.caret(sql) {
        Some(caret) => anyhow!("{e}\n{caret}"),
        None => anyhow!(e),
    };
    let df = session.sql(sql).await.map_err(with_caret)?;
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| with_caret(QueryError::from_datafusion(e)))?;
    let mut out: Box<dyn Write + Send> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("failed to create {}", path.display()))?,
        )),
        None => {
            if format == OutputFormat::Parquet && std::io::stdout().is_terminal() {
                return Err(OutputError::BinaryToTerminal.into());
            }
            Box::new(std::io::BufWriter::new(std::io::stdout()))
        }
    };
    let rows = write_stream(stream, format, out.as_mut())
        .await
        .map_err(|e| match e {
            OutputError::Query(e) => with_caret(QueryError::from_datafusion(e)),
            e => anyhow!(e),
        })?;
    out.flush()?;
    Ok(rows)
}
