//! Database connections shared by the SQL sources and the warehouse: URLs shown without their
//! password, and pools that fail fast.

use std::str::FromStr;

use sqlx::pool::{Pool, PoolOptions};
use sqlx::{Connection, Database};
use tokio::sync::OnceCell;

/// The URL with its password replaced by `***`, for messages and records.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(a URL that does not parse)".into(),
    }
}

/// A pool of at most `max` connections. One direct connection is made first, so a refused or
/// unreachable host fails at once with its real cause, where a pool would retry until its
/// timeout and report only that.
pub async fn pool<DB: Database>(
    options: <DB::Connection as Connection>::Options,
    max: u32,
) -> Result<Pool<DB>, sqlx::Error> {
    DB::Connection::connect_with(&options)
        .await?
        .close()
        .await?;
    PoolOptions::<DB>::new()
        .max_connections(max)
        .connect_with(options)
        .await
}

/// The file of a `sqlite://file.db` URL, as written: a relative path stays relative.
pub fn sqlite_path(url: &str) -> &str {
    url.trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default()
}

/// A pool made on first use from a URL and a password kept apart from it (the password, when
/// given, replaces the URL's).
pub struct LazyPool<DB: Database> {
    url: String,
    password: Option<String>,
    pool: OnceCell<Pool<DB>>,
}

impl<DB: Database> LazyPool<DB>
where
    <DB::Connection as Connection>::Options: FromStr,
{
    /// Nothing connects until [`LazyPool::get`].
    pub fn new(url: &str, password: Option<String>) -> Self {
        LazyPool {
            url: url.to_string(),
            password,
            pool: OnceCell::new(),
        }
    }

    /// The pool, connecting (at most `max` connections) the first time.
    pub async fn get(&self, max: u32) -> Result<&Pool<DB>, PoolError> {
        self.pool
            .get_or_try_init(|| async {
                let mut url = url::Url::parse(&self.url).map_err(|_| PoolError::Url)?;
                if let Some(p) = &self.password {
                    url.set_password(Some(p)).map_err(|()| PoolError::Url)?;
                }
                let options = url.as_str().parse().map_err(|_| PoolError::Url)?;
                pool(options, max).await.map_err(PoolError::Connect)
            })
            .await
    }
}

/// Why a [`LazyPool`] has no pool. Neither says the URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The URL (with its password set) does not parse.
    #[error("the URL does not parse")]
    Url,
    /// The database does not answer or refuses the login.
    #[error("failed to connect: {0}")]
    Connect(sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://warehouse.db"), "sqlite://warehouse.db");
        assert!(!redact_url("not a url secret").contains("secret"));
    }
}
