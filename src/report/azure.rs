//! Azure DevOps (Azure Pipelines): logging commands on stdout. Every secret value is set as
//! a secret variable (`##vso[task.setvariable ..;issecret=true]`, which masks it) before
//! any other line is written; `##[group]` per step and for the rollback;
//! `##vso[task.logissue]` for failed steps, failed undo actions and warnings, with
//! `sourcepath`/`linenumber` when the message names a migration or config file and line; at
//! the end, the outputs as output variables, the Markdown summary written to a file and
//! uploaded with `##vso[task.uploadsummary]`, and `##vso[task.complete result=Failed;]` when
//! the command failed.
//!
//! Untrusted text never runs as a command: messages are escaped onto one line, and `##vso[`
//! or `##[` inside plain text is broken with a zero-width space.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::plain::{render_event, render_plan};
use super::run_report::Finished;
use super::{Event, Reporter, locate, source_path};
use crate::run::plan::Plan;
use crate::secret::Redactor;

/// Values set as secret variables so far, for the whole process: each once.
static MASKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Message data: `%`, `\r`, `\n` escaped.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%AZP25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Property values: as data, plus `]` and `;`.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(']', "%5D").replace(';', "%3B")
}

/// Plain text that cannot start a logging or formatting command.
fn defuse(line: &str) -> String {
    line.replace("##vso[", "#\u{200b}#vso[")
        .replace("##[", "#\u{200b}#[")
}

pub struct Azure {
    redactor: Redactor,
    quiet: bool,
    base: PathBuf,
    group_open: Mutex<bool>,
}

impl Azure {
    pub fn new(redactor: Redactor, quiet: bool, base: PathBuf) -> Self {
        Self {
            redactor,
            quiet,
            base,
            group_open: Mutex::new(false),
        }
    }

    /// A secret variable per registered value not set yet.
    fn mask_lines(&self) -> Vec<String> {
        let mut masked = MASKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for value in self.redactor.values() {
            if masked.contains(&value) {
                continue;
            }
            masked.push(value.clone());
            out.push(format!(
                "##vso[task.setvariable variable=CUTOVER_SECRET_{};issecret=true]{}",
                masked.len(),
                escape_data(&value)
            ));
        }
        out
    }

    fn emit(&self, lines: &[String]) {
        let mut out = std::io::stdout().lock();
        for line in self.mask_lines().iter().chain(lines) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    fn text(&self, text: &str, out: &mut Vec<String>) {
        let text = self.redactor.redact(text);
        out.extend(text.lines().map(defuse));
    }

    /// `##vso[task.logissue type=..;sourcepath=..;linenumber=..]message`.
    fn issue(&self, kind: &str, message: &str) -> String {
        let message = self.redactor.redact(message);
        let mut props = vec![format!("type={kind}")];
        let body = match locate(&message) {
            Some((loc, _)) => {
                props.push(format!(
                    "sourcepath={}",
                    escape_property(&source_path(
                        &loc.file,
                        &self.base,
                        "BUILD_SOURCESDIRECTORY"
                    ))
                ));
                props.push(format!("linenumber={}", loc.line));
                if let Some(col) = loc.column {
                    props.push(format!("columnnumber={col}"));
                }
                // Azure shows no title: the message stays whole, location included.
                message.clone()
            }
            None => message,
        };
        format!(
            "##vso[task.logissue {}]{}",
            props.join(";"),
            escape_data(&body)
        )
    }

    fn open_group(&self, title: &str, out: &mut Vec<String>) {
        self.close_group(out);
        let title = self.redactor.redact(title).replace(['\r', '\n'], " ");
        out.push(format!("##[group]{}", defuse(&title)));
        *self.group() = true;
    }

    fn close_group(&self, out: &mut Vec<String>) {
        let mut open = self.group();
        if *open {
            out.push("##[endgroup]".into());
            *open = false;
        }
    }

    fn group(&self) -> std::sync::MutexGuard<'_, bool> {
        self.group_open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

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
                out.push(self.issue("error", &format!("step `{id}` failed: {error}")));
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
                out.push(self.issue(
                    "error",
                    &format!("rollback of step `{id}` failed: {action}: {error}"),
                ));
            }
            Event::RunFinished { .. } => {
                self.close_group(&mut out);
                self.text(line.as_deref().unwrap_or_default(), &mut out);
            }
            Event::Warning { message } => out.push(self.issue("warning", message)),
            _ => {
                if let Some(line) = line {
                    self.text(&line, &mut out);
                }
            }
        }
        out
    }

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
            out.push(self.issue("warning", warning));
        }
        out
    }

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
            out.push(self.issue(
                kind,
                &format!(
                    "{file}:{line}: [{}] {}: {}; safe: {}",
                    finding["rule"].as_str().unwrap_or_default(),
                    finding["message"].as_str().unwrap_or_default(),
                    finding["why"].as_str().unwrap_or_default(),
                    finding["safe"].as_str().unwrap_or_default(),
                ),
            ));
        }
        out
    }

    pub fn render_finish(&self, finished: &Finished) -> Vec<String> {
        let mut out = Vec::new();
        self.close_group(&mut out);
        if let Some(error) = &finished.error {
            let (located, rest): (Vec<&str>, Vec<&str>) =
                error.lines().partition(|l| locate(l).is_some());
            for line in &located {
                out.push(self.issue("error", line));
            }
            let rest = rest.join("\n");
            if !rest.trim().is_empty() {
                out.push(self.issue(
                    "error",
                    &format!("cutover {} failed: {}", finished.command, rest.trim()),
                ));
            }
        }
        if finished.worth_summary {
            for (name, value) in &finished.outputs {
                out.push(format!(
                    "##vso[task.setvariable variable={};isoutput=true]{}",
                    escape_property(name),
                    escape_data(value)
                ));
            }
            match write_summary(finished) {
                Ok(path) => out.push(format!(
                    "##vso[task.uploadsummary]{}",
                    escape_data(&path.display().to_string())
                )),
                Err(e) => out.push(self.issue("warning", &e)),
            }
        }
        if finished.failed() {
            out.push("##vso[task.complete result=Failed;]DONE".into());
        }
        out
    }
}

/// Writes the Markdown summary to `$AGENT_TEMPDIRECTORY` (else the state folder, else the
/// system temp folder); returns its absolute path.
fn write_summary(finished: &Finished) -> Result<PathBuf, String> {
    let dir = std::env::var_os("AGENT_TEMPDIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| finished.state_dir.clone())
        .unwrap_or_else(std::env::temp_dir);
    let dir = absolute(&dir);
    let name = match &finished.run_id {
        Some(run) => format!("cutover-{run}.md"),
        None => format!(
            "cutover-{}-{}.md",
            finished.command.replace(' ', "-"),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
        ),
    };
    let path = dir.join(name);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, &finished.markdown))
        .map_err(|e| format!("cannot write the run summary {}: {e}", path.display()))?;
    Ok(path)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    }
}

impl Reporter for Azure {
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
        self.emit(&self.render_finish(finished));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> Azure {
        Azure::new(Redactor::default(), false, PathBuf::from("."))
    }

    #[test]
    fn escaping_follows_the_task_lib() {
        assert_eq!(escape_data("100%\r\n;]"), "100%AZP25%0D%0A;]");
        assert_eq!(escape_property("a;b]c%\n"), "a%3Bb%5Dc%AZP25%0A");
    }

    #[test]
    fn issues_name_the_file_and_line() {
        let a = sink();
        assert_eq!(
            a.issue("warning", "migrations/1_x.up.sql:3: [index] slow; see docs"),
            "##vso[task.logissue type=warning;sourcepath=migrations/1_x.up.sql;linenumber=3]migrations/1_x.up.sql:3: [index] slow; see docs"
        );
        assert_eq!(
            a.issue("error", "step `x` failed: 50%\nmore"),
            "##vso[task.logissue type=error]step `x` failed: 50%AZP25%0Amore"
        );
    }

    #[test]
    fn plain_text_cannot_run_commands() {
        let a = sink();
        let mut out = Vec::new();
        a.text(
            "ok\n##vso[task.setvariable variable=x]y\n##[group]z",
            &mut out,
        );
        assert_eq!(out[0], "ok");
        assert!(!out[1].contains("##vso["));
        assert!(!out[2].starts_with("##["));
    }

    #[test]
    fn secrets_become_secret_variables_once() {
        let r = Redactor::default();
        let a = Azure::new(r.clone(), false, PathBuf::from("."));
        r.register("az-unit-secret;1");
        let lines = a.mask_lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("##vso[task.setvariable variable=CUTOVER_SECRET_"));
        assert!(lines[0].ends_with(";issecret=true]az-unit-secret;1"));
        assert!(a.mask_lines().is_empty());
    }
}
