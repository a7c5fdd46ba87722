//! Colour for people at a terminal: status words only (ok, FAILED, the run's ending), so a
//! screen of output can be read at a glance. Off unless the stream is a terminal, and
//! `NO_COLOR`, `CLICOLOR_FORCE` and `--color` are honoured (<https://no-color.org>,
//! <https://bixense.com/clicolors/>). JSON and the CI sinks never get colour.

use std::sync::atomic::{AtomicBool, Ordering};

use anstyle::{AnsiColor, Style};

static STDOUT: AtomicBool = AtomicBool::new(false);
static STDERR: AtomicBool = AtomicBool::new(false);

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Choice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether a stream gets colour: `--color always|never` decides; else `NO_COLOR` (set and
/// not empty) turns it off, `CLICOLOR_FORCE` (set and not `0`) on, and otherwise a
/// terminal gets it.
pub(crate) fn decide(
    choice: Choice,
    is_terminal: bool,
    var: impl Fn(&str) -> Option<String>,
) -> bool {
    match choice {
        Choice::Always => true,
        Choice::Never => false,
        Choice::Auto => {
            if var("NO_COLOR").is_some_and(|v| !v.is_empty()) {
                false
            } else if var("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
                true
            } else {
                is_terminal
            }
        }
    }
}

/// Sets colour for the process's two streams; the sinks made after it follow it.
pub(crate) fn set(stdout: bool, stderr: bool) {
    STDOUT.store(stdout, Ordering::Relaxed);
    STDERR.store(stderr, Ordering::Relaxed);
}

/// What a word means to the reader.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tone {
    Good,
    Bad,
    Warn,
    Strong,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Self::Good => AnsiColor::Green.on_default(),
            Self::Bad => AnsiColor::Red.on_default().bold(),
            Self::Warn => AnsiColor::Yellow.on_default(),
            Self::Strong => Style::new().bold(),
        }
    }
}

fn paint(on: bool, tone: Tone, text: &str) -> String {
    if on {
        let style = tone.style();
        format!("{style}{text}{style:#}")
    } else {
        text.to_owned()
    }
}

/// `text` in `tone`, for stdout.
pub(crate) fn out(tone: Tone, text: &str) -> String {
    paint(STDOUT.load(Ordering::Relaxed), tone, text)
}

/// `text` in `tone`, for stderr.
pub(crate) fn err(tone: Tone, text: &str) -> String {
    paint(STDERR.load(Ordering::Relaxed), tone, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_then_no_color_then_clicolor_force_then_the_terminal_decide() {
        let none = |_: &str| None;
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(decide(Choice::Auto, true, none));
        assert!(!decide(Choice::Auto, false, none));
        assert!(!decide(Choice::Auto, true, vars(&[("NO_COLOR", "1")])));
        // An empty NO_COLOR is not set.
        assert!(decide(Choice::Auto, true, vars(&[("NO_COLOR", "")])));
        assert!(decide(
            Choice::Auto,
            false,
            vars(&[("CLICOLOR_FORCE", "1")])
        ));
        assert!(!decide(
            Choice::Auto,
            false,
            vars(&[("CLICOLOR_FORCE", "0")])
        ));
        assert!(!decide(
            Choice::Auto,
            true,
            vars(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")])
        ));
        assert!(decide(Choice::Always, false, vars(&[("NO_COLOR", "1")])));
        assert!(!decide(Choice::Never, true, none));
    }

    #[test]
    fn painted_text_is_the_text_between_an_escape_and_a_reset() {
        assert_eq!(paint(false, Tone::Bad, "FAILED"), "FAILED");
        assert_eq!(paint(true, Tone::Good, "ok"), "\u{1b}[32mok\u{1b}[0m");
    }
}
