//! Plain lines: for logs, pipes and CI. Progress on stderr, plans and results on stdout.

use std::io::Write;
use std::sync::Mutex;

use super::paint::{self, Tone};
use super::{Event, Reporter};
use crate::run::plan::Plan;
use crate::secret::Redactor;

pub(crate) struct Plain {
    redactor: Redactor,
    quiet: bool,
    out: Mutex<()>,
}

impl Plain {
    pub(crate) fn new(redactor: Redactor, quiet: bool) -> Self {
        Self {
            redactor,
            quiet,
            out: Mutex::new(()),
        }
    }

    fn err(&self, text: &str) {
        let _guard = self.out.lock();
        let _ = writeln!(std::io::stderr(), "{}", self.redactor.redact(text));
    }
}

/// Renders a plan as text (also used by the TTY sink).
pub(crate) fn render_plan(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let db = &plan.database;
    let _ = writeln!(
        s,
        "Plan for {} / {} (pipeline `{}`, digest {})",
        plan.project, plan.environment, plan.pipeline, plan.digest
    );
    let version = db
        .current_version
        .map_or_else(|| "empty schema".to_owned(), |v| format!("at {v}"));
    let _ = writeln!(
        s,
        "  database   {} {}{} — {version}, {} applied, {} pending",
        db.kind,
        db.target,
        if db.exists { "" } else { " (will be created)" },
        db.applied,
        db.pending.len()
    );
    for p in &db.pending {
        let rehearsed = plan
            .rehearsal
            .migrations
            .iter()
            .find(|m| m.version == p.version);
        let mut facts = Vec::new();
        if let Some(m) = rehearsed {
            if let Some(ms) = m.rehearsed_ms {
                facts.push(format!("{ms} ms on the copy"));
            }
            match &m.down {
                Some(down) => facts.push(down.describe()),
                None if !p.reversible => facts.push("no down file".into()),
                None => {}
            }
            if let Some(method) = &m.rollback {
                facts.push(format!("rollback: {method}"));
            }
        } else if !p.reversible {
            facts.push("no down file".into());
        }
        let _ = writeln!(
            s,
            "             + {} {}{}",
            p.version,
            p.description,
            if facts.is_empty() {
                String::new()
            } else {
                format!(" — {}", facts.join(", "))
            }
        );
    }
    let state = &plan.platform.state;
    let mut platform = plan.platform.description.clone();
    if let Some(m) = state.maintenance {
        let _ = write!(platform, "; maintenance {}", if m { "on" } else { "off" });
    }
    for (target, n) in &state.replicas {
        let _ = write!(platform, "; {target}={n}");
    }
    let _ = writeln!(s, "  platform   {} — {platform}", plan.platform.kind);
    let _ = writeln!(s, "  backups    {}", plan.backups);
    if let Some(h) = &plan.health {
        let _ = writeln!(s, "  health     {h}");
    }
    let _ = writeln!(s, "  steps");
    for step in &plan.steps {
        if let Some(reason) = &step.skipped {
            let _ = writeln!(
                s,
                "    {:>2}. {:<16} skipped: {reason}",
                step.index + 1,
                step.id
            );
        } else {
            let _ = writeln!(
                s,
                "    {:>2}. {:<16} {}",
                step.index + 1,
                step.id,
                step.summary
            );
            if let Some(undo) = &step.undo {
                let _ = writeln!(s, "        {:<16} undo: {undo}", "");
            }
        }
    }
    if !db.pending.is_empty() {
        let _ = writeln!(s, "  rehearsal  {}", plan.rehearsal.summary);
        for left in &plan.rehearsal.not_rehearsed {
            let _ = writeln!(s, "             not rehearsed: {left}");
        }
        if let Some(w) = &plan.rehearsal.window {
            // Steps timed by the same source name it once, after the last of them.
            let mut parts: Vec<String> = Vec::new();
            for (i, p) in w.steps.iter().enumerate() {
                let mut part = format!("{} {}", p.id, seconds(p.ms));
                if w.steps.get(i + 1).is_none_or(|next| next.from != p.from) {
                    part.push_str(&format!(" ({})", p.from));
                }
                parts.push(part);
            }
            if parts.is_empty() {
                let _ = writeln!(
                    s,
                    "  window     no prediction yet: no run or rehearsal has timed {}",
                    w.unknown.join(", ")
                );
            } else {
                let _ = writeln!(
                    s,
                    "  window     predicted {}{}: {}",
                    seconds(w.total_ms),
                    if w.unknown.is_empty() {
                        String::new()
                    } else {
                        format!(" plus {} (no figures yet)", w.unknown.join(", "))
                    },
                    parts.join(", ")
                );
            }
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(s, "  {}: {w}", paint::out(Tone::Warn, "warning"));
    }
    render_preview(plan, &mut s);
    s
}

/// The SQL preview of `plan --sql`, when the plan carries one. SQL comments head each part
/// and the texts are printed as they are, so the section reads as the script it is.
fn render_preview(plan: &Plan, s: &mut String) {
    use std::fmt::Write as _;
    fn text(s: &mut String, body: &str) {
        s.push_str(body);
        if !body.ends_with('\n') {
            s.push('\n');
        }
    }
    if plan.steps.iter().all(|step| step.preview.is_empty()) {
        return;
    }
    let _ = writeln!(s, "\nSQL preview: what the steps run, in order");
    for step in plan.steps.iter().filter(|step| !step.preview.is_empty()) {
        let p = &step.preview;
        let head = format!("-- step {} `{}` ({})", step.index + 1, step.id, step.uses);
        if p.migrations {
            let pending: Vec<_> = plan
                .database
                .pending
                .iter()
                .filter(|m| m.preview.sql.is_some())
                .collect();
            if pending.is_empty() {
                let _ = writeln!(s, "{head}: no pending migration");
            }
            for m in pending {
                let _ = writeln!(
                    s,
                    "{head}: migration {} {} — {} ({})",
                    m.version,
                    m.description,
                    m.preview.file.as_deref().unwrap_or_default(),
                    if m.preview.no_transaction == Some(true) {
                        "outside a transaction"
                    } else {
                        "in one transaction with its _sqlx_migrations record"
                    }
                );
                text(s, m.preview.sql.as_deref().unwrap_or_default());
            }
        }
        if let Some(sql) = &p.sql {
            let _ = writeln!(s, "{head}");
            text(s, sql);
        }
        if let Some(undo) = &p.undo_sql {
            let _ = writeln!(
                s,
                "{head}: its undo, run on rollback only if the step changed rows"
            );
            text(s, undo);
        }
        if let Some(command) = &p.command {
            let _ = writeln!(
                s,
                "{head}: command line, run in {}",
                p.workdir.as_deref().unwrap_or_default()
            );
            text(s, command);
        }
    }
    for step in plan.steps.iter().filter(|step| !step.reverts.is_empty()) {
        let downs: Vec<_> = plan
            .database
            .pending
            .iter()
            .rev()
            .filter(|m| step.reverts.contains(&m.version) && m.preview.down_sql.is_some())
            .collect();
        if downs.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\nRollback SQL: if a later step fails, the undo of step {} `{}` runs these down files, newest first",
            step.index + 1,
            step.id
        );
        for m in downs {
            let _ = writeln!(
                s,
                "-- migration {} {} (down) — {}",
                m.version,
                m.description,
                m.preview.down_file.as_deref().unwrap_or_default()
            );
            text(s, m.preview.down_sql.as_deref().unwrap_or_default());
        }
    }
}

/// One line per event, for plain and TTY sinks alike; both write events to stderr.
pub(crate) fn render_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            run_id,
            environment,
            pipeline,
        } => {
            format!("==> run {run_id}: pipeline `{pipeline}` on `{environment}`")
        }
        Event::StepStarted {
            index,
            total,
            id,
            summary,
            ..
        } => {
            format!(
                "[{}/{total}] {}: {summary}",
                index + 1,
                paint::err(Tone::Strong, id)
            )
        }
        Event::StepSkipped { id, reason } => format!("      {id}: skipped ({reason})"),
        Event::StepProgress { id, bytes } => {
            format!("      {id}: {} streamed", crate::units::human_bytes(*bytes))
        }
        Event::StepNote { id: _, message } => format!("      {message}"),
        Event::Fact { id, fact } => match fact {
            // The step's own result line says these.
            crate::fact::Fact::RowsChanged { .. } | crate::fact::Fact::BackupTaken { .. } => {
                return None;
            }
            _ if id.is_some() => format!("      {}", fact.describe()),
            _ => format!("==> {}", fact.describe()),
        },
        Event::CheckResult {
            check,
            issues,
            max_issues,
            columns,
            rows,
            ..
        } => {
            let verdict = if issues > max_issues {
                paint::err(Tone::Bad, "FAIL")
            } else {
                paint::err(Tone::Good, "ok")
            };
            let mut text = format!("      {check}: {issues} issue(s) [{verdict}]");
            text.push_str(&sample_rows(columns, rows, *issues, "        "));
            text
        }
        Event::StepRetry {
            id,
            attempt,
            error,
            wait_ms,
        } => {
            format!("      {id}: transient failure ({error}); retry {attempt} in {wait_ms} ms")
        }
        Event::StepFinished {
            id,
            elapsed_ms,
            message,
        } => {
            format!(
                "      {id}: {} in {} — {message}",
                paint::err(Tone::Good, "ok"),
                seconds(*elapsed_ms)
            )
        }
        Event::StepFailed {
            id,
            elapsed_ms,
            error,
        } => {
            format!(
                "      {id}: {} after {} — {error}",
                paint::err(Tone::Bad, "FAILED"),
                seconds(*elapsed_ms)
            )
        }
        Event::RollbackStarted { reason, actions } => {
            format!(
                "==> {}",
                paint::err(Tone::Warn, &rollback_title(*actions, reason))
            )
        }
        Event::CompensationStarted { .. } | Event::TargetStarted { .. } => return None,
        Event::CompensationFinished { id, action, error } => match error {
            None => format!(
                "      undo {id}: {action} — {}",
                paint::err(Tone::Good, "ok")
            ),
            Some(e) => format!(
                "      undo {id}: {action} — {}: {e}",
                paint::err(Tone::Bad, "FAILED")
            ),
        },
        Event::RunFinished {
            run_id,
            status,
            elapsed_ms,
        } => {
            let tone = match status.as_str() {
                "succeeded" => Tone::Good,
                "rolled_back" | "halted" => Tone::Warn,
                _ => Tone::Bad,
            };
            format!(
                "==> run {run_id} {} in {}",
                paint::err(tone, status),
                seconds(*elapsed_ms)
            )
        }
        Event::Decision {
            id,
            choice,
            asked,
            user,
        } => {
            if *asked {
                format!("==> {id}: {user} chose {choice}")
            } else {
                format!("==> {id}: on_failure leads to {choice}")
            }
        }
        Event::RunHalted {
            run_id,
            step,
            reason,
        } => format!("==> run {run_id} HALTED; resumes at step `{step}`: {reason}"),
        Event::TargetFinished {
            target,
            status,
            failed_step,
            error,
            elapsed_ms,
            done,
            failed,
            total,
            eta_ms,
            ..
        } => {
            let mut line = format!(
                "[{done}/{total}] {target}: {status} in {}",
                seconds(*elapsed_ms)
            );
            if let Some(error) = error {
                match failed_step {
                    Some(step) => line.push_str(&format!(" — step `{step}`: {error}")),
                    None => line.push_str(&format!(" — {error}")),
                }
            }
            line.push_str(&format!(" ({failed} failed"));
            if *eta_ms > 0 {
                line.push_str(&format!(", about {} left", seconds(*eta_ms)));
            }
            line.push(')');
            line
        }
        Event::Warning { message } => {
            format!("{}: {message}", paint::err(Tone::Warn, "warning"))
        }
        Event::OutsideWindow(outside) => {
            let mut line = format!("==> outside the window {}: ", outside.window);
            if outside.forced {
                line.push_str(&format!("forced by {}", outside.user));
            } else {
                line.push_str(&format!(
                    "going back or reading only, run by {} (never held by the window)",
                    outside.user
                ));
            }
            if let Some(reason) = &outside.reason {
                line.push_str(&format!(": {reason}"));
            }
            line
        }
    })
}

fn seconds(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// A check's sample rows, one line each after a line of column names, each line starting
/// with a newline and `indent`; "… and N more" when `issues` counts more rows than shown.
/// Empty when there are no rows (a count).
pub(crate) fn sample_rows(
    columns: &[String],
    rows: &[Vec<String>],
    issues: i64,
    indent: &str,
) -> String {
    let mut text = String::new();
    if rows.is_empty() {
        return text;
    }
    text.push_str(&format!("\n{indent}{}", columns.join(" | ")));
    for row in rows {
        text.push_str(&format!("\n{indent}{}", row.join(" | ")));
    }
    if issues > rows.len() as i64 {
        text.push_str(&format!(
            "\n{indent}… and {} more",
            issues - rows.len() as i64
        ));
    }
    text
}

impl Reporter for Plain {
    fn event(&self, event: &Event) {
        if self.quiet && !event.essential() {
            return;
        }
        if let Some(line) = render_event(event) {
            self.err(&line);
        }
    }

    fn plan(&self, plan: &Plan) {
        let _guard = self.out.lock();
        let _ = write!(
            std::io::stdout(),
            "{}",
            self.redactor.redact(&render_plan(plan))
        );
    }

    fn result(&self, _value: &serde_json::Value, text: &str) {
        let _guard = self.out.lock();
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            self.redactor.redact(text.trim_end())
        );
    }
}

/// What a rollback's start says: its line, and a CI log's group title.
pub(crate) fn rollback_title(actions: usize, reason: &str) -> String {
    format!("rolling back ({actions} action(s)): {reason}")
}
