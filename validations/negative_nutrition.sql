-- Counts recipes with a negative calories, protein_g, carbs_g or fat_g value.
SELECT COUNT(*) AS issues
FROM recipes
WHERE calories < 0
   OR protein_g < 0
   OR carbs_g < 0
   OR fat_g < 0;
