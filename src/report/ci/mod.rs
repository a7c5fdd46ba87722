//! The CI sinks: one sink that turns events into a CI system's log lines (a group per
//! step and for the rollback, annotations for failures and warnings with the file and line
//! when a message names one, every secret masked before any other line), written in a
//! [`Dialect`]: GitHub Actions' workflow commands or Azure Pipelines' logging commands.

pub(crate) mod azure;
pub(crate) mod github;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;

use super::plain::{render_event, render_plan, rollback_title};
use super::{Event, Reporter, source_path};
use crate::place::{Message, Place};
use crate::run::event::Finished;
use crate::run::plan::Plan;
use crate::secret::Redactor;

/// A lint finding as a result carries it, for an annotation (its place is passed apart).
pub(crate) struct FindingText<'a> {
    pub rule: &'a str,
    pub message: &'a str,
    pub why: &'a str,
    pub safe: &'a str,
}

/// How one CI system writes what the sink has to say.
pub(crate) trait Dialect: Send + Sync {
    /// The variable naming the checkout root, for annotation paths.
    const ROOT_VAR: &'static str;
    /// The values announced as secrets so far, for the whole process: each once.
    fn masked() -> &'static Mutex<Vec<String>>;
    /// The lines that mask `value`; `masked` holds the values announced before it.
    fn mask(value: &str, masked: &[String]) -> Vec<String>;
    /// One line of plain (already redacted) text, made unable to run as a command.
    fn text(line: &str, out: &mut Vec<String>);
    fn group_open(title: &str) -> String;
    const GROUP_CLOSE: &'static str;
    /// An error or warning annotation; `at` is where the message says it happened (the
    /// location taken off the front of `message`, which `whole` still carries).
    fn annotation(
        kind: &str,
        whole: &str,
        message: &str,
        at: Option<(&Place, String)>,
        title: Option<&str>,
    ) -> String;
    /// The annotation of one located line of the error that stopped a command.
    const TITLE_ON_LOCATED_ERRORS: bool;
    /// The message of a lint finding's annotation (after its place), and its title.
    fn finding(finding: &FindingText<'_>) -> (String, Option<String>);
    /// What the end of a command adds after its error: outputs, summary, result.
    fn finish(finished: &Finished, warn: &dyn Fn(&str) -> String) -> Vec<String>;
}

pub(crate) struct Ci<D: Dialect> {
    redactor: Redactor,
    quiet: bool,
    /// The config folder: lint findings name files relative to it.
    base: PathBuf,
    group_open: Mutex<bool>,
    dialect: std::marker::PhantomData<D>,
}

impl<D: Dialect> Ci<D> {
    pub(crate) fn new(redactor: Redactor, quiet: bool, base: PathBuf) -> Self {
        Self {
            redactor,
            quiet,
            base,
            group_open: Mutex::new(false),
            dialect: std::marker::PhantomData,
        }
    }

    /// The masking lines for every registered value not announced yet.
    pub(crate) fn mask_lines(&self) -> Vec<String> {
        let mut masked = D::masked()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for value in self.redactor.values() {
            if masked.contains(&value) {
                continue;
            }
            out.extend(D::mask(&value, &masked));
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

    /// Plain text, masked, unable to run as a command.
    pub(crate) fn text(&self, text: &str, out: &mut Vec<String>) {
        let text = self.redactor.redact(text);
        for line in text.lines() {
            D::text(line, out);
        }
    }

    /// An `error` or `warning` annotation, masked, linked to the place the message is
    /// about when it is about one.
    pub(crate) fn annotation(&self, kind: &str, message: &Message, title: Option<&str>) -> String {
        let whole = self.redactor.redact(&message.to_string());
        let text = self.redactor.redact(message.text());
        self.annotation_at(kind, &whole, &text, message.place(), title)
    }

    /// An annotation of a text about no place in particular, masked.
    pub(crate) fn annotation_text(&self, kind: &str, text: &str, title: Option<&str>) -> String {
        let text = self.redactor.redact(text);
        self.annotation_at(kind, &text, &text, None, title)
    }

    /// An annotation whose place is known: `whole` is the message with the place written
    /// in front, `message` without it; both already masked.
    fn annotation_at(
        &self,
        kind: &str,
        whole: &str,
        message: &str,
        at: Option<&Place>,
        title: Option<&str>,
    ) -> String {
        let title = title.map(|t| self.redactor.redact(t));
        let at = at.map(|loc| (loc, source_path(&loc.file, &self.base, D::ROOT_VAR)));
        D::annotation(kind, whole, message, at, title.as_deref())
    }

    fn open_group(&self, title: &str, out: &mut Vec<String>) {
        self.close_group(out);
        out.push(D::group_open(&self.redactor.redact(title)));
        *self.group() = true;
    }

    fn close_group(&self, out: &mut Vec<String>) {
        let mut open = self.group();
        if *open {
            out.push(D::GROUP_CLOSE.into());
            *open = false;
        }
    }

    fn group(&self) -> std::sync::MutexGuard<'_, bool> {
        self.group_open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lines one event becomes.
    pub(crate) fn render(&self, event: &Event) -> Vec<String> {
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
                out.push(self.annotation_text(
                    "error",
                    error,
                    Some(&format!("step `{id}` failed")),
                ));
            }
            Event::RollbackStarted { reason, actions } if !self.quiet => {
                self.open_group(&rollback_title(*actions, reason), &mut out);
            }
            Event::CompensationFinished {
                id,
                action,
                error: Some(error),
            } => {
                self.text(line.as_deref().unwrap_or_default(), &mut out);
                self.close_group(&mut out);
                out.push(self.annotation_text(
                    "error",
                    &format!("{action}: {error}"),
                    Some(&format!("rollback of step `{id}` failed")),
                ));
            }
            Event::RunFinished { .. } => {
                self.close_group(&mut out);
                self.text(line.as_deref().unwrap_or_default(), &mut out);
            }
            Event::Warning { message } => {
                out.push(self.annotation_text("warning", message, None));
            }
            _ => {
                if let Some(line) = line {
                    self.text(&line, &mut out);
                }
            }
        }
        out
    }

    /// The lines a plan becomes: a group, then an annotation per warning.
    pub(crate) fn render_plan(&self, plan: &Plan) -> Vec<String> {
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
    pub(crate) fn render_result(&self, value: &Value, text: &str) -> Vec<String> {
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
            let field = |name: &str| finding[name].as_str().unwrap_or_default();
            let (message, title) = D::finding(&FindingText {
                rule: field("rule"),
                message: field("message"),
                why: field("why"),
                safe: field("safe"),
            });
            // The finding names its place: it is passed on as such, never read back
            // out of the text.
            let at = Place {
                file: file.to_owned(),
                line,
                column: None,
            };
            let message = self.redactor.redact(&message);
            let whole = self.redactor.redact(&format!("{file}:{line}: {message}"));
            out.push(self.annotation_at(kind, &whole, &message, Some(&at), title.as_deref()));
        }
        out
    }

    /// The lines the end of a command becomes: the error that stopped it, annotated, then
    /// what the dialect adds (outputs, summary, result).
    pub(crate) fn render_finish(&self, finished: &Finished) -> Vec<String> {
        let mut out = Vec::new();
        self.close_group(&mut out);
        if let Some(error) = &finished.error {
            let title = format!("cutover {} failed", finished.command);
            // The places the error is about, each linked; the rest of it as one annotation.
            let (placed, rest): (Vec<&Message>, Vec<&Message>) =
                finished.problems.iter().partition(|m| m.place().is_some());
            for message in placed {
                let title = D::TITLE_ON_LOCATED_ERRORS.then_some(title.as_str());
                out.push(self.annotation("error", message, title));
            }
            let rest = if finished.problems.is_empty() {
                error.clone()
            } else {
                rest.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if !rest.trim().is_empty() {
                out.push(self.annotation_text("error", rest.trim(), Some(&title)));
            }
        }
        out.extend(D::finish(finished, &|e| {
            self.annotation_text("warning", e, None)
        }));
        out
    }
}

impl<D: Dialect> Reporter for Ci<D> {
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

/// A lint finding's message at line 3 of a migration, for the dialects' tests.
#[cfg(test)]
pub(crate) fn finding(text: &str) -> Message {
    Message::at(
        Place {
            file: "migrations/1_x.up.sql".into(),
            line: 3,
            column: None,
        },
        text,
    )
}
