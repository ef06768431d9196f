/* lake
description = "Listening sessions, per listener: a gap of 30 minutes or more between one play's end and the next play's start starts a new session."
export = true
# Files hold ranges of time, a month at most: a night's recompute replaces the files of the
# last sessions only, this month's, however long the history.
sort_by = ["started_at"]
files_by = "month"
# A session depends only on the plays from its start on: a listener's new plays recompute that
# listener's sessions from the last one that starts before them.
recompute_from = "started_at"

[[tests]]
unique = ["session_id"]
[[tests]]
not_null = ["session_id", "started_at", "ended_at", "plays"]
*/
WITH ordered AS (
    SELECT
        listener,
        started_at,
        ended_at,
        ms_played,
        track_id,
        max(ended_at) OVER (
            PARTITION BY listener
            ORDER BY started_at, ended_at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS previous_end
    FROM curated.plays
),
flagged AS (
    SELECT
        *,
        CASE
            WHEN previous_end IS NULL OR started_at - previous_end >= INTERVAL '30 minutes' THEN 1
            ELSE 0
        END AS starts_session
    FROM ordered
),
numbered AS (
    SELECT
        *,
        sum(starts_session) OVER (
            PARTITION BY listener ORDER BY started_at, ended_at ROWS UNBOUNDED PRECEDING
        ) AS listener_session
    FROM flagged
),
sessions AS (
    SELECT
        listener,
        min(started_at) AS started_at,
        max(ended_at) AS ended_at,
        count(*) AS plays,
        count(DISTINCT track_id) AS tracks,
        round(sum(ms_played) / 60000.0, 1) AS minutes
    FROM numbered
    GROUP BY listener, listener_session
)
-- The id is the listener's and the start's: a listener's new plays leave other sessions' ids
-- as they were, so lake recomputes only the listeners that have new plays.
SELECT md5(coalesce(listener, '') || '/' || CAST(started_at AS VARCHAR)) AS session_id, *
FROM sessions
