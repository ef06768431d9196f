//! `lake history T`: a table's commits, newest first.

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use super::Context;
use crate::cli::HistoryArgs;
use crate::lake::TableName;
use crate::output::{format_table, print};

pub async fn run(ctx: &Context, args: HistoryArgs) -> Result<()> {
    let name: TableName = args.table.parse()?;
    let commits = ctx.lake().await?.history(&name, args.limit).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::UInt64, false),
        Field::new("timestamp", DataType::Utf8, true),
        Field::new("operation", DataType::Utf8, false),
        Field::new("parameters", DataType::Utf8, false),
        Field::new("metrics", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(
            commits.iter().map(|c| c.version),
        )),
        Arc::new(StringArray::from_iter(commits.iter().map(|c| {
            c.timestamp
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        }))),
        Arc::new(StringArray::from_iter_values(
            commits.iter().map(|c| c.operation.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            commits.iter().map(|c| c.parameters.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            commits.iter().map(|c| c.metrics.as_str()),
        )),
    ];
    print(format_table(
        &schema,
        &[RecordBatch::try_new(schema.clone(), columns)?],
    )?)?;
    Ok(())
}
