//! What a deploy prints in each output mode (plain, json, github, azure), for a deploy that
//! succeeds and one that fails and rolls back: exact output, snapshot-tested with the parts
//! that change between runs (durations, timestamps, run ids, ports, temp paths) filtered.
//! Also: the GitHub step summary and outputs, the Azure summary upload, `--output auto`
//! detection, lint findings as file/line annotations, the `--report` document against
//! docs/report.md, a secret that must never be printed except in the one line that tells the
//! CI to mask it (and that line first), and the shipped action and CI examples.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use support::{Project, ROOT, Run, replace_once};

/// Resolved through `${secret:env:..}` into the platform's `env:` (a credential field); the
/// failing restart command echoes it to stderr.
const SECRET: &str = "ci-S3CRET-7f3a9b-token";

/// The shared config with the product's default rehearsal, and a `restart` command that
/// fails and echoes the secret it was given.
fn config(health_url: &str) -> String {
    let config = replace_once(
        &support::config(health_url),
        "      restart: \"echo restart >> calls.log\"\n",
        r#"      restart: "echo restart >> calls.log; echo \"restart refused: token=$API_TOKEN\" >&2; exit 1"
      env:
        API_TOKEN: "${secret:env:CUTOVER_TEST_CI_TOKEN}"
"#,
    );
    replace_once(&config, "    rehearse: off\n", "")
}

/// A fresh project with the secret-bearing config and a failing pipeline beside the
/// shipped one: a `restart` step after the migrations and validations.
fn project() -> Project {
    let p = Project::new();
    p.write_config(&config(&p.health.url));
    let shipped = p.read("pipelines/deploy.yaml");
    let at = shipped
        .find("  - id: maintenance-off")
        .expect("shipped pipeline");
    p.write(
        "pipelines/failing.yaml",
        &format!("{}  - uses: restart\n{}", &shipped[..at], &shipped[at..]),
    );
    p
}

/// `cutover` in the project with the secret set and no CI of its own leaking in.
fn cmd(p: &Project) -> std::process::Command {
    let mut cmd = p.cmd();
    cmd.env("CUTOVER_TEST_CI_TOKEN", SECRET);
    for var in [
        "GITHUB_STEP_SUMMARY",
        "GITHUB_OUTPUT",
        "GITHUB_WORKSPACE",
        "AGENT_TEMPDIRECTORY",
        "BUILD_SOURCESDIRECTORY",
        "CUTOVER_REPORT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

const DEPLOY: &[&str] = &["deploy"];
const FAILING: &[&str] = &["deploy", "-p", "pipelines/failing.yaml"];

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Filters for everything that differs between two runs of the same deploy.
fn settings(p: &Project, extra_dirs: &[&Path]) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let mut dirs: Vec<std::path::PathBuf> = extra_dirs.iter().map(|d| d.to_path_buf()).collect();
    dirs.push(p.path().to_owned());
    let mut all = Vec::new();
    for d in dirs {
        if let Ok(c) = d.canonicalize() {
            all.push(c);
        }
        all.push(d);
    }
    // Longest first: a folder inside the project is replaced before the project.
    all.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
    let mut project = vec![p.path().to_owned()];
    project.extend(p.path().canonicalize());
    for d in &all {
        let name = if project.iter().any(|root| d.starts_with(root)) {
            "[PROJECT]"
        } else {
            "[TMP]"
        };
        s.add_filter(&regex_escape(&d.display().to_string()), name);
    }
    s.add_filter(r"\d{8}T\d{9}Z-[0-9a-f]{6}", "[RUN_ID]");
    s.add_filter(r"\d{8}T\d{6}Z", "[STAMP]");
    s.add_filter(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "[TIME]",
    );
    s.add_filter(r"\b\d+(\.\d+)? ms\b|\b\d+\.\d+s\b", "[DURATION]");
    // Who ran it: the OS user and this machine's name.
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        s.add_filter(
            &format!("[\\w.:-]+@{}\\b", regex_escape(host.trim())),
            "[USER]@[HOST]",
        );
    }
    s.add_filter(
        r#""(elapsed_ms|duration_ms|run_duration_ms|wait_ms)":( ?)\d+"#,
        "\"$1\":${2}[MS]",
    );
    s.add_filter(r"\b[0-9a-f]{64}\b", "[SHA256]");
    s.add_filter(r"sha256 [0-9a-f]{16}\b", "sha256 [SHA256]");
    s.add_filter(r"digest [0-9a-f]{24}\b", "digest [DIGEST]");
    s.add_filter(r#""digest": ?"[0-9a-f]{24}""#, r#""digest": "[DIGEST]""#);
    s.add_filter(r#""took_ms":( ?)\d+"#, "\"took_ms\":${1}[MS]");
    s.add_filter(
        r#""(rehearsed_ms|total_ms|ms)":( ?)\d+"#,
        "\"${1}\":${2}[MS]",
    );
    s.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "[WHEN]");
    s.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "[CREATED]");
    // Row digests: the history table's rows hold install times.
    s.add_filter(r#""digest":( ?)"\d+""#, "\"digest\":${1}\"[ROWS]\"");
    s.add_filter(r"\d+(\.\d)? (B|KiB|MiB|GiB)\b", "[SIZE]");
    s.add_filter(r#""size":( ?)\d+"#, "\"size\":${1}[SIZE]");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s
}

fn streams(run: &Run) -> String {
    format!("--- stdout\n{}--- stderr\n{}", run.stdout(), run.stderr())
}

#[track_caller]
fn assert_never_printed(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what}: the secret was printed:\n{text}"
    );
}

/// Runs a deploy in a fresh project in one mode; returns the project and the run.
fn deploy(mode: &str, args: &[&str], env: &[(&str, &str)]) -> (Project, Run) {
    let p = project();
    let mut c = cmd(&p);
    c.args(["--output", mode]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let run = Run(c.output().expect("cutover runs"));
    (p, run)
}

#[test]
fn plain_output() {
    let (p, ok) = deploy("plain", DEPLOY, &[]);
    ok.success();
    settings(&p, &[]).bind(|| insta::assert_snapshot!("plain_succeeded", streams(&ok)));
    assert_never_printed("plain", &ok.all());

    let (p, failed) = deploy("plain", FAILING, &[]);
    failed.expect_code(1);
    assert!(failed.stderr().contains("restart refused: token=***"));
    settings(&p, &[]).bind(|| insta::assert_snapshot!("plain_rolled_back", streams(&failed)));
    assert_never_printed("plain", &failed.all());
}

/// What a person reads at a terminal after a deploy and a failed one: the tables of the
/// read-only commands, and the failed deploy in colour (`--color always`).
#[test]
fn terminal_tables_and_colour() {
    let p = project();
    let run = |args: &[&str]| {
        let mut c = cmd(&p);
        c.args(args);
        Run(c.output().expect("cutover runs"))
    };
    run(&["--output", "plain", "deploy"]).success();
    let failed = run(&[
        "--output",
        "plain",
        "--color",
        "always",
        "deploy",
        "-p",
        "pipelines/failing.yaml",
    ]);
    failed.expect_code(1);
    let mut shown = String::new();
    for args in [
        &["history"][..],
        &["backup", "list"],
        &["migrate", "status"],
        &["status"],
    ] {
        let out = run(args);
        out.success();
        shown.push_str(&format!(
            "$ cutover {}\n{}\n",
            args.join(" "),
            out.stdout().trim_end()
        ));
    }
    settings(&p, &[]).bind(|| {
        insta::assert_snapshot!("terminal_tables", shown);
        insta::assert_snapshot!("terminal_colour_rolled_back", streams(&failed));
    });
}

#[test]
fn json_output() {
    let (p, ok) = deploy("json", DEPLOY, &[]);
    ok.success();
    assert!(
        ok.stdout()
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["v"] == 1)),
        "every stdout line is a v1 JSON event:\n{}",
        ok.stdout()
    );
    settings(&p, &[]).bind(|| insta::assert_snapshot!("json_succeeded", streams(&ok)));
    assert_never_printed("json", &ok.all());

    let (p, failed) = deploy("json", FAILING, &[]);
    failed.expect_code(1);
    settings(&p, &[]).bind(|| insta::assert_snapshot!("json_rolled_back", streams(&failed)));
    assert_never_printed("json", &failed.all());
}

/// A deploy in GitHub mode with the step summary, outputs and report files.
struct GithubRun {
    p: Project,
    files: tempfile::TempDir,
    run: Run,
}

impl GithubRun {
    fn new(args: &[&str]) -> Self {
        let files = tempfile::tempdir().unwrap();
        let summary = files.path().join("summary.md");
        let output = files.path().join("output.txt");
        // Earlier steps of the job wrote here too: cutover appends.
        std::fs::write(&summary, "# Earlier step\n").unwrap();
        std::fs::write(&output, "earlier=1\n").unwrap();
        let report = files.path().join("report.json");
        let (p, run) = deploy(
            "github",
            args,
            &[
                ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
                ("GITHUB_OUTPUT", output.to_str().unwrap()),
                ("CUTOVER_REPORT", report.to_str().unwrap()),
            ],
        );
        Self { p, files, run }
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.files.path().join(name)).unwrap()
    }

    fn settings(&self) -> insta::Settings {
        settings(&self.p, &[self.files.path()])
    }
}

/// `name=value` lines of a `$GITHUB_OUTPUT` file.
fn outputs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("name=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn github_output_summary_and_outputs() {
    let ok = GithubRun::new(DEPLOY);
    ok.run.success();
    let stdout = ok.run.stdout();
    assert_eq!(
        stdout.lines().next(),
        Some(format!("::add-mask::{SECRET}").as_str()),
        "the mask comes first"
    );
    assert_eq!(stdout.matches("::group::").count(), 10, "plan + 9 steps");
    assert_eq!(
        stdout.matches("::group::").count(),
        stdout.matches("::endgroup::").count()
    );
    ok.settings()
        .bind(|| insta::assert_snapshot!("github_succeeded", streams(&ok.run)));
    let summary = ok.file("summary.md");
    assert!(
        summary.starts_with("# Earlier step\n### ✅ `cutover deploy` — testapp / local: succeeded")
    );
    ok.settings()
        .bind(|| insta::assert_snapshot!("github_succeeded_summary", summary));
    let out = outputs(&ok.file("output.txt"));
    let run_id = ok.p.journals()[0][0]["run_id"].as_str().unwrap().to_owned();
    let backup = std::fs::read_dir(ok.p.file("state/backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find_map(|n| n.strip_suffix(".manifest.json").map(str::to_owned))
        .expect("a backup manifest");
    assert_eq!(
        out,
        [
            ("earlier", "1"),
            ("run_id", run_id.as_str()),
            ("result", "succeeded"),
            ("backup_id", backup.as_str()),
            ("schema_version", "20240301100100"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );

    let failed = GithubRun::new(FAILING);
    failed.run.expect_code(1);
    let stdout = failed.run.stdout();
    assert!(stdout.contains(
        "::error title=step `restart` failed::platform command `restart` failed (exit status: 1): restart refused: token=***\n"
    ));
    failed
        .settings()
        .bind(|| insta::assert_snapshot!("github_rolled_back", streams(&failed.run)));
    let summary = failed.file("summary.md");
    failed
        .settings()
        .bind(|| insta::assert_snapshot!("github_rolled_back_summary", summary));
    let out = outputs(&failed.file("output.txt"));
    assert_eq!(out[2], ("result".to_owned(), "rolled_back".to_owned()));
    // The failed run applied every migration and rolled them back: the schema is empty again.
    assert_eq!(out[4], ("schema_version".to_owned(), String::new()));
    for (what, text) in [
        ("summary", &summary),
        ("outputs", &failed.file("output.txt")),
        ("report", &failed.file("report.json")),
    ] {
        assert_never_printed(what, text);
    }
}

#[test]
fn azure_output_and_summary_upload() {
    let temp = tempfile::tempdir().unwrap();
    let env = [("AGENT_TEMPDIRECTORY", temp.path().to_str().unwrap())];
    let (p, ok) = deploy("azure", DEPLOY, &env);
    ok.success();
    let stdout = ok.run_lines();
    assert!(
        stdout[0].starts_with("##vso[task.setvariable variable=CUTOVER_SECRET_1;issecret=true]"),
        "the secret variable comes first: {}",
        stdout[0]
    );
    settings(&p, &[temp.path()]).bind(|| insta::assert_snapshot!("azure_succeeded", streams(&ok)));
    let upload = stdout
        .iter()
        .find_map(|l| l.strip_prefix("##vso[task.uploadsummary]"))
        .expect("an uploadsummary line");
    let path = Path::new(upload);
    assert!(path.is_absolute(), "{upload}");
    assert_eq!(
        path.parent().unwrap().canonicalize().unwrap(),
        temp.path().canonicalize().unwrap()
    );
    let summary = std::fs::read_to_string(path).unwrap();
    assert!(summary.starts_with("### ✅ `cutover deploy` — testapp / local: succeeded"));
    assert!(!stdout.iter().any(|l| l.starts_with("##vso[task.complete")));
    assert!(
        stdout
            .contains(&"##vso[task.setvariable variable=result;isoutput=true]succeeded".to_owned())
    );

    let temp = tempfile::tempdir().unwrap();
    let env = [("AGENT_TEMPDIRECTORY", temp.path().to_str().unwrap())];
    let (p, failed) = deploy("azure", FAILING, &env);
    failed.expect_code(1);
    settings(&p, &[temp.path()])
        .bind(|| insta::assert_snapshot!("azure_rolled_back", streams(&failed)));
    let lines = failed.run_lines();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("##vso[task.complete result=Failed;]DONE")
    );
    let upload = lines
        .iter()
        .find_map(|l| l.strip_prefix("##vso[task.uploadsummary]"))
        .expect("an uploadsummary line");
    let summary = std::fs::read_to_string(upload).unwrap();
    assert!(summary.contains("#### Rollback"), "{summary}");
    assert_never_printed("azure summary", &summary);

    // Without AGENT_TEMPDIRECTORY the summary goes to the state folder.
    let (p, ok) = deploy("azure", DEPLOY, &[]);
    ok.success();
    let lines = ok.run_lines();
    let upload = lines
        .iter()
        .find_map(|l| l.strip_prefix("##vso[task.uploadsummary]"))
        .unwrap();
    assert!(
        Path::new(upload).starts_with(p.file(".cutover")),
        "{upload}"
    );
}

trait Lines {
    fn run_lines(&self) -> Vec<String>;
}

impl Lines for Run {
    fn run_lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_owned).collect()
    }
}

/// stdout and stderr into one file, in the order they were written, as a CI log has them.
fn merged(p: &Project, mode: &str, args: &[&str]) -> (i32, String) {
    let log = p.file("merged.log");
    let file = std::fs::File::create(&log).unwrap();
    let status = cmd(p)
        .args(["--output", mode])
        .args(args)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    (status.code().unwrap_or(-1), text)
}

#[test]
fn the_secret_is_masked_first_and_never_printed() {
    for mode in ["plain", "json", "github", "azure"] {
        let p = project();
        for (args, code) in [(DEPLOY, 0), (FAILING, 1)] {
            let (got, log) = merged(&p, mode, args);
            assert_eq!(got, code, "{mode} {args:?}:\n{log}");
            // The secret was really used: the failing restart printed it, masked.
            if code == 1 {
                assert!(log.contains("restart refused: token=***"), "{mode}:\n{log}");
            }
            let holding: Vec<(usize, &str)> = log
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains(SECRET))
                .collect();
            match mode {
                "github" => assert_eq!(
                    holding,
                    [(0, format!("::add-mask::{SECRET}").as_str())],
                    "only the mask line, first of all:\n{log}"
                ),
                "azure" => assert_eq!(
                    holding,
                    [(
                        0,
                        format!(
                            "##vso[task.setvariable variable=CUTOVER_SECRET_1;issecret=true]{SECRET}"
                        )
                        .as_str()
                    )],
                    "only the secret variable line, first of all:\n{log}"
                ),
                _ => assert!(holding.is_empty(), "{mode}:\n{log}"),
            }
        }
    }
}

#[test]
fn auto_detects_github_then_azure() {
    let p = project();
    let run = Run(cmd(&p)
        .args(["plan"])
        .env("GITHUB_ACTIONS", "true")
        .env("TF_BUILD", "True")
        .output()
        .unwrap());
    run.success();
    assert!(run.stdout().starts_with(&format!(
        "::add-mask::{SECRET}\n::group::Plan for testapp / local"
    )));
    let run = Run(cmd(&p)
        .args(["plan"])
        .env("TF_BUILD", "True")
        .output()
        .unwrap());
    run.success();
    assert!(
        run.stdout().contains("\n##[group]Plan for testapp / local"),
        "{}",
        run.stdout()
    );
    let run = Run(cmd(&p)
        .args(["plan"])
        .env("GITHUB_ACTIONS", "false")
        .output()
        .unwrap());
    run.success();
    assert!(
        run.stdout().starts_with("Plan for testapp / local"),
        "{}",
        run.stdout()
    );
    // `--output plain` wins over detection.
    let run = Run(cmd(&p)
        .args(["--output", "plain", "plan"])
        .env("GITHUB_ACTIONS", "true")
        .output()
        .unwrap());
    assert!(
        run.stdout().starts_with("Plan for testapp / local"),
        "{}",
        run.stdout()
    );
}

/// A PostgreSQL project whose migration the linter flags; `lint` needs no server.
fn lint_project(level: &str) -> Project {
    let p = Project::new();
    p.write_config(&format!(
        r#"version: 1
project: lintapp
migrations: migrations
environments:
  prod:
    database: {{ kind: postgres, url: "postgres://app:pg-S3CRET-pass@127.0.0.1:9/app", lint: {level} }}
"#
    ));
    // Only this migration: the shipped ones have findings of their own.
    std::fs::remove_dir_all(p.file("migrations")).unwrap();
    p.add_migration(
        "20250101000000_index_users",
        "CREATE TABLE notes (id int);\nCREATE INDEX users_email ON users (email);\n",
        Some("DROP INDEX users_email;\nDROP TABLE notes;\n"),
    );
    p
}

#[test]
fn lint_findings_are_annotated_at_their_file_and_line() {
    let p = lint_project("error");
    let run = Run(cmd(&p)
        .args(["--output", "github", "migrate", "lint"])
        .output()
        .unwrap());
    run.expect_code(2);
    let stdout = run.stdout();
    assert!(
        stdout.starts_with("::add-mask::pg-S3CRET-pass\n"),
        "{stdout}"
    );
    let annotation = stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("an error annotation:\n{stdout}"));
    assert!(
        annotation.starts_with(
            "::error file=migrations/20250101000000_index_users.up.sql,line=2,title=migration lint%3A "
        ),
        "{annotation}"
    );

    let p = lint_project("warning");
    let run = Run(cmd(&p)
        .args(["--output", "azure", "migrate", "lint"])
        .output()
        .unwrap());
    run.success();
    let stdout = run.stdout();
    assert!(
        stdout.contains(
            "##vso[task.logissue type=warning;sourcepath=migrations/20250101000000_index_users.up.sql;linenumber=2]"
        ),
        "{stdout}"
    );

    // A config error names its file, line and column.
    let p = project();
    p.write_config(&config(&p.health.url).replace("CUTOVER_TEST_CI_TOKEN", "CUTOVER_TEST_UNSET"));
    let run = Run(cmd(&p)
        .args(["--output", "github", "deploy"])
        .output()
        .unwrap());
    run.expect_code(2);
    assert!(
        run.stdout().lines().any(|l| l
            .starts_with("::error file=deploy.yaml,line=17,col=21,title=cutover deploy failed::")),
        "{}",
        run.stdout()
    );
}

/// Field names per section of docs/report.md: `### Top level` and `### \`path\``.
fn documented_fields() -> Vec<(String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/report.md")).unwrap();
    let mut sections: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("### ") {
            let path = if title.trim() == "Top level" {
                String::new()
            } else {
                title.trim().trim_matches('`').to_owned()
            };
            sections.push((path, BTreeSet::new()));
        } else if let Some(row) = line.strip_prefix("| `")
            && let Some((name, _)) = row.split_once('`')
            && let Some(section) = sections.last_mut()
        {
            section.1.insert(name.to_owned());
        }
    }
    assert!(
        sections.len() >= 8,
        "docs/report.md has its sections: {sections:?}"
    );
    sections
}

/// The value at a documented path: `steps[]` is the first step.
fn at<'a>(doc: &'a Value, path: &str) -> &'a Value {
    let mut v = doc;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, first) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (part, false),
        };
        v = &v[name];
        if first {
            v = &v[0];
        }
    }
    v
}

#[track_caller]
fn assert_documented(doc: &Value, sections: &[(String, BTreeSet<String>)]) {
    for (path, fields) in sections {
        let value = at(doc, path);
        let Some(object) = value.as_object() else {
            continue;
        };
        let keys: BTreeSet<String> = object.keys().cloned().collect();
        assert_eq!(
            &keys, fields,
            "fields of `{path}` in the report vs docs/report.md"
        );
    }
}

#[test]
fn report_file_matches_its_documentation() {
    let sections = documented_fields();

    let ok = GithubRun::new(DEPLOY);
    ok.run.success();
    let doc: Value = serde_json::from_str(&ok.file("report.json")).unwrap();
    assert_eq!(doc["v"], 1);
    assert_eq!(doc["event"], "report");
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["migrations"]["applied"].as_array().unwrap().len(), 6);
    assert_eq!(doc["backup"]["sha256"].as_str().unwrap().len(), 64);
    // The pipeline's 4 checks, on the rehearsal's copy and in the run.
    let validations = doc["validations"].as_array().unwrap();
    assert_eq!(validations.len(), 8);
    assert_eq!(
        validations
            .iter()
            .filter(|v| v["step"] == "rehearsal")
            .count(),
        4
    );
    assert!(doc["rollback"].is_null());
    assert_documented(&doc, &sections);
    ok.settings()
        .bind(|| insta::assert_snapshot!("report_succeeded", ok.file("report.json")));

    let failed = GithubRun::new(FAILING);
    failed.run.expect_code(1);
    let doc: Value = serde_json::from_str(&failed.file("report.json")).unwrap();
    assert_eq!(doc["status"], "rolled_back");
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["error"]["step"], "restart");
    // `rollback: auto` restored the run's backup: no down file ran.
    assert_eq!(doc["migrations"]["reverted"].as_array().unwrap().len(), 0);
    assert_eq!(doc["state_check"]["fact"], "state_compared");
    assert_eq!(
        doc["state_check"]["comparison"]["differences"],
        serde_json::json!([])
    );
    assert_eq!(
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "failed",
            "not_run",
            "not_run",
            "not_run"
        ]
    );
    assert_documented(&doc, &sections);
    failed
        .settings()
        .bind(|| insta::assert_snapshot!("report_rolled_back", failed.file("report.json")));

    // Bad input (exit 2): a document all the same, with the error.
    let p = project();
    let report = p.file("out/report.json");
    let run = Run(cmd(&p)
        .args(["deploy", "-e", "nowhere", "--report"])
        .arg(&report)
        .output()
        .unwrap());
    run.expect_code(2);
    let text = std::fs::read_to_string(&report).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["status"], "bad_input");
    assert_eq!(doc["exit_code"], 2);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown environment `nowhere`")
    );
    assert_documented(&doc, &sections);
    settings(&p, &[]).bind(|| insta::assert_snapshot!("report_bad_input", text));
    // Plain output is unchanged by --report: nothing on stdout.
    assert_eq!(run.stdout(), "");
}

fn yaml(rel: &str) -> Value {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn steps_text(steps: &Value) -> String {
    steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ci_action_and_examples_have_their_structure() {
    let action = yaml("action.yml");
    assert_eq!(action["runs"]["using"], "composite");
    for input in ["environment", "config", "confirm", "binary"] {
        assert!(action["inputs"][input].is_object(), "input `{input}`");
    }
    assert_eq!(action["inputs"]["environment"]["required"], true);
    for output in ["run_id", "result", "backup_id", "schema_version"] {
        assert!(
            action["outputs"][output]["value"]
                .as_str()
                .is_some_and(|v| v.contains(&format!("steps.deploy.outputs.{output}"))),
            "output `{output}`"
        );
    }
    let steps = action["runs"]["steps"].as_array().unwrap();
    let build = steps
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("cargo build")))
        .expect("a cargo build step");
    assert_eq!(build["if"], "inputs.binary == ''");
    let deploy = steps
        .iter()
        .find(|s| s["id"] == "deploy")
        .expect("the deploy step");
    let run = deploy["run"].as_str().unwrap();
    assert!(run.contains("deploy --output github"), "{run}");
    // Inputs reach the script through the environment, never pasted into it.
    assert!(!run.contains("${{"), "{run}");
    assert_eq!(deploy["env"]["CUTOVER_ENV"], "${{ inputs.environment }}");
    assert_eq!(deploy["env"]["CUTOVER_CONFIG"], "${{ inputs.config }}");

    let gh = yaml("examples/github/deploy.yml");
    assert_eq!(gh["permissions"]["id-token"], "write");
    let jobs = gh["jobs"].as_object().unwrap();
    assert_eq!(jobs.keys().collect::<Vec<_>>(), ["production", "staging"]);
    assert_eq!(gh["jobs"]["production"]["needs"], "staging");
    for env in ["staging", "production"] {
        let job = &gh["jobs"][env];
        assert_eq!(
            job["environment"]["name"], env,
            "job `{env}` uses its GitHub environment"
        );
        let steps = job["steps"].as_array().unwrap();
        let login = steps
            .iter()
            .find(|s| {
                s["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("azure/login@"))
            })
            .expect("azure/login");
        for key in ["client-id", "tenant-id", "subscription-id"] {
            assert!(login["with"][key].is_string(), "azure/login `{key}`");
        }
        assert!(
            login["with"]["client-secret"].is_null() && login["with"]["creds"].is_null(),
            "OIDC, no secret"
        );
        let cutover = steps
            .iter()
            .find(|s| s["id"] == "cutover")
            .expect("the cutover step");
        assert_eq!(cutover["with"]["environment"], env);
        if env == "production" {
            assert_eq!(cutover["with"]["confirm"], "production");
        }
    }

    let az = yaml("examples/azure-devops/azure-pipelines.yml");
    let stages = az["stages"].as_array().unwrap();
    assert_eq!(
        stages
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["staging", "production"]
    );
    assert_eq!(stages[1]["dependsOn"], "staging");
    for stage in stages {
        let name = stage["stage"].as_str().unwrap();
        let job = &stage["jobs"][0];
        assert!(job["deployment"].is_string(), "{name}: a deployment job");
        assert_eq!(
            job["environment"], name,
            "{name}: its environment (approvals live there)"
        );
        let steps = steps_text(&job["strategy"]["runOnce"]["deploy"]["steps"]);
        assert!(steps.contains("deploy --output azure"), "{name}: {steps}");
        assert!(steps.contains(&format!("-e {name}")), "{name}: {steps}");
    }
}
