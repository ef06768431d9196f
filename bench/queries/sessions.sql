-- Listening sessions: a gap of more than 30 minutes starts a new one.
WITH gaps AS (
    SELECT date_part('epoch', ended_at) AS t,
           date_part('epoch', ended_at) - lag(date_part('epoch', ended_at)) OVER (ORDER BY ended_at) AS gap
    FROM raw.spotify_streams
),
numbered AS (
    SELECT sum(CASE WHEN gap IS NULL OR gap > 1800 THEN 1 ELSE 0 END)
               OVER (ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session
    FROM gaps
)
SELECT count(DISTINCT session) AS sessions,
       count(*) AS plays,
       max(session) AS last_session
FROM numbered
