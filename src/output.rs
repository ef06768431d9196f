//! RecordBatches -> a table for people, or CSV, JSON, NDJSON or Parquet for programs.
//! Every format but `table` streams: rows are written as they arrive.

use std::io::{IsTerminal, Write};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use crate::query::{LakeSession, QueryError};

/// Errors while writing results.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The query failed while its rows were read.
    #[error("failed to read results")]
    Query(#[from] DataFusionError),
    /// Encoding failed.
    #[error("failed to encode results as {format}: {cause}")]
    Encode {
        /// The format.
        format: &'static str,
        /// Why.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing failed.
    #[error("failed to write results")]
    Io(#[from] std::io::Error),
    /// The statement does not plan, or fails as it runs; with a caret under the position
    /// where there is one.
    #[error("{error}{}", caret.as_ref().map(|c| format!("\n{c}")).unwrap_or_default())]
    Sql {
        /// Why.
        error: QueryError,
        /// The statement's line with a caret under the error.
        caret: Option<String>,
    },
    /// The output file cannot be created.
    #[error("failed to create {}: {cause}", path.display())]
    Create {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Binary output to a terminal.
    #[error("failed to write results: parquet is binary; pass --output FILE or redirect stdout")]
    BinaryToTerminal,
}

/// A `Result` whose error is a [`OutputError`].
pub type Result<T, E = OutputError> = std::result::Result<T, E>;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    /// An aligned table.
    #[default]
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet (to a file or a pipe).
    Parquet,
}

fn encode<E: std::error::Error + Send + Sync + 'static>(
    format: &'static str,
) -> impl Fn(E) -> OutputError {
    move |e| OutputError::Encode {
        format,
        cause: Box::new(e),
    }
}

/// A writer that remembers the kind of the last I/O error it passed on. Arrow's CSV writer
/// turns its writer's errors into text, which loses the kind that tells a closed pipe.
struct Watched<'a> {
    inner: &'a mut (dyn Write + Send),
    failed: Option<std::io::ErrorKind>,
}

impl Write for Watched<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner
            .write(buf)
            .inspect_err(|e| self.failed = Some(e.kind()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner
            .flush()
            .inspect_err(|e| self.failed = Some(e.kind()))
    }
}

/// Writes a stream of results in `format`; returns the number of rows.
pub async fn write_stream(
    stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let mut watched = Watched {
        inner: out,
        failed: None,
    };
    let result = encode_stream(stream, format, &mut watched).await;
    match (result, watched.failed) {
        // The writer failed under the encoder: that I/O error is the one to report.
        (Err(OutputError::Encode { .. }), Some(kind)) => Err(OutputError::Io(kind.into())),
        (result, _) => result,
    }
}

async fn encode_stream(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let schema = stream.schema();
    let mut rows = 0u64;
    match format {
        OutputFormat::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                batches.push(batch);
            }
            writeln!(out, "{}", format_table(&schema, &batches)?)?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            let mut any = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(encode("csv"))?;
                any = true;
            }
            if !any {
                writer
                    .write(&RecordBatch::new_empty(schema))
                    .map_err(encode("csv"))?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(out);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(encode("json"))?;
            }
            writer.finish().map_err(encode("json"))?;
            writer.into_inner().write_all(b"\n")?;
        }
        OutputFormat::Ndjson => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(encode("ndjson"))?;
            }
            writer.finish().map_err(encode("ndjson"))?;
        }
        OutputFormat::Parquet => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(out, schema, None)
                .map_err(encode("parquet"))?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(encode("parquet"))?;
            }
            writer.close().map_err(encode("parquet"))?;
        }
    }
    Ok(rows)
}

/// Runs one statement over `session` and writes its results in `format` to the file
/// `output`, or to stdout; returns the number of rows. `lake query` and the shell share it.
pub async fn run_sql(
    session: &LakeSession,
    sql: &str,
    format: OutputFormat,
    output: Option<&std::path::Path>,
) -> Result<u64> {
    let with_caret = |error: QueryError| OutputError::Sql {
        caret: error.caret(sql),
        error,
    };
    let df = session.sql(sql).await.map_err(with_caret)?;
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| with_caret(QueryError::from_datafusion(e)))?;
    let mut out: Box<dyn Write + Send> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| OutputError::Create {
                path: path.to_path_buf(),
                cause: source,
            })?,
        )),
        None => {
            if format == OutputFormat::Parquet && std::io::stdout().is_terminal() {
                return Err(OutputError::BinaryToTerminal);
            }
            Box::new(std::io::BufWriter::new(std::io::stdout()))
        }
    };
    let rows = write_stream(stream, format, out.as_mut())
        .await
        .map_err(|e| match e {
            OutputError::Query(e) => with_caret(QueryError::from_datafusion(e)),
            e => e,
        })?;
    out.flush()?;
    Ok(rows)
}

/// Formats batches as an aligned table; an empty result still shows its header.
pub fn format_table(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)
        .map(|t| t.to_string())
        .map_err(encode("table"))
}

/// Formats a byte count as `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints text and a newline to stdout. Unlike `println!`, a closed pipe is an error the caller
/// returns (and `main` treats as success), not a panic.
pub fn print(text: impl std::fmt::Display) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}
