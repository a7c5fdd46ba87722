//! The runbooks cannot rot. Every `cutover ...` line of a ```sh block in `runbooks/*.md` is
//! run, in the order the runbook gives, against a real project put in the situation the
//! runbook is for (a crashed deploy, a stuck lock, an incomplete rollback, ...), with its
//! placeholders (`<ENV>`, `<RUN_ID>`, `<BACKUP_ID>`, `<VERSION>`, ...) filled in from that
//! situation, and must end with the exit code the runbook promises. A command the binary
//! does not recognise fails the test, and so does a command line added to or removed from a
//! runbook without its test following.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use support::{Project, ROOT, Run, assert_same_db, exec_sql, replace_once};

/// Every runbook, each exercised by the test of the same name below.
const RUNBOOKS: &[&str] = &[
    "deploy.md",
    "halted-run.md",
    "recover-after-crash.md",
    "restore-backup.md",
    "rollback-by-hand.md",
    "stuck-lock.md",
];

/// The newest migration shipped in `migrations/`.
const LATEST: &str = "20240301100100";

/// A release that breaks validation: two users whose emails clash case-insensitively.
const CLASH: &str = "20240401090000_import_legacy_users";
const CLASH_UP: &str = "INSERT INTO users (email, display_name) VALUES ('ann@example.com', 'Ann'), ('Ann@Example.com', 'Ann (legacy)');\n";
const CLASH_DOWN: &str =
    "DELETE FROM users WHERE email IN ('ann@example.com', 'Ann@Example.com');\n";

/// A release that passes validation.
const NOTES: &str = "20240501090000_create_recipe_notes";
const NOTES_UP: &str = "CREATE TABLE recipe_notes (id INTEGER PRIMARY KEY, recipe_id INTEGER NOT NULL, note TEXT NOT NULL);\n";
const NOTES_DOWN: &str = "DROP TABLE recipe_notes;\n";

// ---- Reading runbooks ----

/// One command line of a ```sh block.
#[derive(Debug, Clone)]
struct Line {
    text: String,
    /// 1-based line in the runbook.
    number: usize,
}

impl Line {
    fn is_cutover(&self) -> bool {
        self.text.starts_with("cutover ")
    }
}

/// The command lines of every ```sh block of a Markdown file: comments and blank lines
/// dropped, `\` continuations joined.
fn sh_lines(markdown: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending: Option<Line> = None;
    for (i, raw) in markdown.lines().enumerate() {
        let line = raw.trim();
        if !in_sh {
            in_sh = line == "```sh";
            continue;
        }
        if line.starts_with("```") {
            in_sh = false;
            continue;
        }
        if pending.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let mut current = pending.take().unwrap_or(Line {
            text: String::new(),
            number: i + 1,
        });
        if let Some(head) = line.strip_suffix('\\') {
            current.text.push_str(head.trim_end());
            current.text.push(' ');
            pending = Some(current);
        } else {
            current.text.push_str(line);
            out.push(current);
        }
    }
    assert!(!in_sh, "unclosed ```sh block");
    out
}

fn runbook_text(name: &str) -> String {
    let path = Path::new(ROOT).join("runbooks").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- Running a runbook ----

/// Walks a runbook's command lines in order. `expect` runs the next `cutover` line (which
/// must read as the test says), `shell` runs a named non-`cutover` line, `finish` checks
/// that no `cutover` line was left unrun.
struct Runbook<'p> {
    name: &'static str,
    lines: Vec<Line>,
    next: usize,
    project: &'p Project,
    vars: BTreeMap<String, String>,
}

impl<'p> Runbook<'p> {
    fn open(name: &'static str, project: &'p Project) -> Self {
        let lines = sh_lines(&runbook_text(name));
        assert!(
            lines.iter().any(Line::is_cutover),
            "runbooks/{name} has no `cutover` command in a ```sh block"
        );
        Self {
            name,
            lines,
            next: 0,
            project,
            vars: BTreeMap::from([("ENV".to_owned(), "local".to_owned())]),
        }
    }

    /// Gives a placeholder `<KEY>` its value in this scenario.
    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.to_owned(), value.into());
    }

    fn fill(&self, line: &Line) -> String {
        let mut text = line.text.clone();
        for (key, value) in &self.vars {
            text = text.replace(&format!("<{key}>"), value);
        }
        if let Some(start) = text.find('<')
            && let Some(len) = text[start..].find('>')
            && text[start + 1..start + len]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_')
        {
            panic!(
                "runbooks/{}:{}: placeholder {} has no value in this test's scenario: {}",
                self.name,
                line.number,
                &text[start..=start + len],
                line.text
            );
        }
        text
    }

    /// Runs the runbook's next `cutover` line, which must be `command` (placeholders
    /// unfilled), and checks its exit code.
    #[track_caller]
    fn expect(&mut self, command: &str, code: i32) -> Run {
        let line = loop {
            let Some(line) = self.lines.get(self.next).cloned() else {
                panic!(
                    "runbooks/{}: the test expects `{command}` next, but the runbook has no more `cutover` lines",
                    self.name
                );
            };
            self.next += 1;
            if line.is_cutover() {
                break line;
            }
        };
        assert_eq!(
            line.text, command,
            "runbooks/{}:{}: the runbook's next command differs from what its test runs; update the test's scenario with the runbook",
            self.name, line.number
        );
        let filled = self.fill(&line);
        assert!(
            !filled.contains(['"', '\'', '$', '|', '>', ';', '&']),
            "runbooks/{}:{}: keep `cutover` lines to plain words so they can be run as written: {filled}",
            self.name,
            line.number
        );
        let args: Vec<&str> = filled.split_whitespace().skip(1).collect();
        let run = self.project.run(&args);
        let stderr = run.stderr();
        for clap_error in [
            "unrecognized subcommand",
            "unexpected argument",
            "invalid value",
            "required arguments were not provided",
            "Usage: cutover",
        ] {
            assert!(
                !stderr.contains(clap_error),
                "runbooks/{}:{}: `{filled}` is not a command line cutover accepts:\n{stderr}",
                self.name,
                line.number
            );
        }
        assert_eq!(
            run.code(),
            code,
            "runbooks/{}:{}: `{filled}` exited {}, the runbook says {code}\n--- stdout\n{}\n--- stderr\n{stderr}",
            self.name,
            line.number,
            run.code(),
            run.stdout()
        );
        run
    }

    /// Runs the runbook's `command` (a non-`cutover` line, placeholders unfilled) with `sh`
    /// in the project folder. It must come before the next `cutover` line.
    #[track_caller]
    fn shell(&mut self, command: &str) {
        let line = loop {
            let Some(line) = self.lines.get(self.next).cloned() else {
                panic!("runbooks/{}: no line `{command}` left", self.name);
            };
            self.next += 1;
            assert!(
                !line.is_cutover(),
                "runbooks/{}:{}: expected the line `{command}` before `{}`",
                self.name,
                line.number,
                line.text
            );
            if line.text == command {
                break line;
            }
        };
        let filled = self.fill(&line);
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&filled)
            .current_dir(self.project.path())
            .output()
            .expect("sh runs");
        assert!(
            output.status.success(),
            "runbooks/{}:{}: `{filled}` failed: {}",
            self.name,
            line.number,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[track_caller]
    fn finish(self) {
        let left: Vec<String> = self.lines[self.next..]
            .iter()
            .filter(|l| l.is_cutover())
            .map(|l| format!("  line {}: {}", l.number, l.text))
            .collect();
        assert!(
            left.is_empty(),
            "runbooks/{}: commands the test never ran; give them a place in its scenario:\n{}",
            self.name,
            left.join("\n")
        );
    }
}

// ---- Scenario helpers ----

/// The `result` of a command run with `--output json`.
fn result(p: &Project, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let run = p.run(&args);
    run.success();
    let last = run.stdout().lines().last().unwrap_or_default().to_owned();
    let line: Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    line["result"].clone()
}

fn latest_run_id(p: &Project) -> String {
    result(p, &["history", "--limit", "1"])["runs"][0]["run_id"]
        .as_str()
        .expect("a run")
        .to_owned()
}

/// Backup ids, newest first.
fn backups(p: &Project) -> Vec<String> {
    result(p, &["backup", "list"])["backups"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

fn newest_backup(p: &Project, prefix: &str) -> String {
    backups(p)
        .into_iter()
        .find(|id| id.starts_with(prefix))
        .unwrap_or_else(|| panic!("no backup named {prefix}*"))
}

fn schema_version(p: &Project) -> Option<i64> {
    result(p, &["migrate", "status"])["version"].as_i64()
}

/// Makes `local` a production-like environment: `confirm: typed`.
fn typed_confirmation(p: &Project) {
    let config = p.read("deploy.yaml");
    p.write_config(&replace_once(
        &config,
        "  local:\n",
        "  local:\n    confirm: typed\n",
    ));
}

/// Backup ids carry the time to the second: two runs of the same kind in one second
/// would pick the same id, so wait for the next second.
fn next_second() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::thread::sleep(std::time::Duration::from_nanos(
        u64::from(1_000_000_000 - nanos) + 20_000_000,
    ));
}

/// Runs a deploy that the test crashes (like kill -9) right after its Nth journal record.
fn crashed_deploy(p: &Project, after_record: u32) -> Vec<Value> {
    let output = p
        .cmd()
        .args(["deploy", "--confirm", "local"])
        .env("CUTOVER_TEST_CRASH_AFTER_RECORD", after_record.to_string())
        .output()
        .expect("cutover runs");
    assert!(
        !output.status.success() && output.status.code().is_none(),
        "the deploy should have been killed: {output:?}"
    );
    p.journals().pop().expect("the crashed run's journal")
}

fn platform_is(p: &Project, maintenance: bool, jobs: u32) {
    assert_eq!(
        p.platform(),
        format!("maintenance={maintenance}\njobs={jobs}\n")
    );
}

// ---- The runbooks ----

#[test]
fn every_runbook_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    found.sort();
    assert_eq!(
        found, RUNBOOKS,
        "add a scenario test to tests/runbooks.rs for every runbook"
    );
}

#[test]
fn runbooks_named_by_the_product_exist() {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("runbooks/") {
                    let name: String = text[at + "runbooks/".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                        .collect();
                    let name = name.trim_end_matches('.').to_owned();
                    out.push((path.display().to_string(), name));
                }
            }
        }
    }
    let mut named = Vec::new();
    walk(&Path::new(ROOT).join("src"), &mut named);
    assert!(!named.is_empty(), "the error messages point at runbooks");
    for (file, name) in named {
        assert!(
            name.ends_with(".md") && RUNBOOKS.contains(&name.as_str()),
            "{file} points at runbooks/{name}, which does not exist"
        );
    }
}

#[test]
fn runbook_links_resolve() {
    for name in RUNBOOKS {
        let text = runbook_text(name);
        for (at, _) in text.match_indices("](") {
            let target: String = text[at + 2..].chars().take_while(|c| *c != ')').collect();
            let file = target.split('#').next().unwrap();
            if file.is_empty() || file.contains("://") {
                continue;
            }
            assert!(
                Path::new(ROOT).join("runbooks").join(file).exists(),
                "runbooks/{name} links to {target}, which does not exist"
            );
        }
    }
}

/// A routine release of the shipped migrations to a production-like environment.
#[test]
fn deploy() {
    let p = Project::new();
    typed_confirmation(&p);
    let mut book = Runbook::open("deploy.md", &p);

    let check = book.expect("cutover check -e <ENV>", 0);
    assert!(check.stdout().contains("ok: `local`"), "{}", check.stdout());
    let lock = book.expect("cutover lock status -e <ENV>", 0);
    assert!(lock.stdout().contains("is not locked"));
    let plan = book.expect("cutover plan -e <ENV>", 0);
    assert!(
        plan.stdout()
            .contains("undo: restore the backup taken before it")
    );

    let deploy = book.expect("cutover deploy -e <ENV> --confirm <ENV>", 0);
    assert!(deploy.stdout().contains("deployed to local (run "));
    assert_eq!(schema_version(&p), Some(LATEST.parse().unwrap()));

    let history = book.expect("cutover history -e <ENV> --limit 5", 0);
    assert!(history.stdout().contains("succeeded"));
    let status = book.expect("cutover migrate status -e <ENV>", 0);
    assert!(!status.stdout().contains("pending"));
    assert!(status.stdout().contains(&format!("at {LATEST}")));
    let list = book.expect("cutover backup list -e <ENV>", 0);
    assert!(newest_row(&list.stdout()).starts_with("pre-empty-"));
    book.finish();
}

/// A: a bad release taken back by version, then by backup. B: a deploy whose rollback
/// stopped half-way (the platform's maintenance-off command failed), finished by `recover`
/// once the cause is fixed. C: the same, closed by hand.
#[test]
fn rollback_by_hand() {
    let p = Project::new();
    p.deployed_with_data();
    typed_confirmation(&p);
    let mut book = Runbook::open("rollback-by-hand.md", &p);

    // A. Roll back with cutover.
    let released = p.db_snapshot();
    book.expect("cutover history -e <ENV> --limit 5", 0);
    book.expect("cutover migrate status -e <ENV>", 0);
    book.expect("cutover backup list -e <ENV>", 0);
    book.set("VERSION", "20240101120200");
    book.expect(
        "cutover rollback -e <ENV> --to <VERSION> --confirm <ENV>",
        0,
    );
    assert_eq!(schema_version(&p), Some(20_240_101_120_200));
    platform_is(&p, false, 3);
    book.set(
        "BACKUP_ID",
        newest_backup(&p, &format!("pre-rollback-{LATEST}-")),
    );
    book.expect(
        "cutover rollback -e <ENV> --backup <BACKUP_ID> --confirm <ENV>",
        0,
    );
    assert_same_db(
        &p.db_snapshot(),
        &released,
        "restored from the safety backup",
    );
    let status = book.expect("cutover migrate status -e <ENV>", 0);
    assert!(status.stdout().contains(&format!("at {LATEST}")));

    // B. A release whose rollback cannot turn maintenance off.
    let config = p.read("deploy.yaml");
    p.write_config(&replace_once(
        &config,
        "maintenance_off: \"echo",
        "maintenance_off: \"test -e allow-off || exit 1; echo",
    ));
    p.add_migration(CLASH, CLASH_UP, Some(CLASH_DOWN));
    let failed = p.run(&["deploy", "--confirm", "local"]);
    failed.expect_code(3);
    assert!(failed.stderr().contains("runbooks/rollback-by-hand.md"));
    book.set("RUN_ID", latest_run_id(&p));
    let history = book.expect("cutover history -e <ENV> --limit 5", 0);
    assert!(history.stdout().contains("rollback_failed"));
    book.expect("cutover lock status -e <ENV>", 0);
    let status = book.expect("cutover migrate status -e <ENV>", 0);
    assert!(
        status
            .stdout()
            .contains("pending            20240401090000")
    );
    platform_is(&p, true, 3);
    // Nothing else may run until the run is finished.
    p.run(&["deploy", "--confirm", "local"]).expect_code(4);
    // The cause, fixed.
    p.write("allow-off", "");
    let recovered = book.expect("cutover recover -e <ENV>", 1);
    assert!(
        recovered
            .stdout()
            .contains("rolled back (maintenance back off)"),
        "{}",
        recovered.stdout()
    );
    platform_is(&p, false, 3);
    assert_same_db(&p.db_snapshot(), &released, "after recover");

    // C. The same failure, undone by hand and closed in the journal.
    std::fs::remove_file(p.file("allow-off")).unwrap();
    next_second();
    p.run(&["deploy", "--confirm", "local"]).expect_code(3);
    book.set("RUN_ID", latest_run_id(&p));
    p.set_platform(false, 3);
    book.shell(
        r#"printf '{"record":"run_finished","at":"%s","status":"rolled_back"}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> .cutover/journal/<RUN_ID>.jsonl"#,
    );
    let history = book.expect("cutover history -e <ENV> --limit 5", 0);
    let newest = history
        .stdout()
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        newest.contains(&book.vars["RUN_ID"]) && newest.contains("rolled_back"),
        "{newest}"
    );
    let lock = book.expect("cutover lock status -e <ENV>", 0);
    assert!(lock.stdout().contains("is not locked"));
    book.finish();

    // The environment is usable again.
    std::fs::remove_file(p.file(&format!("migrations/{CLASH}.up.sql"))).unwrap();
    std::fs::remove_file(p.file(&format!("migrations/{CLASH}.down.sql"))).unwrap();
    p.write("allow-off", "");
    next_second();
    p.run(&["deploy", "--confirm", "local"]).success();
}

/// A deploy killed right after its migrations were applied, with maintenance on and jobs
/// at 0.
#[test]
fn recover_after_crash() {
    let p = Project::new();
    p.deployed_with_data();
    typed_confirmation(&p);
    p.add_migration(NOTES, NOTES_UP, Some(NOTES_DOWN));
    let before = p.state();
    next_second();
    let journal = crashed_deploy(&p, 17);
    let last = journal.last().unwrap();
    assert_eq!(
        (last["record"].as_str(), last["id"].as_str()),
        (Some("step_finished"), Some("migrate")),
        "the crash should come right after the migrate step: {journal:#?}"
    );
    platform_is(&p, true, 0);
    let refused = p.run(&["deploy", "--confirm", "local"]);
    refused.expect_code(4);
    assert!(refused.stderr().contains("runbooks/recover-after-crash.md"));

    let mut book = Runbook::open("recover-after-crash.md", &p);
    let history = book.expect("cutover history -e <ENV> --limit 5", 0);
    assert!(history.stdout().contains("unfinished"));
    let lock = book.expect("cutover lock status -e <ENV>", 0);
    assert!(
        lock.stdout().contains("has a stale lock"),
        "{}",
        lock.stdout()
    );
    let recovered = book.expect("cutover recover -e <ENV>", 1);
    assert!(recovered.stdout().contains("rolled back ("));
    assert_same_db(&p.db_snapshot(), &before.db, "after recover");
    assert_eq!(p.platform(), before.platform);
    let history = book.expect("cutover history -e <ENV> --limit 5", 0);
    assert!(
        history
            .stdout()
            .lines()
            .nth(1)
            .unwrap()
            .contains("rolled_back")
    );
    let status = book.expect("cutover migrate status -e <ENV>", 0);
    assert!(
        status
            .stdout()
            .contains("pending            20240501090000")
    );
    let lock = book.expect("cutover lock status -e <ENV>", 0);
    assert!(lock.stdout().contains("is not locked"));
    book.expect("cutover plan -e <ENV>", 0);
    next_second();
    book.expect("cutover deploy -e <ENV> --confirm <ENV>", 0);
    assert!(p.db_snapshot().contains_key("table recipe_notes"));
    book.finish();
}

/// Data deleted by mistake, put back from a backup: through the rollback pipeline, then
/// the database alone, then the restore undone from its safety backup.
#[test]
fn restore_backup() {
    let p = Project::new();
    p.deployed_with_data();
    p.run(&["backup", "create", "--name", "with-data"])
        .success();
    typed_confirmation(&p);
    let good = p.db_snapshot();
    let damage = || exec_sql(&p.file("state/app.db"), "DELETE FROM recipes;");
    damage();
    let damaged = p.db_snapshot();
    assert_ne!(damaged, good);

    let mut book = Runbook::open("restore-backup.md", &p);
    book.set("BACKUP_ID", "with-data");
    let list = book.expect("cutover backup list -e <ENV>", 0);
    assert!(newest_row(&list.stdout()).starts_with("with-data "));
    let verified = book.expect("cutover backup verify <BACKUP_ID> -e <ENV>", 0);
    assert!(verified.stdout().contains("is intact"));
    assert_same_db(&p.db_snapshot(), &damaged, "verify touches nothing");

    book.expect(
        "cutover rollback -e <ENV> --backup <BACKUP_ID> --confirm <ENV>",
        0,
    );
    assert_same_db(
        &p.db_snapshot(),
        &good,
        "restored through the rollback pipeline",
    );
    platform_is(&p, false, 3);

    damage();
    book.expect(
        "cutover backup restore <BACKUP_ID> -e <ENV> --confirm <ENV>",
        0,
    );
    assert_same_db(&p.db_snapshot(), &good, "restored alone");

    let status = book.expect("cutover migrate status -e <ENV>", 0);
    assert!(status.stdout().contains(&format!("at {LATEST}")));
    let list = book.expect("cutover backup list -e <ENV>", 0);
    assert!(newest_row(&list.stdout()).starts_with("pre-restore-"));

    // Undo: the safety backup holds the damaged data the restore replaced.
    book.set("SAFETY_BACKUP_ID", newest_backup(&p, "pre-restore-"));
    next_second();
    book.expect(
        "cutover backup restore <SAFETY_BACKUP_ID> -e <ENV> --confirm <ENV>",
        0,
    );
    assert_same_db(&p.db_snapshot(), &damaged, "the restore undone");
    book.finish();
}

/// A deploy whose runner was lost on another machine, with a long lease: its lock stays
/// until someone releases it.
#[test]
fn stuck_lock() {
    let p = Project::new();
    p.deployed_with_data();
    typed_confirmation(&p);
    p.add_migration(NOTES, NOTES_UP, Some(NOTES_DOWN));
    let before = p.state();
    next_second();
    crashed_deploy(&p, 8);
    platform_is(&p, true, 3);
    // As if it had run on another machine with `lock: { lease: 2h }`.
    let mut lock: Value = serde_json::from_str(&p.read(".cutover/locks/local.lock.json")).unwrap();
    lock["host"] = "ci-runner-7".into();
    lock["pid"] = 4242.into();
    lock["expires_at"] = (chrono::Utc::now() + chrono::Duration::hours(2))
        .to_rfc3339()
        .into();
    p.write(".cutover/locks/local.lock.json", &lock.to_string());
    let refused = p.run(&["deploy", "--confirm", "local"]);
    refused.expect_code(4);
    assert!(refused.stderr().contains("runbooks/stuck-lock.md"));

    let mut book = Runbook::open("stuck-lock.md", &p);
    book.set("RUN_ID", lock["run_id"].as_str().unwrap());
    book.set("PID", "4242");
    let status = book.expect("cutover lock status -e <ENV>", 0);
    assert!(
        status.stdout().contains(&format!(
            "is locked by run {}",
            lock["run_id"].as_str().unwrap()
        )),
        "{}",
        status.stdout()
    );
    let history = book.expect("cutover history -e <ENV> --limit 5", 0);
    // Held from another host with a live lease: running, as far as this host can tell.
    assert!(history.stdout().contains("running"), "{}", history.stdout());
    let released = book.expect("cutover lock release --force --yes -e <ENV>", 0);
    assert!(released.stdout().contains("released `local`'s lock"));
    let recovered = book.expect("cutover recover -e <ENV>", 1);
    assert!(
        recovered
            .stdout()
            .contains("rolled back (maintenance back off)")
    );
    assert_eq!(p.state(), before);
    let status = book.expect("cutover lock status -e <ENV>", 0);
    assert!(status.stdout().contains("is not locked"));
    book.finish();
}

#[test]
fn halted_run() {
    let p = Project::new();
    p.deployed_with_data();
    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "name: deploy\n",
        "name: deploy\non_failure: halt\n",
    ));
    p.write_pipeline(&format!(
        "{}  - id: smoke-test\n    uses: command\n    with: {{ run: \"test -f smoke-ok\" }}\n",
        p.pipeline()
    ));
    p.add_migration(NOTES, NOTES_UP, Some(NOTES_DOWN));
    let before = p.state();
    let halted = p.run(&["deploy"]);
    halted.expect_code(3);
    assert!(
        halted
            .stderr()
            .contains("HALTED for a human, resumable at step `smoke-test`")
    );
    let refused = p.run(&["deploy"]);
    refused.expect_code(4);
    assert!(refused.stderr().contains("runbooks/halted-run.md"));

    let mut book = Runbook::open("halted-run.md", &p);
    let status = book.expect("cutover status -e <ENV>", 0);
    assert!(
        status.stdout().contains("at step `smoke-test`"),
        "{}",
        status.stdout()
    );
    let history = book.expect("cutover history -e <ENV> --limit 5", 0);
    assert!(history.stdout().contains("halted"));
    // Not fixed yet: it halts again.
    book.expect("cutover resume -e <ENV>", 3);
    let undone = book.expect("cutover rollback -e <ENV>", 0);
    assert!(
        undone.stdout().contains("rolled back"),
        "{}",
        undone.stdout()
    );
    assert_eq!(p.state(), before);
    let status = book.expect("cutover status -e <ENV>", 0);
    assert!(
        status.stdout().contains("nothing needs attention"),
        "{}",
        status.stdout()
    );
    book.finish();
}

/// The first row of a table under its header line (`history`, `backup list`): the newest.
fn newest_row(table: &str) -> &str {
    table.lines().nth(1).unwrap_or_default()
}
