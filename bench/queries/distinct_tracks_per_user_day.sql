-- Distinct tracks per listener per day, the 20 busiest days.
SELECT coalesce(username, 'listener') AS listener,
       CAST(ended_at AS DATE) AS day,
       count(DISTINCT track_id) AS tracks
FROM raw.spotify_streams
GROUP BY 1, 2
ORDER BY tracks DESC, day, listener
LIMIT 20
