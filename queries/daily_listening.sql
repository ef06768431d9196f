/* lake
description = "One row per day (UTC): plays, minutes, distinct tracks and artists, skips."
export = true

[[tests]]
unique = ["day"]
[[tests]]
not_null = ["day", "plays", "minutes"]
*/
SELECT
    day,
    count(*) AS plays,
    round(sum(ms_played) / 60000.0, 1) AS minutes,
    count(DISTINCT track_id) AS tracks,
    count(DISTINCT artist_name) AS artists,
    count(*) FILTER (WHERE skipped) AS skips
FROM curated.plays
GROUP BY day
