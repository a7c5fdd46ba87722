//! The migration history through sqlx's own migrator, the same for every dialect: reading
//! `_sqlx_migrations`, applying and reverting one migration. Each adapter hands in a
//! connection of its kind.

use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrateError};

use super::{AppliedMigration, DatabaseError, DatabaseState};
use crate::migrate::MigrationFile;

fn history_error(e: MigrateError) -> DatabaseError {
    DatabaseError::Other(format!("cannot read the migration history: {e}"))
}

/// The history of a database whose `_sqlx_migrations` table exists.
pub async fn read<C: Migrate + Send + ?Sized>(
    conn: &mut C,
) -> Result<DatabaseState, DatabaseError> {
    let dirty = conn.dirty_version().await.map_err(history_error)?;
    let applied = conn
        .list_applied_migrations()
        .await
        .map_err(history_error)?
        .into_iter()
        .map(|m| AppliedMigration {
            version: m.version,
            checksum: m.checksum.into_owned(),
        })
        .collect();
    Ok(DatabaseState {
        exists: true,
        applied,
        dirty,
    })
}

/// Applies one migration and records it; returns how long it took.
pub async fn apply<C: Migrate + Send + ?Sized>(
    conn: &mut C,
    migration: &MigrationFile,
) -> Result<Duration, DatabaseError> {
    let to_err = |source| DatabaseError::Migration {
        version: migration.version,
        description: migration.description.clone(),
        source,
    };
    conn.ensure_migrations_table().await.map_err(to_err)?;
    let start = Instant::now();
    conn.apply(&migration.up()).await.map_err(to_err)?;
    Ok(start.elapsed())
}

/// Runs a migration's down file and removes its record.
pub async fn revert<C: Migrate + Send + ?Sized>(
    conn: &mut C,
    migration: &MigrationFile,
) -> Result<(), DatabaseError> {
    let down = migration.down().ok_or_else(|| {
        DatabaseError::Other(format!(
            "migration {} ({}) has no down file",
            migration.version, migration.description
        ))
    })?;
    conn.revert(&down)
        .await
        .map_err(|source| DatabaseError::Migration {
            version: migration.version,
            description: format!("{} (down)", migration.description),
            source,
        })?;
    Ok(())
}
