/* lake
description = "A skip rate lies between 0 and 1, and skips never outnumber plays."
*/
SELECT * FROM curated.track_skip_rate
WHERE skip_rate < 0 OR skip_rate > 1 OR skips > plays
