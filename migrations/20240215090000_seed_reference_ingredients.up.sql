-- Common pantry ingredients. Idempotent: names that already exist are kept.
-- Ids are computed rather than generated so the same SQL runs on SQLite and PostgreSQL.
INSERT INTO ingredients (id, name)
SELECT (SELECT COALESCE(MAX(id), 0) FROM ingredients) + ROW_NUMBER() OVER (ORDER BY v.name), v.name
FROM (
    SELECT 'salt' AS name
    UNION ALL SELECT 'black pepper'
    UNION ALL SELECT 'olive oil'
    UNION ALL SELECT 'butter'
    UNION ALL SELECT 'garlic'
    UNION ALL SELECT 'onion'
    UNION ALL SELECT 'all-purpose flour'
    UNION ALL SELECT 'sugar'
) AS v
WHERE v.name NOT IN (SELECT name FROM ingredients);
