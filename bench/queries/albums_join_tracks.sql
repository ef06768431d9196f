-- A join to the track dimension: the 20 albums listened to longest, and how much of their
-- tracks' length a play heard on average.
SELECT t.album_id,
       t.album_name,
       count(*) AS plays,
       round(sum(s.ms_played) / 60000.0, 3) AS minutes,
       round(avg(CASE WHEN s.ms_played > t.duration_ms THEN 1.0
                      ELSE s.ms_played * 1.0 / t.duration_ms END), 4) AS heard
FROM raw.spotify_streams AS s
JOIN raw.spotify_tracks AS t ON t.track_id = s.track_id
GROUP BY t.album_id, t.album_name
ORDER BY minutes DESC, t.album_id
LIMIT 20
