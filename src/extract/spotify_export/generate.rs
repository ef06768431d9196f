//! Generated personal data exports, deterministic for a seed: for tests, examples and
//! benchmarks. Play `i` of a seed is always the same play, so two ranges that overlap make two
//! exports that overlap the way a newer export overlaps an older one.
//!
//! The plays cover what real exports hold: skewed artist popularity, non-ASCII names, podcast
//! episodes (null track fields) in audio and video files, audiobook chapters, incognito plays,
//! offline plays with `offline_timestamp` in seconds or milliseconds, skips and shuffles.

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

/// One generated extended play; `i` fixes it completely for a seed.
pub fn play(seed: u64, i: u64, start: DateTime<Utc>, old_fields: bool) -> Value {
    let mut rng = StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // Sessions of 16 plays about three minutes apart, one starting every two hours (so an hour
    // or more of silence between them); overlapping ranges overlap in time too.
    let ended = start
        + Duration::seconds(
            (i / 16) as i64 * 7200 + (i % 16) as i64 * 200 + rng.random_range(0..60),
        );
    let ms_played: i64 = rng.random_range(0..400_000);
    let roll: u32 = rng.random_range(0..100);
    // Skew: low artist indices are played far more often.
    let a = ((rng.random::<f64>().powi(3)) * ARTISTS.len() as f64) as usize;
    let artist = ARTISTS[a.min(ARTISTS.len() - 1)];
    let w1 = WORDS[rng.random_range(0..WORDS.len())];
    let w2 = WORDS[rng.random_range(0..WORDS.len())];
    let track_no: u32 = rng.random_range(0..40);
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
        "master_metadata_track_name": format!("{w1} {w2} {track_no}"),
        "master_metadata_album_artist_name": artist,
        "master_metadata_album_album_name": format!("{w2} ({artist})"),
        "spotify_track_uri": format!("spotify:track:{}", base62(a as u64 * 1000 + track_no as u64)),
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
    p
}

/// The Web API rows that match an export of plays `0..plays`: `recently_played.ndjson` (the
/// last 50 track plays of the export, with `played_at` a second or so off the export's end
/// time, and 20 plays after it) and `playlist_tracks.ndjson` (three playlists from the same
/// catalog, some tracks with a featured artist), in the columns `lake extract spotify` lands.
pub fn api(dir: &Path, seed: u64, plays: u64) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let start = default_start();
    let track = |p: &Value, featured: bool| -> Option<Value> {
        let uri = p["spotify_track_uri"].as_str()?;
        let id = uri.rsplit(':').next()?.to_string();
        let artist = p["master_metadata_album_artist_name"].as_str()?;
        let a = ARTISTS.iter().position(|x| *x == artist)?;
        let mut ids = vec![base62(10_000 + a as u64)];
        let mut names = vec![artist.to_string()];
        if featured {
            let f = (a + 3) % ARTISTS.len();
            ids.push(base62(10_000 + f as u64));
            names.push(ARTISTS[f].to_string());
        }
        let album = p["master_metadata_album_album_name"].as_str()?;
        Some(json!({
            "track_id": id,
            "track_name": p["master_metadata_track_name"],
            "track_uri": uri,
            "artist_ids": ids,
            "artist_names": names,
            "album_id": base62(20_000 + a as u64 * 100 + album.len() as u64),
            "album_name": album,
            "duration_ms": 200_000 + (id.as_bytes()[21] as i64) * 1000,
            "explicit": false,
            "is_local": false,
        }))
    };
    let mut recent: Vec<Value> = Vec::new();
    let mut i = plays;
    // Back from the end of the export until 50 track plays, then 20 after it.
    while recent.len() < 50 && i > 0 {
        i -= 1;
        let p = play(seed, i, start, false);
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
        let p = play(seed, j, start, false);
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
            let p = play(seed, k, start, false);
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
    let mut written = Vec::new();
    for (file, rows) in [
        ("recently_played.ndjson", &recent),
        ("playlist_tracks.ndjson", &playlist_rows),
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

/// Writes plays `range` of `seed` as an extended export in `dir`: audio files of at most
/// `per_file` plays, and one video file for every fiftieth play (video podcasts).
pub fn extended(
    dir: &Path,
    seed: u64,
    range: Range<u64>,
    per_file: usize,
    old_fields: bool,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let start = default_start();
    let mut audio = Vec::new();
    let mut video = Vec::new();
    for i in range {
        let p = play(seed, i, start, old_fields);
        if i % 50 == 49 && p["spotify_episode_uri"].is_string() {
            video.push(p);
        } else {
            audio.push(p);
        }
    }
    let mut written = Vec::new();
    for (n, chunk) in audio.chunks(per_file.max(1)).enumerate() {
        let year = chunk[0]["ts"].as_str().unwrap_or("2024")[..4].to_string();
        let path = dir.join(format!("Streaming_History_Audio_{year}_{n}.json"));
        write_json(&path, chunk)?;
        written.push(path);
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
            let p = play(seed, i, start, false);
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
