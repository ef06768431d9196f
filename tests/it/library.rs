//! The pipeline through the library API, as `lake serve` or a notebook would drive it: one
//! `App` per process, a refresh under a held lease with a typed report, the export plan, and
//! the personal-data import.

use std::sync::Arc;
use std::time::Duration;

use lake::app::{App, Observer, Quiet, Stage};
use lake::config::{Overrides, Settings};
use lake::export::ExportOutcome;
use lake::lake::lease::{self, LeaseInfo};
use lake::refresh::{Outcome, RefreshOptions, StepStatus, refresh};

use crate::common::TestContext;
use crate::on_both;

/// The application over the test's lake, with the S3 test server's credentials when on S3.
fn app(ctx: &TestContext) -> App {
    let settings = Settings::resolve(&Overrides::default(), Vec::new(), ctx.dir.path()).unwrap();
    App::with_lake(settings, Arc::new(crate::lease::open(ctx)))
}

/// The refresh tests' source and model, and a second model marked for export over it.
fn project(ctx: &TestContext) {
    crate::refresh::orders(ctx);
    ctx.write(
        "queries/by_amount.sql",
        "/* lake\nexport = true\n*/\nSELECT amount, count(*) AS orders FROM curated.order_totals GROUP BY amount",
    );
}

const NOBODY: &(dyn Fn(&LeaseInfo) + Send + Sync) = &|_| {};

fn quiet() -> Arc<dyn Observer> {
    Arc::new(Quiet)
}

on_both!(a_refresh_is_one_typed_run, a_refresh_is_one_typed_run_on);
fn a_refresh_is_one_typed_run_on(ctx: TestContext) {
    project(&ctx);
    let app = app(&ctx);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let held = app
            .lake()
            .hold_lease(lease::LAKE, "refresh", Duration::from_secs(60), Duration::ZERO, NOBODY)
            .await
            .unwrap();
        let report = refresh(&app, &held, &RefreshOptions::default(), &quiet()).await;
        held.release().await.unwrap();
        assert_eq!(report.outcome(), Outcome::Ok, "{report:#?}");
        let items = |stage| -> Vec<(String, StepStatus)> {
            report
                .stage(stage)
                .filter_map(|s| Some((s.item.clone()?, s.status)))
                .collect()
        };
        assert_eq!(
            items(Stage::Extract),
            [("orders -> raw.orders".to_string(), StepStatus::Ok)]
        );
        assert_eq!(
            items(Stage::Run),
            [
                ("curated.order_totals".to_string(), StepStatus::Ok),
                ("curated.by_amount".to_string(), StepStatus::Ok)
            ]
        );
        assert_eq!(items(Stage::Export).len(), 2, "{report:#?}");
        assert!(
            items(Stage::Export)
                .iter()
                .all(|(_, s)| *s == StepStatus::Ok)
        );
        // One run in `_lake.runs`: the refresh's start and end rows and its models' rows, all
        // under the report's id.
        let session = app.session().await.unwrap();
        let runs = session
            .strings("SELECT DISTINCT run_id || ' ' || command FROM _lake.runs")
            .await
            .unwrap();
        assert_eq!(runs, [format!("{} refresh", report.run_id)]);
        let rows = session
            .strings(
                "SELECT coalesce(model, '-') || ' ' || status FROM _lake.runs ORDER BY started_at, model",
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(rows.contains(&"- started".to_string()), "{rows:?}");
        assert!(rows.contains(&"- ok".to_string()), "{rows:?}");
        assert!(rows.contains(&"curated.order_totals ok".to_string()), "{rows:?}");
    });
}

#[test]
fn a_lost_lease_stops_the_refresh_and_still_ends_its_run() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    project(&ctx);
    let app = app(&ctx);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ttl = Duration::from_millis(600);
        let held = app
            .lake()
            .hold_lease(lease::LAKE, "refresh", ttl, Duration::ZERO, NOBODY)
            .await
            .unwrap();
        // Another process writes the next generation, as one does that took an expired lease:
        // the holder's next renewal finds it taken.
        let (generation, info) = app.lake().lease_holder(lease::LAKE).await.unwrap().unwrap();
        let taker = LeaseInfo {
            owner: "elsewhere:1:x".into(),
            host: "elsewhere".into(),
            ..info
        };
        ctx.write(
            &format!("lake/_lake/leases/lake/{:020}.json", generation + 1),
            serde_json::to_vec(&taker).unwrap(),
        );
        tokio::time::sleep(ttl).await;
        assert!(held.lost());
        let report = refresh(&app, &held, &RefreshOptions::default(), &quiet()).await;
        assert_eq!(report.outcome(), Outcome::LeaseLost);
        assert!(report.steps.is_empty(), "{report:#?}");
        let ended = app
            .session()
            .await
            .unwrap()
            .strings(&format!(
                "SELECT status || ': ' || error FROM _lake.runs WHERE run_id = '{}' AND finished_at IS NOT NULL",
                report.run_id
            ))
            .await
            .unwrap();
        assert_eq!(
            ended,
            ["failed: the lease on the lake expired and another process took it"]
        );
    });
}

/// A model marked for export that was never built fails alone: the others are exported.
#[test]
fn an_unbuilt_model_fails_alone_in_the_export() {
    let ctx = TestContext::new(crate::common::Backend::Local);
    project(&ctx);
    let app = app(&ctx);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        app.extract_sources(&[], false, &quiet()).await.unwrap();
        let run = lake::app::ModelRun {
            select: vec!["curated.order_totals".into()],
            build: true,
            ..Default::default()
        };
        assert!(app.run_models(&run, &quiet()).await.unwrap().ok());
        let report = app.export(&[], &[], &quiet()).await.unwrap();
        let shown: Vec<String> = report.loaded().iter().map(|t| t.to_string()).collect();
        assert_eq!(shown, ["curated.order_totals"]);
        let failed = &report.tables[1];
        assert_eq!(failed.0.to_string(), "curated.by_amount");
        assert!(
            matches!(&failed.1, ExportOutcome::Failed(e) if e.to_string().contains("not built yet")),
            "{report:?}"
        );
    });
    // Through the binary: the built one goes, the unbuilt one is named, the exit is a failure.
    let (ok, out, err) = crate::common::outcome(ctx.lake().args(["export"]));
    assert!(!ok);
    assert!(out.contains("unchanged     curated.order_totals"), "{out}");
    assert!(
        out.contains("failed        curated.by_amount: failed to export curated.by_amount: it is not built yet"),
        "{out}"
    );
    assert!(err.contains("failed to export: curated.by_amount"), "{err}");
}

on_both!(an_export_imports_through_the_library, import_on);
fn import_on(ctx: TestContext) {
    use lake::extract::spotify_export::{discover, generate, import};
    let dir = ctx.path("export");
    generate::extended(&dir, 7, 0..300, 100, &generate::Shape::PERSONAL, false).unwrap();
    let app = app(&ctx);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let personal = lake::config::PersonalData::Drop;
        let hidden = indicatif::ProgressBar::hidden;
        let first = import(app.lake(), discover(&dir).unwrap(), personal, hidden())
            .await
            .unwrap();
        assert!(first.created);
        assert_eq!((first.version, first.inserted, first.plays), (0, 300, 300));
        let again = import(app.lake(), discover(&dir).unwrap(), personal, hidden())
            .await
            .unwrap();
        assert_eq!((again.version, again.inserted, again.plays), (0, 0, 300));
        assert_eq!(
            again.to_string(),
            "raw.spotify_streams unchanged at version 0: all 300 plays from 4 files are in the lake"
        );
    });
}
