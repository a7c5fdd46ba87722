-- Counts email addresses that belong to more than one user when compared case-insensitively.
SELECT COUNT(*) AS issues
FROM (
    SELECT lower(email) AS email_key
    FROM users
    GROUP BY lower(email)
    HAVING COUNT(*) > 1
) AS duplicates;
