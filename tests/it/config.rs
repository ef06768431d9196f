//! Settings through the binary: precedence, unknown keys, LAKE_CONFIG.

use crate::common::{Backend, TestContext, fails, succeeds};

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

#[test]
fn standard_aws_environment_and_profiles() {
    use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
    let ctx = TestContext::new(Backend::S3);
    let bucket = ctx.bucket.clone().unwrap();
    let endpoint = &S3Server::shared().endpoint;
    // Only the root in lake.toml: endpoint, region and credentials come from the AWS environment
    // and a named profile, as with the AWS CLI.
    std::fs::write(
        ctx.path("lake.toml"),
        format!("root = \"s3://{bucket}/lake\"\n"),
    )
    .unwrap();
    ctx.write(
        ".aws/credentials",
        format!(
            "[lake-test]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    );
    ctx.write(".aws/config", "[profile lake-test]\nregion = us-east-1\n");
    ctx.write("a.csv", "id\n1\n");
    let aws = |cmd: &mut assert_cmd::Command| {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ALLOW_HTTP", "true");
    };
    let mut cmd = ctx.lake();
    aws(&mut cmd);
    cmd.env("AWS_PROFILE", "lake-test")
        .args(["ingest", "a.csv", "--table", "raw.p"])
        .assert()
        .success();

    // The profile can also be named in lake.toml's [s3] table.
    std::fs::write(
        ctx.path("lake.toml"),
        format!("root = \"s3://{bucket}/lake\"\n[s3]\nprofile = \"lake-test\"\n"),
    )
    .unwrap();
    let mut cmd = ctx.lake();
    aws(&mut cmd);
    let (out, _) = succeeds(cmd.args([
        "query",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM raw.p",
    ]));
    assert_eq!(
        out,
        "n
1
"
    );

    // A profile that does not exist is an error, not a hang or a panic.
    let mut cmd = ctx.lake();
    aws(&mut cmd);
    let err = fails(cmd.args(["--set", "s3.profile=nope", "tables"]));
    assert!(err.contains("`nope` was not found"), "{err}");
    assert!(!err.contains(SECRET_KEY));
}
