//! Notifications: run events (started, succeeded, failed, rolled back, rollback failed)
//! sent to webhooks — a generic JSON webhook, Slack, Microsoft Teams.
//!
//! A notification must never slow or fail a release. Each message goes out on its own
//! task with bounded retries (transient failures only), so the engine never waits on a
//! webhook; when the command ends it waits for what is still queued, but never longer than
//! the targets' `timeout`. A target that is down costs a warning, nothing more. Webhook
//! URLs carry their token, so they are credentials: registered with the redactor, and
//! never part of an error message.

pub(crate) mod message;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::deploy_file::{NotifyEvent, NotifyKind};
use crate::run::event::{Event, Finished, Reporter};
use crate::run::plan::Plan;
use crate::secret::{Redactor, Secret};

pub(crate) use message::Message;

/// Attempts per message and target: the first and two retries.
pub(crate) const ATTEMPTS: u32 = 3;
/// Per-attempt limit and exit wait when a target sets none.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured target, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub kind: NotifyKind,
    pub url: Secret,
    pub events: Vec<NotifyEvent>,
    pub timeout: Duration,
}

impl Target {
    /// How messages name the target: its position and kind, never its URL.
    fn name(&self, index: usize) -> String {
        let kind = match self.kind {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Teams => "teams",
        };
        format!("notify target #{} ({kind})", index + 1)
    }
}

/// Sends messages to every target that wants them, in the background: one worker per
/// target, so each target gets its messages in order and a slow one delays only itself.
pub(crate) struct Notifier {
    targets: Vec<Target>,
    redactor: Redactor,
    reporter: Arc<dyn Reporter>,
    queues: Mutex<Vec<mpsc::UnboundedSender<(NotifyEvent, String)>>>,
    workers: Mutex<JoinSet<()>>,
}

/// Notifiers of this process, drained when the command ends.
static ACTIVE: Mutex<Vec<Arc<Notifier>>> = Mutex::new(Vec::new());

impl Notifier {
    /// Starts a worker per target; warnings about failed deliveries go to `reporter`.
    /// Must be called inside the tokio runtime.
    pub(crate) fn start(
        targets: Vec<Target>,
        http: reqwest::Client,
        reporter: Arc<dyn Reporter>,
        redactor: Redactor,
    ) -> Arc<Self> {
        let mut queues = Vec::new();
        let mut workers = JoinSet::new();
        for (index, target) in targets.iter().enumerate() {
            let (tx, mut rx) = mpsc::unbounded_channel::<(NotifyEvent, String)>();
            queues.push(tx);
            let (http, target, reporter, redactor) = (
                http.clone(),
                target.clone(),
                reporter.clone(),
                redactor.clone(),
            );
            workers.spawn(async move {
                while let Some((event, body)) = rx.recv().await {
                    if let Err(error) = deliver(&http, &target, body).await {
                        reporter.event(&Event::Warning {
                            message: redactor.redact(&format!(
                                "{} did not take the `{}` notification: {error}; the release is not affected",
                                target.name(index),
                                event.as_str()
                            )),
                        });
                    }
                }
            });
        }
        let notifier = Arc::new(Self {
            targets,
            redactor,
            reporter,
            queues: Mutex::new(queues),
            workers: Mutex::new(workers),
        });
        ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(notifier.clone());
        notifier
    }

    /// Queues `message` for every target that wants its event; returns at once.
    pub(crate) fn send(&self, message: &Message) {
        let queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (target, queue) in self.targets.iter().zip(queues.iter()) {
            if target.events.contains(&message.event) {
                let body = self.redactor.redact(&message.body(target.kind).to_string());
                // A closed queue means the command is ending; the message is dropped.
                let _ = queue.send((message.event, body));
            }
        }
    }

    /// The longest the command's end waits for this notifier's queued messages.
    fn wait_limit(&self) -> Duration {
        self.targets
            .iter()
            .map(|t| t.timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    async fn drain(&self) {
        // Closing the queues lets each worker end once its last message is out.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let mut workers = std::mem::take(
            &mut *self
                .workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let all = async { while workers.join_next().await.is_some() {} };
        if tokio::time::timeout(self.wait_limit(), all).await.is_err() {
            workers.abort_all();
            self.reporter.event(&Event::Warning {
                message: format!(
                    "notifications still undelivered after {} when the command ended were given up",
                    humantime::format_duration(self.wait_limit())
                ),
            });
        }
    }
}

/// Waits, bounded by each notifier's targets' `timeout`, for queued messages to go out;
/// what is still pending after that is dropped with a warning.
pub(crate) async fn drain_all() {
    let active = std::mem::take(
        &mut *ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    futures::future::join_all(active.iter().map(|n| n.drain())).await;
}

/// POSTs one body, retrying connection failures, timeouts, 429 and 5xx.
async fn deliver(http: &reqwest::Client, target: &Target, body: String) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt - 1))).await;
        }
        let sent = http
            .post(target.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(target.timeout)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let status = response.status();
                last = format!("HTTP {status}");
                if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                    return Err(last);
                }
            }
            // The error's text would carry the URL, and with it the token.
            Err(e) => last = e.without_url().to_string(),
        }
    }
    Err(format!("{last} (after {ATTEMPTS} attempts)"))
}

/// A reporter that passes every event on and turns run events into notifications.
pub(crate) struct Notifying {
    inner: Arc<dyn Reporter>,
    notifier: Arc<Notifier>,
    project: String,
    environment: String,
    run: Mutex<RunSeen>,
}

/// What the events of the current run said so far.
#[derive(Default)]
struct RunSeen {
    run_id: String,
    pipeline: Option<String>,
    failure: Option<(String, String)>,
    /// What the comparison after a rollback found, in words.
    state: Option<String>,
}

impl Notifying {
    pub(crate) fn new(
        inner: Arc<dyn Reporter>,
        notifier: Arc<Notifier>,
        project: &str,
        environment: &str,
    ) -> Self {
        Self {
            inner,
            notifier,
            project: project.to_owned(),
            environment: environment.to_owned(),
            run: Mutex::new(RunSeen::default()),
        }
    }

    fn message(&self, event: NotifyEvent, run_id: &str, seen: &RunSeen) -> Message {
        Message {
            event,
            at: Utc::now(),
            project: self.project.clone(),
            environment: self.environment.clone(),
            run_id: run_id.to_owned(),
            pipeline: seen.pipeline.clone(),
            step: seen.failure.as_ref().map(|f| f.0.clone()),
            error: seen.failure.as_ref().map(|f| f.1.clone()),
            state: seen.state.clone(),
        }
    }
}

impl Reporter for Notifying {
    fn event(&self, event: &Event) {
        self.inner.event(event);
        let mut seen = self
            .run
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let message = match event {
            Event::RunStarted {
                run_id, pipeline, ..
            } => {
                *seen = RunSeen {
                    run_id: run_id.clone(),
                    pipeline: Some(pipeline.clone()),
                    failure: None,
                    state: None,
                };
                self.message(NotifyEvent::Started, run_id, &seen)
            }
            // The first failure is the run's; a rollback that follows reports its own.
            Event::StepFailed { id, error, .. } if seen.failure.is_none() => {
                seen.failure = Some((id.clone(), error.clone()));
                self.message(NotifyEvent::Failed, &seen.run_id, &seen)
            }
            Event::Fact {
                fact:
                    fact @ (crate::fact::Fact::StateCompared { .. }
                    | crate::fact::Fact::StateNotCompared { .. }),
                ..
            } => {
                seen.state = Some(fact.describe());
                return;
            }
            Event::RunHalted { run_id, .. } => self.message(NotifyEvent::Halted, run_id, &seen),
            Event::RunFinished { run_id, status, .. } => {
                let event = match status.as_str() {
                    "succeeded" => NotifyEvent::Succeeded,
                    "rolled_back" => NotifyEvent::RolledBack,
                    _ => NotifyEvent::RollbackFailed,
                };
                self.message(event, run_id, &seen)
            }
            _ => return,
        };
        drop(seen);
        self.notifier.send(&message);
    }

    fn plan(&self, plan: &Plan) {
        self.inner.plan(plan);
    }

    fn result(&self, value: &serde_json::Value, text: &str) {
        self.inner.result(value, text);
    }

    fn sync_secrets(&self) {
        self.inner.sync_secrets();
    }

    fn finish(&self, finished: &Finished) {
        self.inner.finish(finished);
    }
}
