/* lake
materialized = "incremental"
unique_key = ["play_id"]
# Files hold ranges of time: a model recomputing a day, a month or a listener's last sessions
# reads the files of that time only.
sort_by = ["ended_at"]
description = "Every play of the personal data export, cleaned; new plays are merged in on each run."

[[tests]]
unique = ["play_id"]
[[tests]]
not_null = ["play_id", "ended_at", "started_at", "ms_played", "kind"]
[[tests]]
accepted_values = { column = "kind", values = ["track", "episode", "audiobook", "unknown"] }
*/
-- The export's `ts` (here `ended_at`) is when the stream ENDED; it started ms_played earlier.
SELECT
    stream_key AS play_id,
    'export' AS source,
    ended_at - arrow_cast(ms_played * 1000, 'Duration(Microsecond)') AS started_at,
    ended_at,
    ms_played,
    false AS ms_played_estimated,
    kind,
    track_id,
    coalesce(track_name, episode_name, audiobook_chapter_title) AS title,
    coalesce(artist_name, show_name, audiobook_title) AS artist_name,
    album_name,
    coalesce(skipped, ms_played < 30000) AS skipped,
    reason_start,
    reason_end,
    shuffle,
    platform,
    conn_country,
    -- Null unless spotify_export.personal_data keeps or hashes it (a lake of several
    -- listeners' exports, or the benchmark's history).
    username AS listener
FROM raw.spotify_streams
WHERE ms_played IS NOT NULL
