//! The raw shape of `deploy.yaml`: what the file says, before references are resolved.
//!
//! Every string that may hold a `${env:..}`, `${file:..}` or `${secret:..}` reference is a
//! [`Text`], kept with its location so a reference that fails to resolve is reported at
//! the line it was written on.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration::Duration;

/// A string from the file that may contain references, with where it was written.
pub type Text = Spanned<String>;

/// `deploy.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployFile {
    /// Format version of this file; only `1` exists.
    pub version: Spanned<u32>,
    /// Project name, shown in plans and recorded in the journal.
    pub project: String,
    /// Pipeline to run, relative to this file (default `pipelines/deploy.yaml`).
    #[serde(default)]
    pub pipeline: Option<Spanned<String>>,
    /// Folder of migrations, relative to this file (default `migrations`).
    #[serde(default)]
    pub migrations: Option<Spanned<String>>,
    /// Folder for the journal and the lock, relative to this file (default `.cutover`).
    #[serde(default)]
    pub state_dir: Option<String>,
    /// The environments this project deploys to, by name.
    pub environments: IndexMap<String, Environment>,
}

/// One environment: where its database, backups, platform and health endpoint are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// `typed` asks a person to type `CONFIRM` before anything is touched.
    #[serde(default)]
    pub confirm: ConfirmMode,
    /// Deploys may only start inside this window, e.g. `02:00-04:00 UTC`.
    #[serde(default)]
    pub window: Option<Spanned<String>>,
    /// Marks the environment `cutover release` picks when `CUTOVER_ENV` is unset.
    #[serde(default)]
    pub release: bool,
    /// The application database.
    pub database: DatabaseConfig,
    /// Where backups go (default: a local folder `.cutover/backups`).
    #[serde(default)]
    pub backups: Option<StoreConfig>,
    /// The platform the application runs on (default: none).
    #[serde(default)]
    pub platform: Option<PlatformConfig>,
    /// The application's health endpoint, used by `preflight` and `health`.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Deploy lock settings.
    #[serde(default)]
    pub lock: Option<LockConfig>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfirmMode {
    /// No confirmation.
    #[default]
    None,
    /// The plan is shown and `CONFIRM` must be typed (or `--confirm <env>` given without a TTY).
    Typed,
}

/// The database, by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DatabaseConfig {
    /// An SQLite file: `sqlite://path/to/app.db` (relative to the config file).
    Sqlite {
        /// Connection URL; a credential field.
        url: Text,
    },
    /// PostgreSQL: `postgres://user:password@host:5432/db?sslmode=require`.
    Postgres {
        /// Connection URL; a credential field.
        url: Text,
        /// Longest a statement waits for a lock before failing (default 5s), so a migration
        /// never queues behind a long transaction while the app queues behind it.
        #[serde(default)]
        lock_timeout: Option<Duration>,
        /// Longest a single statement may run (default: no limit).
        #[serde(default)]
        statement_timeout: Option<Duration>,
        /// What the migration linter's findings (statements that lock or rewrite big
        /// tables, or break the previous release) do to a plan: `warning` (default) shows
        /// them, `error` stops the plan (exit 2) until the migration is changed. See
        /// `cutover migrate lint`.
        #[serde(default)]
        lint: Option<LintLevel>,
        /// How a backup is restored over the database (a rollback by restore, `cutover
        /// backup restore`): `in-place` (default) or `swap`. See [`PgRestore`].
        #[serde(default)]
        restore: Option<PgRestore>,
    },
    /// MySQL or MariaDB: `mysql://user:password@host:3306/db` (or `mariadb://`).
    Mysql {
        /// Connection URL; a credential field.
        url: Text,
        /// Longest a statement waits for a metadata lock (default 5s): DDL fails fast
        /// instead of queueing behind a long transaction with the app queued behind it.
        #[serde(default)]
        lock_wait_timeout: Option<Duration>,
    },
}

/// How a PostgreSQL backup is restored over the database.
///
/// `in-place` replaces the database's contents in one `psql --single-transaction`: a
/// failed restore changes nothing, no extra rights are needed and sessions stay connected,
/// but the tables are locked while the restore runs and what was there is gone afterwards.
///
/// `swap` restores into a new database `<db>_restore_<random>` on the same server, checks
/// that it reads, then bars new sessions from `<db>`, ends the others and renames both in
/// one transaction: `<db>` becomes `<db>_replaced_<YYYYMMDDHHMMSS>` (UTC) and the new one
/// becomes `<db>`, with the old one's owner, encoding, locale, tablespace, connection
/// limit, grants, comment and settings (`ALTER DATABASE .. SET`), and its `public`
/// schema's owner and grants. The old database keeps serving until the swap (what is
/// written to it meanwhile stays there), and it is kept afterwards, for a look at what was
/// there, until someone drops it: the output says how. If anything fails before the
/// renames, the new database is dropped and `<db>` is untouched. The costs: the role needs
/// `CREATEDB`, must own `<db>` (to rename it) and be able to end its sessions (same role,
/// `pg_signal_backend`, or superuser), and must be able to connect to the `postgres`
/// maintenance database (the renames run from there, and the deploy lock is taken there,
/// so that it holds no session on `<db>`); the application's sessions are ended; the
/// server needs room for a second copy while the old one is kept; and per-role settings
/// (`ALTER ROLE .. IN DATABASE <db> SET`) stay with the replaced database (the output
/// lists them). Names longer than PostgreSQL's 63 bytes are shortened by cutting `<db>`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgRestore {
    #[default]
    InPlace,
    Swap,
}

/// How the migration linter's findings count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LintLevel {
    /// Shown as warnings; the plan goes on.
    #[default]
    #[serde(alias = "warn")]
    Warning,
    /// Plan errors: nothing runs until the migration is fixed.
    Error,
}

/// Retention: a count (`10`) or an age (`35d`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Keep {
    Count(u32),
    Age(Duration),
}

/// The backup store, by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StoreConfig {
    /// A local folder.
    Local {
        /// Folder, relative to the config file.
        path: Text,
        /// How many backups `backup prune` keeps.
        #[serde(default)]
        keep: Option<Keep>,
        /// How dumps are compressed on their way in: `zstd` (level 1, the default),
        /// `zstd:<1-19>` or `none`. Recorded in each manifest; restores read any.
        #[serde(default)]
        compression: Option<crate::adapters::store::Compression>,
    },
    /// Azure Blob Storage.
    AzureBlob {
        /// Storage account name or URL.
        account: Text,
        /// Container name.
        container: Text,
        /// Account key or SAS; a credential field.
        #[serde(default)]
        key: Option<Text>,
        /// How many backups `backup prune` keeps.
        #[serde(default)]
        keep: Option<Keep>,
    },
}

/// The platform the app runs on, by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PlatformConfig {
    /// No platform: maintenance and scale steps report what they would do.
    None,
    /// Shell commands, one per action.
    Command(CommandPlatformConfig),
    /// Azure Container Apps.
    AzureContainerApps {
        #[serde(default)]
        subscription: Option<Text>,
        resource_group: Text,
        app: Text,
        #[serde(default)]
        jobs: Option<Text>,
    },
    /// Azure App Service.
    AzureAppService {
        #[serde(default)]
        subscription: Option<Text>,
        resource_group: Text,
        app: Text,
        #[serde(default)]
        slot: Option<Text>,
    },
    /// Heroku, over the Platform API: maintenance mode (`PATCH /apps/{app}`), the
    /// formation (process types are the scale targets: `web`, `worker`, ...) and restarts.
    ///
    /// In a release phase (`release: cutover release` in the Procfile) the new release is
    /// not live yet: maintenance mode and scaling act on the release that is running now,
    /// which keeps serving until the release phase succeeds. Heroku ends a release phase
    /// after one hour.
    Heroku {
        /// App name or id.
        app: Text,
        /// Platform API key; a credential field (default: the `HEROKU_API_KEY`
        /// environment variable).
        #[serde(default)]
        api_key: Option<Text>,
        /// Platform API base URL (default `https://api.heroku.com`).
        #[serde(default)]
        api_url: Option<Text>,
    },
}

/// Shell command templates for the `command` platform. Each runs with `sh -c`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandPlatformConfig {
    /// Prints the current state, one `key=value` per line: `maintenance=true|false` and
    /// `<target>=<replicas>` for every scalable target.
    pub status: Text,
    /// Turns maintenance mode on.
    #[serde(default)]
    pub maintenance_on: Option<Text>,
    /// Turns maintenance mode off.
    #[serde(default)]
    pub maintenance_off: Option<Text>,
    /// Scales a target; `{target}` and `{replicas}` are substituted.
    #[serde(default)]
    pub scale: Option<Text>,
    /// Restarts the app.
    #[serde(default)]
    pub restart: Option<Text>,
    /// Environment variables for every command; credential fields.
    #[serde(default)]
    pub env: IndexMap<String, Text>,
}

/// The app's health endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// HTTP(S) URL to poll.
    pub url: Text,
    /// Expected status code (default 200).
    #[serde(default)]
    pub expect: Option<u16>,
    /// Text the body must contain.
    #[serde(default)]
    pub body: Option<String>,
    /// How long the health step waits for good health (default 5m).
    #[serde(default)]
    pub timeout: Option<Duration>,
}

/// Deploy lock settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// How long a lock lives without a heartbeat (default 60s).
    #[serde(default)]
    pub lease: Option<Duration>,
}
