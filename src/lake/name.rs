//! Table names: `schema.name`, validated so that a name can neither escape the lake root
//! nor need quoting in SQL.

use std::fmt;
use std::str::FromStr;

use super::LakeError;

/// Longest schema or table name lake accepts (PostgreSQL's identifier limit).
const MAX_LEN: usize = 63;

/// The schema of landed data.
pub const RAW: &str = "raw";
/// The schema of model outputs.
pub const CURATED: &str = "curated";
/// The schema of lake's own bookkeeping.
pub const INTERNAL: &str = "_lake";

/// A validated `schema.name` pair. Both parts match `[a-z_][a-z0-9_]*` and are at most
/// 63 characters, so they are safe as path segments and as unquoted SQL identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    schema: String,
    name: String,
}

impl TableName {
    /// Builds a name from its two parts, validating each.
    pub fn new(schema: &str, name: &str) -> Result<Self, LakeError> {
        let full = format!("{schema}.{name}");
        let invalid = |why: PartError| LakeError::InvalidName {
            name: full.clone(),
            why: why.to_string(),
        };
        validate_part(schema).map_err(invalid)?;
        validate_part(name).map_err(invalid)?;
        Ok(Self {
            schema: schema.to_string(),
            name: name.to_string(),
        })
    }

    /// The schema part, such as `raw`.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table part, such as `plays`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why one part of a table name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// Nothing there.
    #[error("a part is empty")]
    Empty,
    /// A first character other than a lowercase letter or `_`.
    #[error("`{0}` must start with a lowercase letter or `_`")]
    Start(String),
    /// A character outside lowercase letters, digits and `_`.
    #[error("`{0}` contains {1:?}; use only lowercase letters, digits and `_`")]
    Char(String, char),
    /// Longer than [`MAX_LEN`].
    #[error("`{0}` is longer than {MAX_LEN} characters")]
    Long(String),
}

/// Checks one part of a name.
pub fn validate_part(part: &str) -> Result<(), PartError> {
    match part.chars().next() {
        None => return Err(PartError::Empty),
        Some(c) if !(c.is_ascii_lowercase() || c == '_') => {
            return Err(PartError::Start(part.to_string()));
        }
        _ => {}
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(PartError::Char(part.to_string(), c));
    }
    if part.len() > MAX_LEN {
        return Err(PartError::Long(part.to_string()));
    }
    Ok(())
}

impl FromStr for TableName {
    type Err = LakeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((schema, name)) => Self::new(schema, name),
            None => Err(LakeError::InvalidName {
                name: s.to_string(),
                why: "expected `schema.name`, such as `raw.plays`".into(),
            }),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an identifier for DataFusion SQL: `a"b` becomes `"a""b"`.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        let t: TableName = "raw.spotify_plays2".parse().unwrap();
        assert_eq!((t.schema(), t.name()), ("raw", "spotify_plays2"));
        assert!("_lake.ingests".parse::<TableName>().is_ok());
    }

    #[test]
    fn refuses_escapes_and_sql_breakers() {
        for bad in [
            "plays",
            "raw.",
            ".plays",
            "raw.../x",
            "raw.a/b",
            "raw.a.b",
            "raw.Plays",
            "raw.a b",
            "raw.a;drop",
            "raw.a\"b",
            "raw.1a",
            "../raw.x",
            "raw.%2e%2e",
        ] {
            assert!(bad.parse::<TableName>().is_err(), "{bad} was accepted");
        }
        assert!(TableName::new("raw", &"a".repeat(64)).is_err());
    }
}
