-- Recipes owned by a user. `cuisine` is a free-text label that is later
-- replaced by tags (see 20240301100100_create_tags_move_cuisine).
CREATE TABLE recipes (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    servings     INTEGER NOT NULL CHECK (servings > 0),
    instructions TEXT,
    cuisine      TEXT,
    created_at   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_recipes_user_id ON recipes (user_id);
