//! `lake ingest PATH... --table schema.name`: files into a Delta table, in one commit.

use std::sync::Arc;

use anyhow::{Result, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use indicatif::ProgressBar;

use super::Context;
use crate::cli::{IngestArgs, IngestMode};
use crate::extract::files::FileSource;
use crate::lake::layout::Layout;
use crate::lake::write::{BatchSource, SourceError, WriteMode, write_laid_out};
use crate::lake::{INTERNAL, TableName};
use crate::progress;

struct Files {
    source: FileSource,
    progress: ProgressBar,
}

impl BatchSource for Files {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn stream(&self) -> BoxStream<'static, Result<RecordBatch, SourceError>> {
        self.progress.set_position(0);
        self.source
            .stream(self.progress.clone())
            .map(|r| r.map_err(SourceError::from))
            .boxed()
    }
}

pub async fn run(ctx: &Context, args: IngestArgs) -> Result<()> {
    let table = args.table.as_deref().expect("clap requires --table");
    let name: TableName = table.parse()?;
    if name.schema() == INTERNAL {
        bail!("failed to ingest into {name}: the `{INTERNAL}` schema is lake's own bookkeeping");
    }
    let mode = match (args.mode, args.key.is_empty()) {
        (IngestMode::Merge, true) => {
            bail!("failed to ingest into {name}: --mode merge needs --key COL[,COL]")
        }
        (IngestMode::Merge, false) => WriteMode::Merge(args.key.clone()),
        (_, false) => bail!("failed to ingest into {name}: --key only applies to --mode merge"),
        (IngestMode::Append, true) => WriteMode::Append,
        (IngestMode::Overwrite, true) => WriteMode::Overwrite,
    };
    let lake = ctx.lake().await?;
    let source = FileSource::open(&args.paths, args.format, &lake).await?;
    let files: Vec<String> = source.files().map(|f| f.display.clone()).collect();
    let bar = progress::bytes_bar(
        ctx.quiet(),
        source.total_bytes(),
        format!("ingesting into {name}"),
    );
    let metadata = vec![
        ("lake.command".to_string(), serde_json::json!("ingest")),
        (
            "lake.inputs".to_string(),
            serde_json::json!(files.iter().take(100).collect::<Vec<_>>()),
        ),
    ];
    let input = Arc::new(Files {
        source,
        progress: bar.clone(),
    });
    let layout = Layout::sorted_by(&args.sort_by);
    let outcome = write_laid_out(&lake, &name, input, &mode, &metadata, &layout).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    if !ctx.quiet() {
        let verb = if outcome.created { "created" } else { "wrote" };
        let files = match files.len() {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        eprintln!(
            "{verb} {name} version {}: {} rows from {files}",
            outcome.version, outcome.rows_read
        );
        if let Some((inserted, updated)) = outcome.merged {
            eprintln!(
                "merged on {}: {inserted} inserted, {updated} updated",
                args.key.join(", ")
            );
        }
        if !outcome.added_columns.is_empty() {
            eprintln!("added columns: {}", outcome.added_columns.join(", "));
        }
    }
    Ok(())
}
