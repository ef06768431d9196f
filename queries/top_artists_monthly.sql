/* lake
description = "Each month's ten most-played artists (tracks only), by minutes."
export = true

[[tests]]
unique = ["month", "rank"]
[[tests]]
not_null = ["month", "artist_name", "minutes"]
[[tests]]
relationships = { column = "artist_name", to = "curated.plays", field = "artist_name" }
*/
WITH monthly AS (
    SELECT
        date_trunc('month', ended_at) AS month,
        artist_name,
        count(*) AS plays,
        round(sum(ms_played) / 60000.0, 1) AS minutes
    FROM curated.plays
    WHERE kind = 'track' AND artist_name IS NOT NULL
    GROUP BY 1, 2
)
SELECT * FROM (
    SELECT
        CAST(month AS DATE) AS month,
        row_number() OVER (PARTITION BY month ORDER BY minutes DESC, artist_name) AS rank,
        artist_name,
        plays,
        minutes
    FROM monthly
)
WHERE rank <= 10
