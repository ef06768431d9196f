//! Spotify JSON -> typed rows, leniently: a missing or mistyped field is a null, never an
//! error, and the item's full JSON rides along in `raw_json`. The tables' columns are listed
//! here once and documented in the README.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use serde_json::{Map, Value, json};

/// A column's type, in the few shapes the Spotify tables use.
#[derive(Clone, Copy)]
pub enum Col {
    /// Text.
    Text,
    /// 64-bit integer.
    Int,
    /// Boolean.
    Bool,
    /// UTC timestamp, microseconds.
    Time,
    /// Date.
    Date,
    /// List of text.
    Texts,
}

impl Col {
    fn data_type(self) -> DataType {
        match self {
            Col::Text => DataType::Utf8,
            Col::Int => DataType::Int64,
            Col::Bool => DataType::Boolean,
            Col::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Col::Date => DataType::Date32,
            Col::Texts => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }
}

/// The Arrow schema of `cols`, every column nullable.
pub fn schema(cols: &[(&str, Col)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(name, col)| Field::new(*name, col.data_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Decodes rows (JSON objects keyed by column) into one batch of `schema`. Keys the schema
/// lacks are ignored; columns a row lacks are null.
pub fn to_batch(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, ArrowError> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// A text field, or null.
pub fn text(v: &Value, pointer: &str) -> Value {
    match v.pointer(pointer) {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => Value::Null,
    }
}

/// An integer field, or null.
pub fn int(v: &Value, pointer: &str) -> Value {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .map_or(Value::Null, Value::from)
}

/// A boolean field, or null.
pub fn boolean(v: &Value, pointer: &str) -> Value {
    v.pointer(pointer)
        .and_then(Value::as_bool)
        .map_or(Value::Null, Value::from)
}

/// One text field of each element of an array field: the artists' names, say.
pub fn texts(v: &Value, array: &str, field: &str) -> Value {
    match v.pointer(array).and_then(Value::as_array) {
        Some(items) => Value::Array(items.iter().map(|i| text(i, field)).collect()),
        None => Value::Null,
    }
}

/// A timestamp field as RFC 3339 in UTC, or null when it is missing or unparseable.
pub fn time(v: &Value, pointer: &str) -> Value {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(Value::Null, |t| {
            Value::String(
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )
        })
}

/// A release date at year, month or day precision, as the first day it covers.
pub fn release_date(v: &Value, pointer: &str) -> Value {
    let Some(s) = v.pointer(pointer).and_then(Value::as_str) else {
        return Value::Null;
    };
    let full = match s.len() {
        4 => format!("{s}-01-01"),
        7 => format!("{s}-01"),
        _ => s.to_string(),
    };
    // Spotify writes "0000" for an unknown date.
    match chrono::NaiveDate::parse_from_str(&full, "%Y-%m-%d") {
        Ok(d) if chrono::Datelike::year(&d) > 0 => Value::String(d.to_string()),
        _ => Value::Null,
    }
}

/// The first image's URL.
pub fn image(v: &Value) -> Value {
    text(v, "/images/0/url")
}

/// The id of a Spotify object, falling back to the last part of its URI.
pub fn id(v: &Value) -> Value {
    match text(v, "/id") {
        Value::Null => match v.get("uri").and_then(Value::as_str) {
            Some(uri) => uri
                .rsplit(':')
                .next()
                .map_or(Value::Null, |s| Value::String(s.into())),
            None => Value::Null,
        },
        id => id,
    }
}

/// Columns every Spotify table ends with.
pub const TAIL: &[(&str, Col)] = &[("raw_json", Col::Text), ("_extracted_at", Col::Time)];

/// The track columns shared by the tables of playlist items, saved tracks, plays and top
/// tracks.
pub const TRACK: &[(&str, Col)] = &[
    ("track_id", Col::Text),
    ("track_name", Col::Text),
    ("track_uri", Col::Text),
    ("artist_ids", Col::Texts),
    ("artist_names", Col::Texts),
    ("album_id", Col::Text),
    ("album_name", Col::Text),
    ("album_release_date", Col::Date),
    ("album_release_date_precision", Col::Text),
    ("duration_ms", Col::Int),
    ("explicit", Col::Bool),
    ("is_local", Col::Bool),
];

/// Fills the [`TRACK`] columns from a track object (or null, for an entry without one).
pub fn track_into(row: &mut Map<String, Value>, track: &Value) {
    let pairs = [
        ("track_id", id(track)),
        ("track_name", text(track, "/name")),
        ("track_uri", text(track, "/uri")),
        ("artist_ids", texts(track, "/artists", "/id")),
        ("artist_names", texts(track, "/artists", "/name")),
        ("album_id", text(track, "/album/id")),
        ("album_name", text(track, "/album/name")),
        (
            "album_release_date",
            release_date(track, "/album/release_date"),
        ),
        (
            "album_release_date_precision",
            text(track, "/album/release_date_precision"),
        ),
        ("duration_ms", int(track, "/duration_ms")),
        ("explicit", boolean(track, "/explicit")),
        ("is_local", boolean(track, "/is_local")),
    ];
    for (k, v) in pairs {
        row.insert(k.into(), v);
    }
}

/// Starts a row with its raw JSON and extraction time.
pub fn row(raw: &Value, extracted_at: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("raw_json".into(), Value::String(raw.to_string()));
    m.insert("_extracted_at".into(), json!(extracted_at));
    m
}

/// raw.spotify_tracks: the [`TRACK`] columns and these.
pub const TRACK_EXTRA: &[(&str, Col)] = &[
    ("disc_number", Col::Int),
    ("track_number", Col::Int),
    ("isrc", Col::Text),
    ("popularity", Col::Int),
];

/// A raw.spotify_tracks row.
pub fn track_row(track: &Value, at: &str) -> Value {
    let mut r = row(track, at);
    track_into(&mut r, track);
    let pairs = [
        ("disc_number", int(track, "/disc_number")),
        ("track_number", int(track, "/track_number")),
        ("isrc", text(track, "/external_ids/isrc")),
        ("popularity", int(track, "/popularity")),
    ];
    for (k, v) in pairs {
        r.insert(k.into(), v);
    }
    Value::Object(r)
}

/// raw.spotify_albums.
pub const ALBUMS: &[(&str, Col)] = &[
    ("album_id", Col::Text),
    ("name", Col::Text),
    ("uri", Col::Text),
    ("album_type", Col::Text),
    ("total_tracks", Col::Int),
    ("release_date", Col::Date),
    ("release_date_precision", Col::Text),
    ("artist_ids", Col::Texts),
    ("artist_names", Col::Texts),
    ("label", Col::Text),
    ("upc", Col::Text),
    ("popularity", Col::Int),
    ("image_url", Col::Text),
];

/// A raw.spotify_albums row.
pub fn album_row(album: &Value, at: &str) -> Value {
    let mut r = row(album, at);
    let pairs = [
        ("album_id", id(album)),
        ("name", text(album, "/name")),
        ("uri", text(album, "/uri")),
        ("album_type", text(album, "/album_type")),
        ("total_tracks", int(album, "/total_tracks")),
        ("release_date", release_date(album, "/release_date")),
        (
            "release_date_precision",
            text(album, "/release_date_precision"),
        ),
        ("artist_ids", texts(album, "/artists", "/id")),
        ("artist_names", texts(album, "/artists", "/name")),
        ("label", text(album, "/label")),
        ("upc", text(album, "/external_ids/upc")),
        ("popularity", int(album, "/popularity")),
        ("image_url", image(album)),
    ];
    for (k, v) in pairs {
        r.insert(k.into(), v);
    }
    Value::Object(r)
}

/// raw.spotify_artists and raw.spotify_followed_artists.
pub const ARTISTS: &[(&str, Col)] = &[
    ("artist_id", Col::Text),
    ("name", Col::Text),
    ("uri", Col::Text),
    ("genres", Col::Texts),
    ("followers", Col::Int),
    ("popularity", Col::Int),
    ("image_url", Col::Text),
];

/// The [`ARTISTS`] columns of an artist object.
pub fn artist_into(r: &mut Map<String, Value>, artist: &Value) {
    let genres = match artist.get("genres") {
        Some(Value::Array(g)) => Value::Array(g.clone()),
        _ => Value::Null,
    };
    let pairs = [
        ("artist_id", id(artist)),
        ("name", text(artist, "/name")),
        ("uri", text(artist, "/uri")),
        ("genres", genres),
        ("followers", int(artist, "/followers/total")),
        ("popularity", int(artist, "/popularity")),
        ("image_url", image(artist)),
    ];
    for (k, v) in pairs {
        r.insert(k.into(), v);
    }
}

/// A raw.spotify_artists row.
pub fn artist_row(artist: &Value, at: &str) -> Value {
    let mut r = row(artist, at);
    artist_into(&mut r, artist);
    Value::Object(r)
}

/// raw.spotify_playlists.
pub const PLAYLISTS: &[(&str, Col)] = &[
    ("playlist_id", Col::Text),
    ("name", Col::Text),
    ("description", Col::Text),
    ("owner_id", Col::Text),
    ("owner_name", Col::Text),
    ("public", Col::Bool),
    ("collaborative", Col::Bool),
    ("snapshot_id", Col::Text),
    ("items_total", Col::Int),
    ("uri", Col::Text),
    ("image_url", Col::Text),
];

/// A raw.spotify_playlists row. Spotify renamed the playlist's `tracks` to `items` in 2026;
/// both are read.
pub fn playlist_row(p: &Value, at: &str) -> Value {
    let mut r = row(p, at);
    let total = match int(p, "/items/total") {
        Value::Null => int(p, "/tracks/total"),
        t => t,
    };
    let pairs = [
        ("playlist_id", id(p)),
        ("name", text(p, "/name")),
        ("description", text(p, "/description")),
        ("owner_id", text(p, "/owner/id")),
        ("owner_name", text(p, "/owner/display_name")),
        ("public", boolean(p, "/public")),
        ("collaborative", boolean(p, "/collaborative")),
        ("snapshot_id", text(p, "/snapshot_id")),
        ("items_total", total),
        ("uri", text(p, "/uri")),
        ("image_url", image(p)),
    ];
    for (k, v) in pairs {
        r.insert(k.into(), v);
    }
    Value::Object(r)
}

/// The track of a playlist entry: `item` since 2026, `track` before.
pub fn entry_item(entry: &Value) -> &Value {
    match entry.get("item") {
        Some(v) if !v.is_null() => v,
        _ => entry.get("track").unwrap_or(&Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_are_null_not_errors() {
        let schema = schema(&[TRACK, TAIL].concat());
        let mut r = row(&json!({}), "2026-01-01T00:00:00Z");
        track_into(
            &mut r,
            &json!({"name": "only a name", "artists": [{"name": "x"}]}),
        );
        let batch = to_batch(&schema, &[Value::Object(r)]).unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column_by_name("track_id").unwrap().null_count(), 1);
    }

    #[test]
    fn release_dates_cover_every_precision() {
        let v = json!({"a": "1999", "b": "1999-05", "c": "1999-05-17", "d": "0000"});
        assert_eq!(release_date(&v, "/a"), json!("1999-01-01"));
        assert_eq!(release_date(&v, "/b"), json!("1999-05-01"));
        assert_eq!(release_date(&v, "/c"), json!("1999-05-17"));
        assert_eq!(release_date(&v, "/d"), Value::Null);
    }

    #[test]
    fn times_are_utc() {
        let v = json!({"t": "2026-03-01T01:30:00+02:00"});
        assert_eq!(time(&v, "/t"), json!("2026-02-28T23:30:00.000000Z"));
    }
}
