//! `lake maintain`: compaction, a checkpoint after many commits, vacuum within a safe retention;
//! on a folder and on S3. And a refresh that ends with maintenance.

use crate::common::{Backend, TestContext};

fn many_small_commits(backend: Backend) {
    let ctx = TestContext::new(backend);
    for i in 0..12 {
        let file = ctx.write(&format!("part{i}.csv"), format!("id,v\n{i},{}\n", i * 10));
        ctx.ok(&[
            "ingest",
            file.to_str().unwrap(),
            "--table",
            "raw.t",
            "--mode",
            "append",
        ]);
    }
    let before = ctx.csv("SELECT id, v FROM raw.t ORDER BY id");
    // A retention short enough to hurt running queries is refused.
    let err = ctx.fails(&["maintain", "raw.t", "--retention", "10m"]);
    assert!(err.contains("use 1h or more"), "{err}");
    let out = ctx.ok(&["maintain", "raw.t"]);
    assert!(
        out.contains("raw.t: compacted 12 files into 1, checkpoint at version 12"),
        "{out}"
    );
    // The same rows; older versions still read (vacuum kept the files, within 7 days).
    assert_eq!(ctx.csv("SELECT id, v FROM raw.t ORDER BY id"), before);
    assert_eq!(ctx.scalar("SELECT count(*) FROM raw.\"t@v3\""), "4");
    let history = ctx.ok(&["history", "raw.t", "-n", "1"]);
    assert!(history.contains("OPTIMIZE"), "{history}");
    // The log, as the library reads it: appends added one file each. The compaction changed
    // no rows of the table as it was before it; but it folded in files added since v3, whose
    // rows can no longer be read apart.
    let appended = changes(&ctx, 3, 11);
    assert_eq!(appended.added().map(<[_]>::len), Some(8), "{appended}");
    let compacted = changes(&ctx, 11, 12);
    assert_eq!(compacted.added().map(<[_]>::len), Some(0), "{compacted}");
    assert_eq!(
        changes(&ctx, 3, 12).to_string(),
        "version 12 rewrote or removed rows (OPTIMIZE, of files added since)"
    );
    // Again: nothing to compact, no checkpoint due.
    let out = ctx.ok(&["maintain"]);
    assert!(out.contains("raw.t: nothing to do"), "{out}");
    let out = ctx.ok(&["maintain", "--dry-run", "--retention", "1h"]);
    assert!(out.contains("would vacuum 0 old files"), "{out}");
    // With no retention at all (which has to be asked for), vacuum deletes the 12 files the
    // compaction replaced: the table reads as before, time travel to before it no longer can.
    let out = ctx.ok(&[
        "maintain",
        "raw.t",
        "--retention",
        "0s",
        "--unsafe-retention",
    ]);
    assert!(out.contains("vacuumed 12 old files"), "{out}");
    assert_eq!(ctx.csv("SELECT id, v FROM raw.t ORDER BY id"), before);
    let (ok, _, err) = crate::common::outcome(
        ctx.lake()
            .args(["query", "SELECT sum(v) FROM raw.\"t@v3\""]),
    );
    assert!(!ok, "{err}");
}

/// What raw.t's commits after `from` up to `to` did, through the library.
fn changes(ctx: &TestContext, from: u64, to: u64) -> lake::lake::changes::Changes {
    let lake = crate::lease::open(ctx);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name: lake::lake::TableName = "raw.t".parse().unwrap();
        let table = lake.table(&name, None, None).await.unwrap();
        lake::lake::changes::changes_since(&name, &table, from, to)
            .await
            .unwrap()
    })
}

#[test]
fn many_small_commits_local() {
    many_small_commits(Backend::Local);
}

#[test]
fn many_small_commits_s3() {
    many_small_commits(Backend::S3);
}
