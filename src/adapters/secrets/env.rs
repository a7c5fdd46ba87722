//! Secrets from environment variables.

use super::{SecretError, SecretSource};
use crate::secret::Secret;

pub(crate) struct EnvSource;

impl SecretSource for EnvSource {
    fn fetch(&self, name: &str) -> Result<Secret, SecretError> {
        read(name)
    }
}

pub(crate) fn read(name: &str) -> Result<Secret, SecretError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Err(SecretError::EnvEmpty(name.to_owned())),
        Ok(value) => Ok(Secret::new(value)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing(name.to_owned())),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode(name.to_owned())),
    }
}
