//! A platform driven by shell commands, one per action, for anything with a CLI
//! (`az`, `heroku`, `kubectl`, `systemctl`).
//!
//! The `status` command reports state as `key=value` lines: `maintenance=true|false` and
//! `<target>=<replicas>`. Compensation restores exactly what it printed before the release.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use indexmap::IndexMap;

use super::{Platform, PlatformError, PlatformState};
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
