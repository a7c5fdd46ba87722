//! Ctrl-C and SIGTERM.
//!
//! The first signal cancels the run: the current step stops and the rollback runs. The
//! rollback is what leaves the system in a known state, so signals do not stop it lightly:
//!
//! - the first signal that arrives while a rollback is running (the second Ctrl-C of an
//!   interrupted run, or the first of a run that was already rolling back after a failed
//!   step) stops nothing; it prints how many undo actions are left and that one more signal
//!   abandons the rollback;
//! - the next signal after that warning abandons it: the undo action running is stopped
//!   (its processes are killed) and recorded in the journal as failed (it may be partly
//!   done), the actions after it are not attempted, the run ends `rollback_failed` and the
//!   command exits 3, listing what is left. `cutover recover` runs what is left later
//!   (every undo action is idempotent, so the one cut short runs again from its start).
//!
//! A signal that arrives before the warning was printed never abandons anything: pressing
//! Ctrl-C three times in a row before the rollback has started shows the warning first.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Signals received by this process, shared by every token handed out.
struct Signals {
    cancel: CancellationToken,
    count: AtomicUsize,
    arrived: Notify,
    listening: AtomicBool,
}

fn signals() -> &'static Signals {
    static SIGNALS: OnceLock<Signals> = OnceLock::new();
    SIGNALS.get_or_init(|| Signals {
        cancel: CancellationToken::new(),
        count: AtomicUsize::new(0),
        arrived: Notify::new(),
        listening: AtomicBool::new(false),
    })
}

fn record_signal() {
    let s = signals();
    s.count.fetch_add(1, Ordering::SeqCst);
    s.cancel.cancel();
    s.arrived.notify_waiters();
}

/// Returns a token cancelled on the first Ctrl-C or SIGTERM, and keeps counting the signals
/// after it for [`RollbackSignals`]. Must be called inside the Tokio runtime.
pub(crate) fn on_signals() -> CancellationToken {
    let s = signals();
    if !s.listening.swap(true, Ordering::SeqCst) {
        tokio::spawn(listen());
    }
    s.cancel.child_token()
}

async fn listen() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            loop {
                let got = tokio::select! {
                    got = int.recv() => got,
                    got = term.recv() => got,
                };
                if got.is_none() {
                    return;
                }
                record_signal();
            }
        }
    }
    while tokio::signal::ctrl_c().await.is_ok() {
        record_signal();
    }
}

/// Signals received so far by this process.
pub(crate) fn received() -> usize {
    signals().count.load(Ordering::SeqCst)
}

/// Resolves once more than `n` signals have been received.
async fn more_than(n: usize) {
    let s = signals();
    loop {
        let arrived = s.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        if received() > n {
            return;
        }
        arrived.await;
    }
}

/// Watches the signals that arrive while a rollback runs: the first one warns, the next
/// abandons (see the module documentation).
pub(crate) struct RollbackSignals {
    /// Signals that do not count against the rollback: the one that interrupted the run.
    baseline: usize,
    /// Signals received when the warning was printed.
    warned_at: Option<usize>,
}

impl RollbackSignals {
    /// Starts watching, as a rollback starts.
    pub(crate) fn start() -> Self {
        Self {
            baseline: received().min(1),
            warned_at: None,
        }
    }

    /// Resolves when the operator asks to abandon the rollback. Before that it calls `warn`
    /// once, when the first signal arrives during the rollback. Dropping the future loses
    /// nothing: signals are counted, and the warning is printed only once.
    pub(crate) async fn abandoned(&mut self, mut warn: impl FnMut()) {
        if self.warned_at.is_none() {
            more_than(self.baseline).await;
            warn();
            self.warned_at = Some(received());
        }
        more_than(self.warned_at.unwrap_or_default()).await;
    }
}
