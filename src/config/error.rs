//! Configuration errors, each pointing at a file and, where known, a line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

use crate::place::{Message, Place};

/// A message tied to a place in a file.
#[derive(Debug, Clone)]
pub struct Located {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl Located {
    pub fn at(path: &Path, location: &Location, message: String) -> Self {
        let line = location.line();
        Self {
            path: path.to_owned(),
            line: (line > 0).then_some(line),
            column: (line > 0).then_some(location.column()),
            message,
        }
    }

    /// At the first place `needle` is written in the file, else the file alone: for values
    /// that reach their type without a location.
    pub fn find(path: &Path, needle: &str, message: String) -> Self {
        let found = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| line_column(&text, needle));
        match found {
            Some((line, column)) => Self {
                path: path.to_owned(),
                line: Some(line),
                column: Some(column),
                message,
            },
            None => Self::file(path, message),
        }
    }

    pub fn file(path: &Path, message: String) -> Self {
        Self {
            path: path.to_owned(),
            line: None,
            column: None,
            message,
        }
    }
}

/// Line and column (both from 1) of the first occurrence of `needle` in `text` outside a
/// comment line.
fn line_column(text: &str, needle: &str) -> Option<(u64, u64)> {
    if needle.is_empty() {
        return None;
    }
    text.match_indices(needle).find_map(|(at, _)| {
        let before = &text[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        if before[line_start..].trim_start().starts_with('#') {
            return None;
        }
        let line = before.matches('\n').count() as u64 + 1;
        let column = before[line_start..].chars().count() as u64 + 1;
        Some((line, column))
    })
}

impl Located {
    /// As a message whose place links to the file, line and column it names.
    pub fn message(&self) -> Message {
        match self.line {
            Some(line) => Message::at(
                Place {
                    file: self.path.display().to_string(),
                    line,
                    column: self.column,
                },
                self.message.clone(),
            ),
            None => Message::plain(self.to_string()),
        }
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A YAML syntax or shape error; `snippet` shows the offending lines.
    #[error("{located}")]
    Yaml { located: Located, snippet: String },
    #[error("{0}")]
    Invalid(Located),
    /// Several problems found while validating; all are reported at once.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<Located>),
}

impl ConfigError {
    /// The problems, each with its place when it has one.
    pub fn messages(&self) -> Vec<Message> {
        match self {
            Self::Read { .. } => vec![Message::plain(self.to_string())],
            Self::Yaml { located, .. } | Self::Invalid(located) => vec![located.message()],
            Self::Many(all) => all.iter().map(Located::message).collect(),
        }
    }

    /// Turns a serde-saphyr error into one naming the file.
    pub fn yaml(path: &Path, error: &serde_saphyr::Error) -> Self {
        // serde-saphyr's advice on duplicate keys is meant for programmers, not config authors.
        let rendered = error
            .to_string()
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        let mut lines = rendered.lines();
        let first = lines.next().unwrap_or_default();
        // serde-saphyr starts with `error: line L column C: message`; keep only the message.
        let message = first
            .strip_prefix("error: ")
            .unwrap_or(first)
            .split_once(": ")
            .filter(|(head, _)| head.starts_with("line "))
            .map_or(first, |(_, message)| message)
            .to_owned();
        let snippet = lines
            .filter(|l| !l.trim_start().starts_with("-->"))
            .collect::<Vec<_>>()
            .join("\n");
        let located = match error.location() {
            Some(location) => Located::at(path, &location, message),
            None => Located::file(path, message),
        };
        Self::Yaml { located, snippet }
    }
}
