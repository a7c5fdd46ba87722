-- Email addresses that belong to more than one user when compared case-insensitively:
-- each row returned is one clash, shown with the run's failure.
SELECT lower(email) AS email, COUNT(*) AS users
FROM users
GROUP BY lower(email)
HAVING COUNT(*) > 1;
