//! The command line: argument parsing, output selection, and one file per subcommand.
//! Every command returns an [`Exit`]; `main` turns it into the process exit code.

mod adopt;
mod ask;
mod backup;
mod check;
mod confirm;
mod deploy;
mod drift;
mod exit;
mod fleet;
mod history;
mod init;
mod lock;
mod migrate;
mod plan;
mod recover;
mod rehearse;
mod session;
mod status;
mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use exit::log_writer;

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Run production releases as a YAML pipeline, with automatic rollback."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Config file.
    #[arg(
        short = 'c',
        long = "config",
        env = "CUTOVER_CONFIG",
        default_value = "deploy.yaml",
        global = true
    )]
    pub config: PathBuf,
    /// Environment to act on (default: the only one defined).
    #[arg(short = 'e', long = "env", env = "CUTOVER_ENV", global = true)]
    pub env: Option<String>,
    /// Output format.
    #[arg(
        long,
        value_enum,
        env = "CUTOVER_OUTPUT",
        default_value = "auto",
        global = true
    )]
    pub output: Output,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colour on a terminal: `auto` (NO_COLOR turns it off, CLICOLOR_FORCE on), `always`
    /// or `never`. JSON and CI logs never get colour.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value = "auto",
        global = true
    )]
    pub color: ColorChoice,
    /// Also write one JSON document for the whole run to FILE (success, failure and bad
    /// input alike); see docs/report.md.
    #[arg(long, value_name = "FILE", env = "CUTOVER_REPORT", global = true)]
    pub report: Option<PathBuf>,
    /// The code version `release` and `traffic` steps put live (an image tag), where the
    /// step names none.
    #[arg(
        long,
        value_name = "VERSION",
        env = "CUTOVER_CODE_VERSION",
        global = true
    )]
    pub code_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// GitHub Actions or Azure DevOps when run there, else progress bars on a terminal,
    /// else plain lines.
    Auto,
    Plain,
    /// One JSON object per line on stdout.
    Json,
    /// GitHub Actions log groups and annotations.
    Github,
    /// Azure DevOps log groups and annotations.
    Azure,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a project in this folder: deploy.yaml with a `local` SQLite environment, a
    /// pipeline, `migrations/`, `validations/`; never overwrites a file.
    Init(InitArgs),
    /// Plan, confirm, then run the pipeline; roll back on failure.
    Deploy(DeployArgs),
    /// Show what a deploy would do, touching nothing.
    Plan(PlanArgs),
    /// Rehearse the database part of a release on a copy of the data; production is only
    /// read.
    Rehearse(RehearseArgs),
    /// Heroku release phase: deploy without prompting; environment from CUTOVER_ENV.
    Release(ReleaseArgs),
    /// Roll the database back to a version or a backup, under the lock and journal.
    Rollback(RollbackArgs),
    /// Finish a run that died (kill -9, lost runner) from its journal.
    Recover(RecoverArgs),
    /// Continue a halted run at the step it halted at.
    Resume(ResumeArgs),
    /// The environment's runs that need attention (halted, unfinished), the lock and the
    /// last run.
    Status(StatusArgs),
    /// Migrations: status, up, down, new, verify, resolve, lint, test.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Backups: list, create, verify, restore, prune.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Past runs from the journal.
    History(HistoryArgs),
    /// The deploy lock.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Check config, pipeline, references and reachability; touch nothing.
    Check(CheckArgs),
    /// Run the pipeline's validation checks against the live database, read-only.
    Validate(ValidateArgs),
    /// Print a shell completion script: `cutover completions bash > /etc/bash_completion.d/cutover`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff): `cutover man > ~/.local/share/man/man1/cutover.1`.
    Man,
    /// Internal: how cutover runs a shell command, so that the command's process group
    /// dies with cutover (see `shell::supervise`).
    #[command(name = "__supervise", hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Project name for plans and the journal (default: the folder's name).
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Pipeline file (default: the config's `pipeline`).
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
    /// Show the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm a `confirm: typed` environment without a prompt; must name the environment.
    #[arg(long, value_name = "ENV")]
    pub confirm: Option<String>,
    /// Skip confirmation for environments without `confirm: typed`.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Apply exactly this approved plan (from `plan --out`), or refuse if anything changed.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Run the pipeline's database steps on every target of the environment's `targets:`
    /// (the steps around them run once).
    #[arg(long, conflicts_with = "plan")]
    pub fleet: bool,
    /// With `--fleet`: only the i-th of n slices of the targets (sorted by name), e.g. one
    /// per CI matrix job.
    #[arg(long, value_name = "I/N", requires = "fleet")]
    pub shard: Option<crate::app::fleet::Shard>,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// Starting a forward run outside the environment's `window:`.
#[derive(Debug, Clone, Default, Args)]
pub struct WindowArgs {
    /// Start even outside the environment's `window:` (needs `--reason`, which the journal
    /// and the report record). Going back (rollback, recover, migrate down) never needs it.
    #[arg(long, requires = "reason")]
    pub outside_window: bool,
    /// Why the run cannot wait for the window (with `--outside-window`).
    #[arg(long, value_name = "TEXT", requires = "outside_window", value_parser = non_blank)]
    pub reason: Option<String>,
}

fn non_blank(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("give the reason the run cannot wait for the window".into())
    } else {
        Ok(text.trim().to_owned())
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the plan as JSON to FILE, for `deploy --plan FILE` after an approval.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Who approves the plan saved with `--out` (default: the CI identity or OS user),
    /// shown and journaled when `deploy --plan` applies it.
    #[arg(long, value_name = "NAME", requires = "out")]
    pub approved_by: Option<String>,
    /// How long the approval saved with `--out` holds (default 24h); `deploy --plan`
    /// refuses it after.
    #[arg(long, value_name = "DURATION", requires = "out", default_value = "24h")]
    pub expires_in: humantime::Duration,
    /// Also show what runs: the SQL of each pending migration and `sql` step, the down SQL
    /// a rollback by the down files would run, and a `tool: command` migrator's command
    /// line (secrets masked); in the JSON plan too. The digest stays the same.
    #[arg(long)]
    pub sql: bool,
}

#[derive(Debug, Args)]
pub struct RehearseArgs {
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Schema version to go back to (`0` for an empty schema). With neither `--to` nor
    /// `--backup`: undo the environment's halted run.
    #[arg(long, conflicts_with = "backup")]
    pub to: Option<i64>,
    /// Backup to restore (a safety backup is taken first).
    #[arg(long)]
    pub backup: Option<String>,
    /// Code version to go back to, with its schema: the traffic goes to it first, then
    /// the database goes back to the schema version it ran on (as the journal of the run
    /// that released it recorded).
    #[arg(long, value_name = "VERSION", conflicts_with_all = ["to", "backup"])]
    pub release: Option<String>,
    /// Rollback pipeline (default: `pipelines/rollback.yaml` beside the deploy pipeline,
    /// else just the database step).
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
    #[arg(long, value_name = "ENV")]
    pub confirm: Option<String>,
    #[arg(long, short = 'y')]
    pub yes: bool,
    // Only a rollback to a version newer than the current one moves forward and needs
    // `--outside-window` outside the window.
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Also finish the unfinished runs of every fleet target of the environment.
    #[arg(long)]
    pub fleet: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Pipeline file (default: the config's `pipeline`); must have the steps the run
    /// started with.
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
    #[arg(long, value_name = "ENV")]
    pub confirm: Option<String>,
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Approve the `pause` step the run waits at (needs `--by`): journaled with the name.
    #[arg(long, requires = "by")]
    pub approve: bool,
    /// Who approves.
    #[arg(long, value_name = "NAME", requires = "approve")]
    pub by: Option<String>,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Applied and pending migrations, with checksum checks.
    Status,
    /// Apply pending migrations (all, or up to --to).
    Up {
        #[arg(long)]
        to: Option<i64>,
        /// Confirm a `confirm: typed` environment without a prompt; must name it.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Revert migrations above --to (0: all).
    Down {
        #[arg(long)]
        to: i64,
        /// Confirm a `confirm: typed` environment without a prompt; must name it.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
        // Only a `--to` newer than the current version moves forward and needs
        // `--outside-window` outside the window.
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Create `<timestamp>_<name>.up.sql` and `.down.sql`.
    New { name: String },
    /// Check applied migrations against their files.
    Verify,
    /// Settle a migration that failed part-way (dirty): after fixing the schema by hand,
    /// say whether it is now applied or reverted.
    Resolve {
        version: i64,
        #[arg(long = "as", value_enum)]
        resolution: Resolution,
    },
    /// Adopt a database whose schema is already at VERSION (made by hand, or by another
    /// tool): record the migrations up to it as applied, with today's files' checksums,
    /// without running them. Only into an empty history; journaled with who did it.
    Baseline {
        /// The migration the database's schema already matches.
        #[arg(long)]
        version: i64,
        /// Why, for the journal (how the schema was checked).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Compare the live schema with the one recorded after the last run that left the
    /// database at its current version: what was added, removed or changed by hand.
    /// Reads only; exit 0 either way.
    Diff,
    /// Record the live schema as the expected one for the current version (after a
    /// deliberate hot-fix), so the next plan no longer refuses it. Journaled with the
    /// reason and who gave it.
    AcceptDrift {
        /// Why the live schema is right, for the journal.
        #[arg(long)]
        reason: String,
    },
    /// Accept the edited file of an applied migration (a comment, whitespace): only when
    /// the applied text, found in the folder's git history by its checksum, has the same
    /// statements; otherwise with `--force --reason`. Journaled. No VERSION: every applied
    /// migration whose file no longer matches.
    Repair {
        version: Option<i64>,
        /// Accept even when the edit cannot be shown harmless; needs `--reason`.
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why, for the journal.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check migrations for PostgreSQL and MySQL/MariaDB operations that lock or rewrite
    /// big tables or break the release still running (CREATE INDEX without CONCURRENTLY,
    /// DROP COLUMN, an ALTER TABLE that copies the table, ...). Exit 2 when the environment
    /// has `lint: error` and something is found.
    Lint {
        /// Only the migrations not applied to the database yet (as `plan` does).
        #[arg(long, conflicts_with = "rules")]
        pending: bool,
        /// Print the rules as a Markdown table (id, databases, why, fix) and lint nothing;
        /// needs no config.
        #[arg(long)]
        rules: bool,
    },
    /// Check that every down migration undoes its up, in a scratch database (up, down, up
    /// each; then all down and up again); the real database is not touched. Exit 1 names
    /// the migration whose down does not undo its up.
    Test,
    /// Print the database's fingerprint, as a run takes it before its first side effect:
    /// a digest per schema object and each table's row count and content digest. Reads
    /// only. With `--table`, only those tables' rows are digested.
    Fingerprint {
        /// A table whose rows to digest (repeatable; default: every table).
        #[arg(long = "table", value_name = "NAME")]
        tables: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resolution {
    /// The migration's changes are all in place.
    Applied,
    /// None of the migration's changes are left.
    Reverted,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Finished backups, newest first.
    List,
    /// Take a backup now.
    Create {
        /// Backup id (default `manual-{timestamp}`).
        #[arg(long)]
        name: Option<String>,
        /// Confirm a `confirm: typed` environment without a prompt; must name it.
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
    },
    /// Check a backup's checksum and restore it into a scratch database.
    Verify { id: String },
    /// Delete backups beyond the store's `keep:` (a count or an age); the newest is always
    /// kept.
    Prune {
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a backup over the database (a safety backup is taken first).
    Restore {
        id: String,
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The runs of one fleet target instead of the environment's own.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// How many runs to show (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the lock.
    Status,
    /// Remove the lock whoever holds it.
    Release {
        /// Required: this can let two runs act at once.
        #[arg(long, required = true)]
        force: bool,
        /// Skip the confirmation prompt (needed without a TTY).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Longest one environment's check may take, every remote read included (a database,
    /// a platform, a store or a vault that cannot be reached is reported then).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline file (default: the config's `pipeline`).
    #[arg(short, long)]
    pub pipeline: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Runs the process supervisor when that is what the command line asks for (before any
/// logging or runtime starts: it only runs a command and watches its pipe).
pub fn supervise(cli: &Cli) -> Option<std::process::ExitCode> {
    let Command::Supervise(args) = &cli.command else {
        return None;
    };
    Some(match crate::shell::supervise(&args.argv) {
        Ok(status) => crate::shell::exit_like(status),
        Err(e) => {
            exit::eprint(&format!("error: {e}"));
            std::process::ExitCode::from(127)
        }
    })
}

/// The manual page, from the same definitions as `--help`.
fn man() -> Result<exit::Exit, crate::engine::EngineError> {
    let command = <Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| {
            crate::engine::EngineError::Plan(format!("cannot render the manual page: {e}"))
        })?;
    emit(&page)
}

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
fn emit(bytes: &[u8]) -> Result<exit::Exit, crate::engine::EngineError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(
            crate::engine::EngineError::Plan(format!("cannot write to stdout: {e}")),
        ),
        _ => Ok(exit::Exit::Ok),
    }
}

/// Runs the command; the process's exit code (see `app::outcome`).
pub async fn run(cli: Cli) -> u8 {
    let command = session::command_name(&cli.command);
    session::colour(&cli.global);
    let result = match cli.command {
        Command::Deploy(args) if args.fleet => fleet::deploy(&cli.global, args).await,
        Command::Deploy(args) => Box::pin(deploy::deploy(&cli.global, args)).await,
        Command::Plan(args) => plan::plan(&cli.global, args).await,
        Command::Rehearse(args) => rehearse::rehearse(&cli.global, args).await,
        Command::Release(args) => Box::pin(deploy::release(&cli.global, args)).await,
        Command::Rollback(args) => Box::pin(deploy::rollback(&cli.global, args)).await,
        Command::Recover(args) => recover::recover(&cli.global, &args).await,
        Command::Resume(args) => deploy::resume(&cli.global, args).await,
        Command::Status(_) => status::status(&cli.global).await,
        Command::Migrate(cmd) => Box::pin(migrate::migrate(&cli.global, cmd)).await,
        Command::Backup(cmd) => Box::pin(backup::backup(&cli.global, cmd)).await,
        Command::History(args) => history::history(&cli.global, &args).await,
        Command::Lock(cmd) => lock::lock(&cli.global, cmd).await,
        Command::Check(args) => check::check(&cli.global, args.timeout).await,
        Command::Init(args) => init::init(&cli.global, args.project.as_deref()),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "cutover", &mut script);
            emit(&script)
        }
        Command::Man => man(),
        Command::Validate(args) => validate::validate(&cli.global, args).await,
        // `main` runs it before anything else starts; it has no place in a session.
        Command::Supervise(_) => Err(crate::engine::EngineError::Plan(format!(
            "`{}` is internal to cutover",
            crate::shell::SUPERVISE
        ))),
    };
    // Notifications still queued go out now, within their targets' time limits.
    crate::notify::drain_all().await;
    match result {
        Ok(exit) => session::finish(&cli.global, &command, exit, None).code(),
        Err(e) => session::finish(
            &cli.global,
            &command,
            exit::report_error(&e, &command),
            Some(&e),
        )
        .code(),
    }
}
