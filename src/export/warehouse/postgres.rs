//! PostgreSQL (and RDS / Aurora PostgreSQL): rows go by COPY; a load swaps the staging table
//! in with a drop and a rename in one transaction; an upsert goes through a temporary table
//! and `ON CONFLICT ... DO UPDATE`.

use std::str::FromStr;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgSslMode};
use sqlx::{AssertSqlSafe, Executor};

use super::{Backend, Batches, Connect, Load, any_table};
use crate::export::ExportError;
use crate::export::types::{TextColumn, copy_escape};

/// A PostgreSQL warehouse.
pub(crate) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    /// Connects, with the URL's or `[warehouse]`'s TLS settings.
    pub async fn connect(c: &Connect<'_>) -> Result<Self, ExportError> {
        let mut o = PgConnectOptions::from_str(c.url).map_err(|e| c.bad_url(e))?;
        if let Some(p) = &c.password {
            o = o.password(p);
        }
        if let Some(mode) = &c.settings.sslmode {
            o = o.ssl_mode(PgSslMode::from_str(mode).map_err(|_| {
                ExportError::Config(format!("sslmode `{mode}`: expected disable, allow, prefer, require, verify-ca or verify-full"))
            })?);
        }
        if let Some(cert) = &c.settings.ssl_root_cert {
            o = o.ssl_root_cert(crate::paths::under(c.project_dir, cert));
        }
        Ok(Self {
            pool: crate::db::pool(o, 2).await.map_err(|e| c.failed(e))?,
        })
    }
}

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn exists(&self, schema: Option<&str>, name: &str) -> Result<bool, sqlx::Error> {
        let sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2";
        any_table(&self.pool, sql, &[schema, Some(name)]).await
    }

    async fn replace(&self, load: &Load<'_>, batches: Batches<'_>) -> Result<u64, ExportError> {
        let fail = |e| load.failed(e);
        let staging = load.beside("__lake_staging");
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        if let Some(s) = load.schema {
            let create = format!("CREATE SCHEMA IF NOT EXISTS {}", load.quote(s));
            conn.execute(AssertSqlSafe(create)).await.map_err(fail)?;
        }
        run!(conn, load, "DROP TABLE IF EXISTS {staging}");
        let create = format!("CREATE TABLE {staging} ({})", load.definitions());
        conn.execute(AssertSqlSafe(create)).await.map_err(fail)?;
        let rows = copy_into(&mut conn, &staging, load, batches).await?;
        let index = format!("{}__lake_key", load.name);
        if !load.key.is_empty() {
            // Text keys are indexed byte-wise (COLLATE "C"): equality is the same, so
            // ON CONFLICT still finds the index, and the build takes half the time.
            let indexed: Vec<String> = load
                .key
                .iter()
                .map(|k| {
                    let text = load.columns.field_with_name(k).is_ok_and(|f| {
                        matches!(
                            f.data_type(),
                            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                        )
                    });
                    if text {
                        format!("{} COLLATE \"C\"", load.quote(k))
                    } else {
                        load.quote(k)
                    }
                })
                .collect();
            run!(
                conn,
                load,
                "CREATE UNIQUE INDEX {} ON {staging} ({})",
                load.quote(&format!("{index}_new")),
                indexed.join(", ")
            );
        }
        // The swap: one transaction, so readers see the old table or the new one.
        let mut swap = format!(
            "BEGIN; DROP TABLE IF EXISTS {}; ALTER TABLE {staging} RENAME TO {};",
            load.table,
            load.quote(load.name)
        );
        if !load.key.is_empty() {
            let schema_prefix = load
                .schema
                .map(|s| format!("{}.", load.quote(s)))
                .unwrap_or_default();
            swap.push_str(&format!(
                " ALTER INDEX {schema_prefix}{} RENAME TO {};",
                load.quote(&format!("{index}_new")),
                load.quote(&index)
            ));
        }
        swap.push_str(" COMMIT;");
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(swap)).execute(&mut *conn).await {
            let _ = conn.execute("ROLLBACK").await;
            return Err(fail(e));
        }
        Ok(rows)
    }

    async fn upsert(
        &self,
        load: &Load<'_>,
        batches: Batches<'_>,
        gone: Option<Batches<'_>>,
    ) -> Result<(u64, u64), ExportError> {
        let fail = |e| load.failed(e);
        let (table, columns) = (&load.table, load.column_list());
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        run!(conn, load, "BEGIN");
        let work = async {
            let mut deleted = 0;
            if let Some(gone) = gone {
                let temp = load.quote(&format!("{}__lake_gone", load.name));
                let key_schema = load.key_schema();
                let keys = load.of(&key_schema, temp.clone());
                run!(
                    conn,
                    load,
                    "DROP TABLE IF EXISTS {temp}; CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {} FROM {table} WHERE false",
                    load.key_list()
                );
                copy_into(&mut conn, &temp, &keys, gone).await?;
                // By a hash join on the key; then the few rows whose key holds a null.
                deleted = run!(
                    conn,
                    load,
                    "ANALYZE {temp}; DELETE FROM {table} AS t USING {temp} AS g WHERE {}",
                    load.key_match("=")
                )
                .rows_affected();
                deleted += run!(
                    conn,
                    load,
                    "DELETE FROM {table} AS t USING {temp} AS g WHERE ({}) AND {}",
                    load.key_has_null(),
                    load.key_match("IS NOT DISTINCT FROM")
                )
                .rows_affected();
            }
            let temp = load.quote(&format!("{}__lake_upsert", load.name));
            run!(
                conn,
                load,
                "CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table}); TRUNCATE {temp}"
            );
            let rows = copy_into(&mut conn, &temp, load, batches).await?;
            run!(
                conn,
                load,
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp} ON CONFLICT ({}) DO {}",
                load.key_list(),
                on_conflict(load, "EXCLUDED")
            );
            run!(conn, load, "DROP TABLE {temp}");
            Ok::<_, ExportError>((rows, deleted))
        };
        match work.await {
            Ok(done) => {
                run!(conn, load, "COMMIT");
                Ok(done)
            }
            Err(e) => {
                let _ = conn.execute("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

/// `UPDATE SET a = EXCLUDED.a, ...`, or `NOTHING` when every column is in the key; SQLite
/// writes the same with `excluded`.
pub(super) fn on_conflict(load: &Load<'_>, excluded: &str) -> String {
    let others = load.others();
    if others.is_empty() {
        return "NOTHING".to_string();
    }
    let set: Vec<String> = others
        .iter()
        .map(|c| format!("{c} = {excluded}.{c}"))
        .collect();
    format!("UPDATE SET {}", set.join(", "))
}

/// Streams batches into `table` with COPY (text format).
async fn copy_into(
    conn: &mut sqlx::PgConnection,
    table: &str,
    load: &Load<'_>,
    mut batches: Batches<'_>,
) -> Result<u64, ExportError> {
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} ({}) FROM STDIN", load.column_list()))
        .await
        .map_err(|e| load.failed(e))?;
    // Encoding the next batch overlaps with sending the last one: a small queue between a
    // producer and the COPY.
    let (mut tx, mut rx) = futures::channel::mpsc::channel::<Vec<u8>>(2);
    let producer = async move {
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let mut buf = Vec::with_capacity(1 << 20);
            encode_copy(&batch, &mut buf).map_err(|e| ExportError::Encode {
                target: load.shown.clone(),
                cause: e,
            })?;
            if futures::SinkExt::send(&mut tx, buf).await.is_err() {
                // The COPY stopped; its error is the one to report.
                break;
            }
        }
        Ok::<(), ExportError>(())
    };
    let consumer = async {
        while let Some(buf) = rx.next().await {
            copy.send(buf.as_slice()).await?;
        }
        Ok::<(), sqlx::Error>(())
    };
    let (produced, consumed) = futures::join!(producer, consumer);
    match (produced, consumed) {
        (_, Err(e)) => {
            let _ = copy.abort("the load failed").await;
            Err(load.failed(e))
        }
        (Err(e), _) => {
            let _ = copy.abort("the lake read failed").await;
            Err(e)
        }
        (Ok(()), Ok(())) => copy.finish().await.map_err(|e| load.failed(e)),
    }
}

/// A batch in PostgreSQL's COPY text format, written straight into `out`: strings are
/// escaped in place, other scalars formatted in place, nested values go as JSON.
fn encode_copy(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), arrow::error::ArrowError> {
    use std::io::Write as _;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    use arrow::util::display::ArrayFormatter;

    use crate::export::types::{binary_value, for_text, is_binary, is_nested, text_options};

    enum CopyColumn<'a> {
        Str(&'a dyn Array),
        Plain(&'a dyn Array, ArrayFormatter<'a>),
        Json(TextColumn),
        Binary(arrow::array::ArrayRef),
    }
    // Prepared first, so the formatters can borrow.
    let prepared: Vec<arrow::array::ArrayRef> = batch
        .columns()
        .iter()
        .map(for_text)
        .collect::<Result<_, _>>()?;
    let options = text_options();
    let columns: Vec<CopyColumn> = prepared
        .iter()
        .map(|a| -> Result<CopyColumn, arrow::error::ArrowError> {
            Ok(match a.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    CopyColumn::Str(a.as_ref())
                }
                t if is_binary(t) => CopyColumn::Binary(a.clone()),
                t if is_nested(t) => CopyColumn::Json(TextColumn::new(a)?),
                _ => CopyColumn::Plain(a.as_ref(), ArrayFormatter::try_new(a.as_ref(), &options)?),
            })
        })
        .collect::<Result<_, _>>()?;
    let io = |e: std::io::Error| arrow::error::ArrowError::ExternalError(Box::new(e));
    for row in 0..batch.num_rows() {
        for (i, col) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match col {
                CopyColumn::Str(a) if a.is_null(row) => out.extend_from_slice(b"\\N"),
                CopyColumn::Str(a) => {
                    let v = match a.data_type() {
                        DataType::Utf8 => a.as_string::<i32>().value(row),
                        DataType::LargeUtf8 => a.as_string::<i64>().value(row),
                        _ => a.as_string_view().value(row),
                    };
                    copy_escape(out, v);
                }
                CopyColumn::Plain(a, _) if a.is_null(row) => out.extend_from_slice(b"\\N"),
                CopyColumn::Plain(_, f) => write!(out, "{}", f.value(row)).map_err(io)?,
                CopyColumn::Json(t) => match t.get(row) {
                    None => out.extend_from_slice(b"\\N"),
                    Some(v) => copy_escape(out, v),
                },
                CopyColumn::Binary(a) if a.is_null(row) => out.extend_from_slice(b"\\N"),
                // bytea's hex input, `\x...`, with its backslash escaped for COPY.
                CopyColumn::Binary(a) => {
                    out.extend_from_slice(b"\\\\x");
                    out.extend_from_slice(hex::encode(binary_value(a, row)).as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
    Ok(())
}
