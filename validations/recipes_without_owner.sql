-- Counts recipes whose user_id does not match any user.
SELECT COUNT(*) AS issues
FROM recipes r
WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id);
