//! Restoring a backup: into the database itself (`restore: in-place`), or into a new
//! database that is checked and renamed into place (`restore: swap`).

use std::os::fd::AsRawFd;
use std::process::Stdio;

use rustix::io::FdFlags;
use rustix::pipe::PipeFlags;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::io::AsyncRead;

use super::super::{Database, DatabaseError};
use super::tools::missing_tool;
use super::{MAINTENANCE_DB, MAX_NAME, PostgresDatabase, ShapeRow, ident, literal, run_sql};

/// Bytes read at a time on the way into pg_restore: big enough that the copy costs few
/// wake-ups per pipe-full.
const COPY_BUFFER: usize = 1 << 20;

/// The pipes into pg_restore and psql: 1 MiB, what an unprivileged process may ask for.
const PIPE_SIZE: usize = 1 << 20;

impl PostgresDatabase {
    /// Streams `pg_restore` of `source` into `psql -1` on `database`, after SQL that
    /// drops what is there. pg_restore writes straight into psql; cutover only feeds
    /// pg_restore. All or nothing: psql commits after its last input, which is a pipe
    /// cutover holds (the gate). It is closed only once `source` was read to its end
    /// without error (a checked backup ends with an error when it does not match its
    /// manifest) and pg_restore finished; otherwise psql is killed before it gets there
    /// and the server rolls the transaction back, whatever part of the backup it had run.
    pub(super) async fn restore_into(
        &self,
        database: Option<&str>,
        source: &mut (dyn AsyncRead + Unpin + Send),
        prelude: &str,
    ) -> Result<(), DatabaseError> {
        let pipe_err = |source| DatabaseError::Io {
            what: "cannot make a pipe for the restore".into(),
            source,
        };
        let (sql_out, sql_in) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| pipe_err(e.into()))?;
        // Bigger than the default 64 KiB: fewer switches between pg_restore and psql. Only
        // a hint; the default works too.
        let _ = rustix::pipe::fcntl_setpipe_size(&sql_in, PIPE_SIZE);
        // Declared before psql, so dropped after it: when this future is dropped half-way
        // (a timeout, Ctrl-C), psql is killed (`kill_on_drop`) before its gate closes.
        let (gate_out, gate) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| pipe_err(e.into()))?;
        // psql opens the gate as /dev/fd/N: a copy of its end without close-on-exec, above
        // the standard descriptors. Other programs started meanwhile inherit it too, which
        // only lets them read from it.
        let gate_out = rustix::io::fcntl_dupfd_cloexec(&gate_out, 3)
            .and_then(|fd| rustix::io::fcntl_setfd(&fd, FdFlags::empty()).map(|()| fd))
            .map_err(|e| pipe_err(e.into()))?;
        let gate_path = format!("/dev/fd/{}", gate_out.as_raw_fd());
        if !std::path::Path::new(&gate_path).exists() {
            return Err(DatabaseError::Other(format!(
                "cannot restore: {gate_path} does not exist here, and psql reads the end of the restore from it (is /proc mounted?)"
            )));
        }
        // Each command is dropped once spawned, and with it this process's copy of the
        // pipe end it hands over: psql must see pg_restore's output end.
        let mut restore = {
            let (mut restore, _) = self.tool("pg_restore", database);
            restore
                .args([
                    "--no-owner",
                    "--no-acl",
                    "--clean",
                    "--if-exists",
                    "--file=-",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::from(sql_in))
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| missing_tool("pg_restore", &e))?
        };
        let psql = {
            let (mut psql, target) = self.tool("psql", database);
            // Notices (what a `DROP SCHEMA .. CASCADE` took along) would fill psql's
            // stderr, read only at the end.
            let prelude = format!("SET client_min_messages = warning;\n{prelude}");
            psql.args([
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "-v",
                "ON_ERROR_STOP=1",
                "--command",
                &prelude,
                "--file=-",
            ])
            .arg(format!("--file={gate_path}"))
            .arg("--dbname")
            .arg(&target)
            .stdin(Stdio::from(sql_out))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| missing_tool("psql", &e))
        };
        drop(gate_out);
        let mut psql = match psql {
            Ok(psql) => psql,
            Err(e) => {
                let _ = restore.start_kill();
                let _ = restore.wait().await;
                return Err(e);
            }
        };
        let mut to_restore = restore.stdin.take().expect("piped");
        let _ = rustix::pipe::fcntl_setpipe_size(&to_restore, PIPE_SIZE);
        let fed = {
            let mut source = tokio::io::BufReader::with_capacity(COPY_BUFFER, source);
            let r = tokio::io::copy_buf(&mut source, &mut to_restore).await;
            drop(to_restore);
            r
        };
        let restored = super::shared::wait_tool(restore, "pg_restore").await;
        // psql gone already stopped on its own (an SQL error): its error is the cause, the
        // others only saw their pipes break.
        let psql_failed = matches!(psql.try_wait(), Ok(Some(status)) if !status.success());
        let gate = if fed.is_ok() && restored.is_ok() {
            // The end of psql's last input: it commits.
            drop(gate);
            None
        } else {
            // Killed and reaped before the gate closes, so nothing can be committed.
            let _ = psql.start_kill();
            Some(gate)
        };
        let applied = super::shared::wait_tool(psql, "psql").await;
        drop(gate);
        let fed = fed.map(|_| ()).map_err(|source| DatabaseError::Io {
            what: "cannot read the backup".into(),
            source,
        });
        if psql_failed {
            return applied.and(fed).and(restored);
        }
        fed.and(restored).and(applied)
    }

    /// `restore: swap`: restores into a new database beside this one, checks it, then ends
    /// the sessions on this database and swaps the two by renaming, keeping the replaced
    /// one. Anything failing before the renames drops the new database and leaves this one
    /// as it was. Returns where the replaced database is and how to drop it.
    pub(super) async fn restore_swap(
        &self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<String, DatabaseError> {
        let target = self.database_name();
        if target == MAINTENANCE_DB {
            return Err(DatabaseError::Other(format!(
                "`restore: swap` cannot swap the `{MAINTENANCE_DB}` database, which it renames databases from; use `restore: in-place`"
            )));
        }
        let mut admin = self.maintenance().await?;
        let like = Shape::read(&mut admin, &target).await?;
        let public = self.public_schema().await?;
        let new = with_suffix(
            &target,
            &format!(
                "_restore_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        );
        run_sql(&mut admin, &like.create_sql(&new))
            .await
            .map_err(super::super::sql_err(format!(
                "cannot create database {new} to restore into (`restore: swap` needs CREATEDB)"
            )))?;
        let mut guard = SwapGuard {
            options: self.options.clone().database(MAINTENANCE_DB),
            new: Some(new.clone()),
            reopen: None,
        };
        let prepared = async {
            let copy = like.copy_sql(&new);
            if !copy.is_empty() {
                run_sql(&mut admin, &copy)
                    .await
                    .map_err(super::super::sql_err(format!(
                        "cannot give {new} the grants, comment and settings of {target}"
                    )))?;
            }
            self.restore_into(Some(&new), source, &reset_schemas(Some(&public)))
                .await?;
            // The restored database answers and its migration history reads.
            let restored = self.sibling(&new)?;
            let state = restored.state().await;
            restored.close().await;
            state.map_err(|e| {
                DatabaseError::Other(format!("the restored database {new} does not read: {e}"))
            })
        }
        .await;
        if let Err(e) = prepared {
            return Err(guard.cleanup_now(&mut admin, e).await);
        }
        // Every session on the target must be gone for the rename: ours first.
        self.close().await;
        let swapped = self.swap(&mut admin, &target, &new, &mut guard).await;
        let replaced = match swapped {
            Ok(replaced) => replaced,
            Err(e) => return Err(guard.cleanup_now(&mut admin, e).await),
        };
        guard.disarm();
        // The swap is done: nothing below may fail the restore (a retry would swap again).
        let mut note = format!(
            "restored into a new database and swapped it in; the database it replaced is kept as {replaced}: once it is no longer needed, drop it with `DROP DATABASE {};` (connected to another database, e.g. `{MAINTENANCE_DB}`)",
            ident(&replaced)
        );
        if let Err(e) = run_sql(
            &mut admin,
            &format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                ident(&replaced)
            ),
        )
        .await
        {
            note.push_str(&format!(
                "; it does not accept connections ({e}): `ALTER DATABASE {} WITH ALLOW_CONNECTIONS true` to look inside",
                ident(&replaced)
            ));
        }
        if !like.role_settings.is_empty() {
            note.push_str(&format!(
                "; per-role settings of the old database were not carried over: {} (set them again with `ALTER ROLE .. IN DATABASE {} SET ..`)",
                like.role_settings.join(", "),
                ident(&target)
            ));
        }
        let _ = admin.close().await;
        if let Err(e) = self.pool().await {
            tracing::warn!("cannot reconnect to the restored database yet: {e}");
        }
        Ok(note)
    }

    /// The `public` schema's grants, comment and owner in this database.
    pub(super) async fn public_schema(&self) -> Result<PublicSchema, DatabaseError> {
        let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT n.nspacl::text, obj_description(n.oid, 'pg_namespace'), pg_get_userbyid(n.nspowner)::text
             FROM pg_namespace n WHERE n.nspname = 'public'",
        )
        .fetch_optional(&self.pool().await?)
        .await
        .map_err(super::super::sql_err("cannot read the public schema's grants"))?;
        Ok(
            row.map_or_else(PublicSchema::default, |(acl, note, owner)| PublicSchema {
                acl,
                note,
                owner,
            }),
        )
    }

    /// Bars new sessions from `target`, ends the others and renames `target` to
    /// `<target>_replaced_<timestamp>` and `new` to `target`, in one transaction. On an
    /// error `target` is as it was, except that it may still refuse connections until
    /// `guard` lets them in again.
    pub(super) async fn swap(
        &self,
        admin: &mut sqlx::PgConnection,
        target: &str,
        new: &str,
        guard: &mut SwapGuard,
    ) -> Result<String, DatabaseError> {
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
        let mut replaced = with_suffix(target, &format!("_replaced_{stamp}"));
        let mut n = 1;
        loop {
            let taken: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&replaced)
                    .fetch_one(&mut *admin)
                    .await
                    .map_err(super::super::sql_err("cannot list the databases"))?;
            if !taken {
                break;
            }
            n += 1;
            replaced = with_suffix(target, &format!("_replaced_{stamp}_{n}"));
        }
        guard.reopen = Some(target.to_owned());
        run_sql(
            admin,
            &format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
                ident(target)
            ),
        )
        .await
        .map_err(super::super::sql_err(format!(
            "cannot stop new sessions on {target} for the swap (the role must own it)"
        )))?;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(target)
        .execute(&mut *admin)
        .await
        .map_err(super::super::sql_err(format!(
            "cannot end the sessions on {target} for the swap (the role needs to be theirs, `pg_signal_backend` or superuser)"
        )))?;
        // The rename waits up to 5 seconds for the ended sessions to go.
        let mut tx = admin
            .begin()
            .await
            .map_err(super::super::sql_err("cannot begin the swap"))?;
        run_sql(
            &mut tx,
            &format!(
                "ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}",
                ident(target),
                ident(&replaced),
                ident(new),
                ident(target)
            ),
        )
        .await
        .map_err(super::super::sql_err(format!(
            "cannot swap {new} in for {target}"
        )))?;
        tx.commit().await.map_err(super::super::sql_err(format!(
            "cannot swap {new} in for {target}"
        )))?;
        Ok(replaced)
    }
}

/// What a database made by `restore: swap` copies from the one it replaces: encoding,
/// locale, tablespace, connection limit, owner, grants, comment and settings.
pub(super) struct Shape {
    pub(super) encoding: String,
    pub(super) collate: String,
    pub(super) ctype: String,
    pub(super) provider: Option<String>,
    pub(super) locale: Option<String>,
    pub(super) icu_rules: Option<String>,
    pub(super) owner: String,
    pub(super) tablespace: String,
    pub(super) connection_limit: i32,
    /// `None`: the default privileges.
    pub(super) grants: Option<Vec<(String, String, bool)>>,
    pub(super) comment: Option<String>,
    /// Database-wide settings, `name=value`.
    pub(super) settings: Vec<String>,
    /// Settings for one role in this database, `role: name=value` (not carried over).
    pub(super) role_settings: Vec<String>,
}

impl Shape {
    async fn read(admin: &mut sqlx::PgConnection, target: &str) -> Result<Self, DatabaseError> {
        let err = || super::super::sql_err(format!("cannot read the properties of {target}"));
        // Through to_jsonb: the locale columns differ between server versions.
        let row: Option<ShapeRow> = sqlx::query_as(
            "SELECT pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text,
                    to_jsonb(d) ->> 'datlocprovider',
                    COALESCE(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale'),
                    to_jsonb(d) ->> 'daticurules',
                    pg_get_userbyid(d.datdba)::text, pg_has_role(d.datdba, 'MEMBER'),
                    t.spcname::text, d.datconnlimit, d.datacl IS NULL,
                    shobj_description(d.oid, 'pg_database')
             FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
             WHERE d.datname = $1",
        )
        .bind(target)
        .fetch_optional(&mut *admin)
        .await
        .map_err(err())?;
        let Some((
            encoding,
            collate,
            ctype,
            provider,
            locale,
            icu_rules,
            owner,
            owned,
            tablespace,
            connection_limit,
            default_acl,
            comment,
        )) = row
        else {
            return Err(DatabaseError::Other(format!(
                "database {target} is not on the server"
            )));
        };
        if !owned {
            return Err(DatabaseError::Other(format!(
                "`restore: swap` renames {target}, which only its owner can do: the role must be (a member of) {owner}"
            )));
        }
        let grants = if default_acl {
            None
        } else {
            Some(
                sqlx::query_as(
                    "SELECT a.privilege_type,
                            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                            a.is_grantable
                     FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1",
                )
                .bind(target)
                .fetch_all(&mut *admin)
                .await
                .map_err(err())?,
            )
        };
        let configured: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole)::text END,
                    unnest(s.setconfig)
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
             WHERE d.datname = $1",
        )
        .bind(target)
        .fetch_all(&mut *admin)
        .await
        .map_err(err())?;
        let mut settings = Vec::new();
        let mut role_settings = Vec::new();
        for (role, setting) in configured {
            match role {
                None => settings.push(setting),
                Some(role) => role_settings.push(format!("{role}: {setting}")),
            }
        }
        Ok(Self {
            encoding,
            collate,
            ctype,
            provider,
            locale,
            icu_rules,
            owner,
            tablespace,
            connection_limit,
            grants,
            comment,
            settings,
            role_settings,
        })
    }

    /// `CREATE DATABASE new` like the target.
    fn create_sql(&self, new: &str) -> String {
        let mut sql = format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            ident(new),
            literal(&self.encoding),
            literal(&self.collate),
            literal(&self.ctype)
        );
        match (self.provider.as_deref(), &self.locale) {
            (Some("i"), Some(locale)) => {
                sql.push_str(&format!(
                    " LOCALE_PROVIDER icu ICU_LOCALE {}",
                    literal(locale)
                ));
                if let Some(rules) = &self.icu_rules {
                    sql.push_str(&format!(" ICU_RULES {}", literal(rules)));
                }
            }
            (Some("b"), Some(locale)) => {
                sql.push_str(&format!(
                    " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                    literal(locale)
                ));
            }
            _ => {}
        }
        if self.tablespace != "pg_default" {
            sql.push_str(&format!(" TABLESPACE {}", ident(&self.tablespace)));
        }
        if self.connection_limit != -1 {
            sql.push_str(&format!(" CONNECTION LIMIT {}", self.connection_limit));
        }
        sql.push_str(&format!(" OWNER {}", ident(&self.owner)));
        sql
    }

    /// Grants, comment and settings of the target, for `new`: one implicit transaction
    /// (empty when there is nothing to copy).
    fn copy_sql(&self, new: &str) -> String {
        let new = ident(new);
        let mut sql = String::new();
        if let Some(grants) = &self.grants {
            sql.push_str(&format!("REVOKE ALL ON DATABASE {new} FROM PUBLIC;\n"));
            for (privilege, grantee, grantable) in grants {
                sql.push_str(&format!(
                    "GRANT {privilege} ON DATABASE {new} TO {grantee}{};\n",
                    if *grantable { " WITH GRANT OPTION" } else { "" }
                ));
            }
        }
        if let Some(comment) = &self.comment {
            sql.push_str(&format!(
                "COMMENT ON DATABASE {new} IS {};\n",
                literal(comment)
            ));
        }
        // `FROM CURRENT` stores the value as the server parsed it, lists included; the
        // local `set_config` ends with the transaction.
        for setting in &self.settings {
            let (name, value) = setting.split_once('=').unwrap_or((setting, ""));
            sql.push_str(&format!(
                "SELECT set_config({}, {}, true);\nALTER DATABASE {new} SET {} FROM CURRENT;\n",
                literal(name),
                literal(value),
                ident(name)
            ));
        }
        sql
    }
}

/// Puts things back after a swap that did not finish: drops the new database and lets
/// sessions into the target again. From `Drop` when the restore is dropped half-way
/// (Ctrl-C, a timeout).
pub(super) struct SwapGuard {
    pub(super) options: PgConnectOptions,
    pub(super) new: Option<String>,
    /// The target, once it was barred from new sessions.
    pub(super) reopen: Option<String>,
}

impl SwapGuard {
    fn disarm(&mut self) {
        self.new = None;
        self.reopen = None;
    }

    fn statements(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(target) = self.reopen.take() {
            out.push(format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                ident(&target)
            ));
        }
        if let Some(new) = self.new.take() {
            out.push(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(&new)
            ));
        }
        out
    }

    /// Cleans up on `admin` after `error`; returns `error`, with what could not be cleaned
    /// up for a person to do.
    async fn cleanup_now(
        &mut self,
        admin: &mut sqlx::PgConnection,
        error: DatabaseError,
    ) -> DatabaseError {
        let mut left = Vec::new();
        for sql in self.statements() {
            if let Err(e) = run_sql(admin, &sql).await {
                left.push(format!("`{sql};` ({e})"));
            }
        }
        if left.is_empty() {
            error
        } else {
            DatabaseError::Other(format!(
                "{error}; cleaning up failed too, run by hand: {}",
                left.join(", ")
            ))
        }
    }
}

impl Drop for SwapGuard {
    fn drop(&mut self) {
        let statements = self.statements();
        if statements.is_empty() {
            return;
        }
        let options = self.options.clone();
        super::super::finish_on_drop(async move {
            let Ok(mut admin) = options.connect().await else {
                tracing::warn!(
                    "cannot clean up after the interrupted swap: run {statements:?} by hand"
                );
                return;
            };
            for sql in &statements {
                if let Err(e) = run_sql(&mut admin, sql).await {
                    tracing::warn!(
                        "after the interrupted swap, `{sql}` failed: {e}; run it by hand"
                    );
                }
            }
            let _ = admin.close().await;
        });
    }
}

/// The `public` schema's grants, comment and owner, as read from a database.
#[derive(Debug, Default)]
pub(super) struct PublicSchema {
    pub(super) acl: Option<String>,
    pub(super) note: Option<String>,
    pub(super) owner: Option<String>,
}

/// Drops every schema the application owns so a restore leaves nothing from after the
/// backup. pg_dump leaves the default `public` schema out of the dump, so it is recreated
/// here with the owner, grants and comment it had (app roles keep their USAGE): those of
/// the database restored into, or of `like` (the database a swap replaces). The dump,
/// restored with `--clean --if-exists`, recreates everything else.
pub(super) fn reset_schemas(like: Option<&PublicSchema>) -> String {
    let read = match like {
        None => {
            "SELECT n.nspacl, obj_description(n.oid, 'pg_namespace'), pg_get_userbyid(n.nspowner)
    INTO acl, note, owner FROM pg_namespace n WHERE n.nspname = 'public';"
                .to_owned()
        }
        Some(p) => {
            let value = |v: &Option<String>| {
                v.as_deref()
                    .filter(|v| !v.contains("$cutover$"))
                    .map_or_else(|| "NULL".to_owned(), literal)
            };
            format!(
                "acl := {}::aclitem[]; note := {}; owner := {};",
                value(&p.acl),
                value(&p.note),
                value(&p.owner)
            )
        }
    };
    format!(
        "DO $cutover$ DECLARE
  s text; g record; acl aclitem[]; note text; owner name;
BEGIN
  {read}
{RESET_SCHEMAS_BODY}"
    )
}

pub(super) const RESET_SCHEMAS_BODY: &str = "  FOR s IN SELECT nspname FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
  CREATE SCHEMA public;
  BEGIN
    IF owner IS NOT NULL THEN EXECUTE format('ALTER SCHEMA public OWNER TO %I', owner); END IF;
  EXCEPTION WHEN insufficient_privilege THEN NULL;
  END;
  IF acl IS NOT NULL THEN
    EXECUTE 'REVOKE ALL ON SCHEMA public FROM PUBLIC';
    FOR g IN SELECT a.grantee, a.privilege_type FROM aclexplode(acl) a LOOP
      EXECUTE format('GRANT %s ON SCHEMA public TO %s', g.privilege_type,
        CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
    END LOOP;
  END IF;
  IF note IS NOT NULL THEN EXECUTE format('COMMENT ON SCHEMA public IS %L', note); END IF;
END $cutover$;
";

/// `<base><suffix>`, with `base` shortened so the whole fits PostgreSQL's 63-byte names.
pub(super) fn with_suffix(base: &str, suffix: &str) -> String {
    let mut end = base.len().min(MAX_NAME.saturating_sub(suffix.len()));
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}
