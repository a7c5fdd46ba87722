//! Loading: read the files, parse them with located errors, then validate everything that
//! can be checked without touching any system, collecting every problem before failing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::deploy_file::{DeployFile, Environment};
use super::duration::Duration;
use super::error::{ConfigError, Located};
use super::pipeline::{OnFailure, PipelineFile, StepEntry, StepKind, StepWith, Unattended, When};

/// A loaded, validated `deploy.yaml`.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The folder relative paths are resolved against.
    pub dir: PathBuf,
    pub file: DeployFile,
}

impl Config {
    pub fn project(&self) -> &str {
        &self.file.project
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir
            .join(self.file.state_dir.as_deref().unwrap_or(".cutover"))
    }

    pub fn migrations_dir(&self) -> PathBuf {
        self.dir.join(
            self.file
                .migrations
                .as_ref()
                .map_or("migrations", |m| m.value.as_str()),
        )
    }

    pub fn pipeline_path(&self, explicit: Option<&Path>) -> PathBuf {
        match explicit {
            Some(p) => p.to_owned(),
            None => self.dir.join(
                self.file
                    .pipeline
                    .as_ref()
                    .map_or("pipelines/deploy.yaml", |p| p.value.as_str()),
            ),
        }
    }

    /// The names of the environments, as the file lists them.
    pub fn environment_names(&self) -> Vec<&str> {
        self.file.environments.keys().map(String::as_str).collect()
    }

    /// The environment by name, or an error listing the ones that exist.
    pub fn environment(&self, name: &str) -> Result<&Environment, ConfigError> {
        self.file.environments.get(name).ok_or_else(|| {
            let known = self.environment_names();
            ConfigError::Invalid(Located::file(
                &self.path,
                format!(
                    "unknown environment `{name}`{}; this file defines: {}",
                    crate::suggest::did_you_mean(name, known.iter().copied()),
                    known.join(", ")
                ),
            ))
        })
    }

    /// Picks the environment when none was named: `default_environment`, the only one, or
    /// an error.
    pub fn default_environment(&self) -> Result<&str, ConfigError> {
        if let Some(name) = &self.file.default_environment {
            return Ok(name.value.as_str());
        }
        let names: Vec<_> = self.file.environments.keys().collect();
        match names.as_slice() {
            [only] => Ok(only.as_str()),
            _ => Err(ConfigError::Invalid(Located::file(
                &self.path,
                format!(
                    "several environments are defined ({}); choose one with -e ENV or CUTOVER_ENV, \
                     or name it in `default_environment:`",
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))),
        }
    }
}

/// A loaded, validated pipeline.
#[derive(Debug)]
pub struct Pipeline {
    pub path: PathBuf,
    pub name: String,
    pub timeout: Option<Duration>,
    /// What a failed step leads to, unless the step says otherwise.
    pub on_failure: OnFailure,
    /// What `ask` does without a terminal.
    pub unattended: Unattended,
    pub steps: Vec<Step>,
}

/// One validated step.
#[derive(Debug)]
pub struct Step {
    pub id: String,
    pub with: StepWith,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub when: Option<When>,
    /// `None`: the pipeline's.
    pub on_failure: Option<OnFailure>,
    pub point_of_no_return: bool,
    /// False when the step says `rehearse: off`: the rehearsal leaves it out.
    pub rehearse: bool,
    /// Line of the step in its pipeline file, for messages.
    pub line: u64,
}

impl Step {
    pub fn kind(&self) -> StepKind {
        self.with.kind()
    }
}

/// A config file that is not there: the folder looked in, and a config file of the same
/// name in a folder above (where the command was probably meant to run), never used
/// without being asked.
fn missing(path: &Path) -> ConfigError {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let name = absolute.file_name().unwrap_or_default().to_owned();
    let folder = absolute.parent().unwrap_or(Path::new("/"));
    let above = folder
        .ancestors()
        .skip(1)
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file());
    let hint = match above {
        Some(found) => format!(
            "there is one in a folder above, {}: run cutover there, or pass `-c {}`",
            found.display(),
            found.display()
        ),
        None => "run cutover in the project's folder, pass `-c PATH` to name the config file, \
                 or start a project here with `cutover init`"
            .to_owned(),
    };
    ConfigError::Invalid(Located::file(
        path,
        format!("no such file in {}; {hint}", folder.display()),
    ))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// Loads `deploy.yaml`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    if !path.exists() {
        return Err(missing(path));
    }
    let text = read(path)?;
    let file: DeployFile = serde_saphyr::from_str_with_options(&text, options())
        .map_err(|e| ConfigError::yaml(path, &text, &e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let config = Config {
        path: path.to_owned(),
        dir,
        file,
    };
    validate(&config)?;
    Ok(config)
}

fn validate(config: &Config) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    if config.file.version.value != 1 {
        problems.push(Located::at(
            &config.path,
            &config.file.version.referenced,
            format!(
                "unsupported version {}: expected 1",
                config.file.version.value
            ),
        ));
    }
    if config.file.environments.is_empty() {
        problems.push(Located::file(
            &config.path,
            "no environments defined".into(),
        ));
    }
    if let Some(m) = &config.file.migrations {
        let dir = config.dir.join(&m.value);
        if !dir.is_dir() {
            problems.push(Located::at(
                &config.path,
                &m.referenced,
                format!("migrations folder `{}` does not exist", dir.display()),
            ));
        }
    }
    if let Some(name) = &config.file.default_environment
        && !config.file.environments.contains_key(&name.value)
    {
        let known = config.environment_names();
        problems.push(Located::at(
            &config.path,
            &name.referenced,
            format!(
                "default_environment `{}` is not defined{}; this file defines: {}",
                name.value,
                crate::suggest::did_you_mean(&name.value, known.iter().copied()),
                known.join(", ")
            ),
        ));
    }
    for env in config.file.environments.values() {
        if let Some(window) = &env.window
            && let Err(e) = crate::config::window::Window::parse(&window.value)
        {
            problems.push(Located::at(&config.path, &window.referenced, e));
        }
    }
    finish(problems)
}

fn finish(problems: Vec<Located>) -> Result<(), ConfigError> {
    match problems.len() {
        0 => Ok(()),
        1 => Err(ConfigError::Invalid(
            problems.into_iter().next().expect("one"),
        )),
        _ => Err(ConfigError::Many(problems)),
    }
}

/// Loads and validates a pipeline file; relative paths inside it resolve against `base_dir`.
pub fn load_pipeline(path: &Path, base_dir: &Path) -> Result<Pipeline, ConfigError> {
    let text = read(path)?;
    let file: PipelineFile = serde_saphyr::from_str_with_options(&text, options())
        .map_err(|e| ConfigError::yaml(path, &text, &e))?;
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut counts = std::collections::HashMap::<&str, u32>::new();
    let mut steps = Vec::with_capacity(file.steps.len());
    if file.steps.is_empty() {
        problems.push(Located::file(path, "the pipeline has no steps".into()));
    }
    for Spanned {
        value: entry,
        referenced,
        ..
    } in file.steps
    {
        let StepEntry {
            id,
            with,
            timeout,
            retries,
            when,
            on_failure,
            point_of_no_return,
            rehearse,
        } = entry;
        let kind = with.kind();
        let id = if let Some(id) = id {
            if id.value.is_empty()
                || !id
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.push(Located::at(
                    path,
                    &id.referenced,
                    format!(
                        "invalid step id `{}`: use letters, digits, `-` and `_`",
                        id.value
                    ),
                ));
            }
            if !seen.insert(id.value.clone()) {
                problems.push(Located::at(
                    path,
                    &id.referenced,
                    format!("duplicate step id `{}`", id.value),
                ));
            }
            id.value
        } else {
            // Unnamed steps are named after their kind, numbered when it repeats.
            let n = counts.entry(kind.name()).or_default();
            *n += 1;
            let mut candidate = if *n == 1 {
                kind.name().to_owned()
            } else {
                format!("{}-{n}", kind.name())
            };
            while seen.contains(&candidate) {
                *n += 1;
                candidate = format!("{}-{n}", kind.name());
            }
            seen.insert(candidate.clone());
            candidate
        };
        check_step_files(path, base_dir, &referenced, &with, &mut problems);
        steps.push(Step {
            id,
            with,
            timeout,
            retries,
            when,
            on_failure,
            point_of_no_return,
            rehearse,
            line: referenced.line(),
        });
    }
    finish(problems)?;
    Ok(Pipeline {
        path: path.to_owned(),
        name: file.name,
        timeout: file.timeout,
        on_failure: file.on_failure.unwrap_or_default(),
        unattended: file.unattended.unwrap_or_default(),
        steps,
    })
}

/// Every environment a step's `when:` names must be defined in `deploy.yaml`: a misspelt
/// name would skip the step everywhere (`environments:`) or nowhere (`not_environments:`).
pub fn check_when_environments(config: &Config, pipeline: &Pipeline) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for step in &pipeline.steps {
        let Some(when) = &step.when else { continue };
        for (key, list) in [
            ("environments", &when.environments),
            ("not_environments", &when.not_environments),
        ] {
            for name in list.iter().flatten() {
                if config.file.environments.contains_key(&name.value) {
                    continue;
                }
                let known = config.environment_names();
                let message = format!(
                    "step `{}`: `when: {{ {key}: ... }}` names environment `{}`, which {} does not define (defined: {})",
                    step.id,
                    name.value,
                    config.path.display(),
                    known.join(", ")
                );
                // The name's own place; the step's line when the parser kept none.
                let mut located = Located::at(&pipeline.path, &name.referenced, message);
                if located.line.is_none() {
                    located.line = Some(step.line);
                    located.column = Some(1);
                }
                problems.push(located);
            }
        }
    }
    finish(problems)
}

/// Files named by steps must exist now, not halfway through a deploy.
fn check_step_files(
    path: &Path,
    base_dir: &Path,
    step: &serde_saphyr::Location,
    with: &StepWith,
    problems: &mut Vec<Located>,
) {
    let mut must_exist = |value: &Spanned<String>, what: &str| {
        let target = base_dir.join(&value.value);
        if !target.exists() {
            problems.push(Located::at(
                path,
                &value.referenced,
                format!("{what} `{}` does not exist", target.display()),
            ));
        }
    };
    match with {
        StepWith::Validate(v) => {
            if let Some(q) = &v.queries {
                must_exist(q, "validation queries");
            }
            if v.queries.is_none() && v.checks.is_empty() {
                problems.push(Located::at(
                    path,
                    step,
                    "`validate` needs `queries:` (a folder of .sql files) or `checks:`".into(),
                ));
            }
        }
        StepWith::Sql(s) => {
            if let Some(f) = &s.file {
                must_exist(f, "SQL file");
            }
            if s.sql.is_some() == s.file.is_some() {
                problems.push(Located::at(
                    path,
                    step,
                    "`sql` needs exactly one of `sql:` or `file:`".into(),
                ));
            }
        }
        _ => {}
    }
}
