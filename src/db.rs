//! Database connections shared by the SQL sources and the warehouse: URLs shown without their
//! password, and pools that fail fast.

use sqlx::pool::{Pool, PoolOptions};
use sqlx::{Connection, Database};

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
