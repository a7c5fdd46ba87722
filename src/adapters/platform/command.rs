//! A platform driven by shell commands, one per action, for anything with a CLI
//! (`az`, `heroku`, `kubectl`, `systemctl`).
//!
//! The `status` command reports state as `key=value` lines: `maintenance=true|false` and
//! `<target>=<replicas>`. Compensation restores exactly what it printed before the release.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use indexmap::IndexMap;

use serde_json::{Value, json};

use super::{CodeActions, CodeState, Platform, PlatformError, PlatformState, Route};
use crate::adapters::build::BuildError;
use crate::adapters::build::Resolve;
use crate::config::deploy_file::CommandPlatformConfig;
use crate::secret::Secret;

pub(crate) struct CommandPlatform {
    status: String,
    maintenance_on: Option<String>,
    maintenance_off: Option<String>,
    scale: Option<String>,
    restart: Option<String>,
    current_version: Option<String>,
    release: Option<String>,
    release_undo: Option<String>,
    env: IndexMap<String, Secret>,
    dir: PathBuf,
}

impl CommandPlatform {
    pub(crate) fn new(
        config: &CommandPlatformConfig,
        resolver: &dyn Resolve,
        base_dir: &Path,
    ) -> Result<Self, BuildError> {
        let opt = |t: &Option<crate::config::deploy_file::Text>| {
            t.as_ref().map(|t| resolver.text(t)).transpose()
        };
        let mut env = IndexMap::new();
        for (name, value) in &config.env {
            env.insert(name.clone(), resolver.credential(value)?);
        }
        Ok(Self {
            status: resolver.text(&config.status)?,
            maintenance_on: opt(&config.maintenance_on)?,
            maintenance_off: opt(&config.maintenance_off)?,
            scale: opt(&config.scale)?,
            restart: opt(&config.restart)?,
            current_version: opt(&config.current_version)?,
            release: opt(&config.release)?,
            release_undo: opt(&config.release_undo)?,
            env,
            dir: base_dir.to_owned(),
        })
    }

    async fn run(&self, name: &str, command: &str) -> Result<String, PlatformError> {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        let output = crate::shell::run(command, &self.dir, &env)
            .await
            .map_err(|source| PlatformError::Spawn {
                name: name.to_owned(),
                source,
            })?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(PlatformError::Command {
                name: name.to_owned(),
                status: output.status.to_string(),
                output: output.tail(20).chars().take(2000).collect(),
            })
        }
    }

    fn needs<'a>(action: &str, command: Option<&'a String>) -> Result<&'a str, PlatformError> {
        command.map(String::as_str).ok_or_else(|| {
            PlatformError::Unsupported(format!(
                "the command platform has no `{action}` command; add it under `platform:`"
            ))
        })
    }
}

impl CommandPlatform {
    /// The version `current_version` prints.
    async fn current(&self) -> Result<String, PlatformError> {
        let command = Self::needs("current_version", self.current_version.as_ref())?;
        let out = self.run("current_version", command).await?;
        let version = out.trim();
        checked_version(version).map_err(|why| {
            PlatformError::Invalid(format!("current_version printed `{version}`: {why}"))
        })?;
        Ok(version.to_owned())
    }

    /// Runs the `release` (or, going back, `release_undo`) template to put `version`
    /// live in place of `from`.
    async fn switch(&self, version: &str, from: &str, undo: bool) -> Result<(), PlatformError> {
        checked_version(version).map_err(PlatformError::Invalid)?;
        let (name, template) = match (undo, &self.release_undo) {
            (true, Some(t)) => ("release_undo", t.as_str()),
            _ => ("release", Self::needs("release", self.release.as_ref())?),
        };
        let command = template
            .replace("{version}", version)
            .replace("{from}", from);
        self.run(name, &command).await?;
        Ok(())
    }
}

/// A version goes into a shell command: only the characters of an image tag.
fn checked_version(version: &str) -> Result<(), String> {
    if !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    {
        Ok(())
    } else {
        Err("a code version must be letters, digits and . - _ + (an image tag)".into())
    }
}

/// Parses `status` output.
pub(crate) fn parse_status(text: &str) -> Result<PlatformState, PlatformError> {
    let mut state = PlatformState::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line.split_once('=').ok_or_else(|| {
            PlatformError::Invalid(format!(
                "status printed `{line}`; expected `key=value` lines like `maintenance=false` or `jobs=3`"
            ))
        })?;
        let (key, value) = (key.trim(), value.trim());
        if key == "maintenance" {
            state.maintenance = Some(match value {
                "true" | "on" | "1" => true,
                "false" | "off" | "0" => false,
                other => {
                    return Err(PlatformError::Invalid(format!(
                        "status printed maintenance={other}; expected true or false"
                    )));
                }
            });
        } else {
            let replicas = value.parse().map_err(|_| {
                PlatformError::Invalid(format!(
                    "status printed {key}={value}; a replica count must be a whole number"
                ))
            })?;
            state.replicas.insert(key.to_owned(), replicas);
        }
    }
    Ok(state)
}

#[async_trait]
impl Platform for CommandPlatform {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn describe(&self) -> String {
        "shell commands".into()
    }

    async fn state(&self) -> Result<PlatformState, PlatformError> {
        parse_status(&self.run("status", &self.status).await?)
    }

    async fn set_maintenance(&self, enabled: bool) -> Result<String, PlatformError> {
        let (name, command) = if enabled {
            ("maintenance_on", self.maintenance_on.as_ref())
        } else {
            ("maintenance_off", self.maintenance_off.as_ref())
        };
        self.run(name, Self::needs(name, command)?).await?;
        Ok(format!(
            "maintenance {}",
            if enabled { "on" } else { "off" }
        ))
    }

    async fn scale(&self, target: &str, replicas: u32) -> Result<String, PlatformError> {
        if !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(PlatformError::Invalid(format!(
                "invalid scale target `{target}`"
            )));
        }
        let template = Self::needs("scale", self.scale.as_ref())?;
        let command = template
            .replace("{target}", target)
            .replace("{replicas}", &replicas.to_string());
        self.run("scale", &command).await?;
        Ok(format!("{target} scaled to {replicas}"))
    }

    async fn restart(&self) -> Result<String, PlatformError> {
        self.run("restart", Self::needs("restart", self.restart.as_ref())?)
            .await?;
        Ok("app restarted".into())
    }

    fn code_actions(&self) -> CodeActions {
        let traffic = match (&self.current_version, &self.release) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err(
                "the command platform releases code with its `current_version` and `release` commands (and `release_undo`); add them under `platform:`"
                    .to_owned(),
            ),
        };
        CodeActions {
            stage: Err(
                "the command platform puts code live in one go with its `release` command: use a `traffic` step alone".into(),
            ),
            traffic,
            split: false,
        }
    }

    async fn code(&self) -> Result<Option<CodeState>, PlatformError> {
        if self.code_actions().traffic.is_err() {
            return Ok(None);
        }
        let version = self.current().await?;
        Ok(Some(CodeState {
            live: Some(version.clone()),
            routes: vec![Route {
                name: version.clone(),
                version: Some(version),
                weight: 100,
            }],
        }))
    }

    async fn code_prior(&self) -> Result<Value, PlatformError> {
        Ok(json!({ "version": self.current().await? }))
    }

    async fn route(&self, version: &str, percent: u32) -> Result<String, PlatformError> {
        if percent != 100 {
            return Err(PlatformError::Unsupported(
                "the command platform moves all the traffic at once".into(),
            ));
        }
        let current = self.current().await?;
        if current == version {
            return Ok(format!("{version} is already live"));
        }
        self.switch(version, &current, false).await?;
        Ok(format!("{version} released (was {current})"))
    }

    async fn restore_code(&self, prior: &Value) -> Result<String, PlatformError> {
        let Some(previous) = prior["version"].as_str() else {
            return Err(PlatformError::Invalid(format!(
                "the journal's earlier code state has no version: {prior}"
            )));
        };
        let current = self.current().await?;
        if current == previous {
            return Ok(format!("{previous} is live, as before"));
        }
        self.switch(previous, &current, true).await?;
        let now = self.current().await?;
        if now != previous {
            return Err(PlatformError::Invalid(format!(
                "release_undo ran, but current_version prints {now}, not {previous}"
            )));
        }
        Ok(format!(
            "{previous} is live again (checked: current_version prints it)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let s = parse_status("maintenance=false\njobs=3\n# comment\nweb = 2\n").unwrap();
        assert_eq!(s.maintenance, Some(false));
        assert_eq!(s.replicas["jobs"], 3);
        assert_eq!(s.replicas["web"], 2);
        assert!(parse_status("jobs=three").is_err());
        assert!(parse_status("garbage").is_err());
    }
}
