//! Spotify JSON -> typed rows, leniently: a missing or mistyped field is a null, never an
//! error, and the item's full JSON rides along in `raw_json`. The tables' columns are listed
//! here once and documented in the README.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
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
            Col::Texts => DataType::List(Arc::new(ArrowField::new("item", DataType::Utf8, true))),
        }
    }
}

/// The Arrow schema of `cols`, every column nullable.
pub fn schema(cols: &[(&str, Col)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(name, col)| ArrowField::new(*name, col.data_type(), true))
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

/// How a column's value is read from the field its [`Field`] points at.
#[derive(Debug, Clone, Copy)]
pub enum Read {
    /// The object's id, falling back to the last part of its URI.
    Id,
    /// Text (a number becomes its text).
    Text,
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// A release date at year, month or day precision.
    ReleaseDate,
    /// One text field of each element of an array: the artists' names, say.
    Each(&'static str),
    /// An array of strings as it is: genres.
    Strings,
}

/// A column read from one field of a Spotify object: the columns of the catalog tables, listed
/// here once, for the schema, the values and whether Spotify sent the field at all.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The column.
    pub name: &'static str,
    /// The JSON pointer of the field in the object.
    pub pointer: &'static str,
    /// How it is read.
    pub read: Read,
}

const fn field(name: &'static str, pointer: &'static str, read: Read) -> Field {
    Field {
        name,
        pointer,
        read,
    }
}

impl Field {
    /// Its column type.
    pub fn col(&self) -> Col {
        match self.read {
            Read::Id | Read::Text => Col::Text,
            Read::Int => Col::Int,
            Read::Bool => Col::Bool,
            Read::ReleaseDate => Col::Date,
            Read::Each(_) | Read::Strings => Col::Texts,
        }
    }

    /// Its value in `object`, or null.
    pub fn value(&self, object: &Value) -> Value {
        let p = self.pointer;
        match self.read {
            Read::Id => id(object),
            Read::Text => text(object, p),
            Read::Int => int(object, p),
            Read::Bool => boolean(object, p),
            Read::ReleaseDate => release_date(object, p),
            Read::Each(inner) => texts(object, p, inner),
            Read::Strings => match object.pointer(p) {
                Some(Value::Array(items)) => Value::Array(items.clone()),
                _ => Value::Null,
            },
        }
    }

    /// Whether `object` carries the field. Spotify removes fields without notice (the 2024 and
    /// 2026 cuts took `popularity`, `followers`, `external_ids`, `label`, ...): an absent field
    /// says nothing about the value, while a field sent as null says it is null.
    pub fn sent(&self, object: &Value) -> bool {
        match self.read {
            Read::Id => present(object, "/id") || present(object, "/uri"),
            _ => present(object, self.pointer),
        }
    }
}

/// Whether the field at `pointer` is there: every object key on the way exists. A null, or an
/// array too short for the index (`/images/0/url` of an artist with no images), is there: it
/// says there is nothing.
pub fn present(v: &Value, pointer: &str) -> bool {
    let mut at = v;
    for key in pointer.split('/').skip(1) {
        at = match at {
            Value::Object(map) => match map.get(key) {
                Some(next) => next,
                None => return false,
            },
            Value::Array(items) => match key.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(next) => next,
                None => return true,
            },
            _ => return true,
        };
    }
    true
}

/// The `(name, type)` of each field, for [`schema`].
pub fn columns(fields: &[Field]) -> Vec<(&'static str, Col)> {
    fields.iter().map(|f| (f.name, f.col())).collect()
}

/// Fills a row's columns from an object.
pub fn fill(row: &mut Map<String, Value>, fields: &[Field], object: &Value) {
    for f in fields {
        row.insert(f.name.into(), f.value(object));
    }
}

/// The column that lists, per row of a catalog table, the fields Spotify did not send: a merge
/// keeps what the table knew for those (see [`crate::lake::write::ABSENT`]).
pub const ABSENT: (&str, Col) = (crate::lake::write::ABSENT, Col::Texts);

/// A catalog row: `fields` read from `object`, with the fields it lacks listed in [`ABSENT`].
pub fn catalog_row(object: &Value, fields: &[Field], at: &str) -> Value {
    let mut r = row(object, at);
    fill(&mut r, fields, object);
    let absent: Vec<Value> = fields
        .iter()
        .filter(|f| !f.sent(object))
        .map(|f| Value::from(f.name))
        .collect();
    r.insert(ABSENT.0.into(), Value::Array(absent));
    Value::Object(r)
}

/// The track columns shared by the tables of playlist items, saved tracks, plays and top
/// tracks.
pub const TRACK: &[Field] = &[
    field("track_id", "/id", Read::Id),
    field("track_name", "/name", Read::Text),
    field("track_uri", "/uri", Read::Text),
    field("artist_ids", "/artists", Read::Each("/id")),
    field("artist_names", "/artists", Read::Each("/name")),
    field("album_id", "/album/id", Read::Text),
    field("album_name", "/album/name", Read::Text),
    field(
        "album_release_date",
        "/album/release_date",
        Read::ReleaseDate,
    ),
    field(
        "album_release_date_precision",
        "/album/release_date_precision",
        Read::Text,
    ),
    field("duration_ms", "/duration_ms", Read::Int),
    field("explicit", "/explicit", Read::Bool),
    field("is_local", "/is_local", Read::Bool),
];

/// Fills the [`TRACK`] columns from a track object (or null, for an entry without one).
pub fn track_into(row: &mut Map<String, Value>, track: &Value) {
    fill(row, TRACK, track);
}

/// Starts a row with its raw JSON and extraction time.
pub fn row(raw: &Value, extracted_at: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("raw_json".into(), Value::String(raw.to_string()));
    m.insert("_extracted_at".into(), json!(extracted_at));
    m
}

/// raw.spotify_tracks: the [`TRACK`] columns and these.
pub const TRACK_EXTRA: &[Field] = &[
    field("disc_number", "/disc_number", Read::Int),
    field("track_number", "/track_number", Read::Int),
    field("isrc", "/external_ids/isrc", Read::Text),
    field("popularity", "/popularity", Read::Int),
];

/// Every column of raw.spotify_tracks.
pub fn tracks() -> Vec<Field> {
    [TRACK, TRACK_EXTRA].concat()
}

/// The name and URI every catalog object has.
const NAMED: &[Field] = &[
    field("name", "/name", Read::Text),
    field("uri", "/uri", Read::Text),
];

/// Popularity and the first image, which albums and artists end with.
const SEEN: &[Field] = &[
    field("popularity", "/popularity", Read::Int),
    field("image_url", "/images/0/url", Read::Text),
];

/// raw.spotify_albums.
pub fn albums() -> Vec<Field> {
    let own = [
        field("album_type", "/album_type", Read::Text),
        field("total_tracks", "/total_tracks", Read::Int),
        field("release_date", "/release_date", Read::ReleaseDate),
        field(
            "release_date_precision",
            "/release_date_precision",
            Read::Text,
        ),
        field("artist_ids", "/artists", Read::Each("/id")),
        field("artist_names", "/artists", Read::Each("/name")),
        field("label", "/label", Read::Text),
        field("upc", "/external_ids/upc", Read::Text),
    ];
    [&[field("album_id", "/id", Read::Id)], NAMED, &own, SEEN].concat()
}

/// raw.spotify_artists and raw.spotify_followed_artists.
pub fn artists() -> Vec<Field> {
    let own = [
        field("genres", "/genres", Read::Strings),
        field("followers", "/followers/total", Read::Int),
    ];
    [&[field("artist_id", "/id", Read::Id)], NAMED, &own, SEEN].concat()
}

/// A row of [`artists`] columns, for a table that is replaced whole.
pub fn artist_row(artist: &Value, at: &str) -> Value {
    let mut r = row(artist, at);
    fill(&mut r, &artists(), artist);
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

/// The names an entry wraps its object in: Spotify renamed a playlist entry's `track` to
/// `item` in February 2026, and saved tracks and plays may follow; both are read everywhere.
pub const WRAPPERS: &[&str] = &["item", "track"];

/// The object an entry (a playlist item, a saved track, a play) wraps, under any of
/// [`WRAPPERS`]; `None` when there is none, or only nulls.
pub fn entry_item(entry: &Value) -> Option<&Value> {
    WRAPPERS
        .iter()
        .filter_map(|w| entry.get(*w))
        .find(|v| v.is_object())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_are_null_not_errors() {
        let schema = schema(&[&columns(TRACK)[..], TAIL].concat());
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
    fn absent_fields_are_told_from_null_ones() {
        let track = json!({"id": "t", "name": null, "external_ids": {}, "album": null,
                           "artists": [], "popularity": 3});
        let r = catalog_row(&track, &tracks(), "2026-01-01T00:00:00Z");
        let absent: Vec<&str> = r[ABSENT.0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // Sent as null, or inside a null: known to be null. Not sent: unknown.
        assert!(!absent.contains(&"track_name") && !absent.contains(&"album_name"));
        assert!(!absent.contains(&"artist_ids") && !absent.contains(&"popularity"));
        assert!(absent.contains(&"isrc") && absent.contains(&"duration_ms"));
        assert!(!absent.contains(&"track_id"));
        let artist = json!({"id": "a", "images": []});
        assert!(present(&artist, "/images/0/url"));
        assert!(!present(&artist, "/followers/total"));
    }

    #[test]
    fn entries_wrap_their_object_under_item_or_track() {
        let t = json!({"id": "x"});
        assert_eq!(entry_item(&json!({"item": t})), Some(&t));
        assert_eq!(entry_item(&json!({"track": t})), Some(&t));
        assert_eq!(entry_item(&json!({"item": null, "track": t})), Some(&t));
        assert_eq!(entry_item(&json!({"item": null})), None);
        assert_eq!(entry_item(&json!({"added_at": "2026-01-01"})), None);
    }

    #[test]
    fn times_are_utc() {
        let v = json!({"t": "2026-03-01T01:30:00+02:00"});
        assert_eq!(time(&v, "/t"), json!("2026-02-28T23:30:00.000000Z"));
    }
}
