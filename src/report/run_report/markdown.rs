//! The report as Markdown: the GitHub step summary, the Azure DevOps uploaded summary.

use std::fmt::Write as _;

use serde_json::Value;

/// GitHub refuses step summaries over 1 MiB; stay well under it.
const MARKDOWN_LIMIT: usize = 900 * 1024;

/// `850 ms`, `12.3s`.
pub(crate) fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn human_size(bytes: u64) -> String {
    crate::units::human_bytes(bytes)
}

/// A Markdown table cell: one line, no column breaks.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace(['\n', '\r'], "<br>")
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn status_icon(status: &str) -> &'static str {
    match status {
        "succeeded" => "✅",
        "failed" | "rollback_failed" | "incomplete" => "❌",
        "rolled_back" | "interrupted" => "↩️",
        "skipped" | "not_run" => "⏭️",
        "running" => "⏳",
        _ => "⚠️",
    }
}

fn status_badge(status: &str) -> String {
    format!("{} {}", status_icon(status), status.replace('_', " "))
}

/// The document as Markdown: a heading with the result, the steps, migrations, backup,
/// validations, rollback and warnings.
pub(crate) fn markdown(doc: &Value) -> String {
    let mut md = String::new();
    let status = str_of(&doc["status"]);
    let mut scope = vec![str_of(&doc["project"]), str_of(&doc["environment"])];
    scope.retain(|s| !s.is_empty());
    let _ = writeln!(
        md,
        "### {} `cutover {}`{}: {}",
        status_icon(status),
        str_of(&doc["command"]),
        if scope.is_empty() {
            String::new()
        } else {
            format!(" — {}", scope.join(" / "))
        },
        status.replace('_', " ")
    );
    md.push('\n');
    md.push_str("| | |\n|---|---|\n");
    let _ = writeln!(
        md,
        "| Result | **{}** (exit {}) |",
        status, doc["exit_code"]
    );
    if let Some(run) = doc["run_id"].as_str() {
        let _ = writeln!(md, "| Run | `{run}` |");
    }
    if let Some(p) = doc["pipeline"].as_str() {
        let _ = writeln!(md, "| Pipeline | `{}` |", cell(p));
    }
    if let Some(ms) = doc["run_duration_ms"]
        .as_u64()
        .or_else(|| doc["duration_ms"].as_u64())
    {
        let _ = writeln!(md, "| Duration | {} |", duration_text(ms));
    }
    let version = |v: &Value| {
        v.as_i64()
            .map_or_else(|| "empty schema".to_owned(), |v| v.to_string())
    };
    if doc["run_id"].is_string() {
        let sv = &doc["schema_version"];
        let _ = writeln!(
            md,
            "| Schema version | {} → {} |",
            version(&sv["before"]),
            version(&sv["after"])
        );
    }
    if let Some(o) = doc["outside_window"].as_object() {
        let mut line = format!(
            "outside `{}`, {} by {}",
            cell(str_of(&o["window"])),
            if o["forced"] == true {
                "forced"
            } else {
                "going back or reading"
            },
            cell(str_of(&o["user"]))
        );
        if let Some(reason) = o["reason"].as_str() {
            let _ = write!(line, ": {}", cell(reason));
        }
        let _ = writeln!(md, "| Window | {line} |");
    }
    if let Some(by) = doc["run_by"].as_str().filter(|b| !b.is_empty()) {
        let _ = writeln!(md, "| Run by | {} |", cell(by));
    }
    if let Some(confirmed) = doc["confirmed"].as_str() {
        let _ = writeln!(md, "| Confirmed | {} |", cell(confirmed));
    }
    if let Some(code) = doc["code"].as_object() {
        let mut line = format!("`{}`", str_of(&code["version"]));
        if let Some(previous) = code["previous"].as_str() {
            let _ = write!(line, " (was `{}`)", cell(previous));
        }
        let _ = writeln!(md, "| Code | {line} |");
    }
    if let Some(b) = doc["backup"].as_object() {
        let mut line = format!("`{}`", str_of(&b["id"]));
        let mut details = Vec::new();
        if let Some(size) = b["size"].as_u64() {
            details.push(human_size(size));
        }
        if let Some(sha) = b["sha256"].as_str() {
            details.push(format!("sha256 `{sha}`"));
        }
        if !details.is_empty() {
            let _ = write!(line, " ({})", details.join(", "));
        }
        let _ = writeln!(md, "| Backup | {line} |");
    }
    if let Some(pruned) = doc["backups_pruned"].as_array()
        && !pruned.is_empty()
    {
        let _ = writeln!(
            md,
            "| Pruned | {} old backup(s): {} |",
            pruned.len(),
            pruned
                .iter()
                .map(|id| format!("`{}`", str_of(id)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(j) = doc["journal"].as_str() {
        let _ = writeln!(md, "| Journal | `{}` |", cell(j));
    }
    if let Some(e) = doc["error"].as_object() {
        let message = str_of(&e["message"]);
        let text = match e["step"].as_str() {
            Some(step) => format!("step `{step}` failed: {message}"),
            None => message.to_owned(),
        };
        let _ = writeln!(md, "| Error | {} |", cell(&text));
    }

    if let Some(steps) = doc["steps"].as_array().filter(|s| !s.is_empty()) {
        md.push_str("\n#### Steps\n\n| # | Step | Uses | Result | Duration | Details |\n|--:|---|---|---|--:|---|\n");
        for step in steps {
            let details = step["error"]
                .as_str()
                .or_else(|| step["result"].as_str())
                .or_else(|| step["skipped_reason"].as_str())
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                step["index"]
                    .as_u64()
                    .map_or(String::new(), |i| (i + 1).to_string()),
                cell(str_of(&step["id"])),
                cell(str_of(&step["uses"])),
                status_badge(str_of(&step["status"])),
                step["duration_ms"]
                    .as_u64()
                    .map_or(String::new(), duration_text),
                cell(details),
            );
        }
    }

    let migrations = |key: &str| {
        doc["migrations"][key]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let applied = migrations("applied");
    let reverted = migrations("reverted");
    if !applied.is_empty() {
        md.push_str("\n#### Migrations applied\n\n");
        for m in &applied {
            let _ = writeln!(
                md,
                "- `{}` {}{}",
                m["version"],
                cell(str_of(&m["description"])),
                m["duration_ms"]
                    .as_u64()
                    .map_or(String::new(), |ms| format!(" ({})", duration_text(ms)))
            );
        }
    }
    if !reverted.is_empty() {
        md.push_str("\n#### Migrations reverted\n\n");
        for m in &reverted {
            let _ = writeln!(
                md,
                "- `{}` {}",
                m["version"],
                cell(str_of(&m["description"]))
            );
        }
    }

    if let Some(checks) = doc["validations"].as_array().filter(|c| !c.is_empty()) {
        md.push_str(
            "\n#### Validation\n\n| Check | Issues | Allowed | Result |\n|---|--:|--:|---|\n",
        );
        for c in checks {
            let passed = c["passed"].as_bool().unwrap_or(false);
            // The same checks on the rehearsal's copy say where they ran.
            let check = match str_of(&c["step"]) {
                "rehearsal" => format!("{} (on the rehearsal's copy)", str_of(&c["check"])),
                _ => str_of(&c["check"]).to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(&check),
                c["issues"],
                c["max_issues"],
                if passed { "✅ passed" } else { "❌ failed" }
            );
        }
    }

    if let Some(rb) = doc["rollback"].as_object() {
        let _ = writeln!(
            md,
            "\n#### Rollback\n\n{}\n",
            cell(&format!("Reason: {}", str_of(&rb["reason"])))
        );
        let actions = rb["actions"].as_array().cloned().unwrap_or_default();
        if actions.is_empty() {
            md.push_str("Nothing needed undoing.\n");
        } else {
            md.push_str("| Step | Undo action | Result |\n|---|---|---|\n");
            for a in &actions {
                let result = match a["error"].as_str() {
                    Some(e) => format!("❌ failed: {e}"),
                    None => "✅ done".to_owned(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    cell(str_of(&a["step"])),
                    cell(str_of(&a["action"])),
                    cell(&result)
                );
            }
        }
        if let Some(left) = rb["left"].as_array().filter(|l| !l.is_empty()) {
            md.push_str("\n**Still to undo — a human is needed:**\n\n");
            for l in left {
                let _ = writeln!(md, "- {}", cell(str_of(l)));
            }
        }
    }

    if let Some(warnings) = doc["warnings"].as_array().filter(|w| !w.is_empty()) {
        md.push_str("\n#### Warnings\n\n");
        for w in warnings {
            let _ = writeln!(md, "- {}", cell(str_of(w)));
        }
    }
    if md.len() > MARKDOWN_LIMIT {
        let mut cut = MARKDOWN_LIMIT;
        while !md.is_char_boundary(cut) {
            cut -= 1;
        }
        md.truncate(cut);
        md.push_str("\n\n… (cut short: the full report is in `--report`)\n");
    }
    md.push('\n');
    md
}
