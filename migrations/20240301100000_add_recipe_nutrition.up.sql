-- Optional per-serving nutrition facts. The CHECKs are column-level so that
-- SQLite's ALTER TABLE ... DROP COLUMN can still remove these columns.
ALTER TABLE recipes ADD COLUMN calories INTEGER CHECK (calories IS NULL OR calories >= 0);
ALTER TABLE recipes ADD COLUMN protein_g REAL CHECK (protein_g IS NULL OR protein_g >= 0);
ALTER TABLE recipes ADD COLUMN carbs_g REAL CHECK (carbs_g IS NULL OR carbs_g >= 0);
ALTER TABLE recipes ADD COLUMN fat_g REAL CHECK (fat_g IS NULL OR fat_g >= 0);
