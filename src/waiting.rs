//! A spinner on stderr saying what cutover is waiting for (a remote read that can take
//! seconds); indicatif draws it only on a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Spins with `message` and the time spent until the caller clears it.
pub(crate) fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        )
        .with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
