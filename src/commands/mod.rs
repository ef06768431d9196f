//! One file per subcommand: settings -> library call -> output.

mod auth;
mod bench;
mod describe;
mod export;
mod extract;
mod history;
mod ingest;
mod init;
mod maintain;
mod plan;
mod query;
mod refresh;
mod run;
mod runs;
mod schedule;
mod shell;
mod spotify_export;
mod status;
mod tables;

use std::sync::{Arc, OnceLock};

use anyhow::Result;

use crate::app::{App, Observer};
use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{Overrides, Settings};
use crate::lake::Lake;
use crate::lake::lease::{self, HeldLease};

/// What every command gets: the flags, the settings (resolved once, on first use) and the
/// [`App`] (built once, on first use: commands such as `init` need neither).
pub struct Context {
    global: GlobalArgs,
    settings: OnceLock<Settings>,
    app: tokio::sync::OnceCell<App>,
}

impl Context {
    /// The settings: defaults < lake.toml < LAKE_* < flags.
    pub fn settings(&self) -> Result<&Settings> {
        if let Some(s) = self.settings.get() {
            return Ok(s);
        }
        let overrides = Overrides {
            config: self.global.config.clone(),
            root: self.global.root.clone(),
            set: self.global.set.clone(),
        };
        let settings = Settings::load(&overrides)?;
        Ok(self.settings.get_or_init(|| settings))
    }

    /// The application: the settings and the open lake.
    pub async fn app(&self) -> Result<&App> {
        if let Some(app) = self.app.get() {
            return Ok(app);
        }
        let settings = self.settings()?.clone();
        Ok(self.app.get_or_try_init(|| App::open(settings)).await?)
    }

    /// The open lake.
    pub async fn lake(&self) -> Result<&Arc<Lake>> {
        Ok(self.app().await?.lake())
    }

    /// The CLI's observer of a stage: spinners, and a line per item.
    pub fn lines(&self, build: bool) -> Arc<dyn Observer> {
        crate::progress::Lines::new(self.quiet(), build)
    }

    /// Whether to keep stderr free of progress and summaries: `--quiet`, or JSON logs there.
    pub fn quiet(&self) -> bool {
        self.global.quiet || self.json_logs()
    }

    /// The global flags but `--config`, as a child `lake` process takes them.
    pub fn child_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(r) = &self.global.root {
            args.extend(["--root".to_string(), r.clone()]);
        }
        for s in &self.global.set {
            args.extend(["--set".to_string(), s.clone()]);
        }
        if self.global.quiet {
            args.push("--quiet".into());
        }
        if self.json_logs() {
            args.extend(["--log-format".to_string(), "json".to_string()]);
        }
        args
    }

    /// Whether stderr carries JSON logs, which nothing else should interleave with.
    pub fn json_logs(&self) -> bool {
        self.global.log_format == crate::cli::LogFormat::Json
    }
}

/// Takes and holds the lake's lease for `command`, with a spinner while another process holds
/// it; past `wait` (none by default), that is an [`Exit`] with [`exit::CANNOT_START`].
async fn hold_lake(
    ctx: &Context,
    lake: &Lake,
    command: &str,
    wait: Option<std::time::Duration>,
    ttl: std::time::Duration,
) -> Result<HeldLease> {
    let spinner = std::sync::OnceLock::new();
    let quiet = ctx.quiet();
    let waiting = |holder: &lease::LeaseInfo| {
        spinner
            .get_or_init(|| crate::progress::spinner(quiet, String::new()))
            .set_message(format!("waiting for {}", holder.describe()));
    };
    let held = lake
        .hold_lease(
            lease::LAKE,
            command,
            ttl,
            wait.unwrap_or_default(),
            &waiting,
        )
        .await;
    if let Some(s) = spinner.get() {
        s.finish_and_clear();
    }
    held.map_err(|e| {
        let message = match e {
            crate::lake::LakeError::LeaseHeld { holder, .. } => format!(
                "failed to start the {command}: another process holds the lake: {holder}{}",
                if wait.is_none() {
                    "; pass --wait 30m to wait for it"
                } else {
                    ""
                }
            ),
            e => format!("failed to start the {command}: {e}"),
        };
        Exit {
            code: exit::CANNOT_START,
            message,
        }
        .into()
    })
}

/// Exit codes a scheduler can alert on (`lake refresh`); 2 is clap's, for bad usage.
pub mod exit {
    /// A stage (or any other command) failed.
    pub const FAILED: u8 = 1;
    /// Error-level tests failed; the other stages ran.
    pub const TESTS_FAILED: u8 = 3;
    /// Nothing ran: bad settings, or another process holds the lake.
    pub const CANNOT_START: u8 = 4;
}

/// A failure that exits with its own code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The exit code.
    pub code: u8,
    /// What happened.
    pub message: String,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Context {
        global: cli.global,
        settings: OnceLock::new(),
        app: tokio::sync::OnceCell::new(),
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Ingest(crate::cli::IngestArgs {
            source: Some(crate::cli::IngestSource::SpotifyExport(args)),
            ..
        }) => spotify_export::run(&ctx, args).await,
        Command::Ingest(args) => ingest::run(&ctx, args).await,
        Command::Extract(args) => extract::run(&ctx, args).await,
        Command::Auth(args) => auth::run(&ctx, args).await,
        Command::Bench(args) => bench::run(&ctx, args).await,
        Command::Run(args) => run::run(&ctx, args).await,
        Command::Test(args) => run::test(&ctx, args).await,
        Command::Plan(args) => plan::run(&ctx, args).await,
        Command::Runs(args) => runs::run(&ctx, args).await,
        Command::Export(args) => export::run(&ctx, args).await,
        Command::Refresh(args) => refresh::run(&ctx, args).await,
        Command::Maintain(args) => maintain::run(&ctx, args).await,
        Command::Status => status::run(&ctx).await,
        Command::Schedule(args) => schedule::run(&ctx, args).await,
        Command::Query(args) => query::run(&ctx, args).await,
        Command::Shell => shell::run(&ctx).await,
        Command::Tables => tables::run(&ctx).await,
        Command::Describe(args) => describe::run(&ctx, args).await,
        Command::History(args) => history::run(&ctx, args).await,
    }
}
