-- Application users. Emails are unique as stored; see
-- validations/duplicate_user_emails.sql for the case-insensitive check.
CREATE TABLE users (
    id           INTEGER PRIMARY KEY,
    email        TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    nickname     TEXT,
    created_at   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
