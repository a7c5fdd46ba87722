-- Ingredient catalogue and the recipe <-> ingredient join table.
CREATE TABLE ingredients (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- Key columns are declared NOT NULL explicitly: SQLite otherwise allows NULL
-- in a composite PRIMARY KEY.
CREATE TABLE recipe_ingredients (
    recipe_id     INTEGER NOT NULL REFERENCES recipes (id) ON DELETE CASCADE,
    ingredient_id INTEGER NOT NULL REFERENCES ingredients (id),
    quantity      REAL NOT NULL CHECK (quantity > 0),
    unit          TEXT NOT NULL,
    PRIMARY KEY (recipe_id, ingredient_id)
);

-- The primary key covers lookups by recipe; this one covers "which recipes
-- use this ingredient" and foreign-key checks on ingredients.
CREATE INDEX idx_recipe_ingredients_ingredient_id ON recipe_ingredients (ingredient_id);
