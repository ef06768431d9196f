/* lake
description = "How often each track is skipped: plays under 30 s, or flagged skipped by Spotify."
export = true

[[tests]]
unique = ["track_id"]
[[tests]]
not_null = ["track_id", "plays", "skip_rate"]
*/
SELECT
    track_id,
    max(title) AS track_name,
    max(artist_name) AS artist_name,
    count(*) AS plays,
    count(*) FILTER (WHERE skipped) AS skips,
    round(CAST(count(*) FILTER (WHERE skipped) AS DOUBLE) / count(*), 4) AS skip_rate
FROM curated.plays
WHERE kind = 'track' AND track_id IS NOT NULL AND skipped IS NOT NULL
GROUP BY track_id
