//! The token file: the listener's refresh token, as rspotify's JSON, readable by its owner only.
//! It is replaced atomically (write a sibling, then rename), so a crash never leaves half a
//! token.

use std::io::Write;
use std::path::{Path, PathBuf};

use rspotify::Token;

use crate::config::Settings;
use crate::extract::ExtractError;

/// The token file in use: `spotify.token_file`, relative to the project, or
/// `.lake/spotify-token.json` in the project.
pub fn path(settings: &Settings) -> PathBuf {
    match &settings.spotify.token_file {
        Some(p) => crate::paths::under(&settings.project_dir, p),
        None => settings
            .project_dir
            .join(".lake")
            .join("spotify-token.json"),
    }
}

/// Reads the token file.
pub fn read(path: &Path) -> Result<Token, ExtractError> {
    let text = std::fs::read_to_string(path).map_err(|e| ExtractError::Auth {
        message: if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "no token file at {}: run `lake auth spotify` first",
                path.display()
            )
        } else {
            format!("failed to read token file {}: {e}", path.display())
        },
    })?;
    serde_json::from_str(&text).map_err(|e| ExtractError::Auth {
        message: format!(
            "failed to parse token file {} at line {}, column {}: run `lake auth spotify` again",
            path.display(),
            e.line(),
            e.column()
        ),
    })
}

/// Writes the token file with mode 0600, replacing any old one atomically.
pub fn write(path: &Path, token: &Token) -> Result<(), ExtractError> {
    let io_err = |e: std::io::Error| ExtractError::WriteFile {
        path: path.to_path_buf(),
        cause: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_err)?;
    let json = serde_json::to_vec_pretty(token).expect("a token serializes");
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)
}
