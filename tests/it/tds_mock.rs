//! A SQL Server for the tests: the in-process TDS mock of `mssql-testing`, which answers
//! configured SQL with configured rows over the real protocol.
//!
//! The mock answers every PRELOGIN with ENCRYPT_OFF, which obliges a client to wrap the login
//! in TLS, and the mock speaks no TLS. A relay in front of it rewrites that one byte of the
//! PRELOGIN answer to ENCRYPT_NOT_SUP, what a server without TLS answers, so lake connects
//! with `encrypt=no_tls`; every other byte passes through untouched.

use mssql_testing::mock_server::{MockColumn, MockResponse, MockTdsServer, ScalarValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running mock behind its relay; both stop with the runtime.
pub struct TdsMock {
    pub port: u16,
    _runtime: tokio::runtime::Runtime,
    _server: MockTdsServer,
}

impl TdsMock {
    /// Starts a mock that answers `responses` (SQL text, exactly, to its answer).
    pub fn start(responses: Vec<(String, MockResponse)>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, port) = runtime.block_on(async {
            let mut builder = MockTdsServer::builder().with_database("crm");
            for (sql, response) in responses {
                builder = builder.with_response(sql, response);
            }
            let server = builder.build().await.unwrap();
            let upstream = server.addr();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, upstream));
                }
            });
            (server, port)
        });
        TdsMock {
            port,
            _runtime: runtime,
            _server: server,
        }
    }
}

async fn relay(mut client: TcpStream, upstream: std::net::SocketAddr) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    // The client's PRELOGIN, as it is.
    let prelogin = read_packet(&mut client).await?;
    server.write_all(&prelogin).await?;
    // The server's answer, with ENCRYPTION set to NOT_SUP.
    let mut answer = read_packet(&mut server).await?;
    let payload = 8;
    let mut at = payload;
    while at + 5 <= answer.len() && answer[at] != 0xFF {
        let (token, offset) = (
            answer[at],
            u16::from_be_bytes([answer[at + 1], answer[at + 2]]) as usize,
        );
        if token == 0x01 {
            answer[payload + offset] = 0x02;
        }
        at += 5;
    }
    client.write_all(&answer).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

async fn read_packet(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    let len = u16::from_be_bytes([header[2], header[3]]) as usize;
    let mut packet = header.to_vec();
    packet.resize(len, 0);
    stream.read_exact(&mut packet[8..]).await?;
    Ok(packet)
}

/// Columns of the mock's `listens` result.
pub fn listens_columns() -> Vec<MockColumn> {
    use tds_protocol::types::TypeId;
    vec![
        MockColumn::bigint("id"),
        MockColumn::int("plays"),
        MockColumn::new("ratio", TypeId::FloatN).with_max_length(8),
        MockColumn::new("score", TypeId::FloatN).with_max_length(4),
        MockColumn::new("liked", TypeId::BitN).with_max_length(1),
        MockColumn::nvarchar("name", 50),
        MockColumn::new("art", TypeId::BigVarBinary).with_max_length(16),
    ]
}

/// Seven rows of `listens`, one with nulls where the mock can send them.
pub fn listens_rows() -> Vec<Vec<ScalarValue>> {
    (1..=7)
        .map(|i| {
            if i == 4 {
                vec![
                    ScalarValue::BigInt(4),
                    ScalarValue::Null,
                    ScalarValue::Null,
                    ScalarValue::Null,
                    ScalarValue::Null,
                    ScalarValue::String("naïve ☕".into()),
                    ScalarValue::Binary(vec![]),
                ]
            } else {
                vec![
                    ScalarValue::BigInt(i),
                    ScalarValue::Int(i as i32 * 10),
                    ScalarValue::Double(i as f64 / 4.0),
                    ScalarValue::Float(i as f32 / 2.0),
                    ScalarValue::Bool(i % 2 == 0),
                    ScalarValue::String(format!("track {i}")),
                    ScalarValue::Binary(vec![i as u8, 0xff]),
                ]
            }
        })
        .collect()
}

pub use mssql_testing::mock_server::MockResponse as Response;
