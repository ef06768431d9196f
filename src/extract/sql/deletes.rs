//! `--detect-deletes`: the source's keys against the table's, and the rows whose key is gone
//! marked with `_deleted_at` in one merge commit that keeps the cursor.

use std::sync::Arc;

use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema};
use chrono::Utc;

use super::{DELETED_AT, Driver, Kind, SOURCE_CURSOR_KEY, SourceCursor, SqlColumn, fail, read_all};
use crate::extract::ExtractError;
use crate::lake::write::{MemorySource, WriteMode, write};
use crate::lake::{Lake, TableName};

/// Reads the source's keys and marks the table's rows whose key is gone: their `_deleted_at`
/// becomes now, in one merge commit that keeps the cursor. Returns how many were marked.
pub(super) async fn mark_deleted(
    lake: &Lake,
    driver: &Arc<dyn Driver>,
    name: &str,
    table: &TableName,
    base: &str,
    keys: &[SqlColumn],
    cursor: Option<&SourceCursor>,
) -> Result<(u64, Option<u64>), ExtractError> {
    let exprs = keys
        .iter()
        .map(|k| format!("{} AS {}", k.expr, driver.quote(&k.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let source_keys = read_all(driver, driver.select(&exprs, base, None), keys.to_vec())
        .await
        .map_err(|e| fail(name, format!("failed to read the keys: {e}")))?;
    let session = crate::query::LakeSession::new(Arc::new(lake.clone()))
        .await
        .map_err(|e| fail(name, e))?;
    let ctx = session.context();
    let schema = Arc::new(Schema::new(
        keys.iter()
            .map(|k| Field::new(&k.name, k.arrow.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let mem = datafusion::datasource::MemTable::try_new(schema, vec![source_keys])
        .map_err(|e| fail(name, e))?;
    ctx.register_table("__lake_source_keys", Arc::new(mem))
        .map_err(|e| fail(name, e))?;
    let on = keys
        .iter()
        .map(|k| format!("k.\"{0}\" = t.\"{0}\"", k.name.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!(
        "SELECT * EXCLUDE (\"{DELETED_AT}\") FROM {table} AS t WHERE t.\"{DELETED_AT}\" IS NULL AND NOT EXISTS (SELECT 1 FROM __lake_source_keys AS k WHERE {on})"
    );
    let df = session.sql(&sql).await.map_err(|e| fail(name, e))?;
    let gone = df.collect().await.map_err(|e| fail(name, e))?;
    let count: usize = gone.iter().map(RecordBatch::num_rows).sum();
    if count == 0 {
        return Ok((0, None));
    }
    // The rows as they are, with `_deleted_at` set to now.
    let now = Utc::now().timestamp_micros();
    let mut fields: Vec<Field> = gone[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(DELETED_AT, Kind::TimestampUtc.read_type(), true));
    let schema = Arc::new(Schema::new(fields));
    let batches = gone
        .into_iter()
        .map(|b| {
            let mut columns = b.columns().to_vec();
            columns.push(Arc::new(
                TimestampMicrosecondArray::from(vec![now; b.num_rows()]).with_timezone("UTC"),
            ));
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(name, e))?;
    let mut metadata = vec![
        (
            "lake.command".to_string(),
            serde_json::json!("extract sql --detect-deletes"),
        ),
        ("lake.source".to_string(), serde_json::json!(name)),
    ];
    if let Some(c) = cursor {
        metadata.push((
            SOURCE_CURSOR_KEY.to_string(),
            serde_json::to_value(c).expect("json"),
        ));
    }
    let key_names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    let outcome = write(
        lake,
        table,
        Arc::new(MemorySource { schema, batches }),
        &WriteMode::Merge(key_names),
        &metadata,
    )
    .await
    .map_err(|e| fail(name, e))?;
    Ok((count as u64, Some(outcome.version)))
}
