-- Counts recipe_ingredients rows whose recipe or ingredient no longer exists.
SELECT COUNT(*) AS issues
FROM recipe_ingredients ri
WHERE NOT EXISTS (SELECT 1 FROM recipes r WHERE r.id = ri.recipe_id)
   OR NOT EXISTS (SELECT 1 FROM ingredients i WHERE i.id = ri.ingredient_id);
