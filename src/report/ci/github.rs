//! GitHub Actions: workflow commands on stdout. Every secret value is announced with
//! `::add-mask::` before any other line is written (and again for values resolved later,
//! before the next line); one `::group::` per step and one for the rollback; `::error::` and
//! `::warning::` annotations for failed steps, failed undo actions and warnings, with
//! `file=`/`line=` when the message names a migration or config file and line; at the end,
//! the Markdown summary appended to `$GITHUB_STEP_SUMMARY` and the outputs to
//! `$GITHUB_OUTPUT`.
//!
//! Untrusted text (a platform command's stderr inside an error) never runs as a command:
//! annotation messages are escaped onto one line, and a plain line that would parse as a
//! command is fenced with `::stop-commands::`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{Ci, Dialect, FindingText};
use crate::place::Place;
use crate::run::event::Finished;

/// The GitHub Actions sink.
pub(crate) type Github = Ci<GithubActions>;

/// Values announced with `::add-mask::` so far, for the whole process: each once.
static MASKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Message data: `%`, `\r`, `\n` escaped.
pub(crate) fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Property values: as data, plus `:` and `,`.
pub(crate) fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions' workflow commands.
pub(crate) struct GithubActions;

impl Dialect for GithubActions {
    const ROOT_VAR: &'static str = "GITHUB_WORKSPACE";
    const GROUP_CLOSE: &'static str = "::endgroup::";
    const TITLE_ON_LOCATED_ERRORS: bool = true;

    fn masked() -> &'static Mutex<Vec<String>> {
        &MASKED
    }

    fn mask(value: &str, masked: &[String]) -> Vec<String> {
        let mut out = vec![format!("::add-mask::{}", escape_data(value))];
        // GitHub masks line by line: a multi-line value is announced per line as well.
        if value.contains('\n') {
            for line in value.lines().map(|l| l.trim_end_matches('\r')) {
                if line.trim().len() >= 4 && !masked.iter().any(|m| m == line) {
                    out.push(format!("::add-mask::{}", escape_data(line)));
                }
            }
        }
        out
    }

    /// A line that would parse as a workflow command is fenced with `::stop-commands::`.
    fn text(line: &str, out: &mut Vec<String>) {
        if line.trim_start().starts_with("::") {
            let token = uuid::Uuid::new_v4().simple().to_string();
            out.push(format!("::stop-commands::{token}"));
            out.push(line.to_owned());
            out.push(format!("::{token}::"));
        } else {
            out.push(line.to_owned());
        }
    }

    fn group_open(title: &str) -> String {
        format!("::group::{}", escape_data(title))
    }

    /// `::error file=..,line=..,title=..::message` (or `warning`): the location moves from
    /// the message into the properties.
    fn annotation(
        kind: &str,
        _whole: &str,
        message: &str,
        at: Option<(&Place, String)>,
        title: Option<&str>,
    ) -> String {
        let mut props = Vec::new();
        if let Some((loc, path)) = at {
            props.push(format!("file={}", escape_property(&path)));
            props.push(format!("line={}", loc.line));
            if let Some(col) = loc.column {
                props.push(format!("col={col}"));
            }
        }
        if let Some(title) = title {
            props.push(format!("title={}", escape_property(title)));
        }
        if props.is_empty() {
            format!("::{kind}::{}", escape_data(message))
        } else {
            format!("::{kind} {}::{}", props.join(","), escape_data(message))
        }
    }

    fn finding(f: &FindingText<'_>) -> (String, Option<String>) {
        (
            format!("{}: {}; safe: {}", f.message, f.why, f.safe),
            Some(format!("migration lint: {}", f.rule)),
        )
    }

    /// The Markdown summary appended to `$GITHUB_STEP_SUMMARY`, the outputs to
    /// `$GITHUB_OUTPUT`; a file that cannot be written becomes a warning.
    fn finish(finished: &Finished, warn: &dyn Fn(&str) -> String) -> Vec<String> {
        let mut lines = Vec::new();
        if finished.worth_summary {
            if let Err(e) = append("GITHUB_STEP_SUMMARY", &finished.markdown) {
                lines.push(warn(&e));
            }
            if let Err(e) = append("GITHUB_OUTPUT", &output_lines(&finished.outputs)) {
                lines.push(warn(&e));
            }
        }
        lines
    }
}

/// Appends to the file a GitHub variable names; an unset variable is not an error.
fn append(var: &str, text: &str) -> Result<(), String> {
    let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = PathBuf::from(path);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write ${var} ({}): {e}", path.display()))
}

/// `name=value` lines for `$GITHUB_OUTPUT`; a multi-line value uses a heredoc delimiter.
pub(crate) fn output_lines(outputs: &[(&str, String)]) -> String {
    let mut text = String::new();
    for (name, value) in outputs {
        if value.contains('\n') || value.contains('\r') {
            let delimiter = format!("ghadelimiter_{}", uuid::Uuid::new_v4().simple());
            text.push_str(&format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"));
        } else {
            text.push_str(&format!("{name}={value}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ci::finding;
    use crate::run::event::Event;
    use crate::secret::Redactor;

    fn sink() -> Ci<GithubActions> {
        Ci::new(Redactor::default(), false, PathBuf::from("."))
    }

    #[test]
    fn escaping_follows_the_toolkit() {
        assert_eq!(escape_data("a%b\r\nc:d,e"), "a%25b%0D%0Ac:d,e");
        assert_eq!(escape_property("a%b\nc:d,e"), "a%25b%0Ac%3Ad%2Ce");
    }

    #[test]
    fn annotations_name_the_file_and_line() {
        let g = sink();
        assert_eq!(
            g.annotation(
                "warning",
                &finding("[index] CREATE INDEX locks writes"),
                None
            ),
            "::warning file=migrations/1_x.up.sql,line=3::[index] CREATE INDEX locks writes"
        );
        assert_eq!(
            g.annotation_text("error", "boom\nline two: 100%", Some("step `a`, b: c")),
            "::error title=step `a`%2C b%3A c::boom%0Aline two: 100%25"
        );
    }

    #[test]
    fn lint_findings_in_a_result_become_annotations() {
        let g = sink();
        let value = serde_json::json!({
            "level": "error",
            "findings": [{"file": "migrations/2_y.up.sql", "line": 7, "rule": "drop-column",
                "message": "DROP COLUMN", "why": "the release still running reads it", "safe": "two releases"}]
        });
        let lines = g.render_result(&value, "1 finding(s)");
        assert_eq!(lines[0], "1 finding(s)");
        assert_eq!(
            lines[1],
            "::error file=migrations/2_y.up.sql,line=7,title=migration lint%3A drop-column::DROP COLUMN: the release still running reads it; safe: two releases"
        );
    }

    #[test]
    fn steps_are_groups_and_failures_annotations() {
        let g = sink();
        let mut lines = g.render(&Event::StepStarted {
            index: 0,
            total: 1,
            id: "restart".into(),
            uses: "restart".into(),
            summary: "restart the app".into(),
        });
        lines.extend(g.render(&Event::StepFailed {
            id: "restart".into(),
            elapsed_ms: 5,
            error: "refused\n::set-output name=x::y".into(),
        }));
        assert_eq!(lines[0], "::group::[1/1] restart: restart the app");
        assert_eq!(lines[1], "      restart: FAILED after 5 ms — refused");
        // The second line of the error would be a command: it is fenced.
        assert!(lines[2].starts_with("::stop-commands::"));
        assert_eq!(lines[3], "::set-output name=x::y");
        assert_eq!(
            lines[4],
            format!("::{}::", &lines[2]["::stop-commands::".len()..])
        );
        assert_eq!(lines[5], "::endgroup::");
        assert_eq!(
            lines[6],
            "::error title=step `restart` failed::refused%0A::set-output name=x::y"
        );
    }

    #[test]
    fn masks_come_once_per_value() {
        let r = Redactor::default();
        let g: Ci<GithubActions> = Ci::new(r.clone(), false, PathBuf::from("."));
        r.register("gh-unit-secret-1");
        assert_eq!(g.mask_lines(), vec!["::add-mask::gh-unit-secret-1"]);
        assert!(g.mask_lines().is_empty());
        r.register("gh-unit\nsecret-2%");
        assert_eq!(
            g.mask_lines(),
            vec![
                "::add-mask::gh-unit%0Asecret-2%25",
                "::add-mask::gh-unit",
                "::add-mask::secret-2%25"
            ]
        );
    }

    #[test]
    fn outputs_use_the_documented_format() {
        let text = output_lines(&[("result", "succeeded".into()), ("run_id", String::new())]);
        assert_eq!(text, "result=succeeded\nrun_id=\n");
        let multi = output_lines(&[("x", "a\nb".into())]);
        let delimiter = multi.lines().next().unwrap().trim_start_matches("x<<");
        assert_eq!(multi, format!("x<<{delimiter}\na\nb\n{delimiter}\n"));
    }
}
