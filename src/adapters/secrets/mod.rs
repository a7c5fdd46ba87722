//! Secret sources behind `${secret:SOURCE:...}`: the environment, files and Azure Key Vault.

pub(crate) mod azure_key_vault;
pub(crate) mod env;
pub(crate) mod file;

use std::path::{Path, PathBuf};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("environment variable `{0}` is not set")]
    EnvMissing(String),
    /// Set to nothing: a value left out by mistake (`export DATABASE_URL=` in a script),
    /// which no setting can use.
    #[error("environment variable `{0}` is set but empty")]
    EnvEmpty(String),
    #[error("environment variable `{0}` is not valid UTF-8")]
    EnvNotUnicode(String),
    #[error("cannot read secret file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unknown secret source in `${{secret:{0}}}`: expected `env:NAME`, `file:PATH` or `keyvault://VAULT/NAME`"
    )]
    UnknownSource(String),
    #[error("{0}")]
    InvalidReference(String),
    #[error("Key Vault `{vault}`, secret `{name}`: {message}")]
    KeyVault {
        vault: String,
        name: String,
        message: String,
    },
}

/// A place secrets are read from.
pub(crate) trait SecretSource {
    /// Reads one secret by the part of the reference after the source name.
    fn fetch(&self, name: &str) -> Result<Secret, SecretError>;
}

/// Resolves the argument of `${secret:...}`.
pub(crate) fn fetch(reference: &str, base_dir: &Path) -> Result<Secret, SecretError> {
    if let Some(name) = reference.strip_prefix("env:") {
        env::EnvSource.fetch(name)
    } else if let Some(path) = reference.strip_prefix("file:") {
        file::FileSource { base_dir }.fetch(path)
    } else if reference.starts_with("keyvault://") {
        // Key Vault needs the environment's Azure sign-in, which only the config's
        // resolver has (`azure_key_vault::resolve`).
        Err(SecretError::InvalidReference(format!(
            "`${{secret:{reference}}}` needs the environment's `azure:` settings"
        )))
    } else {
        Err(SecretError::UnknownSource(reference.to_owned()))
    }
}
