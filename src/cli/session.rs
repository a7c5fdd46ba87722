//! What every command starts with: the config, the environment, a reporter and the
//! run context; and what every command ends with: the run report (`--report`, the CI
//! summary and outputs), written however the command ended.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use is_terminal::IsTerminal;
use tokio_util::sync::CancellationToken;

use super::exit::{Exit, eprint, redactor};
use super::{BackupCommand, Command, Global, LockCommand, MigrateCommand, Output};
use crate::app::build as setup;
use crate::config::{self, Config, ConfigError, Located};
use crate::engine::run::RunOutcome;
use crate::engine::{Context, EngineError};
use crate::report::ci::azure::Azure;
use crate::report::ci::github::Github;
use crate::report::json::Json;
use crate::report::plain::Plain;
use crate::report::run_report::{Backup, Outcome, Recorder, Recording};
use crate::report::tty::Tty;
use crate::run::event::Reporter;
use crate::run::plan::Plan;

pub(crate) struct Session {
    pub config: Config,
    pub environment: String,
    pub reporter: Arc<dyn Reporter>,
    pub json: bool,
    /// `--code-version`.
    pub code_version: Option<String>,
}

/// The sink `--output` asks for, `auto` resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    Tty,
    Plain,
    Json,
    Github,
    Azure,
}

/// `auto`: GitHub Actions (`GITHUB_ACTIONS=true`), then Azure Pipelines (`TF_BUILD=True`),
/// then progress bars on a terminal, else plain lines.
pub(crate) fn sink(global: &Global) -> Sink {
    let env_is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    match global.output {
        Output::Json => Sink::Json,
        Output::Plain => Sink::Plain,
        Output::Github => Sink::Github,
        Output::Azure => Sink::Azure,
        Output::Auto if env_is("GITHUB_ACTIONS", "true") => Sink::Github,
        Output::Auto if env_is("TF_BUILD", "true") => Sink::Azure,
        Output::Auto => {
            if std::io::stderr().is_terminal() && !global.quiet && std::env::var_os("CI").is_none()
            {
                Sink::Tty
            } else {
                Sink::Plain
            }
        }
    }
}

/// Colour for the streams a person reads: the terminal and plain sinks' stdout and the
/// errors on stderr; never JSON or a CI log.
pub(crate) fn colour(global: &Global) {
    use crate::report::paint::{self, Choice};
    let choice = match global.color {
        super::ColorChoice::Auto => Choice::Auto,
        super::ColorChoice::Always => Choice::Always,
        super::ColorChoice::Never => Choice::Never,
    };
    let var = |name: &str| std::env::var(name).ok();
    let people = matches!(sink(global), Sink::Tty | Sink::Plain);
    paint::set(
        people && paint::decide(choice, std::io::stdout().is_terminal(), var),
        people && paint::decide(choice, std::io::stderr().is_terminal(), var),
    );
}

/// The run report of this process: one command, one report.
pub(crate) fn recorder() -> Arc<Recorder> {
    static RECORDER: OnceLock<Arc<Recorder>> = OnceLock::new();
    RECORDER
        .get_or_init(|| Arc::new(Recorder::new(redactor())))
        .clone()
}

/// The reporter made last, which [`finish`] hands the end of the command to.
static CURRENT: Mutex<Option<Arc<dyn Reporter>>> = Mutex::new(None);

fn config_folder(global: &Global) -> PathBuf {
    global
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

// Fallible for its callers: an output this build lacks is an error, not a panic.
#[allow(clippy::unnecessary_wraps)]
pub(crate) fn reporter(global: &Global) -> Result<(Arc<dyn Reporter>, bool), EngineError> {
    let redactor = redactor();
    let kind = sink(global);
    let inner: Arc<dyn Reporter> = match kind {
        Sink::Json => Arc::new(Json::new(redactor)),
        Sink::Plain => Arc::new(Plain::new(redactor, global.quiet)),
        Sink::Tty => Arc::new(Tty::new(redactor)),
        Sink::Github => Arc::new(Github::new(redactor, global.quiet, config_folder(global))),
        Sink::Azure => Arc::new(Azure::new(redactor, global.quiet, config_folder(global))),
    };
    let reporter: Arc<dyn Reporter> = Arc::new(Recording::new(inner, recorder()));
    *CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reporter.clone());
    reporter.sync_secrets();
    Ok((reporter, kind == Sink::Json))
}

pub(crate) fn load_config(global: &Global) -> Result<Config, EngineError> {
    Ok(config::load(&global.config)?)
}

impl Session {
    pub(crate) fn open(global: &Global) -> Result<Self, EngineError> {
        let (reporter, json) = reporter(global)?;
        let config = load_config(global)?;
        recorder().set_config(config.project(), config.state_dir());
        let environment = match &global.env {
            Some(e) => {
                recorder().set_environment(e);
                config.environment(e)?;
                e.clone()
            }
            None => config.default_environment()?.to_owned(),
        };
        recorder().set_environment(&environment);
        Ok(Self {
            config,
            environment,
            reporter,
            json,
            code_version: global.code_version.clone(),
        })
    }

    /// Builds the run context for the session's environment.
    pub(crate) fn context(&self, cancel: CancellationToken) -> Result<Context, EngineError> {
        let context = setup::context(
            &self.config,
            &self.environment,
            self.reporter.clone(),
            redactor(),
            cancel,
        );
        // Resolving the config's references registered its secrets: a CI must learn them
        // before anything else is printed, failed or not.
        self.reporter.sync_secrets();
        context.map(|mut c| {
            c.code_version.clone_from(&self.code_version);
            c
        })
    }

    pub(crate) fn pipeline(
        &self,
        explicit: Option<&std::path::Path>,
    ) -> Result<config::Pipeline, EngineError> {
        let path = self.config.pipeline_path(explicit);
        if !path.exists() {
            let message = format!("pipeline file `{}` does not exist", path.display());
            // Point at the config's `pipeline:` line when that is where the path came from.
            let located = match (&self.config.file.pipeline, explicit) {
                (Some(p), None) => Located::at(&self.config.path, &p.referenced, message),
                _ => Located::file(&self.config.path, message),
            };
            return Err(ConfigError::Invalid(located).into());
        }
        let pipeline = config::load_pipeline(&path, &self.config.dir)?;
        config::check_when_environments(&self.config, &pipeline)?;
        Ok(pipeline)
    }

    /// Prints a result: JSON when asked, text otherwise.
    pub(crate) fn result(&self, value: &serde_json::Value, text: &str) {
        self.reporter.result(value, text);
    }
}

/// The command's name as the report shows it: `deploy`, `migrate up`, `backup create`...
pub(crate) fn command_name(command: &Command) -> String {
    let sub = |name: &str, detail: &str| format!("{name} {detail}");
    match command {
        Command::Deploy(_) => "deploy".into(),
        Command::Plan(_) => "plan".into(),
        Command::Rehearse(_) => "rehearse".into(),
        Command::Release(_) => "release".into(),
        Command::Rollback(_) => "rollback".into(),
        Command::Recover(_) => "recover".into(),
        Command::Resume(_) => "resume".into(),
        Command::Status(_) => "status".into(),
        Command::Migrate(m) => sub(
            "migrate",
            match m {
                MigrateCommand::Status => "status",
                MigrateCommand::Up { .. } => "up",
                MigrateCommand::Down { .. } => "down",
                MigrateCommand::New { .. } => "new",
                MigrateCommand::Verify => "verify",
                MigrateCommand::Resolve { .. } => "resolve",
                MigrateCommand::Baseline { .. } => "baseline",
                MigrateCommand::Repair { .. } => "repair",
                MigrateCommand::Diff => "diff",
                MigrateCommand::AcceptDrift { .. } => "accept-drift",
                MigrateCommand::Lint { .. } => "lint",
                MigrateCommand::Test => "test",
                MigrateCommand::Fingerprint { .. } => "fingerprint",
            },
        ),
        Command::Backup(b) => sub(
            "backup",
            match b {
                BackupCommand::List => "list",
                BackupCommand::Create { .. } => "create",
                BackupCommand::Verify { .. } => "verify",
                BackupCommand::Prune { .. } => "prune",
                BackupCommand::Restore { .. } => "restore",
            },
        ),
        Command::History(_) => "history".into(),
        Command::Lock(l) => sub(
            "lock",
            match l {
                LockCommand::Status => "status",
                LockCommand::Release { .. } => "release",
            },
        ),
        Command::Check(_) => "check".into(),
        Command::Validate(_) => "validate".into(),
        Command::Init(_) => "init".into(),
        Command::Completions(_) => "completions".into(),
        Command::Man => "man".into(),
        Command::Supervise(_) => crate::shell::SUPERVISE.into(),
    }
}

/// Runs a future to completion from synchronous code inside the multi-threaded runtime,
/// giving up after `limit`; `None` when that is not possible or it took too long.
fn wait<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    tokio::task::block_in_place(|| handle.block_on(tokio::time::timeout(limit, future))).ok()
}

/// Adds a run's outcome to the report: status, failure, undo actions, the schema version
/// before and after, and the manifest of the backup it took.
/// Returns the schema as the database reports it now (`schema at V`), when it could say.
pub(crate) fn record_outcome(ctx: &Context, plan: &Plan, outcome: &RunOutcome) -> Option<String> {
    let recorder = recorder();
    recorder.record_plan(plan);
    if let Some(id) = recorder.backup_id() {
        let manifest = wait(Duration::from_secs(5), ctx.store.manifest(&id)).and_then(Result::ok);
        recorder.set_backup(Backup {
            id,
            sha256: manifest.as_ref().map(|m| m.sha256.clone()),
            size: manifest.as_ref().map(|m| m.size),
        });
    }
    let before = plan.database.current_version;
    let read = wait(Duration::from_secs(5), ctx.database.state())
        .and_then(Result::ok)
        .map(|state| state.version());
    let after = read.unwrap_or_else(
        // The database cannot say: what the run meant to leave.
        || match outcome.status {
            crate::engine::journal::RunStatus::Succeeded => plan.database.target_version.or(before),
            _ => before,
        },
    );
    recorder.set_outcome(Outcome {
        status: outcome.status.as_str().to_owned(),
        interrupted: outcome.interrupted,
        failed_step: outcome.failure.as_ref().map(|f| f.0.clone()),
        error: outcome.failure.as_ref().map(|f| f.1.clone()),
        undone: outcome.undone.clone(),
        left: outcome.left.clone(),
        journal: Some(outcome.journal.display().to_string()),
        schema_before: before,
        schema_after: after,
    });
    read.map(|version| {
        version.map_or_else(|| "schema empty".to_owned(), |v| format!("schema at {v}"))
    })
}

/// Ends the command: the run report is written to `--report` (on success, failure and bad
/// input alike) and the CI sink writes its summary and outputs. Returns `exit` unchanged.
pub(crate) fn finish(
    global: &Global,
    command: &str,
    exit: Exit,
    error: Option<&EngineError>,
) -> Exit {
    let problems = error.map(EngineError::messages).unwrap_or_default();
    let error = error.map(|e| redactor().redact(&e.to_string()));
    let finished = recorder().finish(command, exit.code(), error.as_deref(), &problems);
    if let Some(path) = &global.report {
        if let Err(e) = write_report(path, &finished.json) {
            eprint(&format!(
                "warning: cannot write the run report {}: {e}",
                path.display()
            ));
        }
    }
    let current = CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let reporter = match current {
        Some(r) => Some(r),
        // The command stopped before it made a reporter (the config did not load): a CI
        // still gets its annotation, summary and outputs.
        None if matches!(sink(global), Sink::Github | Sink::Azure) => {
            reporter(global).ok().map(|(r, _)| r)
        }
        None => None,
    };
    if let Some(reporter) = reporter {
        reporter.finish(&finished);
    }
    exit
}

fn write_report(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole, then renamed: a reader never sees half a report.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, format!("{text}\n"))?;
    std::fs::rename(&tmp, path)
}
