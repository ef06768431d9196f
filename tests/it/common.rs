//! The test context: a temp project on a local folder or on the S3 test server, and the `lake`
//! binary run in it as a user runs it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use assert_cmd::Command;
use tempfile::TempDir;

use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

pub struct TestContext {
    pub dir: TempDir,
    pub backend: Backend,
    pub bucket: Option<String>,
}

/// Runs a test body once on a local folder and once on the S3 test server.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn local() {
                super::$body($crate::common::TestContext::new(
                    $crate::common::Backend::Local,
                ));
            }
            #[test]
            fn s3() {
                super::$body($crate::common::TestContext::new(
                    $crate::common::Backend::S3,
                ));
            }
        }
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestContext {
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lake-it-")
            .tempdir()
            .expect("temp dir");
        let (root, bucket, s3) = match backend {
            Backend::Local => ("lake".to_string(), None, String::new()),
            Backend::S3 => {
                let server = S3Server::shared();
                let n = COUNTER.fetch_add(1, Ordering::SeqCst);
                let bucket = server.bucket(&format!("it-{}-{n}", std::process::id()));
                let s3 = format!(
                    "\n[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
                    server.endpoint
                );
                (format!("s3://{bucket}/lake"), Some(bucket), s3)
            }
        };
        std::fs::write(
            dir.path().join("lake.toml"),
            format!("root = \"{root}\"\n{s3}"),
        )
        .expect("write lake.toml");
        Self {
            dir,
            backend,
            bucket,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Appends to lake.toml.
    pub fn configure(&self, text: &str) {
        let path = self.path("lake.toml");
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml.push_str(text);
        std::fs::write(path, toml).unwrap();
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The `lake` binary, run in the project with a clean environment.
    pub fn lake(&self) -> Command {
        Command::from_std(self.std_command())
    }

    /// The same, as a plain process, for tests that spawn several at once.
    pub fn std_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"));
        cmd.current_dir(self.dir.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("LAKE_") || key.starts_with("AWS_") || key.starts_with("SPOTIFY_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("HOME", self.dir.path())
            .env("AWS_CONFIG_FILE", self.path(".aws/config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.path(".aws/credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1");
        if self.backend == Backend::S3 {
            cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        }
        cmd
    }

    /// Runs `lake` with `args`, asserts success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeds(self.lake().args(args)).0
    }

    /// Runs `lake` with `args`, asserts failure, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        fails(self.lake().args(args))
    }

    /// Runs `lake` with extra environment variables, asserts failure, and returns stderr.
    pub fn fails_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let mut cmd = self.lake();
        for (k, v) in env {
            cmd.env(k, v);
        }
        fails(cmd.args(args))
    }

    /// Query results as CSV.
    pub fn csv(&self, sql: &str) -> String {
        self.ok(&["query", "--format", "csv", sql])
    }

    /// The single value a query returns.
    pub fn scalar(&self, sql: &str) -> String {
        let out = self.csv(sql);
        let mut lines = out.lines().skip(1);
        lines.next().unwrap_or_default().to_string()
    }

    /// The table's current version, from `lake tables`' CSV-free cousin: its log.
    pub fn version(&self, table: &str) -> u64 {
        let (schema, name) = table.split_once('.').unwrap();
        match self.backend {
            Backend::Local => {
                latest_version(&self.path(&format!("lake/{schema}/{name}/_delta_log")))
            }
            Backend::S3 => {
                let dir = S3Server::shared()
                    .bucket_dir(self.bucket.as_deref().unwrap())
                    .join(format!("lake/{schema}/{name}/_delta_log"));
                latest_version(&dir)
            }
        }
    }

    /// Filters that make output independent of temp paths, buckets, ports and times.
    pub fn filters(&self) -> Vec<(String, &'static str)> {
        let mut filters = vec![
            (
                regex::escape(&self.dir.path().display().to_string()),
                "[PROJECT]",
            ),
            (
                r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( UTC|Z)?".to_string(),
                "[TIME]",
            ),
            (r"\d+(\.\d+)?s\b".to_string(), "[DURATION]"),
            (r"\d{8}T\d{6}Z-[0-9a-f]{8}".to_string(), "[RUN]"),
        ];
        if let Some(bucket) = &self.bucket {
            filters.push((format!("s3://{bucket}/lake"), "[ROOT]"));
        }
        filters.push(("file://\\[PROJECT\\]/lake".to_string(), "[ROOT]"));
        // Table padding depends on the raw values' widths, which differ by backend and run.
        filters.push((r" +\|".to_string(), " |"));
        filters.push((r"-{3,}".to_string(), "---"));
        filters
    }
}

/// Runs a prepared command, asserts success, and returns stdout and stderr.
pub fn succeeds(cmd: &mut Command) -> (String, String) {
    let out = cmd
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .expect("run lake");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}{stderr}");
    (stdout, stderr)
}

/// Runs a prepared command whatever its outcome: whether it succeeded, stdout and stderr.
pub fn outcome(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .expect("run lake");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{cmd:?} panicked:\n{stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Runs a prepared command, asserts that it fails cleanly, and returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .expect("run lake");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "{cmd:?} did not fail cleanly:\n{stderr}"
    );
    stderr
}

fn latest_version(log: &Path) -> u64 {
    std::fs::read_dir(log)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_str()?
                        .strip_suffix(".json")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Applies `filters` to text, for snapshots.
#[macro_export]
macro_rules! snapshot {
    ($ctx:expr, $name:expr, $value:expr) => {{
        let filters = $ctx.filters();
        let filters: Vec<(&str, &str)> = filters.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        insta::with_settings!({ filters => filters, prepend_module_to_snapshot => true, omit_expression => true }, {
            insta::assert_snapshot!($name, $value);
        });
    }};
}

/// Runs SQL on the PostgreSQL of this machine (database test) and returns its rows, columns
/// separated by tabs.
pub fn psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-qAt", "-F", "\t", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Runs SQL on a database of this machine: `postgres` and `mysql` (database test, or `db`),
/// or the SQLite file `file`; returns its rows, columns separated by tabs.
pub fn db_sql(kind: &str, target: Option<&Path>, sql: &str) -> String {
    let out = match kind {
        "postgres" => return psql(sql),
        "mysql" => std::process::Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "-N",
                "-B",
                "test",
                "-e",
                sql,
            ])
            .output(),
        // A reader waits out a writer's lock, as a BI tool would, instead of failing.
        _ => std::process::Command::new("sqlite3")
            .args(["-cmd", ".timeout 10000", "-separator", "\t"])
            .arg(target.expect("a SQLite file"))
            .arg(sql)
            .output(),
    }
    .expect("the database client runs");
    assert!(
        out.status.success(),
        "{sql} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}
