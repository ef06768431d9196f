-- A join to a dimension: plays and minutes of the tracks in each playlist.
SELECT p.playlist_name,
       count(*) AS plays,
       round(sum(s.ms_played) / 60000.0, 3) AS minutes
FROM raw.spotify_streams AS s
JOIN raw.spotify_playlist_tracks AS p ON p.track_id = s.track_id
GROUP BY p.playlist_name
ORDER BY p.playlist_name
