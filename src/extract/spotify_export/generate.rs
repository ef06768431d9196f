//! Generated personal data exports, deterministic for a seed: for tests, examples and
//! benchmarks. Play `i` of a seed and [`Shape`] is always the same play, so two ranges that
//! overlap make two exports that overlap the way a newer export overlaps an older one.
//!
//! The plays cover what real exports hold: skewed artist popularity over a catalog whose
//! tracks keep their names, non-ASCII names, sessions, podcast episodes (null track fields) in
//! audio and video files, audiobook chapters, incognito plays, offline plays with
//! `offline_timestamp` in seconds or milliseconds, skips and shuffles. A [`Shape`] with many
//! listeners makes one history of all of them (a `username` on every play), for benchmarks.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ARTISTS: &[&str] = &[
    "Dua Lipa",
    "Beyoncé",
    "Sigur Rós",
    "坂本龍一",
    "Мумий Тролль",
    "Ólafur Arnalds",
    "Rahul Sipligunj",
    "The Weeknd",
    "Charlie Puth",
    "Björk",
    "Motörhead",
    "BTS (방탄소년단)",
    "L. V. Revanth",
    "Chinmayi",
    "Røyksopp",
    "Los Ángeles Azules",
];
const WORDS: &[&str] = &[
    "Night",
    "Dance",
    "Cold",
    "Heart",
    "Naatu",
    "Pearls",
    "Left",
    "Right",
    "Любовь",
    "夜",
    "Corazón",
    "Song",
    "Blue",
    "Light",
    "Fire",
    "Été",
];
const SHOWS: &[&str] = &[
    "The Daily",
    "Lex Fridman Podcast",
    "Café Europa",
    "日本語ポッドキャスト",
];
const PLATFORMS: &[&str] = &[
    "android",
    "ios",
    "windows",
    "osx",
    "web_player",
    "cast_to_device",
];
const COUNTRIES: &[&str] = &["IN", "US", "DE", "JP", "BR", "SE"];
const STARTS: &[&str] = &[
    "trackdone",
    "clickrow",
    "fwdbtn",
    "backbtn",
    "playbtn",
    "appload",
];
const ENDS: &[&str] = &["trackdone", "fwdbtn", "endplay", "logout", "backbtn"];

/// The default start of generated history.
pub fn default_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .expect("a date")
        .with_timezone(&Utc)
}

/// What a generated history looks like: who listens, to how big a catalog, how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Listeners. With more than one, every play carries its listener's `username` (as the
    /// older `endsong` files did), so that one lake can tell them apart.
    pub users: u64,
    /// Artists in the catalog, [`TRACKS_PER_ARTIST`] tracks each; the first 16 have
    /// real-world names, and low numbers are played far more often.
    pub artists: u64,
    /// Seconds from one of a listener's sessions to the next. Each session is 16 plays about
    /// three minutes apart; listeners' sessions are spread evenly over that interval.
    pub session_every: i64,
}

impl Shape {
    /// One listener, 16 artists, a session every two hours: a personal export, for tests.
    pub const PERSONAL: Shape = Shape {
        users: 1,
        artists: 16,
        session_every: 7200,
    };

    /// Many listeners: 1,000 of them, 2,000 artists, a session a day each; `lake bench
    /// generate`'s defaults.
    pub const MANY: Shape = Shape {
        users: 1000,
        artists: 2000,
        session_every: 86_400,
    };

    /// Plays in one `session_every` interval, over all listeners (with a day, one more day).
    pub fn plays_per_interval(&self) -> u64 {
        16 * self.users
    }
}

/// Tracks per artist in the catalog.
pub const TRACKS_PER_ARTIST: u64 = 40;

/// A catalog track: the same name, album and length in every play and every API row.
struct Track {
    id: String,
    name: String,
    artist: String,
    album: String,
    album_id: String,
    duration_ms: i64,
}

fn artist_name(a: u64) -> String {
    match ARTISTS.get(a as usize) {
        Some(name) => name.to_string(),
        None => format!(
            "{} {} {a}",
            WORDS[(a % 16) as usize],
            WORDS[((a / 16) % 16) as usize]
        ),
    }
}

fn artist_id(a: u64) -> String {
    base62(9_000_000 + a)
}

fn catalog_track(a: u64, t: u64) -> Track {
    let mut rng = StdRng::seed_from_u64(a * 1000 + t);
    let w1 = WORDS[rng.random_range(0..WORDS.len())];
    let w2 = WORDS[rng.random_range(0..WORDS.len())];
    let artist = artist_name(a);
    let album_no = t / 10;
    Track {
        id: base62(a * 1000 + t),
        name: format!("{w1} {w2} {t}"),
        album: format!("{} ({artist})", WORDS[((a * 7 + album_no) % 16) as usize]),
        album_id: base62(5_000_000 + a * 10 + album_no),
        duration_ms: rng.random_range(120_000..360_000),
        artist,
    }
}

/// One generated extended play; `i` fixes it completely for a seed and shape.
pub fn play(seed: u64, i: u64, start: DateTime<Utc>, shape: &Shape, old_fields: bool) -> Value {
    let mut rng = StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let users = shape.users.max(1);
    // Session `s` is listener `s % users`'s session number `s / users`.
    let session = i / 16;
    let user = session % users;
    let ended = start
        + Duration::seconds(
            (session / users) as i64 * shape.session_every
                + user as i64 * shape.session_every / users as i64
                + (i % 16) as i64 * 200
                + rng.random_range(0..60),
        );
    let ms_played: i64 = rng.random_range(0..400_000);
    let roll: u32 = rng.random_range(0..100);
    let artists = shape.artists.max(1);
    // Skew: low artist numbers are played far more often; with many listeners, half of each
    // listener's plays go to twenty favourites of their own.
    let mut a = (rng.random::<f64>().powi(3) * artists as f64) as u64;
    if users > 1 && rng.random_bool(0.5) {
        let mut taste = StdRng::seed_from_u64(user * 20 + rng.random_range(0..20));
        a = (taste.random::<f64>().powi(2) * artists as f64) as u64;
    }
    let track = catalog_track(a.min(artists - 1), rng.random_range(0..TRACKS_PER_ARTIST));
    let offline = roll.is_multiple_of(17);
    let offline_ts = if offline {
        let secs = ended.timestamp() - 60;
        // Older clients wrote seconds, newer ones milliseconds.
        if i.is_multiple_of(2) {
            json!(secs)
        } else {
            json!(secs * 1000)
        }
    } else {
        json!(0)
    };
    let mut p = json!({
        "ts": ended.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "platform": PLATFORMS[rng.random_range(0..PLATFORMS.len())],
        "ms_played": ms_played,
        "conn_country": COUNTRIES[rng.random_range(0..COUNTRIES.len())],
        "master_metadata_track_name": track.name,
        "master_metadata_album_artist_name": track.artist,
        "master_metadata_album_album_name": track.album,
        "spotify_track_uri": format!("spotify:track:{}", track.id),
        "episode_name": null,
        "episode_show_name": null,
        "spotify_episode_uri": null,
        "audiobook_title": null,
        "audiobook_uri": null,
        "audiobook_chapter_uri": null,
        "audiobook_chapter_title": null,
        "reason_start": STARTS[rng.random_range(0..STARTS.len())],
        "reason_end": ENDS[rng.random_range(0..ENDS.len())],
        "shuffle": rng.random_bool(0.4),
        "skipped": ms_played < 30_000,
        "offline": offline,
        "offline_timestamp": offline_ts,
        "incognito_mode": roll.is_multiple_of(29),
    });
    let clear = |p: &mut Value| {
        for k in [
            "master_metadata_track_name",
            "master_metadata_album_artist_name",
            "master_metadata_album_album_name",
            "spotify_track_uri",
        ] {
            p[k] = Value::Null;
        }
    };
    if roll < 8 {
        // A podcast episode: the track fields are null.
        clear(&mut p);
        let show = SHOWS[rng.random_range(0..SHOWS.len())];
        p["episode_show_name"] = json!(show);
        p["episode_name"] = json!(format!("{show} #{}", rng.random_range(1..500)));
        p["spotify_episode_uri"] = json!(format!("spotify:episode:{}", base62(i % 997)));
    } else if roll < 9 {
        clear(&mut p);
        p["audiobook_title"] = json!("Войнá и мир");
        p["audiobook_uri"] = json!("spotify:show:audiobook0000000000001");
        p["audiobook_chapter_title"] = json!(format!("Chapter {}", rng.random_range(1..60)));
        p["audiobook_chapter_uri"] = json!(format!("spotify:episode:{}", base62(5000 + i % 60)));
    }
    let ip = format!("10.{}.{}.{}", i % 256, (i / 256) % 256, seed % 256);
    if old_fields {
        p["username"] = json!("listener_ü");
        p["user_agent_decrypted"] = json!("unknown");
        p["ip_addr_decrypted"] = json!(ip);
    } else {
        p["ip_addr"] = json!(ip);
    }
    if users > 1 {
        p["username"] = json!(format!("listener_{user}"));
    }
    p
}

/// The Web API rows that match an export of plays `0..plays`: `recently_played.ndjson` (the
/// last 50 track plays of the export, with `played_at` a second or so off the export's end
/// time, and 20 plays after it), `playlist_tracks.ndjson` (three playlists from the same
/// catalog, some tracks with a featured artist) and `tracks.ndjson` (the whole catalog, the
/// dimension a play's `track_id` joins to), in the columns `lake extract spotify` lands.
pub fn api(dir: &Path, seed: u64, plays: u64, shape: &Shape) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let start = default_start();
    let artists = shape.artists.max(1);
    let row = |a: u64, t: u64, featured: bool| -> Value {
        let track = catalog_track(a, t);
        let mut ids = vec![artist_id(a)];
        let mut names = vec![track.artist.clone()];
        if featured {
            let f = (a + 3) % artists;
            ids.push(artist_id(f));
            names.push(artist_name(f));
        }
        json!({
            "track_id": track.id,
            "track_name": track.name,
            "track_uri": format!("spotify:track:{}", track.id),
            "artist_ids": ids,
            "artist_names": names,
            "album_id": track.album_id,
            "album_name": track.album,
            "duration_ms": track.duration_ms,
            "explicit": t % 7 == 3,
            "is_local": false,
        })
    };
    // A play's catalog track, from the number in its id.
    let track = |p: &Value, featured: bool| -> Option<Value> {
        let id = p["spotify_track_uri"].as_str()?.rsplit(':').next()?;
        let n = unbase62(id);
        Some(row(n / 1000, n % 1000, featured))
    };
    let mut recent: Vec<Value> = Vec::new();
    let mut i = plays;
    // Back from the end of the export until 50 track plays, then 20 after it.
    while recent.len() < 50 && i > 0 {
        i -= 1;
        let p = play(seed, i, start, shape, false);
        if let Some(mut t) = track(&p, false) {
            let ended = DateTime::parse_from_rfc3339(p["ts"].as_str().expect("ts"))
                .expect("a time")
                .with_timezone(&Utc);
            let jitter = (i % 3) as i64 * 700 - 700;
            t["played_at"] = json!(
                (ended + Duration::milliseconds(jitter))
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            );
            recent.push(t);
        }
    }
    let mut j = plays;
    let mut after = 0;
    while after < 20 {
        let p = play(seed, j, start, shape, false);
        j += 1;
        if let Some(mut t) = track(&p, false) {
            let ended = DateTime::parse_from_rfc3339(p["ts"].as_str().expect("ts"))
                .expect("a time")
                .with_timezone(&Utc);
            t["played_at"] = json!(ended.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
            recent.push(t);
            after += 1;
        }
    }
    for t in &mut recent {
        t["context_type"] = json!("playlist");
        t["context_uri"] = json!(format!("spotify:playlist:{}", base62(30_000)));
    }
    let mut playlist_rows = Vec::new();
    for (n, name) in ["Morning Mix", "Deep Focus", "Naatu & Friends"]
        .iter()
        .enumerate()
    {
        let mut position = 0;
        let mut k = n as u64 * 1000;
        while position < 30 {
            let p = play(seed, k, start, shape, false);
            k += 1;
            if let Some(mut t) = track(&p, k.is_multiple_of(4)) {
                t["playlist_id"] = json!(base62(30_000 + n as u64));
                t["playlist_name"] = json!(name);
                t["snapshot_id"] = json!(format!("snapshot-{n}"));
                t["position"] = json!(position);
                t["added_at"] = p["ts"].clone();
                t["added_by"] = json!("listener");
                t["item_type"] = json!("track");
                playlist_rows.push(t);
                position += 1;
            }
        }
    }
    let mut catalog = Vec::new();
    for a in 0..artists {
        for t in 0..TRACKS_PER_ARTIST {
            let mut r = row(a, t, false);
            r["disc_number"] = json!(1);
            r["track_number"] = json!(t % 10 + 1);
            r["isrc"] = json!(format!("QZ{:010}", a * 1000 + t));
            // Popularity falls with the artist's number, as the plays do.
            r["popularity"] = json!(100 - (100 * a / artists).min(99) as i64);
            catalog.push(r);
        }
    }
    let mut written = Vec::new();
    for (file, rows) in [
        ("recently_played.ndjson", &recent),
        ("playlist_tracks.ndjson", &playlist_rows),
        ("tracks.ndjson", &catalog),
    ] {
        let path = dir.join(file);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for row in rows {
            serde_json::to_writer(&mut out, row).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        written.push(path);
    }
    Ok(written)
}

/// A 22-character Spotify-like id for a number.
fn base62(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; 22];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).expect("ascii")
}

/// The number [`base62`] wrote.
fn unbase62(id: &str) -> u64 {
    id.bytes().fold(0, |n, c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            _ => c - b'a' + 36,
        };
        n * 62 + d as u64
    })
}

/// Writes plays `range` of `seed` as an extended export in `dir`: audio files of at most
/// `per_file` plays, and one video file for every fiftieth play (video podcasts).
pub fn extended(
    dir: &Path,
    seed: u64,
    range: Range<u64>,
    per_file: usize,
    shape: &Shape,
    old_fields: bool,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let start = default_start();
    let per_file = per_file.max(1);
    let mut audio = Vec::with_capacity(per_file);
    let mut video = Vec::new();
    let mut written = Vec::new();
    // A file at a time: ten million plays do not fit in memory as JSON values.
    let flush = |audio: &mut Vec<Value>, written: &mut Vec<PathBuf>| {
        let year = audio[0]["ts"].as_str().unwrap_or("2024")[..4].to_string();
        let path = dir.join(format!(
            "Streaming_History_Audio_{year}_{}.json",
            written.len()
        ));
        write_json(&path, audio)?;
        written.push(path);
        audio.clear();
        std::io::Result::Ok(())
    };
    for i in range {
        let p = play(seed, i, start, shape, old_fields);
        if i % 50 == 49 && p["spotify_episode_uri"].is_string() {
            video.push(p);
        } else {
            audio.push(p);
            if audio.len() == per_file {
                flush(&mut audio, &mut written)?;
            }
        }
    }
    if !audio.is_empty() {
        flush(&mut audio, &mut written)?;
    }
    if !video.is_empty() {
        let path = dir.join("Streaming_History_Video_2024.json");
        write_json(&path, &video)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes plays `range` of `seed` in the legacy layout (`StreamingHistory_music_0.json`).
pub fn legacy(dir: &Path, seed: u64, range: Range<u64>) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let start = default_start();
    let plays: Vec<Value> = range
        .map(|i| {
            let p = play(seed, i, start, &Shape::PERSONAL, false);
            let ended = DateTime::parse_from_rfc3339(p["ts"].as_str().expect("ts"))
                .expect("a time")
                .format("%Y-%m-%d %H:%M")
                .to_string();
            if p["spotify_track_uri"].is_string() {
                json!({
                    "endTime": ended,
                    "artistName": p["master_metadata_album_artist_name"],
                    "trackName": p["master_metadata_track_name"],
                    "msPlayed": p["ms_played"],
                })
            } else if p["spotify_episode_uri"].is_string() {
                json!({
                    "endTime": ended,
                    "podcastName": p["episode_show_name"],
                    "episodeName": p["episode_name"],
                    "msPlayed": p["ms_played"],
                })
            } else {
                // The legacy files show an audiobook chapter as a podcast episode.
                json!({
                    "endTime": ended,
                    "podcastName": p["audiobook_title"],
                    "episodeName": p["audiobook_chapter_title"],
                    "msPlayed": p["ms_played"],
                })
            }
        })
        .collect();
    let path = dir.join("StreamingHistory_music_0.json");
    write_json(&path, &plays)?;
    Ok(path)
}

/// Packs a folder into `my_spotify_data.zip` the way Spotify does (files under
/// `Spotify Extended Streaming History/`).
pub fn zip(dir: &Path, archive: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(archive)?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().expect("a file").to_string_lossy();
        zip.start_file(
            format!("Spotify Extended Streaming History/{name}"),
            options,
        )
        .map_err(std::io::Error::other)?;
        zip.write_all(&std::fs::read(&path)?)?;
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

fn write_json(path: &Path, plays: &[Value]) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer_pretty(file, plays).map_err(std::io::Error::other)
}
