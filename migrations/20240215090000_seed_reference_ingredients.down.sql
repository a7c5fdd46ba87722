-- Remove the seeded ingredients, but keep any that recipes now use.
DELETE FROM ingredients
WHERE name IN (
        'salt',
        'black pepper',
        'olive oil',
        'butter',
        'garlic',
        'onion',
        'all-purpose flour',
        'sugar'
    )
  AND id NOT IN (SELECT ingredient_id FROM recipe_ingredients);
