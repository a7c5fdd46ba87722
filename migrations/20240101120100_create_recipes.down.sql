DROP INDEX idx_recipes_user_id;
DROP TABLE recipes;
