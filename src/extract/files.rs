//! File inputs: CSV, JSON arrays, NDJSON and Parquet, from local paths, globs, folders and
//! `s3://` prefixes.
//!
//! Each file's schema is inferred on its own, then all are combined into one schema (a column
//! missing from a file is null there; numbers that are integers in one file and floats in another
//! become floats; scalars that disagree otherwise become strings). Reading is streamed: a file is
//! never held in memory whole, except a JSON array, which has to be parsed as one value.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use futures::stream::BoxStream;
use indicatif::ProgressBar;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
// ParquetObjectReader is deprecated in favour of hand-written AsyncFileReaders; until arrow-rs
// ships the replacement it points to, the object_store reader is the maintained path.
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use url::Url;

use super::{ExtractError, UTF8_BOM};
use crate::lake::Lake;
use crate::paths;

/// Rows per record batch.
const BATCH_ROWS: usize = 8192;
/// How many bytes of NDJSON are gathered before they are decoded.
const BLOCK_BYTES: usize = 4 << 20;
/// How much of a CSV or NDJSON file is read to infer its schema.
const SAMPLE_BYTES: u64 = 8 << 20;

/// A file format lake reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
    /// A JSON array of objects, or newline-delimited objects (detected from the first byte).
    Json,
    /// Newline-delimited JSON objects.
    Ndjson,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    fn from_extension(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// One input file, wherever it is stored.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// The name shown in messages: the path as given, or the s3:// URL.
    pub display: String,
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    /// Its format.
    pub format: Format,
    /// Its size in bytes.
    pub size: u64,
}

/// A set of files read as one input: their combined schema and a stream of batches in it.
/// The stream can be opened more than once, so a write that lost a commit race can retry.
#[derive(Debug, Clone)]
pub struct FileSource {
    files: Vec<(InputFile, SchemaRef)>,
    schema: SchemaRef,
}

impl FileSource {
    /// Resolves inputs to files and infers the combined schema. Reads only samples of the files.
    pub async fn open(
        inputs: &[String],
        format: Option<Format>,
        lake: &Lake,
    ) -> Result<Self, ExtractError> {
        let mut files = Vec::new();
        for input in inputs {
            files.extend(resolve(input, format, lake).await?);
        }
        let mut inferred = Vec::with_capacity(files.len());
        for mut file in files {
            let schema = Arc::new(infer_schema(&mut file).await?);
            inferred.push((file, schema));
        }
        let schema = combine(&inferred)?;
        Ok(Self {
            files: inferred,
            schema,
        })
    }

    /// The files, in reading order.
    pub fn files(&self) -> impl Iterator<Item = &InputFile> {
        self.files.iter().map(|(f, _)| f)
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.files().map(|f| f.size).sum()
    }

    /// The combined schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Streams every file's batches, cast to the combined schema. `progress` advances by bytes read.
    pub fn stream(
        &self,
        progress: ProgressBar,
    ) -> BoxStream<'static, Result<RecordBatch, ExtractError>> {
        let target = self.schema.clone();
        let mut failed = false;
        futures::stream::iter(self.files.clone())
            .flat_map(move |(file, schema)| {
                let target = target.clone();
                read_file(file.clone(), schema, progress.clone())
                    .map(move |batch| batch.and_then(|b| conform(&b, &target, &file.display)))
            })
            // The first error ends the stream.
            .take_while(move |batch| {
                let go = !failed;
                failed |= batch.is_err();
                std::future::ready(go)
            })
            .boxed()
    }
}

/// Expands one input into files.
async fn resolve(
    input: &str,
    format: Option<Format>,
    lake: &Lake,
) -> Result<Vec<InputFile>, ExtractError> {
    let not_found = |why: &str| ExtractError::NotFound {
        input: input.to_string(),
        why: why.to_string(),
    };
    if input.starts_with("s3://") || input.starts_with("s3a://") {
        let url = Url::parse(input).map_err(|e| not_found(&e.to_string()))?;
        let log_store = lake
            .log_store(&url)
            .map_err(|e| not_found(&e.to_string()))?;
        let store = log_store.root_object_store(None);
        let prefix = StorePath::from_url_path(url.path()).map_err(|e| not_found(&e.to_string()))?;
        let read_err = |source| ExtractError::Read {
            file: input.to_string(),
            cause: source,
        };
        let bucket = url.host_str().unwrap_or_default().to_string();
        let object = |path: StorePath, size: u64| InputFile {
            display: format!("{}://{bucket}/{path}", url.scheme()),
            store: store.clone(),
            path,
            format: Format::Csv,
            size,
        };
        // A prefix lists the objects under it; a key that lists nothing may be an object itself.
        let mut found = Vec::new();
        let mut listing = store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(read_err)?;
            found.push(object(meta.location, meta.size));
        }
        if found.is_empty() {
            match store.head(&prefix).await {
                Ok(meta) => found.push(object(meta.location, meta.size)),
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(not_found("no objects under this prefix"));
                }
                Err(source) => return Err(read_err(source)),
            }
        }
        found.sort_by(|a, b| a.display.cmp(&b.display));
        return with_formats(found, format, input, true);
    }

    let local = Arc::new(LocalFileSystem::new()) as Arc<dyn ObjectStore>;
    // Local paths as a shell means them (see crate::paths): `~`, `..`, symlinks and globs.
    let typed = std::path::Path::new(input);
    let expanded = paths::expand_home(typed);
    let (found, from_dir) = if paths::is_pattern(input) && !expanded.exists() {
        let mut found = Vec::new();
        let matched = paths::glob(input).map_err(|e| match e {
            paths::PathError::NoMatch { .. } => not_found("the pattern matched no files"),
            e => e.into(),
        })?;
        for (shown, canonical) in matched {
            if canonical.is_dir() {
                found.extend(paths::files_under(&shown)?);
            } else {
                found.push((shown, canonical));
            }
        }
        (found, true)
    } else {
        let canonical = paths::existing(typed).map_err(|e| match e {
            paths::PathError::NotFound { .. } => not_found("no such file or directory"),
            e => e.into(),
        })?;
        if canonical.is_dir() {
            (paths::files_under(typed)?, true)
        } else {
            (vec![(typed.to_path_buf(), canonical)], false)
        }
    };
    let mut files = Vec::with_capacity(found.len());
    for (shown, canonical) in found {
        let size = std::fs::metadata(&canonical)
            .map_err(|source| ExtractError::Io {
                path: shown.clone(),
                cause: source,
            })?
            .len();
        let store_path =
            StorePath::from_absolute_path(&canonical).map_err(|e| not_found(&e.to_string()))?;
        files.push(InputFile {
            display: shown.display().to_string(),
            store: local.clone(),
            path: store_path,
            format: Format::Csv,
            size,
        });
    }
    with_formats(files, format, input, from_dir)
}

/// Sets each file's format. Inside a folder or pattern, files of unknown type are skipped;
/// a file named on its own must have a known type or an explicit `--format`.
fn with_formats(
    files: Vec<InputFile>,
    format: Option<Format>,
    input: &str,
    skip_unknown: bool,
) -> Result<Vec<InputFile>, ExtractError> {
    let mut out = Vec::new();
    for mut file in files {
        let name = file.path.filename().unwrap_or_default();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        match format.or_else(|| Format::from_extension(name)) {
            Some(f) => {
                file.format = f;
                out.push(file);
            }
            None if skip_unknown => continue,
            None => {
                return Err(ExtractError::Format {
                    file: file.display,
                    why: "unknown extension; pass --format csv|json|ndjson|parquet".into(),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(ExtractError::NotFound {
            input: input.to_string(),
            why: "no .csv, .json, .ndjson, .jsonl or .parquet files found".into(),
        });
    }
    Ok(out)
}

fn parse_err(file: &InputFile, line: Option<usize>, message: impl ToString) -> ExtractError {
    let message = message.to_string();
    let message = message
        .strip_prefix("Csv error: ")
        .unwrap_or(&message)
        .to_string();
    ExtractError::Parse {
        file: file.display.clone(),
        line,
        column: None,
        message,
    }
}

/// A CSV decoding error. arrow numbers a bad value's row from 1 after the header
/// ("... at line N. Row data: ..."), so the file line is N + 1 (for rows without embedded
/// line breaks).
fn csv_err(file: &InputFile, e: arrow::error::ArrowError) -> ExtractError {
    let text = e.to_string();
    let parsed = text.find(" at line ").and_then(|at| {
        let rest = &text[at + " at line ".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let n: usize = digits.parse().ok()?;
        Some((at, digits.len(), n))
    });
    match parsed {
        Some((at, len, n)) => {
            let message = format!("{}{}", &text[..at], &text[at + " at line ".len() + len..]);
            let message = message
                .strip_prefix("Parser error: ")
                .unwrap_or(&message)
                .to_string();
            ExtractError::Parse {
                file: file.display.clone(),
                line: Some(n + 1),
                column: None,
                message,
            }
        }
        None => parse_err(file, None, text),
    }
}

/// A serde_json error at `line` of the file (its own line count is relative to what it parsed).
fn json_err(file: &InputFile, line: usize, e: &serde_json::Error) -> ExtractError {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    ExtractError::Parse {
        file: file.display.clone(),
        line: Some(line),
        column: Some(e.column()),
        message: text.strip_suffix(&suffix).unwrap_or(&text).to_string(),
    }
}

/// A file's bytes, whole: a JSON array is parsed in one piece.
async fn whole(file: &InputFile) -> Result<bytes::Bytes, ExtractError> {
    file.store
        .get(&file.path)
        .await
        .map_err(read_err(file))?
        .bytes()
        .await
        .map_err(read_err(file))
}

fn read_err(file: &InputFile) -> impl Fn(object_store::Error) -> ExtractError + '_ {
    move |source| ExtractError::Read {
        file: file.display.clone(),
        cause: source,
    }
}

/// Reads the start of a file, cut at the last whole line when the file is longer.
async fn sample(file: &InputFile) -> Result<bytes::Bytes, ExtractError> {
    let len = file.size.min(SAMPLE_BYTES);
    let bytes = file
        .store
        .get_range(&file.path, 0..len)
        .await
        .map_err(read_err(file))?;
    if len == file.size {
        return Ok(strip_bom(bytes));
    }
    let cut = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    Ok(strip_bom(bytes.slice(..cut)))
}

/// Bytes without a leading UTF-8 byte-order mark, which Windows tools put before CSV and JSON.
fn strip_bom(bytes: bytes::Bytes) -> bytes::Bytes {
    if bytes.starts_with(UTF8_BOM) {
        bytes.slice(UTF8_BOM.len()..)
    } else {
        bytes
    }
}

/// A file's bytes as a stream, without a leading byte-order mark.
async fn body(
    file: &InputFile,
) -> Result<BoxStream<'static, object_store::Result<bytes::Bytes>>, ExtractError> {
    let mut first = true;
    Ok(file
        .store
        .get(&file.path)
        .await
        .map_err(read_err(file))?
        .into_stream()
        .map(move |chunk| {
            let chunk = chunk?;
            Ok(if std::mem::take(&mut first) {
                strip_bom(chunk)
            } else {
                chunk
            })
        })
        .boxed())
}

/// Infers a file's schema from a sample. It also settles `--format json`: a file that is not an
/// array is read as NDJSON from here on, so `Format::Json` then always means an array.
#[allow(deprecated)]
async fn infer_schema(file: &mut InputFile) -> Result<Schema, ExtractError> {
    let schema = match file.format {
        Format::Csv => {
            let bytes = sample(file).await?;
            let format = arrow::csv::reader::Format::default().with_header(true);
            format
                .infer_schema(Cursor::new(bytes), None)
                .map_err(|e| parse_err(file, None, e))?
                .0
        }
        Format::Parquet => {
            let reader = ParquetObjectReader::new(file.store.clone(), file.path.clone())
                .with_file_size(file.size);
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| parse_err(file, None, e))?;
            builder.schema().as_ref().clone()
        }
        Format::Json | Format::Ndjson => {
            let bytes = sample(file).await?;
            if file.format == Format::Json && first_byte(&bytes) != Some(b'[') {
                file.format = Format::Ndjson;
            }
            if file.format == Format::Json {
                let bytes = whole(file).await?;
                let values = parse_array(file, &bytes)?;
                let schema =
                    arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
                        .map_err(|e| parse_err(file, None, e))?;
                order_fields(schema, &key_order_array(&bytes))
            } else {
                let mut order = Vec::new();
                let mut values = Vec::new();
                for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let value: serde_json::Value =
                        serde_json::from_slice(line).map_err(|e| json_err(file, i + 1, &e))?;
                    if !value.is_object() {
                        return Err(parse_err(file, Some(i + 1), "expected a JSON object"));
                    }
                    if i < 1000 {
                        add_keys(line, &mut order);
                    }
                    values.push(value);
                }
                let schema =
                    arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
                        .map_err(|e| parse_err(file, None, e))?;
                order_fields(schema, &order)
            }
        }
    };
    Ok(schema)
}

fn first_byte(bytes: &[u8]) -> Option<u8> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn parse_array(file: &InputFile, bytes: &[u8]) -> Result<Vec<serde_json::Value>, ExtractError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| json_err(file, e.line(), &e))?;
    if let Some(i) = values.iter().position(|v| !v.is_object()) {
        return Err(parse_err(
            file,
            None,
            format!("element {i} of the array is not a JSON object"),
        ));
    }
    Ok(values)
}

/// The order in which top-level keys first appear, so columns keep the file's order
/// (arrow's JSON inference returns them in hash order).
fn add_keys(object: &[u8], order: &mut Vec<String>) {
    struct Keys<'a>(&'a mut Vec<String>);
    impl<'de> Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or an array of objects")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if !self.0.contains(&key) {
                    self.0.push(key);
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut n = 0;
            while seq.next_element_seed(KeysSeed(self.0, n < 1000))?.is_some() {
                n += 1;
            }
            Ok(())
        }
    }
    struct KeysSeed<'a>(&'a mut Vec<String>, bool);
    impl<'de> serde::de::DeserializeSeed<'de> for KeysSeed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            if self.1 {
                d.deserialize_any(Keys(self.0))
            } else {
                IgnoredAny::deserialize(d).map(|_| ())
            }
        }
    }
    use serde::Deserialize as _;
    let _ = serde_json::Deserializer::from_slice(object).deserialize_any(Keys(order));
}

fn key_order_array(bytes: &[u8]) -> Vec<String> {
    let mut order = Vec::new();
    add_keys(bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes), &mut order);
    order
}

fn order_fields(schema: Schema, order: &[String]) -> Schema {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.sort_by_key(|f| {
        order
            .iter()
            .position(|k| k == f.name())
            .unwrap_or(usize::MAX)
    });
    Schema::new(fields)
}

/// Combines the files' schemas into one, by column name, in order of first appearance.
fn combine(files: &[(InputFile, SchemaRef)]) -> Result<SchemaRef, ExtractError> {
    let mut fields: Vec<(Field, &str)> = Vec::new();
    for (file, schema) in files {
        for field in schema.fields() {
            match fields.iter_mut().find(|(f, _)| f.name() == field.name()) {
                None => fields.push((field.as_ref().clone().with_nullable(true), &file.display)),
                Some((existing, first_file)) => {
                    let merged =
                        widen(existing.data_type(), field.data_type()).ok_or_else(|| {
                            ExtractError::Conflict {
                                column: field.name().clone(),
                                first: existing.data_type().to_string(),
                                first_file: first_file.to_string(),
                                second: field.data_type().to_string(),
                                second_file: file.display.clone(),
                            }
                        })?;
                    *existing = existing.clone().with_data_type(merged);
                }
            }
        }
    }
    Ok(Arc::new(Schema::new(
        fields
            .into_iter()
            .map(|(f, _)| match f.data_type() {
                // A column that is empty everywhere is kept, as text.
                DataType::Null => f.with_data_type(DataType::Utf8),
                _ => f,
            })
            .collect::<Vec<_>>(),
    )))
}

/// The type that holds values of both `a` and `b`, if there is one.
pub fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a.clone());
    }
    let scalar = |t: &DataType| {
        t.is_numeric() || t.is_temporal() || matches!(t, Boolean | Utf8 | LargeUtf8 | Utf8View)
    };
    match (a, b) {
        (Null, t) | (t, Null) => Some(t.clone()),
        (x, y) if x.is_integer() && y.is_integer() => Some(Int64),
        (x, y) if x.is_numeric() && y.is_numeric() => Some(Float64),
        (x, y) if scalar(x) && scalar(y) => Some(Utf8),
        _ => None,
    }
}

/// Casts a batch to `target` by column name; columns it lacks are null.
fn conform(
    batch: &RecordBatch,
    target: &SchemaRef,
    display: &str,
) -> Result<RecordBatch, ExtractError> {
    if batch.schema() == *target {
        return Ok(batch.clone());
    }
    let columns = target
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
            Some(col) if col.data_type() == field.data_type() => Ok(col.clone()),
            Some(col) => cast(col, field.data_type()).map_err(|e| ExtractError::Parse {
                file: display.to_string(),
                line: None,
                column: None,
                message: format!("column `{}`: {e}", field.name()),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target.clone(), columns).map_err(|e| ExtractError::Parse {
        file: display.to_string(),
        line: None,
        column: None,
        message: e.to_string(),
    })
}

/// Streams one file's batches in its own inferred schema.
fn read_file(
    file: InputFile,
    schema: SchemaRef,
    progress: ProgressBar,
) -> BoxStream<'static, Result<RecordBatch, ExtractError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let result = match file.format {
            Format::Parquet => read_parquet(&file, &tx, &progress).await,
            Format::Csv => read_csv(&file, schema, &tx, &progress).await,
            Format::Json | Format::Ndjson => read_json(&file, schema, &tx, &progress).await,
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

type Sender = tokio::sync::mpsc::Sender<Result<RecordBatch, ExtractError>>;

/// Sends a batch; `false` when the reader went away and reading should stop.
async fn send(tx: &Sender, batch: RecordBatch) -> bool {
    tx.send(Ok(batch)).await.is_ok()
}

#[allow(deprecated)]
async fn read_parquet(
    file: &InputFile,
    tx: &Sender,
    progress: &ProgressBar,
) -> Result<(), ExtractError> {
    let reader =
        ParquetObjectReader::new(file.store.clone(), file.path.clone()).with_file_size(file.size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| parse_err(file, None, e))?;
    let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let mut stream = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| parse_err(file, None, e))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| parse_err(file, None, e))?;
        progress.inc(file.size * batch.num_rows() as u64 / total_rows);
        if !send(tx, batch).await {
            return Ok(());
        }
    }
    Ok(())
}

async fn read_csv(
    file: &InputFile,
    schema: SchemaRef,
    tx: &Sender,
    progress: &ProgressBar,
) -> Result<(), ExtractError> {
    let mut decoder = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .with_batch_size(BATCH_ROWS)
        .build_decoder();
    let mut body = body(file).await?;
    let mut buf = bytes::Bytes::new();
    let fix = |e: arrow::error::ArrowError| csv_err(file, e);
    loop {
        if buf.is_empty() {
            match body.next().await {
                Some(chunk) => {
                    buf = chunk.map_err(read_err(file))?;
                    progress.inc(buf.len() as u64);
                }
                None => {
                    if let Some(batch) = decoder.flush().map_err(fix)? {
                        send(tx, batch).await;
                    }
                    return Ok(());
                }
            }
        }
        let used = decoder.decode(&buf).map_err(fix)?;
        buf = buf.slice(used..);
        if decoder.capacity() == 0
            && let Some(batch) = decoder.flush().map_err(fix)?
            && !send(tx, batch).await
        {
            return Ok(());
        }
    }
}

async fn read_json(
    file: &InputFile,
    schema: SchemaRef,
    tx: &Sender,
    progress: &ProgressBar,
) -> Result<(), ExtractError> {
    let builder = || {
        arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(BATCH_ROWS)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| parse_err(file, None, e))
    };
    let mut decoder = builder()?;
    // `infer_schema` turned a `json` file that is not an array into `ndjson`.
    if file.format == Format::Json {
        let bytes = whole(file).await?;
        progress.inc(bytes.len() as u64);
        let values = parse_array(file, &bytes)?;
        for (n, chunk) in values.chunks(BATCH_ROWS).enumerate() {
            decoder.serialize(chunk).map_err(|e| {
                parse_err(
                    file,
                    None,
                    format!(
                        "element {}..{} of the array: {e}",
                        n * BATCH_ROWS,
                        n * BATCH_ROWS + chunk.len()
                    ),
                )
            })?;
            if let Some(batch) = decoder.flush().map_err(|e| parse_err(file, None, e))?
                && !send(tx, batch).await
            {
                return Ok(());
            }
        }
        return Ok(());
    }

    // NDJSON: whole lines go to the decoder, so a failure can be pinned to its line.
    let mut body = body(file).await?;
    let mut pending: Vec<u8> = Vec::new();
    let mut line_no = 0usize;
    let mut done = false;
    while !done {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(read_err(file))?;
                progress.inc(chunk.len() as u64);
                pending.extend_from_slice(&chunk);
            }
            None => {
                if !pending.ends_with(b"\n") {
                    pending.push(b'\n');
                }
                done = true;
            }
        }
        // Decode in large blocks of whole lines, BATCH_ROWS lines to a batch.
        if !done && pending.len() < BLOCK_BYTES {
            continue;
        }
        let Some(cut) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let block: Vec<u8> = pending.drain(..=cut).collect();
        let mut start = 0;
        while start < block.len() {
            let (mut end, mut lines) = (start, 0);
            while end < block.len() && lines < BATCH_ROWS {
                end += block[end..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(block.len() - end, |i| i + 1);
                lines += 1;
            }
            let slice = &block[start..end];
            match decoder.decode(slice).and_then(|_| decoder.flush()) {
                Ok(Some(batch)) => {
                    if !send(tx, batch).await {
                        return Ok(());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let lines: Vec<&[u8]> = slice.split_inclusive(|b| *b == b'\n').collect();
                    return Err(pin_json_error(file, &lines, line_no, &builder, e));
                }
            }
            line_no += lines;
            start = end;
        }
    }
    Ok(())
}

/// Finds the first line of a block that fails on its own, to name it in the error.
fn pin_json_error(
    file: &InputFile,
    lines: &[&[u8]],
    first_line: usize,
    builder: &dyn Fn() -> Result<arrow::json::reader::Decoder, ExtractError>,
    fallback: arrow::error::ArrowError,
) -> ExtractError {
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(line) {
            return json_err(file, first_line + i + 1, &e);
        }
        if let Ok(mut d) = builder()
            && let Err(e) = d.decode(line).and_then(|_| d.flush())
        {
            return parse_err(file, Some(first_line + i + 1), e);
        }
    }
    parse_err(file, None, fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening() {
        use DataType::*;
        assert_eq!(widen(&Int64, &Float64), Some(Float64));
        assert_eq!(widen(&Date32, &Utf8), Some(Utf8));
        assert_eq!(widen(&Date32, &Int64), Some(Utf8));
        assert_eq!(widen(&Null, &Boolean), Some(Boolean));
        assert_eq!(
            widen(&Utf8, &List(Arc::new(Field::new("item", Int64, true)))),
            None
        );
    }

    #[test]
    fn key_order_follows_the_text() {
        let mut order = Vec::new();
        add_keys(br#"{"z":1,"a":{"q":2},"m":[1]}"#, &mut order);
        assert_eq!(order, ["z", "a", "m"]);
        assert_eq!(key_order_array(br#"[{"b":1},{"a":2,"b":3}]"#), ["b", "a"]);
    }
}
