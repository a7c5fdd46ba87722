//! `backup`: stream a dump of the database into the backup store, hashing it on the way,
//! with a manifest written last. Rollbacks never delete backups.
//!
//! `verify: restore` proves the dump restores, and that the data in it passes the
//! pipeline's checks, before anything is migrated: the backup is restored into a scratch
//! database beside the real one ([`Database::scratch`]: a database on the same server, a
//! temp file for SQLite), the queries of every `validate` step of the pipeline run there,
//! and the scratch database is removed again on every path (also when the step is
//! interrupted or times out). A check with more issues than allowed fails the step. A
//! check whose query cannot run on the copy (it needs a table the migration creates) is
//! noted and left to the `validate` step after the migration.
//!
//! [`Database::scratch`]: crate::adapters::database::Database::scratch

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::RunState;
use super::validate::{self, Query};
use crate::adapters::database::{Database, Scratch};
use crate::adapters::store::checked::{self, Checked};
use crate::adapters::store::{Manifest, compression, validate_id};
use crate::config::pipeline::{BackupVerify, BackupWith};
use crate::run::compensation::Compensation;
use crate::run::context::Context;
use crate::run::error::StepError;
use crate::run::event::{Event, Reporter};
use crate::run::plan::PlanScratch;
use crate::units::human_bytes;

const DEFAULT_NAME: &str = "pre-{version}-{timestamp}";

/// Fills in the backup name template.
pub(crate) fn backup_id(
    template: &str,
    environment: &str,
    version: Option<i64>,
    timestamp: &str,
) -> String {
    template
        .replace(
            "{version}",
            &version.map_or_else(|| "empty".into(), |v| v.to_string()),
        )
        .replace("{timestamp}", timestamp)
        .replace("{environment}", environment)
}

pub(crate) fn timestamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

pub(crate) async fn plan(
    ctx: &Context,
    with: &BackupWith,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    let template = with.name.as_deref().unwrap_or(DEFAULT_NAME);
    // The time is the backup's own, so the plan (and its digest) shows its shape.
    let example = backup_id(
        template,
        &ctx.environment,
        scratch.version,
        "YYYYMMDDTHHMMSSZ",
    );
    validate_id(&backup_id(
        template,
        &ctx.environment,
        scratch.version,
        &timestamp(),
    ))
    .map_err(|e| e.to_string())?;
    ctx.store
        .check_writable()
        .await
        .map_err(|e| format!("the backup store cannot be written: {e}"))?;
    // The dump tools (and their versions against the server's) are checked now, not
    // halfway through a deploy.
    ctx.database
        .ping()
        .await
        .map_err(|e| format!("the database cannot be backed up: {e}"))?;
    scratch.backup_before = true;
    if with.snapshot {
        match ctx.database.snapshot_support() {
            Ok(()) => return plan_snapshot(ctx, with, &example, scratch).await,
            // MySQL/MariaDB: no copy is cheaper than the dump, which then runs as usual.
            Err(why) if ctx.database.kind() == "mysql" => {
                scratch.warnings.push(crate::place::Message::plain(format!(
                    "`snapshot: true`: {why}"
                )));
            }
            Err(why) => return Err(format!("`snapshot: true`: {why}")),
        }
    }
    let verify = match with.verify {
        Some(BackupVerify::Restore) => {
            ", verified by a scratch restore and the pipeline's validation checks on it"
        }
        _ => "",
    };
    Ok((
        format!(
            "back up the database to {} as {example}{verify}",
            ctx.store.describe()
        ),
        None,
    ))
}

/// A backup from a snapshot: what the plan says, and why it cannot be, if it cannot.
async fn plan_snapshot(
    ctx: &Context,
    with: &BackupWith,
    example: &str,
    scratch: &mut PlanScratch<'_>,
) -> Result<(String, Option<String>), String> {
    if with.verify == Some(BackupVerify::Restore) {
        return Err(
            "`verify: restore` is not available yet with `snapshot: true` (the backup is still on its way while the next steps run); its checksum is always verified"
                .into(),
        );
    }
    let sessions = ctx
        .database
        .other_sessions()
        .await
        .map_err(|e| format!("cannot list the sessions on the database: {e}"))?;
    // Which sessions are there changes from one look to the next: a warning, outside
    // the plan's digest.
    let ending = if ctx.database.kind() == "postgres" {
        if !sessions.is_empty() {
            scratch.warnings.push(crate::place::Message::plain(format!(
                "the snapshot ends every other session on the database when it runs (the app should be in maintenance by then); now: {}",
                crate::units::summarise(&sessions, "`SELECT * FROM pg_stat_activity` lists them")
            )));
        }
        ", ending every other session on it first"
    } else {
        ""
    };
    Ok((
        format!(
            "snapshot the database beside itself{ending}; then stream backup {example} from the snapshot to {} while the next steps run (traffic waits until it is stored and its checksum verified)",
            ctx.store.describe()
        ),
        Some("remove the snapshot (unless a rollback swapped it in)".into()),
    ))
}

pub(crate) async fn prepare(
    ctx: &Context,
    with: &BackupWith,
    state: &mut RunState,
) -> Result<Option<Compensation>, StepError> {
    let version = ctx.database.state().await?.version();
    let base = backup_id(
        with.name.as_deref().unwrap_or(DEFAULT_NAME),
        &ctx.environment,
        version,
        &timestamp(),
    );
    // Two runs in the same second (a quick retry after a failure) would get the same id;
    // a finished backup is never replaced, so number the new one instead.
    let mut id = base.clone();
    let mut n = 1;
    while ctx.store.manifest(&id).await.is_ok() {
        n += 1;
        id = format!("{base}-{n}");
    }
    state.backup = Some(id);
    if with.snapshot && ctx.database.snapshot_support().is_ok() {
        let token = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let names = ctx.database.snapshot_names(&token);
        let undo = Compensation::DropSnapshot {
            name: names.snapshot.clone(),
        };
        state.snapshot = Some(names);
        return Ok(Some(undo));
    }
    // Backups are kept on rollback: there is nothing to undo.
    Ok(None)
}

pub(crate) async fn run(
    ctx: &Context,
    step_id: &str,
    with: &BackupWith,
    state: &RunState,
) -> Result<String, StepError> {
    let id = state
        .backup
        .clone()
        .ok_or_else(|| StepError::Failed("backup id was not prepared".into()))?;
    if let Some(names) = state.snapshot.as_ref().filter(|_| with.snapshot) {
        return snapshot_then_stream(ctx, step_id, &id, &names.snapshot).await;
    }
    let manifest = create(ctx, step_id, &id).await?;
    ctx.fact(
        step_id,
        crate::fact::Fact::BackupTaken {
            backup: manifest.id.clone(),
        },
    );
    if with.verify == Some(BackupVerify::Checksum) {
        verify_checksum(ctx, &manifest.id).await?;
        ctx.note(
            step_id,
            "verified: the stored backup reads back with the same sha256",
        );
    }
    if with.verify == Some(BackupVerify::Restore) {
        if let Some(e) = &state.validations.error {
            return Err(StepError::Failed(format!(
                "cannot load the validation checks to run on the restored backup: {e}"
            )));
        }
        let note =
            restore_and_check(ctx, step_id, &manifest.id, &state.validations.queries).await?;
        ctx.note(step_id, note);
    }
    Ok(format!(
        "backup {} ({}, sha256 {})",
        manifest.id,
        human_bytes(manifest.size),
        &manifest.sha256[..16]
    ))
}

/// Takes the snapshot, then starts the backup from it to the store, which goes on beside
/// the next steps (the engine waits for it before the traffic comes back).
async fn snapshot_then_stream(
    ctx: &Context,
    step_id: &str,
    id: &str,
    name: &str,
) -> Result<String, StepError> {
    let started = std::time::Instant::now();
    ctx.database.snapshot(name).await?;
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    ctx.fact(
        step_id,
        crate::fact::Fact::SnapshotTaken {
            name: name.to_owned(),
            took_ms,
        },
    );
    let source = ctx.database.snapshot_database(name)?;
    let store = ctx.store.clone();
    let reporter = ctx.reporter.clone();
    let (project, environment) = (ctx.project.clone(), ctx.environment.clone());
    let (step, backup) = (step_id.to_owned(), id.to_owned());
    let task = tokio::spawn(async move {
        let made = create_from(
            Source {
                database: source.as_ref(),
                store: store.as_ref(),
                reporter,
                project: &project,
                environment: &environment,
            },
            &step,
            &backup,
        )
        .await;
        source.disconnect().await;
        let manifest = made.map_err(|e| e.to_string())?;
        verify_checksum_in(store.as_ref(), &backup)
            .await
            .map_err(|e| e.to_string())?;
        Ok(manifest)
    });
    *ctx.background.lock().await = Some(crate::run::context::Background {
        step: step_id.to_owned(),
        backup: id.to_owned(),
        task,
    });
    Ok(format!(
        "snapshot {name} in {took_ms} ms; backup {id} streams from it to {} while the next steps run",
        ctx.store.describe()
    ))
}

/// Dumps the database into a new backup and returns its manifest. Three things run at
/// once: the dump tool writing into the compressor's pipe, the compressor thread (which
/// also hashes), and the copy of its output into the store.
pub(crate) async fn create(ctx: &Context, step_id: &str, id: &str) -> Result<Manifest, StepError> {
    create_from(
        Source {
            database: ctx.database.as_ref(),
            store: ctx.store.as_ref(),
            reporter: ctx.reporter.clone(),
            project: &ctx.project,
            environment: &ctx.environment,
        },
        step_id,
        id,
    )
    .await
}

/// What a backup is made from and where it goes: the run's own database, or a snapshot
/// of it on its way to the store beside the next steps.
pub(crate) struct Source<'a> {
    pub database: &'a dyn Database,
    pub store: &'a dyn crate::adapters::store::BackupStore,
    pub reporter: Arc<dyn Reporter>,
    pub project: &'a str,
    pub environment: &'a str,
}

/// [`create`], from any database into any store.
pub(crate) async fn create_from(
    src: Source<'_>,
    step_id: &str,
    id: &str,
) -> Result<Manifest, StepError> {
    let version = src.database.state().await?.version();
    let mut upload = src.store.create(id).await?;
    let compression = src.store.compression();
    let (input, output, encoding) = compression::encode(compression);
    let dump = async {
        let mut sink = Progress::new(input, step_id, src.reporter.clone());
        let dumped = src.database.dump(&mut sink).await;
        // The end of the dump for the compressor (dropping the pipe says the same).
        let _ = sink.shutdown().await;
        dumped
    };
    let store = async {
        // Owns the output pipe: when the store fails it goes, and the compressor and then
        // the dump stop on a broken pipe instead of waiting for a reader.
        let mut output = tokio::io::BufReader::with_capacity(1 << 20, output);
        tokio::io::copy_buf(&mut output, &mut upload).await?;
        upload.flush().await
    };
    let (dumped, stored) = tokio::join!(dump, store);
    let encoded = encoding.finish().await;
    // When several failed, the store's error is the cause (the dump then only saw a
    // broken pipe), then the compressor's.
    let (info, encoded) = match (dumped, stored, encoded) {
        (Ok(info), Ok(()), Ok(encoded)) => (info, encoded),
        (_, Err(e), _) => {
            upload.abort().await;
            return Err(StepError::Failed(format!("cannot write the backup: {e}")));
        }
        (_, _, Err(e)) => {
            upload.abort().await;
            return Err(StepError::Failed(format!(
                "cannot compress the backup: {e}"
            )));
        }
        (Err(e), _, _) => {
            upload.abort().await;
            return Err(e.into());
        }
    };
    let manifest = Manifest {
        id: id.to_owned(),
        project: src.project.to_owned(),
        environment: src.environment.to_owned(),
        created_at: chrono::Utc::now(),
        database_kind: src.database.kind().to_owned(),
        format: info.format,
        schema_version: version,
        size: encoded.size,
        sha256: encoded.sha256,
        compression: compression.to_string(),
        server_version: info.server_version,
        dump_tool: info.tool,
        cutover_version: env!("CARGO_PKG_VERSION").into(),
    };
    upload.commit(&manifest).await?;
    Ok(manifest)
}

/// The dump in backup `id`, decompressed as its manifest says. The stored bytes are
/// checked against the manifest as they are read: the stream ends with an error instead
/// of its end when they do not match.
pub(crate) async fn open_dump(
    ctx: &Context,
    id: &str,
    manifest: &Manifest,
) -> Result<Box<dyn tokio::io::AsyncRead + Unpin + Send>, StepError> {
    let stored = Checked::new(
        ctx.store.open(id).await?,
        id,
        manifest.size,
        &manifest.sha256,
    );
    compression::decode(Box::new(stored), &manifest.compression)
        .map_err(|e| StepError::Failed(format!("cannot read backup {id}: {e}")))
}

/// After a restore from backup `id` failed: when the backup does not match its manifest,
/// that is the cause to report, whatever the restoring tool made of the damaged bytes.
async fn blame_damage(ctx: &Context, id: &str, failed: StepError) -> StepError {
    match checksum_in(ctx.store.as_ref(), id).await {
        Ok((_, Some(damage))) => StepError::Failed(damage),
        _ => failed,
    }
}

/// Checks a backup's checksum while restoring it into a scratch database.
pub(crate) async fn verify(ctx: &Context, id: &str) -> Result<Manifest, StepError> {
    let manifest = ctx.store.manifest(id).await?;
    restore_and_check(ctx, "backup verify", id, &[]).await?;
    Ok(manifest)
}

/// Restores backup `id` into a new scratch database, runs `checks` on it (reported under
/// step `step_id`) and removes the scratch database, whatever happened. Returns a line
/// saying what was verified.
async fn restore_and_check(
    ctx: &Context,
    step_id: &str,
    id: &str,
    checks: &[Query],
) -> Result<String, StepError> {
    let scratch = ctx.database.scratch().await.map_err(|e| {
        StepError::Failed(format!(
            "cannot create a scratch database to verify backup {id} in: {e}"
        ))
    })?;
    let name = scratch.name.clone();
    let guard = ScratchGuard(Some(scratch));
    let result = async {
        let database = guard.database();
        let manifest = ctx.store.manifest(id).await?;
        let mut reader = open_dump(ctx, id, &manifest).await?;
        if let Err(e) = database.restore(&mut reader).await {
            let failed = StepError::Failed(format!(
                "backup {id} does not restore into a scratch database: {e}"
            ));
            return Err(blame_damage(ctx, id, failed).await);
        }
        validate::check(ctx, step_id, database, checks, false).await
    }
    .await;
    let removed = match guard.discard().await {
        Ok(()) => "since removed",
        Err(e) => {
            ctx.report(crate::run::event::Event::Warning {
                message: format!(
                    "the scratch database {name} is left behind ({e}); remove it by hand"
                ),
            });
            "left behind"
        }
    };
    let checked = result?;
    if !checked.failed.is_empty() {
        return Err(StepError::Failed(format!(
            "the data in backup {id} fails validation, before anything was migrated: {} (checked on a restored copy in scratch database {name}, {removed})",
            checked.failed.join("; ")
        )));
    }
    let verified =
        "verified: the backup reads back with its sha256 and restores into a scratch database";
    // Usually the tables this release's migrations add: say which checks, and the first
    // reason; the `validate` step reports each in full after migrating.
    let not_run = || {
        format!(
            "yet (the `validate` step runs them after migrating): {}{}",
            checked.errors.first().map_or("", String::as_str),
            match checked.errors.len() {
                0 | 1 => String::new(),
                n => format!(" and {} more", n - 1),
            }
        )
    };
    Ok(match (checks.len(), checked.ran) {
        (0, _) => verified.to_owned(),
        (n, ran) if ran == n => {
            format!("{verified} and the pipeline's {n} validation check(s) pass on it")
        }
        (n, 0) => format!(
            "{verified}; the pipeline's {n} validation check(s) cannot run on it {}",
            not_run()
        ),
        (n, ran) => format!(
            "{verified} and {ran} of the pipeline's {n} validation check(s) pass on it; the others cannot run on it {}",
            not_run()
        ),
    })
}

/// Owns a scratch database until it is removed: by [`ScratchGuard::discard`], or, when
/// the step is dropped half-way (Ctrl-C, a timeout), by `Drop`, which waits for the removal
/// (up to 30 seconds) so the process cannot exit first.
pub(crate) struct ScratchGuard(Option<Scratch>);

impl ScratchGuard {
    pub(crate) fn new(scratch: Scratch) -> Self {
        Self(Some(scratch))
    }

    /// The scratch database's name, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.0.as_ref().expect("not yet discarded").name
    }

    pub(crate) fn database(&self) -> &dyn Database {
        self.0
            .as_ref()
            .expect("not yet discarded")
            .database
            .as_ref()
    }

    pub(crate) async fn discard(mut self) -> Result<(), crate::adapters::database::DatabaseError> {
        match self.0.take() {
            Some(scratch) => scratch.discard().await,
            None => Ok(()),
        }
    }
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        if let Some(scratch) = self.0.take() {
            crate::adapters::database::finish_on_drop(async move {
                let _ = scratch.discard().await;
            });
        }
    }
}

/// Re-reads a backup and compares its size and sha256 with the manifest.
pub(crate) async fn verify_checksum(ctx: &Context, id: &str) -> Result<Manifest, StepError> {
    verify_checksum_in(ctx.store.as_ref(), id).await
}

/// [`verify_checksum`] in any store.
async fn verify_checksum_in(
    store: &dyn crate::adapters::store::BackupStore,
    id: &str,
) -> Result<Manifest, StepError> {
    match checksum_in(store, id).await? {
        (manifest, None) => Ok(manifest),
        (_, Some(damage)) => Err(StepError::Failed(damage)),
    }
}

/// Re-reads a backup: its manifest, and what is wrong when it does not match it.
async fn checksum_in(
    store: &dyn crate::adapters::store::BackupStore,
    id: &str,
) -> Result<(Manifest, Option<String>), StepError> {
    let manifest = store.manifest(id).await?;
    let stored = Checked::new(store.open(id).await?, id, manifest.size, &manifest.sha256);
    // Large reads: a local store's file reads each take a trip to a blocking thread.
    let mut stored = tokio::io::BufReader::with_capacity(1 << 20, stored);
    let damage = match tokio::io::copy_buf(&mut stored, &mut tokio::io::sink()).await {
        Ok(_) => None,
        Err(e) => Some(
            checked::damage(&e)
                .ok_or_else(|| StepError::Failed(format!("cannot read backup {id}: {e}")))?,
        ),
    };
    Ok((manifest, damage))
}

/// Restores a backup over the database, checking its checksum before or as it streams.
pub(crate) async fn restore(ctx: &Context, step_id: &str, id: &str) -> Result<String, StepError> {
    restore_as(ctx, step_id, id, false).await
}

/// [`restore`]; `in_place`: into the database itself, whatever its `restore:` says.
pub(crate) async fn restore_as(
    ctx: &Context,
    step_id: &str,
    id: &str,
    in_place: bool,
) -> Result<String, StepError> {
    // A restore that is all or nothing checks the checksum as the backup streams in;
    // any other would have changed the database by the time a damaged end is read.
    let streamed = ctx.database.restore_is_all_or_nothing();
    let manifest = if streamed {
        ctx.store.manifest(id).await?
    } else {
        verify_checksum(ctx, id).await?
    };
    if manifest.database_kind != ctx.database.kind() {
        return Err(StepError::Failed(format!(
            "backup {id} is a {} dump; this environment's database is {}",
            manifest.database_kind,
            ctx.database.kind()
        )));
    }
    let mut reader = open_dump(ctx, id, &manifest).await?;
    let restored = if in_place {
        ctx.database
            .restore_in_place(&mut reader)
            .await
            .map(|()| None)
    } else {
        ctx.database.restore_with_note(&mut reader).await
    };
    let kept = match restored {
        Ok(kept) => kept,
        Err(e) => return Err(blame_damage(ctx, id, e.into()).await),
    };
    ctx.note(
        step_id,
        format!("restored backup {id} ({})", human_bytes(manifest.size)),
    );
    if let Some(kept) = &kept {
        ctx.note(step_id, kept.clone());
    }
    Ok(format!(
        "restored backup {id}; schema at {}{}",
        manifest
            .schema_version
            .map_or_else(|| "an empty schema".into(), |v| v.to_string()),
        kept.map_or_else(String::new, |k| format!("; {k}"))
    ))
}

/// Counts the dump's bytes on their way to the compressor, reporting progress.
struct Progress<W> {
    inner: W,
    size: u64,
    reported: u64,
    step_id: String,
    reporter: Arc<dyn Reporter>,
}

impl<W> Progress<W> {
    fn new(inner: W, step_id: &str, reporter: Arc<dyn Reporter>) -> Self {
        Self {
            inner,
            size: 0,
            reported: 0,
            step_id: step_id.to_owned(),
            reporter,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Progress<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            this.size += *n as u64;
            if this.size - this.reported >= 4 << 20 {
                this.reported = this.size;
                this.reporter.event(&Event::StepProgress {
                    id: this.step_id.clone(),
                    bytes: this.size,
                });
            }
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
