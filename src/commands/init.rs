//! `lake init [DIR]`: a new project.

use anyhow::{Context as _, Result, bail};

use super::Context;
use crate::cli::InitArgs;
use crate::config::{FILE_NAME, TEMPLATE};

/// The example project, the repository's own `queries/` and `data_tests/`: Spotify models
/// over the raw tables `lake ingest spotify-export` and `lake extract spotify` land, with their
/// tests (written to the new project's `tests/`).
const EXAMPLE: &[(&str, &str)] = &[
    (
        "queries/export_plays.sql",
        include_str!("../../queries/export_plays.sql"),
    ),
    (
        "queries/api_plays.sql",
        include_str!("../../queries/api_plays.sql"),
    ),
    ("queries/plays.sql", include_str!("../../queries/plays.sql")),
    (
        "queries/daily_listening.sql",
        include_str!("../../queries/daily_listening.sql"),
    ),
    (
        "queries/top_artists_monthly.sql",
        include_str!("../../queries/top_artists_monthly.sql"),
    ),
    (
        "queries/track_skip_rate.sql",
        include_str!("../../queries/track_skip_rate.sql"),
    ),
    (
        "queries/listening_sessions.sql",
        include_str!("../../queries/listening_sessions.sql"),
    ),
    (
        "queries/playlist_tracks.sql",
        include_str!("../../queries/playlist_tracks.sql"),
    ),
    (
        "tests/skip_rate_is_a_fraction.sql",
        include_str!("../../data_tests/skip_rate_is_a_fraction.sql"),
    ),
    (
        "tests/sessions_cover_every_play.sql",
        include_str!("../../data_tests/sessions_cover_every_play.sql"),
    ),
];

const GITIGNORE: &str = "# The local lake and the SQLite warehouse are built, not written.\n/lake/\n/warehouse.db\n/warehouse.db-*\n# The Spotify token file: a secret.\n/.lake/\n";

pub fn run(ctx: &Context, args: InitArgs) -> Result<()> {
    let dir = &args.dir;
    let config = dir.join(FILE_NAME);
    if config.exists() {
        bail!(
            "failed to init {}: {} already exists",
            dir.display(),
            config.display()
        );
    }
    let write = |path: std::path::PathBuf, text: &str| -> Result<()> {
        if path.exists() {
            return Ok(());
        }
        std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))
    };
    for sub in ["queries", "tests"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("failed to create {}", dir.join(sub).display()))?;
    }
    write(config, TEMPLATE)?;
    for (path, text) in EXAMPLE {
        write(dir.join(path), text)?;
    }
    write(dir.join(".gitignore"), GITIGNORE)?;
    if !ctx.quiet() {
        eprintln!("created a lake project in {}", dir.display());
    }
    Ok(())
}
