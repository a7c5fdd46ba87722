//! `${env:NAME}`, `${file:PATH}` and `${secret:SOURCE:...}` references inside config strings.
//!
//! References are resolved for the chosen environment only, so a production-only Key Vault
//! reference does not stop a local run. Every value that comes from `${secret:..}` is
//! registered with the redactor; so is every value of a credential field, whatever its source.

use std::path::Path;

use super::azure::identity::AzureAuth;
use super::build::Resolve;
use super::secrets::{self, SecretError};
use crate::config::deploy_file::{AzureConfig, Text};
use crate::config::{ConfigError, Located};
use crate::secret::{Redactor, Secret};

/// Resolves references in config strings.
#[derive(Clone, Copy)]
pub struct Resolver<'a> {
    pub config_path: &'a Path,
    pub base_dir: &'a Path,
    pub redactor: &'a Redactor,
    /// The environment's `azure:` block, for `keyvault://` secrets.
    pub azure: Option<&'a AzureConfig>,
}

impl Resolver<'_> {
    /// Resolves an ordinary field: secrets inside it are masked, the rest may be shown.
    pub fn text(&self, text: &Text) -> Result<String, ConfigError> {
        self.expand(text)
    }

    /// Resolves a credential field: the whole value is a secret.
    pub fn credential(&self, text: &Text) -> Result<Secret, ConfigError> {
        let value = self.expand(text)?;
        self.redactor.register(&value);
        Ok(Secret::new(value))
    }

    /// Resolves a connection URL: its password is a secret, the rest may be shown.
    pub fn url(&self, text: &Text) -> Result<Secret, ConfigError> {
        let value = self.expand(text)?;
        if let Some(password) = url_password(&value) {
            self.redactor.register(password);
        }
        Ok(Secret::new(value))
    }

    /// A connection URL that came from outside the config (a catalog query): its password
    /// is a secret; nothing in it is expanded.
    pub fn plain_url(&self, value: &str) -> Secret {
        if let Some(password) = url_password(value) {
            self.redactor.register(password);
        }
        Secret::new(value)
    }

    fn expand(&self, text: &Text) -> Result<String, ConfigError> {
        let raw = text.value.as_str();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            // `$${` writes a literal `${`.
            if start > 0 && rest.as_bytes()[start - 1] == b'$' {
                out.push_str(&rest[..start - 1]);
                out.push_str("${");
                rest = &rest[start + 2..];
                continue;
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| self.error(text, "unclosed `${` reference (missing `}`)".into()))?;
            out.push_str(&self.one(text, &after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn one(&self, text: &Text, reference: &str) -> Result<String, ConfigError> {
        let (kind, arg) = reference.split_once(':').ok_or_else(|| {
            self.error(
                text,
                format!("invalid reference `${{{reference}}}`: expected `${{env:NAME}}`, `${{file:PATH}}` or `${{secret:SOURCE:...}}`"),
            )
        })?;
        let fetched = match kind {
            "env" => secrets::env::read(arg).map(|s| s.expose().to_owned()),
            "file" => secrets::file::read(&self.base_dir.join(arg)).map(|s| s.expose().to_owned()),
            "secret" if arg.starts_with("keyvault://") => {
                // The `azure:` block is resolved without Key Vault access of its own: a
                // sign-in setting read from Key Vault would need a sign-in first.
                let plain = Resolver {
                    azure: None,
                    ..*self
                };
                let auth = || AzureAuth::from_config(self.azure, &plain);
                let limit = self.azure.and_then(|a| a.timeout).map_or(
                    secrets::azure_key_vault::READ_LIMIT,
                    crate::config::duration::Duration::get,
                );
                let value = secrets::azure_key_vault::resolve(auth, arg, limit)
                    .map_err(|e| self.error(text, e.to_string()))?;
                self.redactor.register(value.expose());
                return Ok(value.expose().to_owned());
            }
            "secret" => {
                let value = secrets::fetch(arg, self.base_dir)
                    .map_err(|e| self.error(text, e.to_string()))?;
                self.redactor.register(value.expose());
                return Ok(value.expose().to_owned());
            }
            other => {
                return Err(self.error(
                    text,
                    format!("unknown reference kind `{other}` in `${{{reference}}}`: expected env, file or secret"),
                ));
            }
        };
        fetched.map_err(|e: SecretError| self.error(text, e.to_string()))
    }

    fn error(&self, text: &Text, message: String) -> ConfigError {
        if text.referenced.line() > 0 {
            return ConfigError::Invalid(Located::at(self.config_path, &text.referenced, message));
        }
        // Strings inside `kind:`-tagged sections (database, backups, platform) are buffered by
        // serde before they reach their type and arrive without a location: find the text in
        // the file instead, so the message still says where it was written.
        ConfigError::Invalid(Located::find(self.config_path, &text.value, message))
    }
}

fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let password = &userinfo[userinfo.find(':')? + 1..];
    (!password.is_empty()).then_some(password)
}

impl Resolve for Resolver<'_> {
    fn text(&self, text: &Text) -> Result<String, ConfigError> {
        Resolver::text(self, text)
    }
    fn credential(&self, text: &Text) -> Result<Secret, ConfigError> {
        Resolver::credential(self, text)
    }
    fn url(&self, text: &Text) -> Result<Secret, ConfigError> {
        Resolver::url(self, text)
    }
    fn azure(&self) -> Option<&AzureConfig> {
        self.azure
    }
    fn redactor(&self) -> &Redactor {
        self.redactor
    }
}
