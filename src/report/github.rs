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

use serde_json::Value;

use super::plain::{render_event, render_plan};
use super::run_report::Finished;
use super::{Event, Reporter, locate, source_path};
use crate::run::plan::Plan;
use crate::secret::Redactor;

/// Values announced with `::add-mask::` so far, for the whole process: each once.
static MASKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Message data: `%`, `\r`, `\n` escaped.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Property values: as data, plus `:` and `,`.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

pub struct Github {
    redactor: Redactor,
    quiet: bool,
    /// The config folder: lint findings name files relative to it.
    base: PathBuf,
    group_open: Mutex<bool>,
}

impl Github {
    pub fn new(redactor: Redactor, quiet: bool, base: PathBuf) -> Self {
        Self {
            redactor,
            quiet,
            base,
            group_open: Mutex::new(false),
        }
    }

    /// `::add-mask::` lines for every registered value not announced yet.
    fn mask_lines(&self) -> Vec<String> {
        let mut masked = MASKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for value in self.redactor.values() {
            if masked.contains(&value) {
                continue;
            }
            out.push(format!("::add-mask::{}", escape_data(&value)));
            // GitHub masks line by line: a multi-line value is announced per line as well.
            if value.contains('\n') {
                for line in value.lines().map(|l| l.trim_end_matches('\r')) {
                    if line.trim().len() >= 4 && !masked.iter().any(|m| m == line) {
                        out.push(format!("::add-mask::{}", escape_data(line)));
                    }
                }
            }
            masked.push(value);
        }
        out
    }

    /// Writes lines to stdout, after the masks of any secret registered since the last write.
    fn emit(&self, lines: &[String]) {
        let mut out = std::io::stdout().lock();
        for line in self.mask_lines().iter().chain(lines) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// Plain text, masked; a line that would parse as a workflow command is fenced.
    fn text(&self, text: &str, out: &mut Vec<String>) {
        let text = self.redactor.redact(text);
        for line in text.lines() {
            if line.trim_start().starts_with("::") {
                let token = uuid::Uuid::new_v4().simple().to_string();
                out.push(format!("::stop-commands::{token}"));
                out.push(line.to_owned());
                out.push(format!("::{token}::"));
            } else {
                out.push(line.to_owned());
            }
        }
    }

    /// `::error file=..,line=..,title=..::message` (or `warning`).
    fn annotation(&self, kind: &str, message: &str, title: Option<&str>) -> String {
        let message = self.redactor.redact(message);
        let mut props = Vec::new();
        let body = match locate(&message) {
            Some((loc, rest)) => {
                props.push(format!(
                    "file={}",
                    escape_property(&source_path(&loc.file, &self.base, "GITHUB_WORKSPACE"))
                ));
                props.push(format!("line={}", loc.line));
                if let Some(col) = loc.column {
                    props.push(format!("col={col}"));
                }
                rest
            }
            None => message,
        };
        if let Some(title) = title {
            props.push(format!(
                "title={}",
                escape_property(&self.redactor.redact(title))
            ));
        }
        if props.is_empty() {
            format!("::{kind}::{}", escape_data(&body))
        } else {
            format!("::{kind} {}::{}", props.join(","), escape_data(&body))
        }
    }

    fn open_group(&self, title: &str, out: &mut Vec<String>) {
        self.close_group(out);
        let title = self.redactor.redact(title);
        out.push(format!("::group::{}", escape_data(&title)));
        *self.group() = true;
    }

    fn close_group(&self, out: &mut Vec<String>) {
        let mut open = self.group();
        if *open {
            out.push("::endgroup::".into());
            *open = false;
        }
    }

    fn group(&self) -> std::sync::MutexGuard<'_, bool> {
        self.group_open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lines one event becomes.
    pub fn render(&self, event: &Event) -> Vec<String> {
        let mut out = Vec::new();
        if self.quiet && !event.essential() {
            return out;
        }
        let line = render_event(event);
        match event {
            Event::StepStarted { .. } if !self.quiet => {
                self.open_group(line.as_deref().unwrap_or_default(), &mut out);
            }
            Event::StepFinished { .. } => {
                self.text(line.as_deref().unwrap_or_default(), &mut out);
                self.close_group(&mut out);
            }
            Event::StepFailed { id, error, .. } => {
                self.text(line.as_deref().unwrap_or_default(), &mut out);
                self.close_group(&mut out);
                out.push(self.annotation("error", error, Some(&format!("step `{id}` failed"))));
            }
            Event::RollbackStarted { .. } if !self.quiet => {
                let title = line.unwrap_or_default();
                self.open_group(title.trim_start_matches("==> "), &mut out);
            }
            Event::CompensationFinished {
                id,
                action,
                error: Some(error),
            } => {
                self.text(line.as_deref().unwrap_or_default(), &mut out);
                self.close_group(&mut out);
                out.push(self.annotation(
                    "error",
                    &format!("{action}: {error}"),
                    Some(&format!("rollback of step `{id}` failed")),
                ));
            }
            Event::RunFinished { .. } => {
                self.close_group(&mut out);
                self.text(line.as_deref().unwrap_or_default(), &mut out);
            }
            Event::Warning { message } => out.push(self.annotation("warning", message, None)),
            _ => {
                if let Some(line) = line {
                    self.text(&line, &mut out);
                }
            }
        }
        out
    }

    /// The lines a plan becomes: a group, then an annotation per warning.
    pub fn render_plan(&self, plan: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        let text = render_plan(plan);
        let mut lines = text.lines();
        self.open_group(lines.next().unwrap_or("Plan"), &mut out);
        for line in lines {
            self.text(line, &mut out);
        }
        self.close_group(&mut out);
        for warning in &plan.warnings {
            out.push(self.annotation("warning", warning, None));
        }
        out
    }

    /// The lines a result becomes: its text, and an annotation per lint finding.
    pub fn render_result(&self, value: &Value, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.close_group(&mut out);
        self.text(text.trim_end(), &mut out);
        let kind = if value["level"] == "error" {
            "error"
        } else {
            "warning"
        };
        for finding in value["findings"].as_array().into_iter().flatten() {
            let (Some(file), Some(line)) = (finding["file"].as_str(), finding["line"].as_u64())
            else {
                continue;
            };
            let message = format!(
                "{file}:{line}: {}: {}; safe: {}",
                finding["message"].as_str().unwrap_or_default(),
                finding["why"].as_str().unwrap_or_default(),
                finding["safe"].as_str().unwrap_or_default(),
            );
            let title = format!(
                "migration lint: {}",
                finding["rule"].as_str().unwrap_or_default()
            );
            out.push(self.annotation(kind, &message, Some(&title)));
        }
        out
    }

    /// The lines the end of a command becomes: the error that stopped it, annotated.
    pub fn render_finish(&self, finished: &Finished) -> Vec<String> {
        let mut out = Vec::new();
        self.close_group(&mut out);
        if let Some(error) = &finished.error {
            let title = format!("cutover {} failed", finished.command);
            let (located, rest): (Vec<&str>, Vec<&str>) =
                error.lines().partition(|l| locate(l).is_some());
            for line in &located {
                out.push(self.annotation("error", line, Some(&title)));
            }
            let rest = rest.join("\n");
            if !rest.trim().is_empty() {
                out.push(self.annotation("error", rest.trim(), Some(&title)));
            }
        }
        out
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
pub fn output_lines(outputs: &[(&str, String)]) -> String {
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

impl Reporter for Github {
    fn event(&self, event: &Event) {
        let lines = self.render(event);
        if !lines.is_empty() {
            self.emit(&lines);
        }
    }

    fn plan(&self, plan: &Plan) {
        self.emit(&self.render_plan(plan));
    }

    fn result(&self, value: &Value, text: &str) {
        self.emit(&self.render_result(value, text));
    }

    fn sync_secrets(&self) {
        self.emit(&[]);
    }

    fn finish(&self, finished: &Finished) {
        let mut lines = self.render_finish(finished);
        if finished.worth_summary {
            if let Err(e) = append("GITHUB_STEP_SUMMARY", &finished.markdown) {
                lines.push(self.annotation("warning", &e, None));
            }
            if let Err(e) = append("GITHUB_OUTPUT", &output_lines(&finished.outputs)) {
                lines.push(self.annotation("warning", &e, None));
            }
        }
        self.emit(&lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> Github {
        Github::new(Redactor::default(), false, PathBuf::from("."))
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
                "migrations/1_x.up.sql:3: [index] CREATE INDEX locks writes",
                None
            ),
            "::warning file=migrations/1_x.up.sql,line=3::[index] CREATE INDEX locks writes"
        );
        assert_eq!(
            g.annotation("error", "boom\nline two: 100%", Some("step `a`, b: c")),
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
        let g = Github::new(r.clone(), false, PathBuf::from("."));
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
