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

    /// Turns a serde-saphyr error into one naming the file, the line and the column of
    /// what is wrong (`text` is the file's text).
    pub fn yaml(path: &Path, text: &str, error: &serde_saphyr::Error) -> Self {
        let (located, snippet) = as_given(path, error);
        match refine(text, &located) {
            Some(better) => {
                let snippet = snippet_at(text, &better);
                Self::Yaml {
                    located: better,
                    snippet,
                }
            }
            None => Self::Yaml { located, snippet },
        }
    }
}

/// serde-saphyr's message, place and snippet, as it gives them.
fn as_given(path: &Path, error: &serde_saphyr::Error) -> (Located, String) {
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
    (located, snippet)
}

/// The names serde lists after `expected`: "one of a, b, c", "`a` or `b`", "`a`".
fn expected_names(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once(", expected ") else {
        return Vec::new();
    };
    let list = list.strip_prefix("one of ").unwrap_or(list);
    list.split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|name| name.trim().trim_matches('`').to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The name in "unknown field `x`" or "unknown variant `x`".
fn unknown_name<'m>(message: &'m str, what: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(&format!("unknown {what} `"))?;
    rest.split_once('`').map(|(name, _)| name)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Where serde-saphyr's place for an error is not the place to fix: an unknown key inside a
/// `kind:` block is reported at the block's key, not at itself. Finds the key, adds "did
/// you mean" for a near miss, and says when a setting is read as a name because it is
/// indented too little.
fn refine(text: &str, located: &Located) -> Option<Located> {
    let message = &located.message;
    let (what, name) = match (
        unknown_name(message, "field"),
        unknown_name(message, "variant"),
    ) {
        (Some(name), _) => ("field", name),
        (None, Some(name)) => ("variant", name),
        _ => return None,
    };
    let expected = expected_names(message);
    let mut better = located.clone();
    let mut note = crate::suggest::did_you_mean(name, expected.iter().map(String::as_str));
    let lines: Vec<&str> = text.lines().collect();
    let at = usize::try_from(located.line?).ok()?.checked_sub(1)?;
    let line = *lines.get(at)?;
    if what == "field" {
        let key = format!("{name}:");
        let column = usize::try_from(located.column.unwrap_or(1)).unwrap_or(1);
        // On the reported line, after the reported column (a flow mapping: `{ a: 1, x: 2 }`).
        let same_line = line
            .char_indices()
            .skip(column.saturating_sub(1))
            .find(|(i, _)| {
                line[*i..].starts_with(&key)
                    && (*i == 0 || matches!(line.as_bytes()[*i - 1], b' ' | b'{' | b','))
            })
            .map(|(i, _)| (at, i));
        // Else below it, inside the block the reported line opens.
        let below = || {
            let block = indent(line);
            lines
                .iter()
                .enumerate()
                .skip(at + 1)
                .take_while(|(_, l)| {
                    l.trim().is_empty() || l.trim_start().starts_with('#') || indent(l) > block
                })
                .find(|(_, l)| l.trim_start().starts_with(&key))
                .map(|(n, l)| (n, indent(l)))
        };
        if let Some((n, i)) = same_line.or_else(below) {
            better.line = Some(n as u64 + 1);
            better.column = Some(lines[n][..i].chars().count() as u64 + 1);
        }
        // A setting at the indentation of a name: `backups:` dedented under
        // `environments:` is read as an environment called `backups`.
        let line_key = line
            .trim_start()
            .split(':')
            .next()
            .unwrap_or_default()
            .trim();
        if !line_key.is_empty()
            && line_key != name
            && expected.iter().any(|e| e == line_key)
            && !expected.iter().any(|e| e == name)
        {
            note.push_str(&format!(
                "; `{line_key}:` on line {} is read as a name, not as a setting: is it indented too little?",
                at + 1
            ));
        }
    }
    if note.is_empty() && better.line == located.line && better.column == located.column {
        return None;
    }
    better.message = format!("{message}{note}");
    Some(better)
}

/// The lines around a place with a caret under its column, as serde-saphyr shows them.
fn snippet_at(text: &str, located: &Located) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(line) = located.line.and_then(|l| usize::try_from(l).ok()) else {
        return String::new();
    };
    let first = line.saturating_sub(2).max(1);
    let last = (line + 2).min(lines.len());
    let width = last.to_string().len();
    let gutter = " ".repeat(width);
    let mut out = format!("{gutter} |\n");
    for n in first..=last {
        let text = lines.get(n - 1).copied().unwrap_or_default();
        out.push_str(&format!("{n:>width$} | {text}\n"));
        if n == line {
            let column = usize::try_from(located.column.unwrap_or(1)).unwrap_or(1);
            out.push_str(&format!(
                "{gutter} | {}^ {}\n",
                " ".repeat(column.saturating_sub(1)),
                located.message
            ));
        }
    }
    out.push_str(&format!("{gutter} |"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located(line: u64, column: u64, message: &str) -> Located {
        Located {
            path: PathBuf::from("deploy.yaml"),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    const PLATFORM: &str = "environments:\n  local:\n    platform:\n      kind: azure-container-apps\n      app: api\n      resource_grup: rg\n    health: { url: x }\n";

    #[test]
    fn an_unknown_key_inside_a_kind_block_is_found_at_itself_with_a_near_miss() {
        let given = located(
            3,
            5,
            "unknown field `resource_grup`, expected one of subscription, resource_group, app, jobs, job",
        );
        let better = refine(PLATFORM, &given).unwrap();
        assert_eq!((better.line, better.column), (Some(6), Some(7)));
        assert!(
            better.message.ends_with("; did you mean `resource_group`?"),
            "{}",
            better.message
        );
        let snippet = snippet_at(PLATFORM, &better);
        assert!(
            snippet
                .contains("6 |       resource_grup: rg\n  |       ^ unknown field `resource_grup`"),
            "{snippet}"
        );
    }

    #[test]
    fn a_key_in_a_flow_mapping_is_found_on_its_line() {
        let text = "steps:\n  - uses: maintenance\n    with: { enabled: true, forse: true }\n";
        let given = located(
            3,
            11,
            "unknown field `forse`, expected `enabled` or `force`",
        );
        let better = refine(text, &given).unwrap();
        assert_eq!((better.line, better.column), (Some(3), Some(28)));
        assert!(
            better.message.ends_with("did you mean `force`?"),
            "{}",
            better.message
        );
    }

    #[test]
    fn a_dedented_setting_is_called_out() {
        let text = "environments:\n  local:\n    database: { kind: sqlite }\n  backups: { kind: local, path: b }\n";
        let given = located(
            4,
            14,
            "unknown field `kind`, expected one of confirm, window, database, backups, platform",
        );
        let better = refine(text, &given).unwrap();
        assert_eq!((better.line, better.column), (Some(4), Some(14)));
        assert!(
            better.message.ends_with("`backups:` on line 4 is read as a name, not as a setting: is it indented too little?"),
            "{}",
            better.message
        );
    }

    #[test]
    fn an_unknown_kind_gets_a_near_miss_and_a_stranger_stays_as_it_was() {
        let text = "platform:\n  kind: azure-container-app\n";
        let given = located(
            2,
            3,
            "unknown variant `azure-container-app`, expected one of none, command, azure-container-apps",
        );
        let better = refine(text, &given).unwrap();
        assert!(
            better
                .message
                .ends_with("did you mean `azure-container-apps`?")
        );
        let stranger = located(
            2,
            3,
            "unknown variant `kubernetes`, expected one of none, command",
        );
        assert!(refine("platform:\n  kind: kubernetes\n", &stranger).is_none());
    }
}
