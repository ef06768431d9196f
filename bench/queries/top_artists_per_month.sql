-- The five most-played artists of each month, in minutes.
SELECT month, artist_name, minutes FROM (
    SELECT CAST(date_trunc('month', ended_at) AS DATE) AS month,
           artist_name,
           round(sum(ms_played) / 60000.0, 3) AS minutes,
           row_number() OVER (PARTITION BY CAST(date_trunc('month', ended_at) AS DATE)
                              ORDER BY sum(ms_played) DESC, artist_name) AS r
    FROM raw.spotify_streams
    WHERE artist_name IS NOT NULL
    GROUP BY 1, 2
) AS ranked
WHERE r <= 5
ORDER BY month, r
