//! Migrations in the sqlx-cli layout: `<version>_<name>.up.sql` + `.down.sql` (reversible)
//! or `<version>_<name>.sql` (irreversible), recorded in sqlx's `_sqlx_migrations` table
//! with the same description and SHA-384 checksum, so a project already on sqlx-cli adopts
//! cutover with nothing re-applied.

pub(crate) mod equivalence;
pub(crate) mod lint;
pub(crate) mod source;
pub(crate) mod statements;
pub(crate) mod tables;

pub(crate) use source::{MigrationFile, MigrationSet};
