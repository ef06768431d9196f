//! A real S3 HTTP endpoint for tests: s3s-fs on 127.0.0.1:0 with SigV4 credentials.
//!
//! s3s-fs checks `If-None-Match: *` and then writes, with nothing in between, so two
//! concurrent Delta commits can both "create" the same log entry and one batch is lost.
//! AWS S3 makes a conditional PUT atomic; this server does too, by serializing conditional
//! PUTs behind one lock. Setting `LAKE_TEST_S3_RACY=1` removes the lock, to show that the
//! concurrency tests catch a lost commit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hyper::Method;
use hyper::header::{IF_MATCH, IF_NONE_MATCH};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "lake-test-access-key";
pub const SECRET_KEY: &str = "lake-test-secret-0123456789";

pub struct S3Server {
    pub endpoint: String,
    root: PathBuf,
}

impl S3Server {
    /// The server shared by all tests in this process.
    pub fn shared() -> &'static S3Server {
        static SERVER: OnceLock<S3Server> = OnceLock::new();
        SERVER.get_or_init(start)
    }

    /// Creates an empty bucket and returns its name.
    pub fn bucket(&self, name: &str) -> String {
        std::fs::create_dir_all(self.root.join(name)).expect("create bucket");
        name.to_string()
    }

    /// Where a bucket's objects sit on disk.
    pub fn bucket_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn start() -> S3Server {
    let root = std::env::temp_dir().join(format!("lake-s3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create server root");
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let serve_root = root.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(serve(serve_root, tx));
    });
    let addr = rx.recv().expect("server started");
    S3Server {
        endpoint: format!("http://{addr}"),
        root,
    }
}

async fn serve(root: PathBuf, tx: std::sync::mpsc::Sender<SocketAddr>) {
    let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs");
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    tx.send(listener.local_addr().expect("addr"))
        .expect("report address");
    let racy = std::env::var_os("LAKE_TEST_S3_RACY").is_some();
    let conditional_puts = Arc::new(tokio::sync::Mutex::new(()));
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        let lock = conditional_puts.clone();
        let handler = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let service = service.clone();
            let lock = lock.clone();
            async move {
                let conditional = req.method() == Method::PUT
                    && (req.headers().contains_key(IF_NONE_MATCH)
                        || req.headers().contains_key(IF_MATCH));
                // Hold the lock across check and write, as AWS S3 does atomically.
                let _guard = if conditional && !racy {
                    Some(lock.lock_owned().await)
                } else {
                    None
                };
                hyper::service::Service::call(&service, req).await
            }
        });
        let conn = http
            .serve_connection(TokioIo::new(socket), handler)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
