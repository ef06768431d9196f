//! The command line, exactly as typed. Doc comments here are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::extract::files::Format;
#[cfg(feature = "bench")]
use crate::extract::spotify_export::generate;
use crate::output::OutputFormat;

/// lake: Spotify data into a Delta lake and a BI-ready warehouse.
#[derive(Debug, Parser)]
#[command(name = "lake", version, about, max_term_width = 100)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The config file [default: lake.toml in this folder or a parent; env: LAKE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the lake is: a folder or s3://bucket/prefix (overrides `root`)
    #[arg(long, global = true, value_name = "ROOT")]
    pub root: Option<String>,
    /// Override any setting, such as `--set s3.region=eu-west-1` (repeatable)
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print no progress or summaries, only results and errors
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Logs on stderr: text, or json lines for log collectors (LAKE_LOG sets levels)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// `--log-format`: human-readable lines (warnings and errors unless LAKE_LOG says more), or
/// JSON lines from info level up.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new project: lake.toml, queries/ with an example model, and a .gitignore
    Init(InitArgs),
    /// Land CSV, JSON, NDJSON or Parquet files, or the Spotify data export, in one commit
    ///
    /// `lake ingest PATH... --table schema.name` lands files; `lake ingest spotify-export PATH`
    /// lands the Spotify personal data export (a folder or my_spotify_data.zip).
    Ingest(IngestArgs),
    /// Pull from the Spotify API or SQL databases into raw tables: `lake extract spotify`,
    /// `lake extract sql`
    Extract(ExtractArgs),
    /// Authorize lake with a service: `lake auth spotify`
    Auth(AuthArgs),
    /// Benchmark helpers: `lake bench generate` writes a deterministic Spotify export
    Bench(BenchArgs),
    /// Build the models in queries/ in dependency order, and run their tests
    Run(RunArgs),
    /// Run the models' tests against the tables as they are
    Test(TestArgs),
    /// Show, without running anything, the models in run order and what each would read
    Plan(PlanArgs),
    /// List recent runs, or one run's models
    Runs(RunsArgs),
    /// Load curated tables into the warehouse (PostgreSQL, MySQL, or SQLite by default)
    Export(ExportArgs),
    /// The scheduled job: extract the SQL sources, run the models and tests, export what
    /// passed, under a lock on the lake
    ///
    /// Exit codes: 0 all succeeded; 1 a stage failed; 3 tests failed, the rest ran; 4 it could
    /// not start (settings, or another refresh holds the lake); 143/130 stopped by SIGTERM/SIGINT.
    Refresh(RefreshArgs),
    /// Compact small files, checkpoint long logs and vacuum old files, under the lake's lock
    Maintain(MaintainArgs),
    /// Run `lake refresh` on the cron expressions of lake.toml's [[schedule]] jobs, until
    /// stopped (SIGTERM or Ctrl-C)
    Schedule(ScheduleArgs),
    /// Each table's freshness: its last update and age against warn_after / error_after
    ///
    /// Exits 1 when a table is older than its error_after.
    Status,
    /// Run SQL over every table in the lake
    Query(QueryArgs),
    /// An interactive SQL shell over the lake
    Shell,
    /// List the tables: version, rows, files, size and last commit
    Tables,
    /// Show a table's schema and properties
    Describe(TableArg),
    /// Show a table's commits, newest first
    History(HistoryArgs),
}

/// Which models: `--select` and `--exclude`.
#[derive(Debug, Args, Clone, Default)]
pub struct Selection {
    /// Models to include: NAME, NAME+ (and downstream), +NAME (and upstream), tag:TAG,
    /// path:queries/marts (repeatable) [default: all]
    #[arg(long, short, value_name = "SELECTOR", num_args = 1.., action = clap::ArgAction::Append)]
    pub select: Vec<String>,
    /// Models to leave out, in the same forms (repeatable)
    #[arg(long, value_name = "SELECTOR", num_args = 1.., action = clap::ArgAction::Append)]
    pub exclude: Vec<String>,
}

/// `lake run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which models.
    #[command(flatten)]
    pub selection: Selection,
    /// Rebuild incremental models from all their input rows
    #[arg(long)]
    pub full_refresh: bool,
    /// Models built at once [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `lake test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Which models.
    #[command(flatten)]
    pub selection: Selection,
    /// Tests run at once [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `lake plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Which models.
    #[command(flatten)]
    pub selection: Selection,
    /// Add DataFusion's plan of each model
    #[arg(long)]
    pub explain: bool,
}

/// `lake export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Which models.
    #[command(flatten)]
    pub selection: Selection,
}

/// `lake refresh`.
#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// Which models to run and export.
    #[command(flatten)]
    pub selection: Selection,
    /// Leave out extracting the SQL sources
    #[arg(long)]
    pub skip_extract: bool,
    /// Leave out the export to the warehouse
    #[arg(long)]
    pub skip_export: bool,
    /// Rebuild incremental models from scratch instead of merging new rows
    #[arg(long)]
    pub full_refresh: bool,
    /// When another refresh holds the lake, wait up to this long for it (`90s`, `10m`)
    /// [default: exit at once]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
    /// How long the lock lasts unless renewed (it is renewed while the refresh runs): a
    /// refresh that crashed blocks others this long at most
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// Models built at once [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `lake runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Show this run's models (its id, or the start of it)
    pub run: Option<String>,
    /// Show at most this many runs
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
}

/// `lake init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to create the project in
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// How `lake ingest` treats rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IngestMode {
    /// Add the rows
    Append,
    /// Replace the table's rows
    Overwrite,
    /// Upsert on --key; within the input, the last row of a key wins
    Merge,
}

/// `lake ingest`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct IngestArgs {
    /// A source with a layout of its own
    #[command(subcommand)]
    pub source: Option<IngestSource>,
    /// Files, folders, globs or s3:// prefixes
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// The target table, as schema.name
    #[arg(long, short, required = true, value_name = "SCHEMA.NAME")]
    pub table: Option<String>,
    /// The input format [default: from each file's extension]
    #[arg(long, short)]
    pub format: Option<Format>,
    /// How to treat rows already in the table
    #[arg(long, short, value_enum, default_value_t = IngestMode::Append)]
    pub mode: IngestMode,
    /// Key columns for --mode merge, comma-separated
    #[arg(long, short, value_delimiter = ',', value_name = "COL[,COL]")]
    pub key: Vec<String>,
    /// Write the rows sorted by these columns, in files that do not overlap on the first;
    /// later writes keep the table's key [default: the table's key, if it has one]
    #[arg(long, value_delimiter = ',', value_name = "COL[,COL]")]
    pub sort_by: Vec<String>,
}

/// Sources `lake ingest` knows by name.
#[derive(Debug, Subcommand)]
pub enum IngestSource {
    /// The Spotify personal data export (a folder or my_spotify_data.zip) into
    /// raw.spotify_streams, without duplicates
    SpotifyExport(SpotifyExportArgs),
}

/// `lake ingest spotify-export`.
#[derive(Debug, Args)]
pub struct SpotifyExportArgs {
    /// The export: a folder or the zip Spotify sent
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// `lake extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The source.
    #[command(subcommand)]
    pub source: ExtractSource,
}

/// Sources `lake extract` pulls from.
#[derive(Debug, Subcommand)]
pub enum ExtractSource {
    /// The Spotify Web API: each stream into raw.spotify_<stream>, one commit per stream
    Spotify(SpotifyArgs),
    /// SQL databases: each [sources.<name>] of lake.toml into its raw table, one commit each
    Sql(SqlArgs),
}

/// `lake extract sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The sources to run [default: every one in lake.toml]
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// For incremental sources: read every key at the source and set `_deleted_at` on the rows
    /// whose key is gone
    #[arg(long)]
    pub detect_deletes: bool,
}

/// `lake extract spotify`.
#[derive(Debug, Args)]
pub struct SpotifyArgs {
    /// Run only these streams (repeatable): playlist_tracks, playlists, saved_tracks,
    /// recently_played, top_tracks, top_artists, followed_artists, tracks, albums, artists
    #[arg(long = "stream", value_name = "NAME", value_delimiter = ',')]
    pub streams: Vec<String>,
}

/// `lake auth`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// The service.
    #[command(subcommand)]
    pub service: AuthService,
}

/// Services `lake auth` knows.
#[derive(Debug, Subcommand)]
pub enum AuthService {
    /// Authorize lake for one listener (authorization code with PKCE, localhost callback);
    /// the refresh token goes to the token file with mode 0600
    Spotify(SpotifyAuthArgs),
}

/// `lake auth spotify`.
#[derive(Debug, Args)]
pub struct SpotifyAuthArgs {
    /// How long to wait for the browser's callback, in seconds
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

/// `lake bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: BenchAction,
}

/// `lake bench` actions.
#[derive(Debug, Subcommand)]
pub enum BenchAction {
    /// Write a generated extended streaming history export, the same for the same seed
    #[cfg(feature = "bench")]
    Generate(GenerateArgs),
    /// Append N one-row commits to a table, for measuring tables with long logs
    Commits(CommitsArgs),
}

/// `lake bench commits`.
#[derive(Debug, Args)]
pub struct CommitsArgs {
    /// The table, as schema.name
    #[arg(long, default_value = "raw.bench_commits")]
    pub table: String,
    /// How many commits
    #[arg(long, short, default_value_t = 1000)]
    pub n: u64,
}

/// `lake bench generate`.
#[cfg(feature = "bench")]
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many plays
    #[arg(long, default_value_t = 10_000_000)]
    pub plays: u64,
    /// The number of the first play: `--from 10000000 --plays 16000` writes the 16,000 plays
    /// that follow a 10 M-play export (one more day with the default shape)
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// The folder to write Streaming_History_*.json files into
    #[arg(long, short, value_name = "DIR", default_value = "bench-data/export")]
    pub out: PathBuf,
    /// The seed; the same seed gives the same plays
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Listeners; each play carries its listener's `username`
    #[arg(long, default_value_t = generate::Shape::MANY.users)]
    pub users: u64,
    /// Artists in the catalog (40 tracks each); low numbers are played far more often
    #[arg(long, default_value_t = generate::Shape::MANY.artists)]
    pub artists: u64,
    /// How often each listener starts a session of 16 plays
    #[arg(long, value_name = "DURATION", default_value = "1day", value_parser = humantime::parse_duration)]
    pub session_every: std::time::Duration,
    /// Also write the matching Web API rows (recently played, playlist tracks, the track
    /// catalog) as NDJSON files here, to land with `lake ingest`
    #[arg(long, value_name = "DIR")]
    pub api: Option<PathBuf>,
    /// Plays per file (Spotify writes about 15,000)
    #[arg(long, default_value_t = 15_000)]
    pub per_file: usize,
}

/// `lake query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL to run
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    pub sql: Option<String>,
    /// Read the SQL from a file
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How to print the results
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the results to a file instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A table argument.
#[derive(Debug, Args)]
pub struct TableArg {
    /// The table, as schema.name
    pub table: String,
}

/// `lake maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// The tables, as schema.name [default: every table in the lake]
    #[arg(value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Say what vacuum would delete; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep removed files this long for readers and time travel (`168h`, `30d`; 1h at least)
    /// [default: maintain.vacuum_retention, else 7 days]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub retention: Option<std::time::Duration>,
    /// Allow a retention under 1 hour: a query running on an older version may then fail, and
    /// time travel to it will (Delta's retentionDurationCheck off)
    #[arg(long)]
    pub unsafe_retention: bool,
    /// When a refresh holds the lake, wait up to this long for it [default: exit at once]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
}

/// `lake schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// On SIGTERM or Ctrl-C, let a running refresh finish for this long, then stop it (a
    /// stopped refresh leaves the last committed state; the next run picks up from there)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub stop_timeout: std::time::Duration,
}

/// `lake history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The table, as schema.name
    pub table: String,
    /// Show at most this many commits
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}
