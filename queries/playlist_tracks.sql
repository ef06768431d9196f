/* lake
description = "One row per playlist track and artist: featured artists get rows of their own."
export = true

[[tests]]
unique = ["playlist_id", "position", "artist_position"]
[[tests]]
not_null = ["playlist_id", "track_id", "artist_id", "artist_name"]
*/
WITH tracks AS (
    SELECT
        playlist_id,
        trim(playlist_name) AS playlist_name,
        position,
        arrow_cast(added_at, 'Timestamp(Microsecond, Some("UTC"))') AS added_at,
        track_id,
        trim(track_name) AS track_name,
        trim(album_name) AS album_name,
        artist_ids,
        artist_names,
        generate_series(1, cardinality(artist_ids)) AS artist_positions
    FROM raw.spotify_playlist_tracks
    WHERE item_type = 'track' AND track_id IS NOT NULL AND NOT coalesce(is_local, false)
)
SELECT
    playlist_id,
    playlist_name,
    position,
    added_at,
    track_id,
    track_name,
    album_name,
    unnest(artist_positions) AS artist_position,
    unnest(artist_ids) AS artist_id,
    trim(unnest(artist_names)) AS artist_name
FROM tracks
