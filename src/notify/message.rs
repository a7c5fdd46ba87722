//! What a notification says, and how each target kind wants it written: cutover's own JSON
//! for a generic webhook, a Slack incoming-webhook message, a Microsoft Teams Adaptive Card.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::config::deploy_file::{NotifyEvent, NotifyKind};

/// One run event, as every target hears about it. Texts are already masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub event: NotifyEvent,
    pub at: DateTime<Utc>,
    pub project: String,
    pub environment: String,
    pub run_id: String,
    pub pipeline: Option<String>,
    /// The step that failed.
    pub step: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// What the comparison with the state before the run found, after a rollback.
    pub state: Option<String>,
}

impl Message {
    /// One line for people.
    pub(crate) fn title(&self) -> String {
        let what = match self.event {
            NotifyEvent::Started => "started",
            NotifyEvent::Succeeded => "succeeded",
            NotifyEvent::Failed => "failed",
            NotifyEvent::RolledBack => "failed and was rolled back",
            NotifyEvent::RollbackFailed => "failed and its ROLLBACK IS INCOMPLETE",
            NotifyEvent::Halted => "failed and HALTED for a human",
        };
        format!("{}: release to {} {what}", self.project, self.environment)
    }

    /// The details under the title: where it failed, what state is left, what next.
    pub(crate) fn details(&self) -> String {
        let mut lines = vec![format!("run {}", self.run_id)];
        if let Some(pipeline) = &self.pipeline {
            lines[0].push_str(&format!(", pipeline {pipeline}"));
        }
        if let Some(step) = &self.step {
            lines.push(format!(
                "step {step}: {}",
                self.error.as_deref().unwrap_or("failed")
            ));
        }
        match self.event {
            NotifyEvent::RolledBack => lines.push(format!(
                "state: {}",
                self.state
                    .as_deref()
                    .unwrap_or("not compared with before the run")
            )),
            NotifyEvent::RollbackFailed => {
                if let Some(state) = &self.state {
                    lines.push(format!("state: {state}"));
                }
                lines.push(format!(
                    "a human is needed: see runbooks/rollback-by-hand.md, then `cutover recover -e {}`",
                    self.environment
                ));
            }
            NotifyEvent::Halted => lines.push(format!(
                "next: `cutover resume -e {env}` or `cutover rollback -e {env}`",
                env = self.environment
            )),
            _ => {}
        }
        lines.join("\n")
    }

    /// The request body for a target of `kind`.
    pub(crate) fn body(&self, kind: NotifyKind) -> Value {
        match kind {
            NotifyKind::Webhook => self.webhook(),
            NotifyKind::Slack => self.slack(),
            NotifyKind::Teams => self.teams(),
        }
    }

    fn webhook(&self) -> Value {
        json!({
            "format": 1,
            "event": self.event.as_str(),
            "at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "project": self.project,
            "environment": self.environment,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "step": self.step,
            "error": self.error,
            "text": format!("{}\n{}", self.title(), self.details()),
        })
    }

    /// Slack: `text` is the notification and fallback; the block shows it formatted.
    /// `&`, `<` and `>` are escaped as Slack asks, so an error text cannot form a link or
    /// a mention.
    fn slack(&self) -> Value {
        let title = slack_escape(&self.title());
        let details = slack_escape(&self.details());
        json!({
            "text": format!("{} {title}", self.emoji()),
            "blocks": [{
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("{} *{title}*\n{details}", self.emoji())},
            }],
        })
    }

    /// Teams: one Adaptive Card in a `message`, the format both incoming webhooks and
    /// Workflows webhooks accept.
    fn teams(&self) -> Value {
        let color = match self.event {
            NotifyEvent::Started => "Default",
            NotifyEvent::Succeeded | NotifyEvent::RolledBack => "Good",
            NotifyEvent::Failed | NotifyEvent::Halted => "Warning",
            NotifyEvent::RollbackFailed => "Attention",
        };
        let mut facts = vec![
            json!({"title": "Environment", "value": self.environment}),
            json!({"title": "Run", "value": self.run_id}),
        ];
        if let Some(pipeline) = &self.pipeline {
            facts.push(json!({"title": "Pipeline", "value": pipeline}));
        }
        if let Some(step) = &self.step {
            facts.push(json!({"title": "Failed step", "value": step}));
        }
        if let Some(error) = &self.error {
            facts.push(json!({"title": "Error", "value": error}));
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": self.title(), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                        {"type": "FactSet", "facts": facts},
                        {"type": "TextBlock", "text": self.details(), "wrap": true},
                    ],
                },
            }],
        })
    }

    fn emoji(&self) -> &'static str {
        match self.event {
            NotifyEvent::Started => ":rocket:",
            NotifyEvent::Succeeded => ":white_check_mark:",
            NotifyEvent::Failed => ":x:",
            NotifyEvent::RolledBack => ":leftwards_arrow_with_hook:",
            NotifyEvent::RollbackFailed => ":rotating_light:",
            NotifyEvent::Halted => ":octagonal_sign:",
        }
    }
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_cannot_mention_or_link() {
        assert_eq!(slack_escape("<!channel> a&b"), "&lt;!channel&gt; a&amp;b");
    }
}
