-- Restore recipes.cuisine from tags. A column holds one value, so a recipe
-- with several tags gets the alphabetically first one; the other tags are lost.
-- The column comes back at the end of the table, not in its original position.
ALTER TABLE recipes ADD COLUMN cuisine TEXT;

UPDATE recipes
SET cuisine = (
    SELECT MIN(t.name)
    FROM recipe_tags rt
    JOIN tags t ON t.id = rt.tag_id
    WHERE rt.recipe_id = recipes.id
);

DROP INDEX idx_recipe_tags_tag_id;
DROP TABLE recipe_tags;
DROP TABLE tags;
