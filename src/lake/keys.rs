//! Whether a table already holds any of some keys, answered from its files' Parquet bloom
//! filters rather than by reading its key columns.
//!
//! An incremental model's new rows are appended, without a merge, when none of their keys is
//! in its table yet (plays never change). A join of the new keys with the table answers that,
//! but reads every key the table holds: a second a night at 10 M plays, and growing with the
//! history. So lake writes a bloom filter of a table's key columns into each Parquet file it
//! lays out ([`writer_properties`], through [`super::layout::Layout::keys`]), and asks each
//! row group's filters about the new keys. Only the row groups no filter rules out have their
//! key columns read and compared. This is Apache Hudi's bloom index, on Parquet's own filters.
//!
//! Files without a filter (written by a merge, or by another Delta writer) are read. A table
//! with deletion vectors or column mapping is not answered here: the caller joins.

use std::collections::HashSet;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, filter};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::row::{RowConverter, SortField};
use deltalake::{DeltaResult, DeltaTable};
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
// ParquetObjectReader is deprecated for hand-written AsyncFileReaders, as in extract::files.
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::Compression;
use parquet::bloom_filter::Sbbf;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::write::normalized_type;

/// The chance that a row group's filter lets through a key the row group does not hold. A
/// night's 16,000 new keys then pass a row group's filters with a chance of 1.6 %; the filters
/// take about 5 bytes per row.
pub const FALSE_POSITIVE_RATE: f64 = 1e-6;

/// The add-action tag naming the columns a file holds bloom filters of: a JSON array.
pub const KEYS_TAG: &str = "lake.bloomFilters";

/// How lake writes a table's Parquet files: Snappy, as delta-rs does, and a bloom filter of
/// each of these columns.
pub fn writer_properties(keys: &[String]) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_created_by(format!("lake version {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY);
    for key in keys {
        let path = ColumnPath::from(key.as_str());
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path, FALSE_POSITIVE_RATE);
    }
    builder.build()
}

/// What [`holds_any`] found, and what it read to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// Whether a row holds one of the keys.
    pub held: bool,
    /// The row groups whose filters were asked (until a key was found).
    pub row_groups: usize,
    /// Those whose key columns were read, their filters letting a key through.
    pub row_groups_read: usize,
}

/// Whether a row of `table` has the key (the `columns`, in order) of one of the rows of
/// `keys`, which hold those columns. Rows with a null in their key match nothing, as in a
/// join. `None` when the files cannot tell: the table has deletion vectors or column mapping.
pub async fn holds_any(
    table: &DeltaTable,
    columns: &[String],
    keys: &[RecordBatch],
) -> DeltaResult<Option<Lookup>> {
    holds_any_outside(table, columns, keys, &[]).await
}

/// [`holds_any`], in the files of `table` other than these (paths as the log names them):
/// whether the rows a table had before some files were added hold a key.
#[allow(deprecated)]
pub async fn holds_any_outside(
    table: &DeltaTable,
    columns: &[String],
    keys: &[RecordBatch],
    skip: &[String],
) -> DeltaResult<Option<Lookup>> {
    let state = table.snapshot()?;
    let mapping = state
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|m| m != "none");
    if mapping {
        return Ok(None);
    }
    let schema = state.snapshot().arrow_schema();
    let types = columns
        .iter()
        .map(|c| Ok(normalized_type(schema.field_with_name(c)?.data_type())))
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    let wanted = Wanted::new(keys, columns, &types)?;
    let mut lookup = Lookup {
        held: false,
        row_groups: 0,
        row_groups_read: 0,
    };
    if wanted.is_empty() {
        return Ok(Some(lookup));
    }
    // The log's text is URL-encoded; a path may be given either way (as in the scan).
    let skipped: HashSet<String> = skip
        .iter()
        .flat_map(|p| {
            let decoded = percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned();
            [p.clone(), decoded]
        })
        .collect();
    let store = table.log_store().object_store(None);
    for view in state.log_data().iter() {
        if view.deletion_vector_descriptor().is_some() {
            return Ok(None);
        }
        if skipped.contains(view.path().as_ref())
            || skipped.contains(view.object_store_path().as_ref())
        {
            continue;
        }
        let reader = ParquetObjectReader::new(store.clone(), view.object_store_path())
            .with_file_size(view.size().max(0) as u64);
        let mut builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let descr = builder.metadata().file_metadata().schema_descr_ptr();
        let leaf = |c: &String| {
            (0..descr.num_columns()).find(|&i| descr.column(i).path().parts() == [c.clone()])
        };
        // A file without a key column holds it null: none of its rows matches.
        let Some(leaves) = columns.iter().map(leaf).collect::<Option<Vec<usize>>>() else {
            continue;
        };
        let file_types = columns
            .iter()
            .map(|c| Ok(builder.schema().field_with_name(c)?.data_type().clone()))
            .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
        let probes = wanted
            .arrays
            .iter()
            .zip(&file_types)
            .map(|(a, t)| Probe::new(a, t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut candidates = Vec::new();
        lookup.row_groups += builder.metadata().num_row_groups();
        for group in 0..builder.metadata().num_row_groups() {
            let mut maybe = vec![true; wanted.len()];
            for (probe, &leaf) in probes.iter().zip(&leaves) {
                let Some(probe) = probe else { continue };
                if let Some(bloom) = builder
                    .get_row_group_column_bloom_filter(group, leaf)
                    .await?
                {
                    probe.narrow(&bloom, &mut maybe);
                }
            }
            if maybe.contains(&true) {
                candidates.push(group);
            }
        }
        if candidates.is_empty() {
            continue;
        }
        lookup.row_groups_read += candidates.len();
        let mask = ProjectionMask::leaves(&descr, leaves);
        let mut rows = builder
            .with_row_groups(candidates)
            .with_projection(mask)
            .build()?;
        while let Some(batch) = rows.next().await {
            let batch = batch?;
            let stored = columns
                .iter()
                .zip(&types)
                .map(|(c, t)| {
                    let column = batch.column_by_name(c).ok_or_else(|| {
                        arrow::error::ArrowError::SchemaError(format!("no column {c}"))
                    })?;
                    cast(column, t)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if wanted.any_of(&stored)? {
                lookup.held = true;
                return Ok(Some(lookup));
            }
        }
    }
    Ok(Some(lookup))
}

/// The keys looked for, without those holding a null: their columns, and their rows encoded
/// for comparison.
struct Wanted {
    arrays: Vec<ArrayRef>,
    converter: RowConverter,
    rows: HashSet<Vec<u8>>,
}

impl Wanted {
    fn new(
        keys: &[RecordBatch],
        columns: &[String],
        types: &[DataType],
    ) -> Result<Self, arrow::error::ArrowError> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for (c, t) in columns.iter().zip(types) {
            let parts = keys
                .iter()
                .map(|b| {
                    let column = b.column_by_name(c).ok_or_else(|| {
                        arrow::error::ArrowError::SchemaError(format!("no key column {c}"))
                    })?;
                    cast(column, t)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let parts: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            arrays.push(if parts.is_empty() {
                arrow::array::new_empty_array(t)
            } else {
                arrow::compute::concat(&parts)?
            });
        }
        // Keys with a null match nothing.
        let mut complete: Option<arrow::array::BooleanArray> = None;
        for a in &arrays {
            let present = arrow::compute::is_not_null(a)?;
            complete = Some(match complete {
                Some(c) => arrow::compute::and(&c, &present)?,
                None => present,
            });
        }
        if let Some(complete) = complete {
            arrays = arrays
                .iter()
                .map(|a| filter(a, &complete))
                .collect::<Result<_, _>>()?;
        }
        let converter =
            RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let encoded = converter.convert_columns(&arrays)?;
        let rows = encoded.iter().map(|r| r.as_ref().to_vec()).collect();
        Ok(Wanted {
            arrays,
            converter,
            rows,
        })
    }

    fn len(&self) -> usize {
        self.arrays.first().map_or(0, |a| a.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a stored row (`columns` as the keys' types) has one of the keys.
    fn any_of(&self, columns: &[ArrayRef]) -> Result<bool, arrow::error::ArrowError> {
        let stored = self.converter.convert_columns(columns)?;
        Ok(stored.iter().any(|r| self.rows.contains(r.as_ref())))
    }
}

/// One key column's values as a file stores them, the form its bloom filter hashed.
enum Probe {
    Text(arrow::array::StringArray),
    Bytes(arrow::array::BinaryArray),
    Int32(arrow::array::Int32Array),
    Int64(arrow::array::Int64Array),
}

impl Probe {
    /// The values of `wanted` in the physical form of a file column of type `file_type`, or
    /// `None` for a type whose filter lake does not ask (its row groups are read).
    fn new(
        wanted: &ArrayRef,
        file_type: &DataType,
    ) -> Result<Option<Self>, arrow::error::ArrowError> {
        use DataType::*;
        let as_file = cast(wanted, file_type)?;
        Ok(Some(match file_type {
            Utf8 | LargeUtf8 | Utf8View => Probe::Text(cast(&as_file, &Utf8)?.as_string().clone()),
            Binary | LargeBinary | BinaryView => {
                Probe::Bytes(cast(&as_file, &Binary)?.as_binary().clone())
            }
            Int8 | Int16 | Int32 | Date32 => {
                Probe::Int32(cast(&as_file, &Int32)?.as_primitive::<Int32Type>().clone())
            }
            Int64 | Date64 | Timestamp(_, _) => {
                Probe::Int64(cast(&as_file, &Int64)?.as_primitive::<Int64Type>().clone())
            }
            _ => return Ok(None),
        }))
    }

    /// Rules out the keys (`maybe[i]` for the `i`th) the filter says are not there.
    fn narrow(&self, bloom: &Sbbf, maybe: &mut [bool]) {
        for (i, m) in maybe.iter_mut().enumerate() {
            if !*m {
                continue;
            }
            *m = match self {
                Probe::Text(a) => bloom.check(a.value(i)),
                Probe::Bytes(a) => bloom.check(a.value(i)),
                Probe::Int32(a) => bloom.check(&a.value(i)),
                Probe::Int64(a) => bloom.check(&a.value(i)),
            };
        }
    }
}
