-- Skip rate of the 20 most-played tracks.
SELECT track_id,
       count(*) AS plays,
       round(avg(CASE WHEN skipped THEN 1.0 ELSE 0.0 END), 4) AS skip_rate
FROM raw.spotify_streams
WHERE track_id IS NOT NULL
GROUP BY track_id
ORDER BY plays DESC, track_id
LIMIT 20
