//! Snapshots: a copy of the database on the same server, made by `CREATE DATABASE ...
//! TEMPLATE` at file-copy speed, and swapped back in by two renames on rollback.
//!
//! A template copy needs the source free of sessions: cutover ends the others (the app
//! is in maintenance by then) and takes its deploy lock in the maintenance database, as
//! `restore: swap` does. The swap renames in one transaction, so a process killed during
//! it leaves either the old names or the new ones; `swap_in` reads which from
//! `pg_database` and finishes from there.

use super::super::{DatabaseError, Swap};
use super::{MAINTENANCE_DB, PgRestore, PostgresDatabase, ident, run_sql};

/// What a session on the database is, for people: `pid 123 app@10.0.0.5 (puma)`.
const DESCRIBE_SESSION: &str = "SELECT format('pid %s %s@%s%s', pid, usename, COALESCE(client_addr::text, 'local'), CASE WHEN application_name <> '' THEN ' (' || application_name || ')' ELSE '' END)
     FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY pid";

impl PostgresDatabase {
    pub(super) fn snapshot_support_pg(&self) -> Result<(), String> {
        if self.settings.restore != PgRestore::Swap {
            return Err(
                "a PostgreSQL snapshot needs `restore: swap` on the database: the copy is made with no session on the database (so cutover keeps its deploy lock in the `postgres` database, as `restore: swap` does) and is swapped in by renaming on rollback"
                    .into(),
            );
        }
        if self.database_name() == MAINTENANCE_DB {
            return Err(format!(
                "the `{MAINTENANCE_DB}` database cannot be snapshotted: cutover renames databases from it"
            ));
        }
        Ok(())
    }

    /// The sessions on `database` other than the asking one.
    pub(super) async fn sessions_on(
        admin: &mut sqlx::PgConnection,
        database: &str,
    ) -> Result<Vec<String>, DatabaseError> {
        sqlx::query_scalar(DESCRIBE_SESSION)
            .bind(database)
            .fetch_all(&mut *admin)
            .await
            .map_err(super::super::sql_err(
                "cannot list the sessions on the database",
            ))
    }

    /// Ends every other session on `database` and waits (up to 5 seconds) for them to go;
    /// an error names those that stay.
    async fn end_all_sessions(
        admin: &mut sqlx::PgConnection,
        database: &str,
    ) -> Result<(), DatabaseError> {
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .execute(&mut *admin)
        .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut pause = std::time::Duration::from_millis(2);
        loop {
            let left = Self::sessions_on(admin, database).await?;
            if left.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(DatabaseError::Other(format!(
                    "{} session(s) on {database} did not end: {} (ending another role's session needs `pg_signal_backend` or superuser)",
                    left.len(),
                    left.join(", ")
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
    }

    async fn exists(admin: &mut sqlx::PgConnection, name: &str) -> Result<bool, DatabaseError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await
            .map_err(super::super::sql_err("cannot list the databases"))
    }

    pub(super) async fn snapshot_pg(&self, name: &str) -> Result<(), DatabaseError> {
        self.snapshot_support_pg().map_err(DatabaseError::Other)?;
        let target = self.database_name();
        let mut admin = self.maintenance().await?;
        let (server, _) = self.server_version_num().await?;
        // Every session on the source must be gone for the copy: ours first.
        self.close().await;
        Self::end_all_sessions(&mut admin, &target).await?;
        // FILE_COPY (15+) copies the files after a checkpoint instead of writing every
        // block through the log (the default from 15): the fast way for a whole database.
        let strategy = if server >= 150_000 {
            " STRATEGY FILE_COPY"
        } else {
            ""
        };
        let created = run_sql(
            &mut admin,
            &format!(
                "CREATE DATABASE {} TEMPLATE {}{strategy}",
                ident(name),
                ident(&target)
            ),
        )
        .await;
        if let Err(e) = created {
            // A failed CREATE DATABASE removes what it copied; a name left by an earlier
            // attempt that died half-way is removed too.
            let _ = run_sql(
                &mut admin,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)),
            )
            .await;
            let still = Self::sessions_on(&mut admin, &target)
                .await
                .unwrap_or_default();
            return Err(DatabaseError::Other(format!(
                "cannot copy {target} to {name}: {e}{}",
                if still.is_empty() {
                    String::new()
                } else {
                    format!("; sessions on it now: {}", still.join(", "))
                }
            )));
        }
        let _ = sqlx::Connection::close(admin).await;
        Ok(())
    }

    pub(super) async fn swap_in_pg(
        &self,
        name: &str,
        replaced: &str,
    ) -> Result<Swap, DatabaseError> {
        let target = self.database_name();
        let mut admin = self.maintenance().await?;
        let live = Self::exists(&mut admin, &target).await?;
        let snapshot = Self::exists(&mut admin, name).await?;
        let kept = Self::exists(&mut admin, replaced).await?;
        let note = || {
            format!(
                "snapshot {name} swapped in for {target}; the database it replaced is kept as {replaced}: `cutover backup prune` drops it, or `DROP DATABASE {};` (connected to another database)",
                ident(replaced)
            )
        };
        match (live, snapshot, kept) {
            // Already swapped in (by an earlier attempt that died before it said so).
            (true, false, true) => return Ok(Swap::Done { note: note() }),
            (true, false, false) => return Ok(Swap::Gone),
            (true, true, false) => {}
            (false, true, true) => {
                // Half-way: renamed out, not yet in (not possible with the one transaction
                // below, but a database renamed by hand is finished the same way).
                run_sql(
                    &mut admin,
                    &format!(
                        "ALTER DATABASE {} RENAME TO {}",
                        ident(name),
                        ident(&target)
                    ),
                )
                .await
                .map_err(super::super::sql_err(format!(
                    "cannot rename {name} to {target}"
                )))?;
                return Ok(Swap::Done { note: note() });
            }
            (live, snapshot, kept) => {
                return Err(DatabaseError::Other(format!(
                    "cannot tell where the swap of {name} for {target} stands: {target} {}, {name} {}, {replaced} {}",
                    if live { "exists" } else { "is missing" },
                    if snapshot { "exists" } else { "is missing" },
                    if kept { "exists" } else { "is missing" },
                )));
            }
        }
        self.close().await;
        Self::end_all_sessions(&mut admin, &target).await?;
        Self::end_all_sessions(&mut admin, name).await?;
        let mut tx = sqlx::Connection::begin(&mut admin)
            .await
            .map_err(super::super::sql_err("cannot begin the swap"))?;
        run_sql(
            &mut tx,
            &format!(
                "ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}",
                ident(&target),
                ident(replaced),
                ident(name),
                ident(&target)
            ),
        )
        .await
        .map_err(super::super::sql_err(format!(
            "cannot swap {name} in for {target}"
        )))?;
        super::super::swap_crash_point();
        tx.commit().await.map_err(super::super::sql_err(format!(
            "cannot swap {name} in for {target}"
        )))?;
        let _ = sqlx::Connection::close(admin).await;
        Ok(Swap::Done { note: note() })
    }

    pub(super) async fn drop_snapshot_pg(&self, name: &str) -> Result<bool, DatabaseError> {
        if name == self.database_name() || name == MAINTENANCE_DB {
            return Err(DatabaseError::Other(format!(
                "refusing to drop {name}: it is not a snapshot"
            )));
        }
        let mut admin = self.maintenance().await?;
        let existed = Self::exists(&mut admin, name).await?;
        run_sql(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)),
        )
        .await
        .map_err(super::super::sql_err(format!("cannot drop {name}")))?;
        let _ = sqlx::Connection::close(admin).await;
        Ok(existed)
    }
}
