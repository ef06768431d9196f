//! Microsoft SQL Server sources over TDS (mssql-client): one SNAPSHOT transaction per read
//! where the database allows it (else READ COMMITTED, with a warning), rows pulled from the
//! socket as they are read.
//!
//! URL: `mssql://user@host:1433/database?encrypt=mandatory&trust_server_certificate=false`;
//! `encrypt` is `strict` (TDS 8), `mandatory` (the default), `optional` or `no_tls`;
//! `isolation=read_committed` reads without a snapshot where SNAPSHOT is not allowed.

use arrow::datatypes::DataType;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use mssql_client::{Client, Config, Credentials, IsolationLevel, Ready};

use super::{Driver, Kind, Planned, Sink, SqlColumn};
use crate::lake::write::SourceError;

pub(crate) struct Mssql {
    url: String,
    password: Option<String>,
}

/// The connection and how reads are isolated.
struct Settings {
    config: Config,
    isolation: IsolationLevel,
}

impl Mssql {
    pub fn new(url: &str, password: Option<String>) -> Self {
        Mssql {
            url: url.to_string(),
            password,
        }
    }

    fn config(&self) -> Result<Settings, SourceError> {
        let url = url::Url::parse(&self.url).map_err(|_| "the URL does not parse".to_string())?;
        let host = url.host_str().ok_or("the URL names no host")?;
        let port = url.port().unwrap_or(1433);
        let database = url.path().trim_start_matches('/');
        let mut encrypt = "mandatory".to_string();
        let mut trust = "false".to_string();
        let mut isolation = IsolationLevel::Snapshot;
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("encrypt", v) => encrypt = v.to_string(),
                ("trust_server_certificate", v) => trust = v.to_string(),
                ("isolation", "snapshot") => isolation = IsolationLevel::Snapshot,
                ("isolation", "read_committed") => isolation = IsolationLevel::ReadCommitted,
                ("isolation", other) => {
                    return Err(format!(
                        "isolation={other}: use snapshot (the default) or read_committed"
                    )
                    .into());
                }
                (other, _) => {
                    return Err(format!(
                        "the URL option `{other}` is not known; use encrypt, trust_server_certificate or isolation"
                    ).into());
                }
            }
        }
        for part in [host, database, &encrypt, &trust] {
            if part.contains([';', '=', '{', '}']) {
                return Err(format!(
                    "the URL part `{part}` holds a character SQL Server connection strings do not allow"
                ).into());
            }
        }
        let mut conn = format!(
            "Server=tcp:{host},{port};Encrypt={encrypt};TrustServerCertificate={trust};Application Name=lake;"
        );
        if !database.is_empty() {
            conn.push_str(&format!("Database={database};"));
        }
        let user = percent_decode(url.username());
        let password = match (&self.password, url.password()) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => percent_decode(p),
            (None, None) => String::new(),
        };
        let config = Config::from_connection_string(&conn).map_err(|e| e.to_string())?;
        Ok(Settings {
            config: config.credentials(Credentials::sql_server(user, password)),
            isolation,
        })
    }

    async fn connect(&self) -> Result<(Client<Ready>, IsolationLevel), SourceError> {
        let settings = self.config()?;
        let client = Client::connect(settings.config)
            .await
            .map_err(|e| format!("failed to connect: {e}"))?;
        Ok((client, settings.isolation))
    }
}

/// A URL's user or password as written, `%40` and all, decoded.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[async_trait::async_trait]
impl Driver for Mssql {
    fn quote(&self, ident: &str) -> String {
        format!("[{}]", ident.replace(']', "]]"))
    }

    fn text_type(&self) -> &'static str {
        "NVARCHAR(MAX)"
    }

    fn first_row(&self, sql: &str) -> String {
        format!("SELECT TOP 1 * FROM ({sql}) AS d")
    }

    fn timestamp_literal(&self, micros: i64, utc: bool) -> String {
        let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
        if utc {
            format!(
                "CAST('{}' AS DATETIMEOFFSET)",
                t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
            )
        } else {
            format!("CAST('{}' AS DATETIME2)", t.format("%Y-%m-%dT%H:%M:%S%.6f"))
        }
    }

    async fn plan(&self, base: &str) -> Result<Vec<Planned>, SourceError> {
        let (mut client, _) = self.connect().await?;
        let sql = format!("SELECT TOP 0 * FROM ({base}) AS q");
        let columns = {
            let mut stream = client
                .query_stream(&sql, &[])
                .await
                .map_err(|e| format!("failed to read the columns: {e}"))?;
            let columns = stream.columns().to_vec();
            while stream
                .try_next()
                .await
                .map_err(|e| format!("failed to read the columns: {e}"))?
                .is_some()
            {}
            columns
        };
        let _ = client.close().await;
        let mut cols = Vec::new();
        for column in &columns {
            let name = column.name.as_str();
            let q = format!("q.{}", self.quote(name));
            let text = |len: u32| format!("CONVERT(NVARCHAR({len}), {q})");
            let width = column.max_length.unwrap_or(0);
            let col = match column.type_name.as_str() {
                "Bit" | "BitN" => SqlColumn::plain(name, Kind::Bool, q.clone()),
                "Int1" => SqlColumn::new(name, Kind::Int, DataType::Int16, q.clone()),
                "Int2" => SqlColumn::new(name, Kind::Int, DataType::Int16, q.clone()),
                "Int4" => SqlColumn::new(name, Kind::Int, DataType::Int32, q.clone()),
                "Int8" => SqlColumn::plain(name, Kind::Int, q.clone()),
                "IntN" => {
                    let t = match width {
                        1 | 2 => DataType::Int16,
                        4 => DataType::Int32,
                        _ => DataType::Int64,
                    };
                    SqlColumn::new(name, Kind::Int, t, q.clone())
                }
                "Float4" => SqlColumn::new(name, Kind::Float, DataType::Float32, q.clone()),
                "Float8" => SqlColumn::plain(name, Kind::Float, q.clone()),
                "FloatN" => {
                    let t = if width == 4 {
                        DataType::Float32
                    } else {
                        DataType::Float64
                    };
                    SqlColumn::new(name, Kind::Float, t, q.clone())
                }
                "Decimal" | "Numeric" | "DecimalN" | "NumericN" => {
                    let t = match (column.precision, column.scale) {
                        (Some(p), Some(s)) if (1..=38).contains(&p) => {
                            DataType::Decimal128(p, s as i8)
                        }
                        _ => DataType::Utf8,
                    };
                    SqlColumn::new(name, Kind::Text, t, text(50))
                }
                "Money" | "Money4" | "MoneyN" => {
                    SqlColumn::new(name, Kind::Text, DataType::Decimal128(19, 4), text(50))
                }
                "Char" | "VarChar" | "BigChar" | "BigVarChar" | "NChar" | "NVarChar" | "Text"
                | "NText" | "Xml" => SqlColumn::plain(name, Kind::Text, q.clone()),
                "Guid" => SqlColumn::plain(name, Kind::Text, text(36)),
                "Time" => SqlColumn::plain(name, Kind::Text, text(20)),
                "Binary" | "VarBinary" | "BigBinary" | "BigVarBinary" | "Image" => {
                    SqlColumn::plain(name, Kind::Bytes, q.clone())
                }
                "Date" => SqlColumn::plain(name, Kind::Date, q.clone()),
                "DateTime" | "DateTime4" | "DateTimeN" | "DateTime2" => {
                    SqlColumn::plain(name, Kind::Timestamp, q.clone())
                }
                "DateTimeOffset" => SqlColumn::plain(name, Kind::TimestampUtc, q.clone()),
                other => {
                    cols.push(Planned::unmapped(name, other));
                    continue;
                }
            };
            cols.push(Planned::mapped(&column.type_name, col));
        }
        Ok(cols)
    }

    async fn read(&self, sql: &str, sink: &mut Sink) -> Result<(), SourceError> {
        let (client, isolation) = self.connect().await?;
        // SNAPSHOT reads one consistent version without blocking writers, where the database
        // allows it (ALLOW_SNAPSHOT_ISOLATION ON).
        let mut tx = client.begin_transaction_with_isolation(isolation).await?;
        {
            let mut stream = match tx.query_stream(sql, &[]).await {
                Ok(s) => s,
                Err(e) if e.to_string().contains("napshot isolation") => {
                    return Err(format!(
                        "{e}; turn on ALLOW_SNAPSHOT_ISOLATION for a consistent snapshot, or add isolation=read_committed to the URL to read without one"
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            while let Some(row) = stream.try_next().await? {
                let b = sink.row();
                let cols = b.cols().to_vec();
                for (i, col) in cols.iter().enumerate() {
                    let named = |e: mssql_client::TypeError| -> SourceError {
                        format!("failed to read column `{}`: {e}", col.name).into()
                    };
                    match col.kind {
                        Kind::Bool => b.bool(i, row.try_get::<bool>(i).map_err(named)?),
                        Kind::Int => b.int(i, row.try_get::<i64>(i).map_err(named)?),
                        Kind::Float => b.float(i, row.try_get::<f64>(i).map_err(named)?),
                        Kind::Text => {
                            b.text(i, row.try_get::<String>(i).map_err(named)?.as_deref())
                        }
                        Kind::Bytes => {
                            b.bytes(i, row.try_get::<Vec<u8>>(i).map_err(named)?.as_deref())
                        }
                        Kind::Date => b.date(i, row.try_get::<NaiveDate>(i).map_err(named)?),
                        Kind::Timestamp => {
                            let v = row.try_get::<NaiveDateTime>(i).map_err(named)?;
                            b.timestamp(i, v.map(|t| t.and_utc().timestamp_micros()));
                        }
                        Kind::TimestampUtc => {
                            let v = row.try_get::<DateTime<Utc>>(i).map_err(named)?;
                            b.timestamp(i, v.map(|t| t.timestamp_micros()));
                        }
                        Kind::List(_) => return Err("SQL Server has no arrays".into()),
                    }
                }
                if !sink.end_row().await? {
                    return Ok(());
                }
            }
        }
        let client = tx.commit().await?;
        let _ = client.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_configs() {
        let Settings { config: c, isolation } = Mssql::new(
            "mssql://lake%40corp:p%2Bw+d@sql.internal:1444/crm?encrypt=no_tls&isolation=read_committed",
            None,
        )
        .config()
        .unwrap();
        assert_eq!(isolation, IsolationLevel::ReadCommitted);
        assert_eq!((c.host.as_str(), c.port), ("sql.internal", 1444));
        assert_eq!(c.database.as_deref(), Some("crm"));
        assert!(c.no_tls);
        let Credentials::SqlServer { username, password } = &c.credentials else {
            panic!("SQL Server credentials");
        };
        assert_eq!(
            (username.as_ref(), password.as_ref()),
            ("lake@corp", "p+w+d")
        );
        // The configured password wins over the URL's.
        let Settings {
            config: c,
            isolation,
        } = Mssql::new("mssql://lake:old@h/db", Some("new".into()))
            .config()
            .unwrap();
        assert_eq!(isolation, IsolationLevel::Snapshot);
        assert!(
            matches!(&c.credentials, Credentials::SqlServer { password, .. } if password.as_ref() == "new")
        );
        assert!(!c.no_tls, "TLS unless the URL turns it off");
        let Err(err) = Mssql::new("mssql://h/db?encryption=off", None).config() else {
            panic!("an unknown option is refused");
        };
        assert!(
            err.to_string().contains("`encryption` is not known"),
            "{err}"
        );
    }
}
