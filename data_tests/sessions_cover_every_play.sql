/* lake
description = "The sessions hold every play exactly once."
*/
SELECT s.plays AS in_sessions, p.plays AS plays
FROM (SELECT sum(plays) AS plays FROM curated.listening_sessions) s,
     (SELECT count(*) AS plays FROM curated.plays) p
WHERE s.plays <> p.plays
