DROP INDEX idx_recipe_ingredients_ingredient_id;
DROP TABLE recipe_ingredients;
DROP TABLE ingredients;
