/* lake
description = "Recently-played rows from the Web API that no export play accounts for yet."

[[tests]]
unique = ["play_id"]
[[tests]]
row_count = { min = 1 }
severity = "warn"
name = "api_stream_landed"
*/
-- Spotify documents `played_at` only as "when the track was played". An API row is the same
-- play as an export row of the same track when played_at falls within that play, from its
-- start (ended_at - ms_played) to its end, with 10 seconds of slack either side. Whichever
-- moment played_at marks, the two are matched; the export row wins, as it is the richer one.
WITH api AS (
    SELECT
        arrow_cast(played_at, 'Timestamp(Microsecond, Some("UTC"))') AS played_at,
        track_id,
        track_name,
        artist_names,
        album_name,
        duration_ms
    FROM raw.spotify_recently_played
    WHERE track_id IS NOT NULL
)
SELECT
    'api:' || a.track_id || ':' || CAST(CAST(a.played_at AS BIGINT) AS VARCHAR) AS play_id,
    'api' AS source,
    a.played_at - arrow_cast(a.duration_ms * 1000, 'Duration(Microsecond)') AS started_at,
    a.played_at AS ended_at,
    a.duration_ms AS ms_played,
    true AS ms_played_estimated,
    'track' AS kind,
    a.track_id,
    a.track_name AS title,
    a.artist_names[1] AS artist_name,
    a.album_name,
    CAST(NULL AS BOOLEAN) AS skipped,
    CAST(NULL AS VARCHAR) AS reason_start,
    CAST(NULL AS VARCHAR) AS reason_end,
    CAST(NULL AS BOOLEAN) AS shuffle,
    CAST(NULL AS VARCHAR) AS platform,
    CAST(NULL AS VARCHAR) AS conn_country,
    CAST(NULL AS VARCHAR) AS listener
FROM api a
WHERE NOT EXISTS (
    SELECT 1 FROM curated.export_plays e
    WHERE e.track_id = a.track_id
      AND a.played_at BETWEEN e.started_at - INTERVAL '10 seconds'
                          AND e.ended_at + INTERVAL '10 seconds'
)
