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
    /// The environment a command acts on when neither `-e` nor `CUTOVER_ENV` names one
    /// (with a single environment, that one).
    #[serde(default)]
    pub default_environment: Option<Spanned<String>>,
    /// Where to send run notifications, for every environment (each environment may add
    /// its own under its `notify:`).
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
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
    /// Where to send this environment's run notifications, besides the top-level ones.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// How to sign in to Azure, for Azure platforms and `keyvault://` secrets (default:
    /// `credential: auto`).
    #[serde(default)]
    pub azure: Option<AzureConfig>,
    /// Many databases (a database per tenant) that `deploy --fleet` runs the pipeline's
    /// database steps on, one run per target.
    #[serde(default)]
    pub targets: Option<TargetsConfig>,
    /// Allow applying a migration numbered below the newest applied one (a branch merged
    /// late). Refused by default, naming the late migration and the head it is below;
    /// when allowed, the plan lists it as out of order, and a rollback reverts exactly the
    /// migrations the run applied.
    #[serde(default)]
    pub out_of_order: bool,
    /// What a difference between the live schema and the one recorded after the last
    /// run does: `refuse` (the default) stops a forward plan, `warn` shows it, `off`
    /// neither records nor compares.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// The fingerprint a run takes before its first side effect and compares after a
    /// rollback.
    #[serde(default)]
    pub fingerprint: Option<FingerprintConfig>,
    /// Rehearse the database part of each release on a copy of the data before the
    /// window opens (default on): `off`, or `{ max_age: 24h }`.
    #[serde(default)]
    pub rehearse: super::rehearse::RehearseConfig,
}

/// How much of the database the run's fingerprint reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// Tables bigger than this many MiB get no content digest (the comparison names them
    /// as not checked). Default 1024; a digest costs about five `count(*)` scans.
    #[serde(default)]
    pub max_table_mb: Option<u64>,
}

/// Azure sign-in for one environment. Every field is optional; what is not set comes from
/// the standard `AZURE_*` environment variables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Subscription id for Azure platforms that do not name their own (default:
    /// `AZURE_SUBSCRIPTION_ID`).
    #[serde(default)]
    pub subscription: Option<Text>,
    /// Entra tenant id (default: `AZURE_TENANT_ID`).
    #[serde(default)]
    pub tenant: Option<Text>,
    /// Which credential signs in (default `auto`).
    #[serde(default)]
    pub credential: AzureCredentialKind,
    /// Application (client) id of the identity: the service principal, the workload
    /// identity, or a user-assigned managed identity (default: `AZURE_CLIENT_ID`).
    #[serde(default)]
    pub client_id: Option<Text>,
    /// Client secret for `client-secret`; a credential field (default:
    /// `AZURE_CLIENT_SECRET`).
    #[serde(default)]
    pub client_secret: Option<Text>,
    /// Service connection id for `azure-pipelines` (default:
    /// `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID`).
    #[serde(default)]
    pub service_connection: Option<Text>,
    /// Longest reading one Key Vault secret may take, sign-in and retries included
    /// (default 20s): an unreachable vault is an error in seconds, not minutes.
    #[serde(default)]
    pub timeout: Option<Duration>,
}

/// The Azure credential an environment signs in with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AzureCredentialKind {
    /// The first that applies: workload identity, client secret, managed identity, Azure CLI.
    #[default]
    Auto,
    /// A federated token file (`AZURE_FEDERATED_TOKEN_FILE`): AKS workload identity.
    WorkloadIdentity,
    /// The managed identity of the App Service, Container App, VM or AKS node.
    ManagedIdentity,
    /// A service principal's client secret.
    ClientSecret,
    /// `az account get-access-token`: whoever is signed in to the Azure CLI.
    AzureCli,
    /// An Azure Pipelines service connection with workload identity federation.
    AzurePipelines,
}

/// The targets of a fleet run, and how the fleet runs. Targets come from any of `list`,
/// `file` and `query` (together: all of them); each target's URL replaces the
/// environment's `database.url` (kind and settings stay the environment's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    /// Targets written out.
    #[serde(default)]
    pub list: Vec<TargetEntry>,
    /// A file (relative to this one) with a target per line: `NAME URL`; blank lines and
    /// lines starting with `#` are skipped.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// A query against a catalog database that returns rows of `name, url`.
    #[serde(default)]
    pub query: Option<TargetQuery>,
    /// How many targets run at once (default 4).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// How many targets run first, as canaries: if any of them fails, no other target
    /// starts (default 1; 0: no canary stage).
    #[serde(default)]
    pub canary: Option<u32>,
    /// Failed targets allowed before no new target starts: a count (`3`) or a share of the
    /// targets (`5%`). Default 0: the first failure stops the fleet.
    #[serde(default)]
    pub max_failures: Option<FailureBudget>,
}

/// One target: a name for output and journals, and its database URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetEntry {
    /// Letters, digits, `-`, `_` and `.`; unique.
    pub name: String,
    /// The target's database URL; its password is masked.
    pub url: Text,
}

/// Targets read from a catalog database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetQuery {
    /// The catalog's URL (`sqlite://`, `postgres://` or `mysql://`); its password is masked.
    pub catalog: Text,
    /// Returns two text columns: the target's name and its database URL. Every URL's
    /// password is masked.
    pub sql: String,
}

/// A failure budget: a count, or a percentage of the targets (rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureBudget {
    Count(u32),
    Percent(u32),
}

impl FailureBudget {
    /// The failures allowed among `targets`.
    pub fn allowed(self, targets: usize) -> usize {
        match self {
            Self::Count(n) => n as usize,
            Self::Percent(p) => targets * p as usize / 100,
        }
    }
}

impl<'de> Deserialize<'de> for FailureBudget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FailureBudget;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a count (`3`) or a percentage (`5%`)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FailureBudget, E> {
                u32::try_from(v)
                    .map(FailureBudget::Count)
                    .map_err(|_| E::custom("max_failures too large"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FailureBudget, E> {
                u32::try_from(v)
                    .map(FailureBudget::Count)
                    .map_err(|_| E::custom("max_failures must be 0 or more"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FailureBudget, E> {
                let bad = || {
                    E::custom(format!(
                        "invalid max_failures `{v}`: expected a count (`3`) or a percentage (`5%`)"
                    ))
                };
                match v.trim().strip_suffix('%') {
                    Some(p) => match p.trim().parse::<u32>() {
                        Ok(p) if p <= 100 => Ok(FailureBudget::Percent(p)),
                        _ => Err(bad()),
                    },
                    None => v
                        .trim()
                        .parse()
                        .map(FailureBudget::Count)
                        .map_err(|_| bad()),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
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
        /// Create the file, and its folder, when missing. Without it a missing file is
        /// created only in a folder that exists, so that a typo in the path is an error
        /// instead of a new, empty database.
        #[serde(default)]
        create: bool,
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
        /// them, `error` stops the plan (exit 2) until the migration is changed, `off`
        /// lints nothing. See `cutover migrate lint`.
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
        /// What the migration linter's findings do to a plan, as for PostgreSQL:
        /// `warning` (default), `error` or `off`.
        #[serde(default)]
        lint: Option<LintLevel>,
    },
    /// Azure SQL Database, through Azure Resource Manager.
    AzureSql(Box<AzureSqlConfig>),
}

impl DatabaseConfig {
    /// The connection URL as written, where the kind has one.
    pub fn url(&self) -> Option<&Text> {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } | Self::Mysql { url, .. } => {
                Some(url)
            }
            Self::AzureSql(_) => None,
        }
    }
}

/// An Azure SQL database, reached through Azure Resource Manager with the environment's
/// Azure credential. Backups are `.bacpac` exports through the `azure-blob` backup
/// container (which must have `key:` or `sas:`, handed to the export); a restore imports
/// into a new database and swaps it in by rename. There is no SQL Server driver: run
/// migrations with the `command` migrator (an EF Core bundle, say).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSqlConfig {
    /// Subscription id (default: `azure.subscription`, then `AZURE_SUBSCRIPTION_ID`).
    #[serde(default)]
    pub subscription: Option<Text>,
    /// Resource group of the SQL server.
    pub resource_group: Text,
    /// The logical SQL server's name.
    pub server: Text,
    /// The database's name.
    pub database: Text,
    /// SQL login the export and import run as.
    pub admin_login: Text,
    /// That login's password; a credential field.
    pub admin_password: Text,
    /// `Microsoft.Sql` api-version (default `2023-08-01`).
    #[serde(default)]
    pub api_version: Option<Text>,
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
    /// Not linted: a plan says once that its migrations were not.
    Off,
}

/// `drift:` of an environment (see `engine::drift`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftPolicy {
    #[default]
    Refuse,
    Warn,
    Off,
}

/// Retention: a count (`10`) or an age (`35d`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Keep {
    Count(u32),
    Age(Duration),
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "the newest {n}"),
            Self::Age(age) => write!(f, "those younger than {age}"),
        }
    }
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
        compression: Option<crate::config::compression::Compression>,
    },
    /// Azure Blob Storage: block blobs `<id>.dump` plus `<id>.manifest.json`.
    AzureBlob(Box<AzureBlobConfig>),
}

/// An Azure Blob Storage container and how to sign in to it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobConfig {
    /// Storage account: a name (`mybackups`), the blob service URL
    /// (`https://mybackups.blob.core.windows.net`), or an emulator's path-style URL
    /// (`http://127.0.0.1:10000/devstoreaccount1`).
    pub account: Text,
    /// Container name; created by the first check when missing.
    pub container: Text,
    /// Account key (Shared Key); a credential field. Without `key:` and `sas:`,
    /// requests carry an Entra ID token from the Azure credential.
    #[serde(default)]
    pub key: Option<Text>,
    /// SAS token (`sv=...&sig=...`) allowing read, add, create, write, delete and list
    /// on the container; a credential field.
    #[serde(default)]
    pub sas: Option<Text>,
    /// How many backups `backup prune` keeps.
    #[serde(default)]
    pub keep: Option<Keep>,
    /// How dumps are compressed, as for `local`.
    #[serde(default)]
    pub compression: Option<crate::config::compression::Compression>,
}

/// The platform the app runs on, by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PlatformConfig {
    /// No platform: maintenance and scale steps report what they would do.
    None,
    /// Shell commands, one per action.
    Command(CommandPlatformConfig),
    /// Azure Container Apps, through Azure Resource Manager. Scale targets: `app` and
    /// `jobs`.
    AzureContainerApps(ContainerAppsConfig),
    /// Azure App Service, through Azure Resource Manager. Scale target: `app` (0 stops
    /// it, 1 starts it).
    AzureAppService(AppServiceConfig),
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

/// An Azure Container Apps app (and optionally a second one running background jobs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerAppsConfig {
    /// Subscription id (default: `azure.subscription`, then `AZURE_SUBSCRIPTION_ID`).
    #[serde(default)]
    pub subscription: Option<Text>,
    /// Resource group of both apps.
    pub resource_group: Text,
    /// The app that serves traffic: maintenance mode and restarts act on it; scale
    /// target `app`.
    pub app: Text,
    /// A second Container App running background jobs; scale target `jobs`.
    #[serde(default)]
    pub jobs: Option<Text>,
    /// A Container Apps job (`Microsoft.App/jobs`); scale target `job`.
    #[serde(default)]
    pub job: Option<Text>,
    /// The environment variable that turns the app's maintenance mode on (`true`) and
    /// off (`false`) (default `MAINTENANCE_MODE`).
    #[serde(default)]
    pub maintenance_variable: Option<Text>,
    /// Microsoft.App api-version (default `2025-01-01`).
    #[serde(default)]
    pub api_version: Option<Text>,
    /// The image a `release` step gives the app's first container, with `{version}` for
    /// the code version (`myregistry.azurecr.io/api:{version}`). Default: the live
    /// revision's image with its tag replaced by the version.
    #[serde(default)]
    pub image: Option<Text>,
}

/// An Azure App Service web app (or one of its deployment slots).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppServiceConfig {
    /// Subscription id (default: `azure.subscription`, then `AZURE_SUBSCRIPTION_ID`).
    #[serde(default)]
    pub subscription: Option<Text>,
    /// Resource group of the app.
    pub resource_group: Text,
    /// The web app's name.
    pub app: Text,
    /// A deployment slot to act on instead of the production slot.
    #[serde(default)]
    pub slot: Option<Text>,
    /// The app setting that turns maintenance mode on (`true`) and off (`false`)
    /// (default `MAINTENANCE_MODE`).
    #[serde(default)]
    pub maintenance_setting: Option<Text>,
    /// Microsoft.Web api-version (default `2024-04-01`).
    #[serde(default)]
    pub api_version: Option<Text>,
    /// The deployment slot a `release` step stages code in and a `traffic` step swaps into
    /// production (default `staging`).
    #[serde(default)]
    pub staging_slot: Option<Text>,
    /// The container image a `release` step puts in the staging slot, with `{version}` for
    /// the code version (`myregistry.azurecr.io/web:{version}`). Default: production's
    /// image (`siteConfig.linuxFxVersion`, `DOCKER|repo:tag`) with its tag replaced.
    #[serde(default)]
    pub image: Option<Text>,
    /// The URL a `release` step polls until the staged code answers 2xx (default: the
    /// staging slot's host name with the path of the environment's `health.url`).
    #[serde(default)]
    pub warm_url: Option<Text>,
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
    /// Prints the code version the app runs (one line, an image tag): what a `traffic`
    /// step's undo goes back to.
    #[serde(default)]
    pub current_version: Option<Text>,
    /// Puts code version `{version}` live (`traffic`); `{from}` is the version it replaces.
    #[serde(default)]
    pub release: Option<Text>,
    /// Puts the earlier version `{version}` back (a rollback; `{from}` is the version it
    /// replaces). Default: the `release` command.
    #[serde(default)]
    pub release_undo: Option<Text>,
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
    /// How long the app must stay healthy, from its first good answer, before the health
    /// step passes (default 10s); a step's `healthy_for` overrides it.
    #[serde(default)]
    pub healthy_for: Option<Duration>,
    /// Good answers in a row the health step needs (default 3); a step's `successes`
    /// overrides it.
    #[serde(default)]
    pub successes: Option<u32>,
}

/// Deploy lock settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// How long a lock lives without a heartbeat (default 60s; 15s to 60s for
    /// `azure-blob`).
    #[serde(default)]
    pub lease: Option<Duration>,
    /// Where the lock and the journal live: `local` (default: the state folder) or
    /// `azure-blob` (a blob lease and append blobs, shared by every runner).
    #[serde(default)]
    pub kind: Option<LockKind>,
    /// For `azure-blob`: storage account, as in `backups:`.
    #[serde(default)]
    pub account: Option<Text>,
    /// For `azure-blob`: container name.
    #[serde(default)]
    pub container: Option<Text>,
    /// For `azure-blob`: account key; a credential field.
    #[serde(default)]
    pub key: Option<Text>,
    /// For `azure-blob`: SAS token; a credential field.
    #[serde(default)]
    pub sas: Option<Text>,
}

/// Where the deploy lock and the journal live.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockKind {
    /// Files in the state folder (one machine).
    #[default]
    Local,
    /// A blob lease and the journal in an Azure Blob Storage container (many runners).
    AzureBlob,
}

/// A notification target: an incoming webhook that hears about runs. Sent in the
/// background with bounded retries; a target that is down never fails or holds a release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The message format: `webhook` (cutover's JSON), `slack` or `teams`.
    pub kind: NotifyKind,
    /// The webhook URL; a credential field (it carries the token), never shown.
    pub url: Text,
    /// Which run events to send (default: all of them).
    #[serde(default)]
    pub events: Option<Vec<NotifyEvent>>,
    /// Longest one delivery attempt may take, and the longest the command waits at its
    /// end for messages still queued (default 5s).
    #[serde(default)]
    pub timeout: Option<Duration>,
}

/// The message format of a notification target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyKind {
    /// A JSON document with every field of the event.
    Webhook,
    /// A Slack incoming webhook (`text` and a `section` block).
    Slack,
    /// A Microsoft Teams incoming webhook or Workflows webhook (an Adaptive Card message).
    Teams,
}

/// A run event that can be notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// The run started (after confirmation, under the lock).
    Started,
    /// Every step finished.
    Succeeded,
    /// A step failed; a rollback follows.
    Failed,
    /// The rollback after a failure finished: the state is as before the run.
    RolledBack,
    /// The rollback stopped part-way: a human is needed.
    RollbackFailed,
    /// The run halted for a human (`on_failure: halt`, a point of no return, a choice at
    /// the prompt): `cutover resume` or `cutover rollback`.
    Halted,
}

impl NotifyEvent {
    pub const ALL: [Self; 6] = [
        Self::Started,
        Self::Succeeded,
        Self::Failed,
        Self::RolledBack,
        Self::RollbackFailed,
        Self::Halted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::RollbackFailed => "rollback_failed",
            Self::Halted => "halted",
        }
    }
}
