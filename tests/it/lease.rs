//! Leases on the lake (the lock `lake refresh` takes), on a local folder and on S3: of many
//! processes trying at once exactly one holds it; an expired lease can be taken over, and its
//! old holder learns so when it renews; a released lease is free at once.

use std::sync::Arc;
use std::time::Duration;

use lake::config::{Overrides, Settings};
use lake::lake::{Lake, LakeError};

use crate::common::{Backend, TestContext};
use crate::s3_server::{ACCESS_KEY, SECRET_KEY};

/// The test's lake through the library, with the S3 test server's credentials when on S3.
pub(crate) fn open(ctx: &TestContext) -> Lake {
    let settings = Settings::resolve(&Overrides::default(), Vec::new(), ctx.dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lake = rt.block_on(Lake::open(&settings)).unwrap();
    if ctx.backend == Backend::S3 {
        lake.with_storage_option("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .with_storage_option("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    } else {
        lake
    }
}

fn one_holder_at_a_time(backend: Backend) {
    let ctx = TestContext::new(backend);
    let lake = Arc::new(open(&ctx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ttl = Duration::from_secs(60);
        // Eight at once: one wins, seven are told who holds it.
        let tries = (0..8).map(|_| {
            let lake = lake.clone();
            tokio::spawn(async move { lake.try_lease("refresh", ttl, "refresh").await })
        });
        let mut held = Vec::new();
        let mut refused = Vec::new();
        for t in futures::future::join_all(tries).await {
            match t.unwrap().unwrap() {
                Ok(lease) => held.push(lease),
                Err(holder) => refused.push(holder),
            }
        }
        assert_eq!(held.len(), 1, "exactly one holder: {held:?}");
        let holder = held.pop().unwrap();
        assert!(
            refused.iter().all(|h| h.owner == holder.info().owner),
            "{refused:?}"
        );
        // Released, it is free at once.
        holder.release().await.unwrap();
        let mut lease = lake
            .try_lease("refresh", Duration::from_millis(300), "refresh")
            .await
            .unwrap()
            .unwrap();
        // Expired, another process takes it; the old holder's renewal then fails, naming it.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let taker = lake
            .try_lease("refresh", ttl, "maintain")
            .await
            .unwrap()
            .unwrap();
        match lease.renew(ttl).await {
            Err(LakeError::LeaseLost { holder, .. }) => {
                assert!(holder.starts_with("maintain on "), "{holder}")
            }
            other => panic!("the renewal should fail: {other:?}"),
        }
        // Renewals of the holder work, many times (old generations are pruned).
        let mut taker = taker;
        for _ in 0..20 {
            taker.renew(ttl).await.unwrap();
        }
        let (generation, info) = lake.lease_holder("refresh").await.unwrap().unwrap();
        assert_eq!(info.owner, taker.info().owner);
        assert!(generation >= 22, "{generation}");
    });
}

#[test]
fn one_holder_at_a_time_local() {
    one_holder_at_a_time(Backend::Local);
}

#[test]
fn one_holder_at_a_time_s3() {
    one_holder_at_a_time(Backend::S3);
}

/// A held lease renews itself past its TTL, says when another process took it, waits for a
/// holder up to a limit, and is released on release and on drop.
fn held_leases_renew_themselves(backend: Backend) {
    let ctx = TestContext::new(backend);
    let lake = Arc::new(open(&ctx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ttl = Duration::from_millis(900);
        let nobody = |_: &lake::lake::lease::LeaseInfo| {};
        let held = lake
            .hold_lease("t", "maintain", ttl, Duration::ZERO, &nobody)
            .await
            .unwrap();
        // Three TTLs later it is still held: a maintenance longer than its TTL keeps the lake.
        tokio::time::sleep(ttl * 3).await;
        let (_, info) = lake.lease_holder("t").await.unwrap().unwrap();
        assert_eq!(info.owner, held.info().owner);
        assert!(info.held_at(chrono::Utc::now()));
        assert!(!held.lost());
        // Another one waits for it, up to its limit, hearing who holds it.
        let heard = std::sync::Mutex::new(Vec::new());
        let waiting =
            |h: &lake::lake::lease::LeaseInfo| heard.lock().unwrap().push(h.command.clone());
        let err = lake
            .hold_lease("t", "refresh", ttl, Duration::from_millis(500), &waiting)
            .await
            .unwrap_err();
        assert!(matches!(err, LakeError::LeaseHeld { .. }), "{err}");
        assert!(err.to_string().contains("maintain on "), "{err}");
        assert_eq!(
            heard.lock().unwrap().first().map(String::as_str),
            Some("maintain")
        );
        // Released, it is free at once.
        held.release().await.unwrap();
        let next = lake
            .hold_lease("t", "refresh", ttl, Duration::ZERO, &nobody)
            .await
            .unwrap();
        // Dropped, it is released in the background.
        drop(next);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, info) = lake.lease_holder("t").await.unwrap().unwrap();
        assert!(info.released, "{info:?}");
    });
}

#[test]
fn held_leases_renew_themselves_local() {
    held_leases_renew_themselves(Backend::Local);
}

#[test]
fn held_leases_renew_themselves_s3() {
    held_leases_renew_themselves(Backend::S3);
}
