-- A validation check: runs after the migrations, and a result above 0 (or any rows
-- returned) fails the release and rolls it back. Add one file per rule your data must
-- keep, e.g. `SELECT id, email FROM users WHERE email IS NULL;` lists offending rows.
--
-- This one counts migrations the history records as failed.
SELECT COUNT(*) AS issues FROM _sqlx_migrations WHERE NOT success;
