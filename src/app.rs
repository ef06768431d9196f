//! The application, built once per process: the resolved settings, the open lake (with its
//! session factory), the project's models and the warehouse, the last two opened on first use.
//! Each stage of the pipeline is a method here, so `lake refresh`, the single-stage commands
//! and a library caller run the same code; [`crate::refresh`] chains them.
//!
//! A stage reports as it goes through an [`Observer`]: the CLI draws spinners and prints a
//! line per item, a library caller may pass [`Quiet`].

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::config::{ConfigError, Settings};
use crate::export::{self, ExportError, ExportOutcome, ExportReport, Warehouse};
use crate::extract::ExtractError;
use crate::extract::sql::{Source, SqlOptions, SqlReport};
use crate::lake::maintain::{MaintainOptions, MaintainReport};
use crate::lake::{Lake, LakeError, TableName};
use crate::query::{LakeSession, QueryError};
use crate::transform::run::{ModelOutcome, RunEvent, RunOptions, RunSummary};
use crate::transform::{Project, TransformError, select};

/// Errors that stop a stage before it does anything: settings, the lake, the project.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The settings do not resolve.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The lake does not open or list.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// The project's models do not load, or a selector matches nothing.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The export cannot start.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A session over the lake does not open.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// `queries/` holds no model.
    #[error(
        "failed to run models: there are none in {}; put one SELECT per file there",
        .0.display()
    )]
    NoModels(std::path::PathBuf),
    /// lake.toml names no SQL source.
    #[error("failed to extract: lake.toml has no [sources.<name>]")]
    NoSources,
    /// A source asked for by name is not in lake.toml.
    #[error("failed to extract {name}: no [sources.{name}] in lake.toml (there are: {known})")]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
}

/// A `Result` whose error is an [`AppError`].
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// The stages of the pipeline, in the order `lake refresh` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// SQL sources into raw tables.
    Extract,
    /// The models and their tests.
    Run,
    /// Curated tables into the warehouse.
    Export,
    /// Compaction, checkpoints and vacuum.
    Maintain,
}

impl Stage {
    /// Its name in summaries and logs.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Run => "run",
            Stage::Export => "export",
            Stage::Maintain => "maintain",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a stage reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stage is about to work through `items` items; `width` is the widest item's name.
    Begin {
        /// The stage.
        stage: Stage,
        /// How many items.
        items: usize,
        /// The widest item name, to align lines.
        width: usize,
    },
    /// An item (a source, a model, a table) started.
    Started {
        /// Its stage.
        stage: Stage,
        /// The item.
        item: &'a str,
    },
    /// Rows read so far by an item.
    Rows {
        /// Its stage.
        stage: Stage,
        /// The item.
        item: &'a str,
        /// Rows so far.
        rows: u64,
    },
    /// A source finished.
    Extracted {
        /// The source.
        source: &'a str,
        /// What it did.
        result: &'a std::result::Result<SqlReport, ExtractError>,
    },
    /// A model finished, or was skipped.
    Model(&'a ModelOutcome),
    /// Every selected model finished.
    Ran(&'a RunSummary),
    /// A table's export finished, or was held back.
    Exported {
        /// The lake table.
        table: &'a TableName,
        /// What happened.
        outcome: &'a ExportOutcome,
    },
    /// A table's maintenance finished.
    Maintained {
        /// The table.
        table: &'a TableName,
        /// What it did.
        result: &'a std::result::Result<MaintainReport, LakeError>,
        /// Whether nothing was deleted (`--dry-run`).
        dry_run: bool,
    },
    /// A stage finished.
    End(Stage),
}

/// Sees a stage's events.
pub trait Observer: Send + Sync {
    /// One event.
    fn event(&self, event: Event<'_>);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event<'_>) {}
}

/// What `lake run` and `lake test` take; see [`App::run_models`].
#[derive(Debug, Clone, Default)]
pub struct ModelRun {
    /// Selectors; every model when empty.
    pub select: Vec<String>,
    /// Selectors to leave out.
    pub exclude: Vec<String>,
    /// Models built at once; the machine's cores by default.
    pub threads: Option<usize>,
    /// False for `lake test`: only the tests run.
    pub build: bool,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// The run to record the models under, when they are part of a larger one (a refresh);
    /// otherwise the run gets its own id and start and end rows.
    pub run_id: Option<String>,
}

/// The application: see the module documentation.
pub struct App {
    settings: Settings,
    lake: Arc<Lake>,
    project: OnceCell<Arc<Project>>,
    warehouse: OnceCell<Warehouse>,
    sources: std::sync::Mutex<std::collections::HashMap<String, Source>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("lake", &self.lake)
            .field("warehouse", &self.warehouse.get())
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens the lake the settings describe; the rest opens on first use.
    pub async fn open(settings: Settings) -> Result<Self> {
        let lake = Arc::new(Lake::open(&settings).await?);
        Ok(Self::with_lake(settings, lake))
    }

    /// An application over a lake opened already (with extra storage options, say).
    pub fn with_lake(settings: Settings, lake: Arc<Lake>) -> Self {
        Self {
            settings,
            lake,
            project: OnceCell::new(),
            warehouse: OnceCell::new(),
            sources: std::sync::Mutex::default(),
        }
    }

    /// The resolved settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The open lake.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// A session over every table in the lake as it is now.
    pub async fn session(&self) -> Result<LakeSession> {
        Ok(LakeSession::new(self.lake.clone()).await?)
    }

    /// The project's models, loaded on first use (so after a refresh's extract, whose new raw
    /// tables the models may read).
    pub async fn project(&self) -> Result<Arc<Project>> {
        let project = self
            .project
            .get_or_try_init(|| async {
                let tables = self.lake.list_tables().await?;
                let (dir, tests) = (&self.settings.project_dir, self.settings.tests_dir());
                Ok::<_, AppError>(Arc::new(Project::load(dir, &tests, &tables)?))
            })
            .await?;
        Ok(project.clone())
    }

    /// The warehouse, connected on first use.
    pub async fn warehouse(&self) -> Result<&Warehouse> {
        Ok(self
            .warehouse
            .get_or_try_init(|| {
                Warehouse::connect(&self.settings.warehouse, &self.settings.project_dir)
            })
            .await?)
    }

    /// The handle of SQL source `name`, made on first use (it connects when first read).
    pub fn source(&self, name: &str) -> std::result::Result<Source, ExtractError> {
        let mut sources = self.sources.lock().expect("not poisoned");
        if let Some(s) = sources.get(name) {
            return Ok(s.clone());
        }
        let settings = self
            .settings
            .sources
            .get(name)
            .ok_or_else(|| crate::extract::sql::fail(name, "no such source in lake.toml"))?;
        let source = Source::open(name, settings, &self.settings.project_dir)?;
        sources.insert(name.to_string(), source.clone());
        Ok(source)
    }

    /// Extracts the named SQL sources (all when none is named), one commit each; a failed
    /// source commits nothing and the others still land. An error only when none can start.
    pub async fn extract_sources(
        &self,
        names: &[String],
        detect_deletes: bool,
        observer: &Arc<dyn Observer>,
    ) -> Result<Vec<(String, std::result::Result<SqlReport, ExtractError>)>> {
        let sources = &self.settings.sources;
        if sources.is_empty() {
            return Err(AppError::NoSources);
        }
        if let Some(name) = names.iter().find(|n| !sources.contains_key(*n)) {
            let known: Vec<&str> = sources.keys().map(String::as_str).collect();
            return Err(AppError::UnknownSource {
                name: name.clone(),
                known: known.join(", "),
            });
        }
        let chosen: Vec<_> = sources
            .iter()
            .filter(|(name, _)| names.is_empty() || names.contains(name))
            .collect();
        observer.event(Event::Begin {
            stage: Stage::Extract,
            items: chosen.len(),
            width: chosen.iter().map(|(n, _)| n.len()).max().unwrap_or(0),
        });
        let mut results = Vec::new();
        for (name, src) in chosen {
            observer.event(Event::Started {
                stage: Stage::Extract,
                item: name,
            });
            let options = SqlOptions { detect_deletes };
            let shown = {
                // The driver reads in a task of its own: it gets an owned closure.
                let (name, observer) = (name.clone(), observer.clone());
                Arc::new(move |rows: u64| {
                    observer.event(Event::Rows {
                        stage: Stage::Extract,
                        item: &name,
                        rows,
                    })
                })
            };
            let result = match self.source(name) {
                Ok(source) => {
                    crate::extract::sql::extract(&self.lake, name, src, &source, options, shown)
                        .await
                }
                Err(e) => Err(e),
            };
            observer.event(Event::Extracted {
                source: name,
                result: &result,
            });
            results.push((name.clone(), result));
        }
        observer.event(Event::End(Stage::Extract));
        Ok(results)
    }

    /// Builds (or, with `build` false, only tests) the selected models, independent ones at
    /// once; an error only when nothing can run.
    pub async fn run_models(
        &self,
        run: &ModelRun,
        observer: &Arc<dyn Observer>,
    ) -> Result<RunSummary> {
        let project = self.project().await?;
        if project.models.is_empty() {
            return Err(AppError::NoModels(self.settings.queries_dir()));
        }
        let selected = select::resolve(&project, &run.select, &run.exclude)?;
        let command = match (&run.run_id, run.build) {
            (Some(_), _) => "refresh",
            (None, true) => "run",
            (None, false) => "test",
        };
        let options = RunOptions {
            select: run.select.clone(),
            exclude: run.exclude.clone(),
            full_refresh: run.full_refresh,
            threads: run.threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
            }),
            build: run.build,
            command: command.to_string(),
            run_id: run.run_id.clone(),
        };
        observer.event(Event::Begin {
            stage: Stage::Run,
            items: selected.len(),
            width: project.name_width(),
        });
        let summary =
            crate::transform::run::run(self.lake.clone(), project, options, |event| match event {
                RunEvent::Started(name) => observer.event(Event::Started {
                    stage: Stage::Run,
                    item: &name.to_string(),
                }),
                RunEvent::Finished(outcome) => observer.event(Event::Model(outcome)),
            })
            .await?;
        observer.event(Event::Ran(&summary));
        observer.event(Event::End(Stage::Run));
        Ok(summary)
    }

    /// Exports the selected tables (see [`export::plan`]) to the warehouse, each on its own:
    /// one that fails, or was never built, leaves the others to go. Models whose latest
    /// error-level tests failed are held back. An error only when nothing can start.
    pub async fn export(
        &self,
        select: &[String],
        exclude: &[String],
        observer: &Arc<dyn Observer>,
    ) -> Result<ExportReport> {
        let project = self.project().await?;
        let tables = self.lake.list_tables().await?;
        let plan = export::plan(&project, &tables, select, exclude)?;
        let held_back = export::held_back(&self.lake).await?;
        let warehouse = self.warehouse().await?;
        observer.event(Event::Begin {
            stage: Stage::Export,
            items: plan.len(),
            width: plan
                .iter()
                .map(|p| p.table.to_string().len())
                .max()
                .unwrap_or(0),
        });
        let mut report = ExportReport::default();
        for planned in plan {
            let table = planned.table;
            let item = table.to_string();
            let outcome = if let Some((_, run_id)) = held_back.iter().find(|(m, _)| *m == table) {
                ExportOutcome::HeldBack {
                    run_id: run_id.clone(),
                }
            } else if !planned.built {
                ExportOutcome::Failed(ExportError::NotBuilt(table.clone()))
            } else {
                observer.event(Event::Started {
                    stage: Stage::Export,
                    item: &item,
                });
                let rows = |rows: u64| {
                    observer.event(Event::Rows {
                        stage: Stage::Export,
                        item: &item,
                        rows,
                    })
                };
                match export::export_table(
                    &self.lake,
                    warehouse,
                    &table,
                    &planned.target,
                    &planned.key,
                    &rows,
                )
                .await
                {
                    Ok(done) => ExportOutcome::Done(done),
                    Err(e) => ExportOutcome::Failed(e),
                }
            };
            observer.event(Event::Exported {
                table: &table,
                outcome: &outcome,
            });
            report.tables.push((table, outcome));
        }
        observer.event(Event::End(Stage::Export));
        Ok(report)
    }

    /// The maintenance options `[maintain]` sets.
    pub fn maintain_options(&self) -> MaintainOptions {
        let maintain = &self.settings.maintain;
        let retention = maintain
            .vacuum_retention
            .unwrap_or(crate::lake::maintain::DEFAULT_RETENTION);
        MaintainOptions {
            retention,
            target_file_size: maintain.target_file_size,
            dry_run: false,
            unsafe_retention: false,
        }
    }

    /// Compacts, checkpoints and vacuums each table in turn (every table when none is
    /// named); a failed table does not stop the others.
    pub async fn maintain(
        &self,
        tables: &[TableName],
        options: &MaintainOptions,
        observer: &Arc<dyn Observer>,
    ) -> Result<Vec<(TableName, std::result::Result<MaintainReport, LakeError>)>> {
        let tables = if tables.is_empty() {
            self.lake.list_tables().await?
        } else {
            tables.to_vec()
        };
        observer.event(Event::Begin {
            stage: Stage::Maintain,
            items: tables.len(),
            width: tables
                .iter()
                .map(|t| t.to_string().len())
                .max()
                .unwrap_or(0),
        });
        let mut results = Vec::new();
        for table in tables {
            observer.event(Event::Started {
                stage: Stage::Maintain,
                item: &table.to_string(),
            });
            let result = self.lake.maintain(&table, options).await;
            observer.event(Event::Maintained {
                table: &table,
                result: &result,
                dry_run: options.dry_run,
            });
            results.push((table, result));
        }
        observer.event(Event::End(Stage::Maintain));
        Ok(results)
    }
}
