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
    -- count(DISTINCT ...), written so: DataFusion 55 gives every group of a grouped
    -- count(DISTINCT) a hash table of its own (apache/datafusion#24857).
    coalesce(cardinality(array_distinct(array_agg(track_id) FILTER (WHERE track_id IS NOT NULL))), 0) AS tracks,
    coalesce(cardinality(array_distinct(array_agg(artist_name) FILTER (WHERE artist_name IS NOT NULL))), 0) AS artists,
    count(*) FILTER (WHERE skipped) AS skips
FROM curated.plays
GROUP BY day
