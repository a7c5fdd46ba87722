//! `on_failure: ask` at a terminal: show what failed and the state it left, then let the
//! person type what happens next. Without a terminal nobody is asked (the pipeline's
//! `unattended` choice applies), so a run in CI never waits.

use async_trait::async_trait;
use is_terminal::IsTerminal;
use tokio_util::sync::CancellationToken;

use super::exit::eprint;
use crate::engine::decide::{Approval, Decider, Failure, Pause};
use crate::engine::journal::Choice;

pub(crate) struct Terminal {
    pub cancel: CancellationToken,
}

impl Terminal {
    /// Whether someone can be asked: stdin and stderr are a terminal.
    pub(crate) fn available() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }
}

/// Reads a typed answer: the whole word, in any case. No abbreviations: `r` could mean
/// retry or rollback, and this answer changes production.
pub(crate) fn parse(answer: &str) -> Option<Choice> {
    match answer.trim().to_ascii_lowercase().as_str() {
        "retry" => Some(Choice::Retry),
        "rollback" | "roll back" => Some(Choice::Rollback),
        "halt" => Some(Choice::Halt),
        _ => None,
    }
}

#[async_trait]
impl Decider for Terminal {
    async fn ask(&self, failure: &Failure) -> Option<Choice> {
        if !Self::available() {
            return None;
        }
        let mut text = format!(
            "\nstep `{}` FAILED: {}\ndone so far: {}\n",
            failure.step,
            failure.error,
            if failure.done.is_empty() {
                "nothing".to_owned()
            } else {
                failure.done.join(", ")
            }
        );
        text.push_str(&format!(
            "a rollback would undo: {}\n",
            if failure.undo.is_empty() {
                "nothing".to_owned()
            } else {
                failure.undo.join("; ")
            }
        ));
        if let Some(ponr) = &failure.point_of_no_return {
            text.push_str(&format!(
                "point of no return `{ponr}` has passed: a rollback stops there and the run halts\n"
            ));
        }
        text.push_str(
            "choices: retry (run the step again), rollback (undo the run), halt (stop here, leave everything as it is; `cutover resume` or `cutover rollback` later)",
        );
        eprint(&text);
        let answer = tokio::task::spawn_blocking(|| {
            dialoguer::Input::<String>::new()
                .with_prompt("Type retry, rollback or halt")
                .validate_with(|a: &String| -> Result<(), String> {
                    parse(a)
                        .map(|_| ())
                        .ok_or_else(|| format!("`{}`: type retry, rollback or halt", a.trim()))
                })
                .interact_text()
        });
        let answer = tokio::select! {
            a = answer => a.ok()?.ok()?,
            () = self.cancel.cancelled() => return None,
        };
        parse(&answer)
    }

    async fn approve(&self, pause: &Pause) -> Option<Approval> {
        if !Self::available() {
            return None;
        }
        let list = |items: &[String], sep: &str| {
            if items.is_empty() {
                "nothing".to_owned()
            } else {
                items.join(sep)
            }
        };
        eprint(&format!(
            "\nstep `{}` waits for approval: {}\ndone so far: {}\na rollback would undo: {}\nchoices: continue (go on with the run), rollback (undo the run); no answer within {}: rollback",
            pause.step,
            pause.message,
            list(&pause.done, ", "),
            list(&pause.undo, "; "),
            humantime::format_duration(pause.timeout)
        ));
        let answer = tokio::task::spawn_blocking(|| {
            dialoguer::Input::<String>::new()
                .with_prompt("Type continue or rollback")
                .validate_with(|a: &String| -> Result<(), String> {
                    approval(a)
                        .map(|_| ())
                        .ok_or_else(|| format!("`{}`: type continue or rollback", a.trim()))
                })
                .interact_text()
        });
        let by = crate::adapters::state::username();
        tokio::select! {
            a = tokio::time::timeout(pause.timeout, answer) => match a {
                Err(_) => Some(Approval::NoAnswer),
                Ok(a) => Some(if approval(&a.ok()?.ok()?)? {
                    Approval::Continue(by)
                } else {
                    Approval::RollBack(by)
                }),
            },
            // Interrupted: the run rolls back, as after any Ctrl-C.
            () = self.cancel.cancelled() => Some(Approval::RollBack(by)),
        }
    }
}

/// Reads the answer at a pause: `continue` (true) or `rollback` (false), whole words.
fn approval(answer: &str) -> Option<bool> {
    match answer.trim().to_ascii_lowercase().as_str() {
        "continue" => Some(true),
        "rollback" | "roll back" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_typed() {
        assert_eq!(parse(" Retry\n"), Some(Choice::Retry));
        assert_eq!(parse("rollback"), Some(Choice::Rollback));
        assert_eq!(parse("HALT"), Some(Choice::Halt));
        assert_eq!(parse("r"), None);
        assert_eq!(parse("yes"), None);
    }
}
