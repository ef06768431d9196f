//! `lake tables`: every table with its version, rows, files, size and last commit.

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use super::Context;
use crate::output::{format_table, human_bytes, print};
use crate::progress;

pub async fn run(ctx: &Context) -> Result<()> {
    let lake = ctx.lake().await?;
    let spinner = progress::spinner(ctx.quiet(), "reading table logs".into());
    let mut infos = Vec::new();
    for name in lake.list_tables().await? {
        infos.push(lake.info(&name).await?);
    }
    spinner.finish_and_clear();
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("files", DataType::UInt64, false),
        Field::new("size", DataType::Utf8, false),
        Field::new("last_commit", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            infos.iter().map(|i| i.name.to_string()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            infos.iter().map(|i| i.version),
        )),
        Arc::new(UInt64Array::from_iter_values(infos.iter().map(|i| i.rows))),
        Arc::new(UInt64Array::from_iter_values(
            infos.iter().map(|i| i.files as u64),
        )),
        Arc::new(StringArray::from_iter_values(
            infos.iter().map(|i| human_bytes(i.bytes)),
        )),
        Arc::new(StringArray::from_iter(infos.iter().map(|i| {
            i.last_commit
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        }))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    print(format_table(&schema, &[batch])?)?;
    Ok(())
}
