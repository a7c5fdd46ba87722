//! Output. The library never prints: it sends [`Event`]s to a [`Reporter`], and the CLI
//! picks a sink (progress bars on a TTY, plain lines, JSON lines, GitHub Actions or Azure
//! DevOps log commands). Every sink passes its text through the redactor so no secret
//! value can reach the terminal or a log.

pub(crate) mod ci;
pub(crate) mod json;
pub(crate) mod paint;
pub(crate) mod plain;
pub(crate) mod run_report;
pub(crate) mod tty;

use std::path::{Path, PathBuf};

pub(crate) use crate::run::event::{Event, Reporter, Silent};
pub(crate) use crate::units::ms;

/// A file named in a message, as the CI wants it: relative to the checkout (`root_var`,
/// e.g. `GITHUB_WORKSPACE`) when it is inside it. Relative names are tried against the
/// working directory, then the config folder `base` (lint findings are relative to it).
pub(crate) fn source_path(file: &str, base: &Path, root_var: &str) -> String {
    let given = Path::new(file);
    let cwd = std::env::current_dir().unwrap_or_default();
    let found: PathBuf = if given.is_absolute() || given.exists() || base.as_os_str().is_empty() {
        given.to_owned()
    } else if base.join(given).exists() {
        base.join(given)
    } else {
        given.to_owned()
    };
    let absolute = if found.is_absolute() {
        found.clone()
    } else {
        cwd.join(&found)
    };
    if let Some(root) = std::env::var_os(root_var).filter(|r| !r.is_empty()) {
        let root = PathBuf::from(root);
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
        if let Ok(rel) = canon(&absolute).strip_prefix(canon(&root)) {
            return slashes(rel);
        }
    }
    if found.is_absolute() {
        return slashes(&found);
    }
    slashes(found.strip_prefix(".").unwrap_or(&found))
}

fn slashes(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}
