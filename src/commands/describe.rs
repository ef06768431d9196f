//! `lake describe T`: a table's columns and properties.

use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::Context;
use crate::cli::TableArg;
use crate::lake::{TableName, layout, table_info};
use crate::output::{format_table, human_bytes, print};

pub async fn run(ctx: &Context, args: TableArg) -> Result<()> {
    let name: TableName = args.table.parse()?;
    let lake = ctx.lake().await?;
    let table = lake.table(&name, None, None).await?;
    let info = table_info(&name, &table);
    let state = table.snapshot()?;
    let arrow_schema = state.snapshot().arrow_schema();

    let schema = Arc::new(Schema::new(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("nullable", DataType::Boolean, false),
    ]));
    let fields = arrow_schema.fields();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            fields.iter().map(|f| f.name().clone()),
        )),
        Arc::new(StringArray::from_iter_values(
            fields.iter().map(|f| f.data_type().to_string()),
        )),
        Arc::new(BooleanArray::from_iter(
            fields.iter().map(|f| Some(f.is_nullable())),
        )),
    ];
    print(format_table(
        &schema,
        &[RecordBatch::try_new(schema.clone(), columns)?],
    )?)?;

    let metadata = state.metadata();
    let protocol = state.protocol();
    let mut props: Vec<(String, String)> = vec![
        ("table".into(), name.to_string()),
        ("location".into(), lake.table_url(&name).to_string()),
        ("version".into(), info.version.to_string()),
        ("rows".into(), info.rows.to_string()),
        ("files".into(), info.files.to_string()),
        ("size".into(), human_bytes(info.bytes)),
        (
            "last_commit".into(),
            info.last_commit
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default(),
        ),
        (
            "partition_columns".into(),
            metadata.partition_columns().join(", "),
        ),
        (
            "min_reader_version".into(),
            protocol.min_reader_version().to_string(),
        ),
        (
            "min_writer_version".into(),
            protocol.min_writer_version().to_string(),
        ),
    ];
    if let Some(sort) = layout::sort_state(&table)? {
        let files = if sort.files == 1 && sort.sorted_files == 1 {
            "1 file".to_string()
        } else if sort.sorted_files == sort.files {
            format!("all {} files", sort.files)
        } else {
            format!("{} of {} files", sort.sorted_files, sort.files)
        };
        let run = if sort.one_run {
            "one sorted run"
        } else {
            "overlapping: lake maintain sorts them again"
        };
        props.push((
            "sort_key".into(),
            format!("{} ({files}; {run})", sort.key.join(", ")),
        ));
    }
    let mut config: Vec<_> = metadata
        .configuration()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config.sort();
    props.extend(config);
    let schema = Arc::new(Schema::new(vec![
        Field::new("property", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            props.iter().map(|(k, _)| k.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            props.iter().map(|(_, v)| v.as_str()),
        )),
    ];
    print(format_table(
        &schema,
        &[RecordBatch::try_new(schema.clone(), columns)?],
    )?)?;
    Ok(())
}
