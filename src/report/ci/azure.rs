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

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Ci, Dialect, FindingText};
use crate::place::Place;
use crate::run::event::Finished;

/// The Azure Pipelines sink.
pub(crate) type Azure = Ci<AzurePipelines>;

/// Values set as secret variables so far, for the whole process: each once.
static MASKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Message data: `%`, `\r`, `\n` escaped.
pub(crate) fn escape_data(text: &str) -> String {
    text.replace('%', "%AZP25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Property values: as data, plus `]` and `;`.
pub(crate) fn escape_property(text: &str) -> String {
    escape_data(text).replace(']', "%5D").replace(';', "%3B")
}

/// Plain text that cannot start a logging or formatting command.
fn defuse(line: &str) -> String {
    line.replace("##vso[", "#\u{200b}#vso[")
        .replace("##[", "#\u{200b}#[")
}

/// Azure Pipelines' logging commands.
pub(crate) struct AzurePipelines;

impl Dialect for AzurePipelines {
    const ROOT_VAR: &'static str = "BUILD_SOURCESDIRECTORY";
    const GROUP_CLOSE: &'static str = "##[endgroup]";
    const TITLE_ON_LOCATED_ERRORS: bool = false;

    fn masked() -> &'static Mutex<Vec<String>> {
        &MASKED
    }

    /// A secret variable per value, numbered in the order they were set.
    fn mask(value: &str, masked: &[String]) -> Vec<String> {
        vec![format!(
            "##vso[task.setvariable variable=CUTOVER_SECRET_{};issecret=true]{}",
            masked.len() + 1,
            escape_data(value)
        )]
    }

    fn text(line: &str, out: &mut Vec<String>) {
        out.push(defuse(line));
    }

    fn group_open(title: &str) -> String {
        format!("##[group]{}", defuse(&title.replace(['\r', '\n'], " ")))
    }

    /// `##vso[task.logissue type=..;sourcepath=..;linenumber=..]message`. Azure shows no
    /// title: it leads the message, and the message stays whole, location included.
    fn annotation(
        kind: &str,
        whole: &str,
        _message: &str,
        at: Option<(&Place, String)>,
        title: Option<&str>,
    ) -> String {
        let mut props = vec![format!("type={kind}")];
        if let Some((loc, path)) = at {
            props.push(format!("sourcepath={}", escape_property(&path)));
            props.push(format!("linenumber={}", loc.line));
            if let Some(col) = loc.column {
                props.push(format!("columnnumber={col}"));
            }
        }
        let body = match title {
            Some(title) => format!("{title}: {whole}"),
            None => whole.to_owned(),
        };
        format!(
            "##vso[task.logissue {}]{}",
            props.join(";"),
            escape_data(&body)
        )
    }

    fn finding(f: &FindingText<'_>) -> (String, Option<String>) {
        (
            format!("[{}] {}: {}; safe: {}", f.rule, f.message, f.why, f.safe),
            None,
        )
    }

    /// The outputs as output variables, the summary uploaded, and the task failed when
    /// the command failed.
    fn finish(finished: &Finished, warn: &dyn Fn(&str) -> String) -> Vec<String> {
        let mut out = Vec::new();
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
                Err(e) => out.push(warn(&e)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ci::finding;
    use crate::secret::Redactor;

    fn sink() -> Ci<AzurePipelines> {
        Ci::new(Redactor::default(), false, PathBuf::from("."))
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
            a.annotation("warning", &finding("[index] slow; see docs"), None),
            "##vso[task.logissue type=warning;sourcepath=migrations/1_x.up.sql;linenumber=3]migrations/1_x.up.sql:3: [index] slow; see docs"
        );
        assert_eq!(
            a.annotation_text("error", "50%\nmore", Some("step `x` failed")),
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
        let a: Ci<AzurePipelines> = Ci::new(r.clone(), false, PathBuf::from("."));
        r.register("az-unit-secret;1");
        let lines = a.mask_lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("##vso[task.setvariable variable=CUTOVER_SECRET_"));
        assert!(lines[0].ends_with(";issecret=true]az-unit-secret;1"));
        assert!(a.mask_lines().is_empty());
    }
}
