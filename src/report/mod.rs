//! Output. The library never prints: it sends [`Event`]s to a [`Reporter`], and the CLI
//! picks a sink (progress bars on a TTY, plain lines, JSON lines, GitHub Actions or Azure
//! DevOps log commands). Every sink passes its text through the redactor so no secret
//! value can reach the terminal or a log.

pub mod ci;
pub mod json;
pub mod plain;
pub mod run_report;
pub mod tty;

use std::path::{Path, PathBuf};

pub use crate::run::event::{Event, Reporter, Silent};
pub use crate::units::ms;

/// A place in a source file that a message names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    pub file: String,
    pub line: u64,
    pub column: Option<u64>,
}

/// Finds the first `path:line[:column]` naming a migration (`.sql`) or config (`.yaml`,
/// `.yml`) file in a message, as lint findings (`migrations/x.up.sql:3: ...`) and config
/// errors (`deploy.yaml:12:5: ...`) write it. Returns the place and the message without it
/// when the message starts with it, else the whole message.
pub fn locate(message: &str) -> Option<(SourceLocation, String)> {
    let mut best: Option<(usize, SourceLocation, usize)> = None;
    for ext in [".sql:", ".yaml:", ".yml:"] {
        for (at, _) in message.match_indices(ext) {
            let start = message[..at]
                .rfind(|c: char| c.is_whitespace() || "`'\"(<[".contains(c))
                .map_or(0, |i| i + 1);
            let file = &message[start..at + ext.len() - 1];
            if file.len() < ext.len() {
                continue;
            }
            let after = &message[at + ext.len()..];
            let digits = |s: &str| -> (Option<u64>, usize) {
                let n = s.bytes().take_while(u8::is_ascii_digit).count();
                (s[..n].parse().ok(), n)
            };
            let (Some(line), n) = digits(after) else {
                continue;
            };
            if line == 0 {
                continue;
            }
            let mut end = at + ext.len() + n;
            let mut column = None;
            if let Some(rest) = message[end..].strip_prefix(':')
                && let (Some(c), m) = digits(rest)
            {
                column = Some(c);
                end += 1 + m;
            }
            if best.as_ref().is_none_or(|(s, _, _)| start < *s) {
                best = Some((
                    start,
                    SourceLocation {
                        file: file.to_owned(),
                        line,
                        column,
                    },
                    end,
                ));
            }
            break;
        }
    }
    let (start, location, end) = best?;
    let rest = if start == 0 {
        let tail = &message[end..];
        tail.strip_prefix(':')
            .map_or(tail, str::trim_start)
            .to_owned()
    } else {
        message.to_owned()
    };
    Some((
        location,
        if rest.is_empty() {
            message.to_owned()
        } else {
            rest
        },
    ))
}

/// A file named in a message, as the CI wants it: relative to the checkout (`root_var`,
/// e.g. `GITHUB_WORKSPACE`) when it is inside it. Relative names are tried against the
/// working directory, then the config folder `base` (lint findings are relative to it).
pub fn source_path(file: &str, base: &Path, root_var: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_found_in_messages() {
        let (loc, rest) = locate(
            "migrations/20240101_x.up.sql:3: [create-index] CREATE INDEX without CONCURRENTLY",
        )
        .unwrap();
        assert_eq!(
            loc,
            SourceLocation {
                file: "migrations/20240101_x.up.sql".into(),
                line: 3,
                column: None
            }
        );
        assert_eq!(rest, "[create-index] CREATE INDEX without CONCURRENTLY");
        let (loc, rest) = locate("deploy.yaml:17:5: environment variable `X` is not set").unwrap();
        assert_eq!(
            (loc.file.as_str(), loc.line, loc.column),
            ("deploy.yaml", 17, Some(5))
        );
        assert_eq!(rest, "environment variable `X` is not set");
        let (loc, rest) = locate("lint: `m/a.sql:12` is slow").unwrap();
        assert_eq!((loc.file.as_str(), loc.line), ("m/a.sql", 12));
        assert_eq!(rest, "lint: `m/a.sql:12` is slow");
        assert!(locate("migration 5 (add col) failed: near x").is_none());
        assert!(locate("deploy.yaml: unknown environment").is_none());
        assert!(locate(".sql:3").is_none());
    }
}
