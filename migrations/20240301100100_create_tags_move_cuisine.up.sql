-- Replace the free-text recipes.cuisine column with tags.
CREATE TABLE tags (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE recipe_tags (
    recipe_id INTEGER NOT NULL REFERENCES recipes (id) ON DELETE CASCADE,
    tag_id    INTEGER NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    PRIMARY KEY (recipe_id, tag_id)
);

CREATE INDEX idx_recipe_tags_tag_id ON recipe_tags (tag_id);

-- One tag per distinct cuisine value.
INSERT INTO tags (id, name)
SELECT ROW_NUMBER() OVER (ORDER BY cuisine), cuisine
FROM (SELECT DISTINCT cuisine FROM recipes WHERE cuisine IS NOT NULL) AS d;

-- Link every recipe to the tag for its cuisine.
INSERT INTO recipe_tags (recipe_id, tag_id)
SELECT r.id, t.id
FROM recipes r
JOIN tags t ON t.name = r.cuisine;

-- Needs SQLite 3.35+ for DROP COLUMN.
ALTER TABLE recipes DROP COLUMN cuisine;
