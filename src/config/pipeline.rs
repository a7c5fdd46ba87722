//! The raw shape of a pipeline file: a name and a list of steps, each `uses:` + `with:`.
//!
//! A step entry is read by a hand-written `Deserialize` so that `with:` is parsed straight
//! into the options type of the step named by `uses:`. Buffering it (as `flatten` or an
//! untagged enum would) loses the location of errors inside `with:`.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::Spanned;

use super::duration::Duration;

/// A pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Pipeline name, shown in plans and the journal.
    pub name: String,
    /// Upper bound for the whole run (default: none).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// What a failed step leads to: `rollback` (default), `halt` or `ask`; a step's own
    /// `on_failure` overrides it.
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// What `ask` does when nobody can be asked (no terminal, CI): `rollback` (default) or
    /// `halt`.
    #[serde(default)]
    pub unattended: Option<Unattended>,
    /// The steps, run in order.
    pub steps: Vec<Spanned<StepEntry>>,
}

/// What a failed step leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Undo what the run did, newest first (back to a point of no return, if one passed).
    #[default]
    Rollback,
    /// Stop here and leave everything as it is for a human: `cutover resume` or `cutover
    /// rollback`.
    Halt,
    /// At a terminal, show the failure and ask: retry the step, roll back, or halt.
    Ask,
}

/// What `ask` does without a terminal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unattended {
    #[default]
    Rollback,
    Halt,
}

/// The step kinds, as written after `uses:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Preflight,
    Maintenance,
    Scale,
    Backup,
    Migrate,
    Validate,
    Sql,
    Command,
    Health,
    Restart,
    Pause,
    Release,
    Traffic,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::Maintenance => "maintenance",
            Self::Scale => "scale",
            Self::Backup => "backup",
            Self::Migrate => "migrate",
            Self::Validate => "validate",
            Self::Sql => "sql",
            Self::Command => "command",
            Self::Health => "health",
            Self::Restart => "restart",
            Self::Pause => "pause",
            Self::Release => "release",
            Self::Traffic => "traffic",
        }
    }
}

/// One entry of `steps:`.
#[derive(Debug)]
pub struct StepEntry {
    /// Unique id (default: the step kind, numbered when it repeats).
    pub id: Option<Spanned<String>>,
    pub with: StepWith,
    /// Upper bound for this step.
    pub timeout: Option<Duration>,
    /// How often a transient failure is retried (default 0).
    pub retries: u32,
    /// Runs the step only in some environments.
    pub when: Option<When>,
    /// Overrides the pipeline's `on_failure` for this step.
    pub on_failure: Option<OnFailure>,
    /// Once this step has finished, a rollback never goes past it: a later failure undoes
    /// the steps after it, then the run halts for a human.
    pub point_of_no_return: bool,
    /// `rehearse: off` leaves the step out of the rehearsal.
    pub rehearse: bool,
}

/// `when:` — which environments a step runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Run only in these environments.
    #[serde(default)]
    pub environments: Option<Vec<Spanned<String>>>,
    /// Never run in these environments.
    #[serde(default)]
    pub not_environments: Option<Vec<Spanned<String>>>,
}

impl When {
    pub fn allows(&self, environment: &str) -> bool {
        let listed = |list: &Option<Vec<Spanned<String>>>| {
            list.as_ref()
                .map(|l| l.iter().any(|e| e.value == environment))
        };
        listed(&self.environments).unwrap_or(true)
            && !listed(&self.not_environments).unwrap_or(false)
    }
}

/// The options of each step kind.
#[derive(Debug)]
pub enum StepWith {
    Preflight(PreflightWith),
    Maintenance(MaintenanceWith),
    Scale(ScaleWith),
    Backup(BackupWith),
    Migrate(MigrateWith),
    Validate(ValidateWith),
    Sql(SqlWith),
    Command(CommandWith),
    Health(HealthWith),
    Restart(RestartWith),
    Pause(PauseWith),
    Release(ReleaseWith),
    Traffic(TrafficWith),
}

impl StepWith {
    pub fn kind(&self) -> StepKind {
        match self {
            Self::Preflight(_) => StepKind::Preflight,
            Self::Maintenance(_) => StepKind::Maintenance,
            Self::Scale(_) => StepKind::Scale,
            Self::Backup(_) => StepKind::Backup,
            Self::Migrate(_) => StepKind::Migrate,
            Self::Validate(_) => StepKind::Validate,
            Self::Sql(_) => StepKind::Sql,
            Self::Command(_) => StepKind::Command,
            Self::Health(_) => StepKind::Health,
            Self::Restart(_) => StepKind::Restart,
            Self::Pause(_) => StepKind::Pause,
            Self::Release(_) => StepKind::Release,
            Self::Traffic(_) => StepKind::Traffic,
        }
    }
}

/// `preflight`: checks that run before anything is touched.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightWith {
    /// Check the running app's health endpoint (default true when one is configured).
    #[serde(default)]
    pub health: Option<bool>,
}

/// `maintenance`: turn the platform's maintenance mode on or off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWith {
    pub enabled: bool,
}

/// `scale`: set a target's replica count.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleWith {
    /// What to scale (`jobs`, `web`, ...), as the platform names it.
    pub target: String,
    /// A count, or `previous`: the count before the first scale of this target in this run.
    pub replicas: Replicas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    Count(u32),
    Previous,
}

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Replicas;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a replica count or `previous`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Replicas, E> {
                u32::try_from(v)
                    .map(Replicas::Count)
                    .map_err(|_| E::custom("replica count too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Replicas, E> {
                u32::try_from(v)
                    .map(Replicas::Count)
                    .map_err(|_| E::custom("replica count must be 0 or more"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Replicas, E> {
                match v {
                    "previous" => Ok(Replicas::Previous),
                    other => other.parse().map(Replicas::Count).map_err(|_| {
                        E::custom(format!(
                            "invalid replicas `{other}`: expected a count or `previous`"
                        ))
                    }),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `backup`: stream a dump of the database to the backup store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupWith {
    /// Backup id template; `{version}`, `{timestamp}`, `{environment}` are substituted
    /// (default `pre-{version}-{timestamp}`).
    #[serde(default)]
    pub name: Option<String>,
    /// `restore`: prove the backup restores by restoring it into a scratch database
    /// beside the real one, and run the checks of every `validate` step of the pipeline
    /// there before anything is migrated (a check that finds too many issues fails the
    /// step); the scratch database is dropped on every path. `checksum`: re-read the
    /// stored backup and compare its sha256. `none` (default): no check.
    #[serde(default)]
    pub verify: Option<BackupVerify>,
    /// `true`: first copy the database beside itself (PostgreSQL `CREATE DATABASE ...
    /// TEMPLATE`, a SQLite copy), in seconds; the backup to the store is then streamed from
    /// that copy while the next steps run, and a rollback that restores swaps the copy in.
    #[serde(default)]
    pub snapshot: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupVerify {
    None,
    Checksum,
    Restore,
}

/// `migrate`: apply pending migrations — cutover's own SQL migrations (`tool: cutover`, the
/// default), or the team's own migrator (`tool: command`: Alembic, an EF Core bundle, ...)
/// run through its `status`, `up` and `down` commands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateWith {
    /// `latest` (default) or a version number. Not with `tool: command`.
    #[serde(default)]
    pub to: Option<Spanned<String>>,
    /// How to undo the migrations if a later step fails.
    #[serde(default)]
    pub rollback: Option<MigrateRollback>,
    /// Report a migration still running after this long, and again each time it passes
    /// (default 30s): it is probably waiting for a lock or rewriting a big table.
    #[serde(default)]
    pub warn_after: Option<Duration>,
    /// Whose migrations: `cutover` (default) or `command`.
    #[serde(default)]
    pub tool: Option<MigrateTool>,
    /// `tool: command`: prints the current version, changing nothing (`alembic current`).
    #[serde(default)]
    pub status: Option<String>,
    /// `tool: command`: applies the migrations (`alembic upgrade head`).
    #[serde(default)]
    pub up: Option<String>,
    /// `tool: command`: goes back to `{version}`, the version `status` read before `up`
    /// ran (`alembic downgrade {version}`). Must contain `{version}`, so running it twice
    /// changes nothing.
    #[serde(default)]
    pub down: Option<String>,
    /// `tool: command`: a regex that finds the version in the standard output of
    /// `status`: its first capture group, else the whole match. Default: the first
    /// whitespace-separated word that contains a digit or is 12 hex digits (an Alembic
    /// revision id), with surrounding brackets, quotes and punctuation trimmed.
    #[serde(default)]
    pub version_pattern: Option<String>,
    /// `tool: command`: what `{version}` stands for when `status` prints nothing (a
    /// database the migrator has never run on): `base` for Alembic, `0` for EF Core.
    #[serde(default)]
    pub base_version: Option<String>,
}

/// Who applies a `migrate` step's migrations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateTool {
    /// cutover, from the `.sql` files of `migrations:`.
    #[default]
    Cutover,
    /// The team's migrator, through the `status`, `up` and `down` commands.
    Command,
}

/// How long a migration may run before it is reported as slow, unless the step says.
pub const DEFAULT_WARN_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl MigrateWith {
    /// How long a migration may run before it is reported as slow.
    pub fn warn_after(&self) -> std::time::Duration {
        self.warn_after
            .map_or(DEFAULT_WARN_AFTER, super::duration::Duration::get)
    }

    /// Whether the step runs the team's migrator rather than cutover's.
    pub fn is_external(&self) -> bool {
        self.tool == Some(MigrateTool::Command)
    }

    /// Checks the options fit together; called while the pipeline is read.
    pub fn check(&self) -> Result<(), String> {
        let external_only = [
            ("status", self.status.is_some()),
            ("up", self.up.is_some()),
            ("down", self.down.is_some()),
            ("version_pattern", self.version_pattern.is_some()),
            ("base_version", self.base_version.is_some()),
        ];
        if !self.is_external() {
            if let Some((name, _)) = external_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "`migrate` option `{name}` is only for `tool: command` (the team's own migrator)"
                ));
            }
            return Ok(());
        }
        if self.to.is_some() {
            return Err(
                "`to:` is for cutover's own migrations; with `tool: command`, the `up` command decides how far to go"
                    .into(),
            );
        }
        let mut missing = Vec::new();
        if self.status.as_deref().is_none_or(|s| s.trim().is_empty()) {
            missing.push("`status` (prints the current version, e.g. `alembic current`)");
        }
        if self.up.as_deref().is_none_or(|s| s.trim().is_empty()) {
            missing.push("`up` (applies the migrations, e.g. `alembic upgrade head`)");
        }
        if !missing.is_empty() {
            return Err(format!("`tool: command` needs {}", missing.join(" and ")));
        }
        if let Some(down) = &self.down
            && !down.contains("{version}")
        {
            return Err(format!(
                "`down: {down}` must contain `{{version}}` (the version before the run, e.g. `alembic downgrade {{version}}`): a relative step such as `downgrade -1` would go back twice if the rollback is run again"
            ));
        }
        if self.rollback == Some(MigrateRollback::Down) && self.down.is_none() {
            return Err(
                "`rollback: down` needs a `down` command, e.g. `alembic downgrade {version}`"
                    .into(),
            );
        }
        if let Some(pattern) = &self.version_pattern {
            regex::Regex::new(pattern).map_err(|e| format!("invalid `version_pattern`: {e}"))?;
        }
        if let Some(base) = &self.base_version
            && !crate::shell::is_safe_version(base)
        {
            return Err(format!(
                "`base_version: {base}` may only contain letters, digits and `_ . : + -`"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateRollback {
    /// Down migrations when every pending migration has one, else restore the backup.
    #[default]
    Auto,
    Down,
    Restore,
    None,
}

/// `validate`: SQL checks that must report no issues.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateWith {
    /// A folder (or one file) of `.sql` checks, relative to the config file.
    #[serde(default)]
    pub queries: Option<Spanned<String>>,
    /// Inline checks.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Issues allowed per check before it fails (default 0).
    #[serde(default)]
    pub max_issues: Option<i64>,
}

/// One inline validation query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// Returns one row with one integer column named as a count (`issues`, `IssueCount`,
    /// `orphan_count`...), or the offending rows.
    pub sql: String,
    /// Issues allowed before the check fails (default: the step's `max_issues`).
    #[serde(default)]
    pub max_issues: Option<i64>,
}

/// `sql`: run SQL, with an optional undo.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlWith {
    #[serde(default)]
    pub sql: Option<String>,
    /// A file of SQL, relative to the config file.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// SQL that undoes it, run on rollback.
    #[serde(default)]
    pub undo: Option<String>,
}

/// `command`: run a shell command, with an optional undo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandWith {
    /// Command line, run with `sh -c` in the config file's folder.
    pub run: String,
    /// Command that undoes it, run on rollback.
    #[serde(default)]
    pub undo: Option<String>,
}

/// `health`: poll the app until it is healthy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthWith {
    /// URL (default: the environment's `health.url`).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// Expected status (default: the environment's, else 200).
    #[serde(default)]
    pub expect: Option<u16>,
    /// Text the body must contain.
    #[serde(default)]
    pub body: Option<String>,
    /// Steady wait between polls (default 100ms); the first polls come sooner (25ms apart,
    /// growing by half with ±10% jitter up to this).
    #[serde(default)]
    pub interval: Option<Duration>,
    /// Give up after this long (default: the environment's, else 5m).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// The app must stay healthy this long, from its first good answer in a row to the last,
    /// before the step passes (default: the environment's, else 10s). A bad answer starts
    /// over; the whole wait still ends at `timeout`.
    #[serde(default)]
    pub healthy_for: Option<Duration>,
    /// Good answers in a row the step needs (default: the environment's, else 3).
    #[serde(default)]
    pub successes: Option<u32>,
}

/// `restart`: restart the app.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartWith {}

/// `pause`: a person approves before the run goes on (Octopus' manual intervention).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseWith {
    /// What the person is asked to look at.
    #[serde(default)]
    pub message: Option<String>,
    /// How long an approval may take (default 1h): at a terminal the run rolls back
    /// when nobody answers in time; a halted run approved later rolls back instead.
    #[serde(default)]
    pub timeout: Option<Duration>,
}

impl PauseWith {
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(Self::DEFAULT_TIMEOUT, Duration::get)
    }
}

/// `release`: put the new code version beside the live one, without traffic (a new
/// Container Apps revision at 0 %, the App Service staging slot, warmed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseWith {
    /// The version to release (an image tag); `${env:NAME}` reads it from the
    /// environment. Default: `--code-version` (`CUTOVER_CODE_VERSION`).
    #[serde(default)]
    pub version: Option<Spanned<String>>,
}

/// `traffic`: send the traffic to the released version, in stages, with the health of each
/// stage held before the next.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficWith {
    /// The version to send traffic to (default: as `release`).
    #[serde(default)]
    pub version: Option<Spanned<String>>,
    /// Percent of the traffic at each stage, rising, ending at 100 (default `[100]`).
    #[serde(default)]
    pub stages: Option<Spanned<Vec<u32>>>,
    /// How long each stage below 100 % must stay healthy (the sustained-health rule on the
    /// environment's `health:`) before the next (default 1m).
    #[serde(default)]
    pub bake: Option<Duration>,
}

impl TrafficWith {
    pub const DEFAULT_BAKE: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn stages(&self) -> Vec<u32> {
        self.stages
            .as_ref()
            .map_or_else(|| vec![100], |s| s.value.clone())
    }

    pub fn bake(&self) -> std::time::Duration {
        self.bake.map_or(Self::DEFAULT_BAKE, Duration::get)
    }

    /// Stages must rise, stay within 1..=100 and end at 100.
    fn check(&self) -> Result<(), String> {
        let stages = self.stages();
        if stages.last() != Some(&100)
            || stages.iter().any(|s| *s == 0 || *s > 100)
            || stages.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(format!(
                "`stages: {stages:?}` must rise from above 0 and end at 100, like [10, 50, 100]"
            ));
        }
        Ok(())
    }
}

const STEP_FIELDS: &[&str] = &[
    "id",
    "uses",
    "with",
    "timeout",
    "retries",
    "when",
    "on_failure",
    "point_of_no_return",
    "rehearse",
];

impl<'de> Deserialize<'de> for StepEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = StepEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a step: `uses:` with optional `id:`, `with:`, `timeout:`, `retries:`, `when:`, `on_failure:`, `point_of_no_return:`, `rehearse:`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StepEntry, A::Error> {
        let mut id = None;
        let mut uses: Option<StepKind> = None;
        let mut with = None;
        let mut timeout = None;
        let mut retries = None;
        let mut when = None;
        let mut on_failure = None;
        let mut point_of_no_return = None;
        let mut rehearse: Option<super::rehearse::Switch> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => id = Some(map.next_value()?),
                "uses" => {
                    if with.is_some() {
                        return Err(de::Error::custom("`uses:` must come before `with:`"));
                    }
                    uses = Some(map.next_value()?);
                }
                "with" => {
                    let Some(kind) = uses else {
                        // Reading `with:` needs to know its type; in practice everybody writes
                        // `uses:` first, as in GitHub Actions.
                        return Err(de::Error::custom(
                            "`with:` comes before `uses:`; write `uses:` first",
                        ));
                    };
                    with = Some(next_with(kind, &mut map)?);
                }
                "timeout" => timeout = Some(map.next_value()?),
                "retries" => retries = Some(map.next_value()?),
                "when" => when = Some(map.next_value()?),
                "on_failure" => on_failure = Some(map.next_value()?),
                "point_of_no_return" => point_of_no_return = Some(map.next_value()?),
                "rehearse" => rehearse = Some(map.next_value()?),
                other => {
                    map.next_value::<IgnoredAny>()?;
                    return Err(de::Error::unknown_field(other, STEP_FIELDS));
                }
            }
        }
        let kind = uses.ok_or_else(|| de::Error::missing_field("uses"))?;
        let with = match with {
            Some(with) => with,
            None => default_with(kind).map_err(de::Error::custom)?,
        };
        Ok(StepEntry {
            id,
            with,
            timeout,
            retries: retries.unwrap_or(0),
            when,
            on_failure,
            point_of_no_return: point_of_no_return.unwrap_or(false),
            rehearse: rehearse.is_none_or(|s| s.0),
        })
    }
}

fn next_with<'de, A: MapAccess<'de>>(kind: StepKind, map: &mut A) -> Result<StepWith, A::Error> {
    Ok(match kind {
        StepKind::Preflight => StepWith::Preflight(map.next_value()?),
        StepKind::Maintenance => StepWith::Maintenance(map.next_value()?),
        StepKind::Scale => StepWith::Scale(map.next_value()?),
        StepKind::Backup => StepWith::Backup(map.next_value()?),
        StepKind::Migrate => {
            let with: MigrateWith = map.next_value()?;
            with.check().map_err(de::Error::custom)?;
            StepWith::Migrate(with)
        }
        StepKind::Validate => StepWith::Validate(map.next_value()?),
        StepKind::Sql => StepWith::Sql(map.next_value()?),
        StepKind::Command => StepWith::Command(map.next_value()?),
        StepKind::Health => StepWith::Health(map.next_value()?),
        StepKind::Restart => StepWith::Restart(map.next_value()?),
        StepKind::Pause => StepWith::Pause(map.next_value()?),
        StepKind::Release => StepWith::Release(map.next_value()?),
        StepKind::Traffic => {
            let with: TrafficWith = map.next_value()?;
            with.check().map_err(de::Error::custom)?;
            StepWith::Traffic(with)
        }
    })
}

fn default_with(kind: StepKind) -> Result<StepWith, String> {
    Ok(match kind {
        StepKind::Preflight => StepWith::Preflight(PreflightWith::default()),
        StepKind::Backup => StepWith::Backup(BackupWith::default()),
        StepKind::Migrate => StepWith::Migrate(MigrateWith::default()),
        StepKind::Validate => StepWith::Validate(ValidateWith::default()),
        StepKind::Health => StepWith::Health(HealthWith::default()),
        StepKind::Restart => StepWith::Restart(RestartWith::default()),
        StepKind::Pause => StepWith::Pause(PauseWith::default()),
        StepKind::Release => StepWith::Release(ReleaseWith::default()),
        StepKind::Traffic => StepWith::Traffic(TrafficWith::default()),
        StepKind::Maintenance => {
            return Err("`maintenance` needs `with: { enabled: true|false }`".into());
        }
        StepKind::Scale => {
            return Err("`scale` needs `with: { target: NAME, replicas: N|previous }`".into());
        }
        StepKind::Sql => {
            return Err("`sql` needs `with: { sql: ... }` or `with: { file: ... }`".into());
        }
        StepKind::Command => return Err("`command` needs `with: { run: ... }`".into()),
    })
}
