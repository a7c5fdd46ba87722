-- Common pantry ingredients. Idempotent: names that already exist are kept.
INSERT INTO ingredients (name) VALUES
    ('salt'),
    ('black pepper'),
    ('olive oil'),
    ('butter'),
    ('garlic'),
    ('onion'),
    ('all-purpose flour'),
    ('sugar')
ON CONFLICT (name) DO NOTHING;
