//! Secrets from files (Docker and Kubernetes secret mounts). One trailing newline is dropped.

use std::path::Path;

use super::{SecretError, SecretSource};
use crate::secret::Secret;

pub(crate) struct FileSource<'a> {
    pub base_dir: &'a Path,
}

impl SecretSource for FileSource<'_> {
    fn fetch(&self, name: &str) -> Result<Secret, SecretError> {
        read(&self.base_dir.join(name))
    }
}

pub(crate) fn read(path: &Path) -> Result<Secret, SecretError> {
    let mut value = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        path: path.to_owned(),
        source,
    })?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(Secret::new(value))
}
