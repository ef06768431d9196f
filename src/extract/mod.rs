//! Sources -> Arrow batches. Each source yields a schema and a stream of record batches that
//! [`crate::lake::write`] lands in a Delta table. This issue brings file inputs; the Spotify API,
//! the personal data export and SQL databases will sit beside them.

pub mod files;
pub mod spotify;
pub mod spotify_export;
pub mod sql;

use std::path::PathBuf;

/// The UTF-8 byte-order mark: accepted, and skipped, at the start of any text file lake reads.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Errors from the extract stage. Each names the input, and the line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A Web API request that failed after the retries lake allows.
    #[error("failed to fetch {endpoint}: {message}")]
    Api {
        /// The endpoint, relative to the API base.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// An endpoint that answered 403 or 404: retired for this app, or an unknown id.
    #[error("failed to fetch {endpoint}: Spotify answered {status}: {message}")]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// 403 or 404.
        status: u16,
        /// Spotify's message.
        message: String,
    },
    /// Credentials or tokens that are missing or refused.
    #[error("failed to authorize with Spotify: {message}")]
    Auth {
        /// What is wrong and what to do.
        message: String,
    },
    /// A SQL source that could not be read; the message never holds its password.
    #[error("failed to extract source {name}: {message}")]
    Sql {
        /// The source's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// Settings that cannot be used.
    #[error("failed to configure the Spotify extract: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A query over the lake for ids, keys or cursors failed.
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    /// A local file that could not be written.
    #[error("failed to write {}: {cause}", path.display())]
    WriteFile {
        /// The path.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// An input path, glob or prefix that matched nothing.
    #[error("failed to find input {input}: {why}")]
    NotFound {
        /// The input as given.
        input: String,
        /// Why.
        why: String,
    },
    /// A file whose format cannot be told.
    #[error("failed to detect the format of {file}: {why}")]
    Format {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// The storage under an input failed.
    #[error("failed to read {file}: {cause}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        cause: object_store::Error,
    },
    /// Malformed content.
    #[error("failed to parse {file}{}: {message}", position(*line, *column))]
    Parse {
        /// The file.
        file: String,
        /// The 1-based line, where known.
        line: Option<usize>,
        /// The 1-based column, where known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Files whose columns cannot be combined into one table.
    #[error(
        "failed to combine inputs: column `{column}` is {first} in {first_file} but {second} in {second_file}"
    )]
    Conflict {
        /// The column.
        column: String,
        /// Its type in the first file.
        first: String,
        /// That file.
        first_file: String,
        /// Its type in the second.
        second: String,
        /// That file.
        second_file: String,
    },
    /// A local path that does not resolve.
    #[error(transparent)]
    Path(#[from] crate::paths::PathError),
    /// A local file system error outside object storage.
    #[error("failed to read {}: {cause}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// A `Result` whose error is a [`ExtractError`].
pub type Result<T, E = ExtractError> = std::result::Result<T, E>;

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}
