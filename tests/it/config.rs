//! Settings through the binary: precedence, unknown keys, LAKE_CONFIG.

use crate::common::{Backend, TestContext};

#[test]
fn precedence_file_env_flag() {
    let ctx = TestContext::new(Backend::Local);
    ctx.write("a.csv", "id\n1\n");
    std::fs::write(ctx.path("lake.toml"), "root = \"from-file\"\n").unwrap();
    ctx.ok(&["ingest", "a.csv", "--table", "raw.a"]);
    assert!(ctx.path("from-file/raw/a/_delta_log").is_dir());
    ctx.lake()
        .env("LAKE_ROOT", "from-env")
        .args(["ingest", "a.csv", "--table", "raw.a"])
        .assert()
        .success();
    assert!(ctx.path("from-env/raw/a/_delta_log").is_dir());
    ctx.lake()
        .env("LAKE_ROOT", "from-env")
        .args(["--root", "from-flag", "ingest", "a.csv", "--table", "raw.a"])
        .assert()
        .success();
    assert!(ctx.path("from-flag/raw/a/_delta_log").is_dir());

    // LAKE_CONFIG names another file; relative roots resolve against that file's folder.
    ctx.write("elsewhere/other.toml", "root = \"other-lake\"\n");
    ctx.lake()
        .env("LAKE_CONFIG", "elsewhere/other.toml")
        .args(["ingest", "a.csv", "--table", "raw.a"])
        .assert()
        .success();
    assert!(ctx.path("elsewhere/other-lake/raw/a/_delta_log").is_dir());
}

#[test]
fn unknown_keys_are_errors() {
    let ctx = TestContext::new(Backend::Local);
    std::fs::write(
        ctx.path("lake.toml"),
        "root = \"lake\"\n[s3]\nregoin = \"x\"\n",
    )
    .unwrap();
    let err = ctx.fails(&["tables"]);
    assert!(
        err.contains("lake.toml") && err.contains("regoin") && err.contains("line 3"),
        "{err}"
    );

    std::fs::write(ctx.path("lake.toml"), "root = \"lake\"\n").unwrap();
    let out = ctx
        .lake()
        .env("LAKE_ROOTS", "x")
        .arg("tables")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LAKE_ROOTS"));
    let err = ctx.fails(&["--set", "s3.bucket=x", "tables"]);
    assert!(err.contains("s3.bucket"), "{err}");
    let err = ctx.fails(&["--root", "gs://bucket/x", "tables"]);
    assert!(err.contains("gs://"), "{err}");
}
