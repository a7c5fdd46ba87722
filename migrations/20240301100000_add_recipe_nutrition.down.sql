-- Needs SQLite 3.35+ for DROP COLUMN.
ALTER TABLE recipes DROP COLUMN fat_g;
ALTER TABLE recipes DROP COLUMN carbs_g;
ALTER TABLE recipes DROP COLUMN protein_g;
ALTER TABLE recipes DROP COLUMN calories;
