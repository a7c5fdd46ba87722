//! A terminal: a spinner per running step with its elapsed time (and bytes for backups),
//! finished steps kept as lines above it.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::plain::{render_event, render_plan};
use super::{Event, Reporter};
use crate::run::plan::Plan;
use crate::secret::Redactor;

pub(crate) struct Tty {
    redactor: Redactor,
    multi: MultiProgress,
    current: Mutex<Option<ProgressBar>>,
    /// `deploy --fleet`: one bar for all targets.
    fleet: Mutex<Option<ProgressBar>>,
    running: std::sync::atomic::AtomicUsize,
}

impl Tty {
    pub(crate) fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            multi: MultiProgress::new(),
            current: Mutex::new(None),
            fleet: Mutex::new(None),
            running: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn println(&self, text: &str) {
        let text = self.redactor.redact(text);
        let _ = self.multi.println(text);
    }

    fn finish_current(&self) {
        if let Some(bar) = self.current.lock().expect("tty lock").take() {
            bar.finish_and_clear();
        }
    }
}

impl Reporter for Tty {
    fn event(&self, event: &Event) {
        match event {
            Event::StepStarted { .. } => {
                self.finish_current();
                if let Some(line) = render_event(event) {
                    self.println(&line);
                }
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("      {spinner} {elapsed} {msg}")
                        .expect("valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                *self.current.lock().expect("tty lock") = Some(bar);
            }
            Event::StepProgress { bytes, .. } => {
                if let Some(bar) = self.current.lock().expect("tty lock").as_ref() {
                    bar.set_message(format!("{} streamed", crate::units::human_bytes(*bytes)));
                }
            }
            Event::StepFinished { .. } | Event::StepFailed { .. } => {
                self.finish_current();
                if let Some(bar) = self.fleet.lock().expect("tty lock").take() {
                    bar.finish_and_clear();
                }
                if let Some(line) = render_event(event) {
                    self.println(&line);
                }
            }
            Event::TargetStarted { total, .. } => {
                self.running
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut fleet = self.fleet.lock().expect("tty lock");
                fleet.get_or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new(*total as u64));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "      targets [{bar:30}] {pos}/{len} {msg} (ETA {eta})",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar
                });
            }
            Event::TargetFinished {
                done,
                failed,
                total,
                error,
                ..
            } => {
                let running = self
                    .running
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
                    .saturating_sub(1);
                // Only the failures get a line of their own; the bar counts the rest.
                if error.is_some()
                    && let Some(line) = render_event(event)
                {
                    self.println(&line);
                }
                let mut fleet = self.fleet.lock().expect("tty lock");
                if let Some(bar) = fleet.as_ref() {
                    bar.set_position(*done as u64);
                    bar.set_message(format!("{failed} failed, {running} running"));
                    if done == total {
                        bar.finish_and_clear();
                        *fleet = None;
                    }
                }
            }
            other => {
                if let Some(line) = render_event(other) {
                    self.println(&line);
                }
            }
        }
    }

    fn plan(&self, plan: &Plan) {
        // Not `print!`: a closed pipe (`| head`) must not panic.
        let _ = write!(
            std::io::stdout(),
            "{}",
            self.redactor.redact(&render_plan(plan))
        );
    }

    fn result(&self, _value: &serde_json::Value, text: &str) {
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            self.redactor.redact(text.trim_end())
        );
    }
}
