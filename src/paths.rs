//! Local paths, resolved once and the way a shell user means them: `~` is the home folder, a
//! relative path starts at the working directory, `..` and symlinks are followed as the kernel
//! follows them, and a glob expands to what it matches. Every command that takes a local path
//! (`ingest`, `ingest spotify-export`, `query -f`, `--output`, `--config`, a local `root`) goes
//! through here.
//!
//! Resolved paths are canonical, so they can become object store keys and `file://` URLs, which
//! refuse `..`. Messages keep the path as the user typed it.

use std::io;
use std::path::{Path, PathBuf};

/// Errors from resolving a local path. Each names the path as typed.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Nothing is there.
    #[error("failed to find {}: no such file or directory", path.display())]
    NotFound {
        /// The path as typed.
        path: PathBuf,
    },
    /// The path or a folder on it cannot be read.
    #[error("failed to resolve {}", path.display())]
    Io {
        /// The path as typed.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A glob that does not parse.
    #[error("failed to expand {pattern}")]
    Pattern {
        /// The pattern as typed.
        pattern: String,
        /// Why.
        #[source]
        source: glob::PatternError,
    },
    /// A glob that matches nothing.
    #[error("failed to expand {pattern}: it matches no files")]
    NoMatch {
        /// The pattern as typed.
        pattern: String,
    },
}

/// A `Result` of this module.
pub type Result<T, E = PathError> = std::result::Result<T, E>;

/// `~` or `~/rest` as the home folder (or under it); any other path as it is.
pub fn expand_home(path: &Path) -> PathBuf {
    let mut parts = path.components();
    match (parts.next(), std::env::home_dir()) {
        (Some(std::path::Component::Normal(first)), Some(home)) if first == "~" => {
            home.join(parts.as_path())
        }
        _ => path.to_path_buf(),
    }
}

/// A path from a setting, relative to `base` (the project folder): `~` expanded, an absolute
/// path as it is. Not resolved further: it may not exist yet.
pub fn under(base: &Path, path: impl AsRef<Path>) -> PathBuf {
    base.join(expand_home(path.as_ref()))
}

/// An existing file or folder as its canonical absolute path: `~` expanded, relative to the
/// working directory, `..` and symlinks resolved.
pub fn existing(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(expand_home(path)).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PathError::NotFound {
            path: path.to_path_buf(),
        },
        _ => PathError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// A file about to be written: its folder must exist and is resolved as [`existing`] does; the
/// file itself may not exist yet.
pub fn new_file(path: &Path) -> Result<PathBuf> {
    let expanded = expand_home(path);
    if expanded.exists() {
        return existing(path);
    }
    let name = expanded.file_name().ok_or_else(|| PathError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "it names no file"),
    })?;
    let parent = match expanded.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let folder = std::fs::canonicalize(&parent).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PathError::NotFound {
            path: parent.clone(),
        },
        _ => PathError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    Ok(folder.join(name))
}

/// Whether `input` holds glob syntax (`*`, `?` or `[`).
pub fn is_pattern(input: &str) -> bool {
    input.contains(['*', '?', '['])
}

/// The files and folders a glob matches, as (the match as the pattern spelled it, its canonical
/// path), in order. `~` and `..` work in the pattern as they do in a shell.
pub fn glob(pattern: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    let expanded = expand_home(Path::new(pattern));
    let text = expanded.to_string_lossy();
    let entries = glob::glob(&text).map_err(|source| PathError::Pattern {
        pattern: pattern.to_string(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PathError::Io {
            path: e.path().to_path_buf(),
            source: e.into(),
        })?;
        let canonical = existing(&entry)?;
        found.push((entry, canonical));
    }
    if found.is_empty() {
        return Err(PathError::NoMatch {
            pattern: pattern.to_string(),
        });
    }
    Ok(found)
}

/// The files under a folder, recursively and in name order, symlinks followed (a symlink loop
/// is an error, not a hang), as (the path under `dir` as given, its canonical path).
pub fn files_under(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(expand_home(dir))
        .follow_links(true)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| PathError::Io {
            path: e
                .path()
                .map_or_else(|| dir.to_path_buf(), Path::to_path_buf),
            source: e.into(),
        })?;
        if entry.file_type().is_file() {
            let canonical = existing(entry.path())?;
            out.push((entry.into_path(), canonical));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_expanded_only_at_the_start() {
        let home = std::env::home_dir().unwrap();
        assert_eq!(expand_home(Path::new("~")), home);
        assert_eq!(expand_home(Path::new("~/a/b.csv")), home.join("a/b.csv"));
        assert_eq!(expand_home(Path::new("a/~/b")), Path::new("a/~/b"));
        assert_eq!(expand_home(Path::new("~user/b")), Path::new("~user/b"));
    }

    #[test]
    fn dot_dot_and_symlinks_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("p/sub")).unwrap();
        std::fs::write(root.join("plays.csv"), "a\n1\n").unwrap();
        std::os::unix::fs::symlink(root.join("p"), root.join("link")).unwrap();
        let through = root.join("p/sub/../../plays.csv");
        assert_eq!(existing(&through).unwrap(), root.join("plays.csv"));
        assert_eq!(
            existing(&root.join("link/sub")).unwrap(),
            root.join("p/sub")
        );
        let missing = existing(&root.join("p/../nope.csv")).unwrap_err();
        assert!(missing.to_string().contains("p/../nope.csv"), "{missing}");
        assert_eq!(
            new_file(&root.join("p/sub/../out.csv")).unwrap(),
            root.join("p/out.csv")
        );
        let pattern = format!("{}/p/../*.csv", root.display());
        let found = glob(&pattern).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, root.join("plays.csv"));
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("a/up")).unwrap();
        assert!(files_under(dir.path()).is_err());
    }
}
