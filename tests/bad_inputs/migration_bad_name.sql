-- A migration whose file name has no numeric version: `create_things.sql`.
CREATE TABLE things (id INTEGER PRIMARY KEY);
