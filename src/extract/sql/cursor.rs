//! An incremental source's cursor: its kinds, the lookback in its unit, the filter it puts on
//! the read, and where it is saved (the metadata of the commit that landed the rows up to it).

use arrow::array::{Array, Date32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};

use super::{Driver, Kind, SOURCE_CURSOR_KEY, SqlColumn, fail};
use crate::extract::ExtractError;
use crate::lake::{Lake, TableName};

/// An incremental source's position, saved with the commit that landed the rows up to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceCursor {
    /// The cursor column.
    pub column: String,
    /// Its largest value read: an integer, days after the epoch for a date, or microseconds
    /// after the epoch for a timestamp.
    pub value: i64,
    /// How to read `value`.
    pub kind: CursorKind,
}

/// What a cursor's value counts; saved as `int`, `date`, `timestamp` or `timestamptz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CursorKind {
    /// An increasing integer.
    Int,
    /// Days after the epoch.
    Date,
    /// Microseconds after the epoch, without a time zone.
    Timestamp,
    /// Microseconds after the epoch, in UTC.
    Timestamptz,
}

impl SourceCursor {
    pub(super) fn of(col: &SqlColumn, value: i64) -> Option<SourceCursor> {
        let kind = match col.kind {
            Kind::Int => CursorKind::Int,
            Kind::Date => CursorKind::Date,
            Kind::Timestamp => CursorKind::Timestamp,
            Kind::TimestampUtc => CursorKind::Timestamptz,
            _ => return None,
        };
        Some(SourceCursor {
            column: col.name.clone(),
            value,
            kind,
        })
    }

    /// For messages: `2024-01-01 12:00:00 UTC`, `1234`.
    pub fn display(&self) -> String {
        match self.kind {
            CursorKind::Int => self.value.to_string(),
            CursorKind::Date => date_of(self.value),
            CursorKind::Timestamp | CursorKind::Timestamptz => {
                let t = DateTime::from_timestamp_micros(self.value).unwrap_or_default();
                let s = t.format("%Y-%m-%d %H:%M:%S%.f").to_string();
                if self.kind == CursorKind::Timestamptz {
                    s + " UTC"
                } else {
                    s
                }
            }
        }
    }

    /// The literal of `value`, in this cursor's unit, as `driver` writes it.
    fn literal(&self, driver: &dyn Driver, value: i64) -> String {
        match self.kind {
            CursorKind::Int => value.to_string(),
            CursorKind::Date => format!("'{}'", date_of(value)),
            CursorKind::Timestamp => driver.timestamp_literal(value, false),
            CursorKind::Timestamptz => driver.timestamp_literal(value, true),
        }
    }

    /// The WHERE that reads from `self` minus `lookback`.
    pub(super) fn filter(&self, driver: &dyn Driver, col: &SqlColumn, lookback: i64) -> String {
        let from = self.literal(driver, self.value.saturating_sub(lookback));
        format!("{} >= {from}", col.expr)
    }
}

/// `2024-01-01`, `days` after the epoch.
fn date_of(days: i64) -> String {
    i32::try_from(days)
        .ok()
        .and_then(NaiveDate::from_epoch_days)
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// The lookback in the cursor's unit: `2h` for a timestamp (microseconds), `3d` for a date
/// (days), a number for an integer.
pub(super) fn lookback(name: &str, text: Option<&str>, kind: Kind) -> Result<i64, ExtractError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let bad = |why: &str| fail(name, format!("lookback = \"{text}\": {why}"));
    match kind {
        Kind::Int => text
            .parse::<i64>()
            .map_err(|_| bad("an integer cursor takes a number of ids")),
        Kind::Date | Kind::Timestamp | Kind::TimestampUtc => {
            let d = humantime::parse_duration(text)
                .map_err(|e| bad(&format!("{e}; write it as 30s, 15m, 2h or 1d")))?;
            let micros = i64::try_from(d.as_micros()).map_err(|_| bad("too long"))?;
            Ok(if kind == Kind::Date {
                (micros + 86_399_999_999) / 86_400_000_000
            } else {
                micros
            })
        }
        _ => Err(bad("the cursor is not a number, date or timestamp")),
    }
}

/// The cursor saved by the latest of this source's commits to its table, if any.
pub(super) async fn saved_cursor(
    lake: &Lake,
    table: &TableName,
    name: &str,
) -> Result<Option<SourceCursor>, ExtractError> {
    use futures::TryStreamExt;
    let Ok(t) = lake.table(table, None, None).await else {
        return Ok(None);
    };
    // Maintenance commits (OPTIMIZE, VACUUM) carry no cursor: look back past them.
    let commits: Vec<_> = t
        .history(Some(100))
        .try_collect()
        .await
        .map_err(|e| fail(name, format!("failed to read the history of {table}: {e}")))?;
    for c in commits {
        if let Some(v) = c.info.get(SOURCE_CURSOR_KEY) {
            let cursor: SourceCursor = serde_json::from_value(v.clone()).map_err(|e| {
                fail(
                    name,
                    format!("failed to read the cursor saved in {table}: {e}"),
                )
            })?;
            return Ok(Some(cursor));
        }
    }
    Ok(None)
}

/// The largest cursor value read (a one-row, one-column result), as the cursor counts it.
pub(super) fn max_value(batches: &[RecordBatch]) -> Option<i64> {
    let column = batches.first()?.column(0);
    if column.is_null(0) {
        return None;
    }
    let any = column.as_any();
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        Some(a.value(0))
    } else if let Some(a) = any.downcast_ref::<Date32Array>() {
        Some(a.value(0) as i64)
    } else {
        any.downcast_ref::<TimestampMicrosecondArray>()
            .map(|a| a.value(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookback_counts_in_the_cursors_unit() {
        assert_eq!(lookback("s", None, Kind::Timestamp).unwrap(), 0);
        assert_eq!(lookback("s", Some(" "), Kind::Int).unwrap(), 0);
        assert_eq!(lookback("s", Some("500"), Kind::Int).unwrap(), 500);
        assert_eq!(
            lookback("s", Some("2h"), Kind::TimestampUtc).unwrap(),
            2 * 3_600_000_000
        );
        // A date cursor rounds up to whole days: an hour back is a day back.
        assert_eq!(lookback("s", Some("1h"), Kind::Date).unwrap(), 1);
        assert_eq!(lookback("s", Some("2d"), Kind::Date).unwrap(), 2);
        let err = lookback("crm", Some("2h"), Kind::Int)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("crm") && err.contains("a number of ids"),
            "{err}"
        );
        let err = lookback("crm", Some("soon"), Kind::Timestamp)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lookback = \"soon\""), "{err}");
        assert!(lookback("s", Some("1h"), Kind::Text).is_err());
    }

    #[test]
    fn cursors_show_and_keep_their_kind() {
        let ts = SqlColumn::plain("updated_at", Kind::TimestampUtc, String::new());
        let c = SourceCursor::of(&ts, 1_704_067_200_000_000).unwrap();
        assert_eq!(c.kind, CursorKind::Timestamptz);
        assert_eq!(c.display(), "2024-01-01 00:00:00 UTC");
        let day = SqlColumn::plain("day", Kind::Date, String::new());
        assert_eq!(
            SourceCursor::of(&day, 19_723).unwrap().display(),
            "2024-01-01"
        );
        let text = SqlColumn::plain("name", Kind::Text, String::new());
        assert!(SourceCursor::of(&text, 0).is_none(), "text is no cursor");
        // Saved as JSON in the commit, read back the same.
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["kind"], "timestamptz");
        assert_eq!(serde_json::from_value::<SourceCursor>(json).unwrap(), c);
    }
}
