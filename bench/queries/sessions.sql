-- Listening sessions per listener: a gap of more than 30 minutes starts a new one.
WITH gaps AS (
    SELECT username,
           ended_at,
           date_part('epoch', ended_at)
               - lag(date_part('epoch', ended_at)) OVER (PARTITION BY username ORDER BY ended_at) AS gap
    FROM raw.spotify_streams
),
numbered AS (
    SELECT username,
           sum(CASE WHEN gap IS NULL OR gap > 1800 THEN 1 ELSE 0 END)
               OVER (PARTITION BY username ORDER BY ended_at
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session
    FROM gaps
),
sessions AS (
    SELECT username, session, count(*) AS plays
    FROM numbered
    GROUP BY username, session
)
SELECT count(*) AS sessions,
       sum(plays) AS plays,
       max(plays) AS longest,
       round(avg(plays), 3) AS average_plays
FROM sessions
