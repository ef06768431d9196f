/* lake
materialized = "view"
description = "Every play, once: the export's plays and the API's plays the export does not have yet."

[[tests]]
unique = ["play_id"]
[[tests]]
not_null = ["play_id", "started_at", "ended_at", "source"]
[[tests]]
accepted_values = { column = "source", values = ["export", "api"] }
*/
SELECT *, CAST(ended_at AS DATE) AS day FROM curated.export_plays
UNION ALL
SELECT *, CAST(ended_at AS DATE) AS day FROM curated.api_plays
