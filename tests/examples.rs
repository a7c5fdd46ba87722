//! Everything shipped as an example works as documented: `deploy.example.yaml` and every
//! pipeline in `pipelines/` load and validate through the binary, the cloud environments
//! are refused without touching anything when there is no cloud to reach (they check out
//! against local fakes in tests/azure.rs), the README's commands
//! exist and the demo works, and the README with the reference in docs/ names every
//! command, flag, config field and JSON event the code has.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::azure_fake::AzureFake;
use support::{Project, ROOT, Run};

fn azure_fake() -> &'static AzureFake {
    static FAKE: std::sync::OnceLock<AzureFake> = std::sync::OnceLock::new();
    FAKE.get_or_init(AzureFake::start)
}

/// A throwaway copy of the example project: `deploy.example.yaml` (under its own name)
/// with the shipped pipelines, migrations and validations, and its local platform seeded.
fn example() -> Project {
    let p = Project::new();
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy.example.yaml")).unwrap();
    p.write("deploy.example.yaml", &text);
    p.write(".cutover/platform/maintenance", "maintenance=false\n");
    p.write(".cutover/platform/jobs", "jobs=3\n");
    p
}

/// Runs `cutover -c deploy.example.yaml ARGS` with the health URL the example reads.
fn run(p: &Project, args: &[&str]) -> Run {
    Run(p
        .cmd()
        .args(["-c", "deploy.example.yaml"])
        .args(args)
        .env("CUTOVER_HEALTH_URL", &p.health.url)
        // Azure requests go to a local fake that knows none of the example's resources:
        // the cloud environments are refused without touching anything real.
        .env("CUTOVER_AZURE_REDIRECT", azure_fake().redirect())
        .output()
        .expect("cutover runs"))
}

#[track_caller]
fn no_panic(run: &Run) {
    assert!(
        !run.stderr().contains("panicked"),
        "cutover panicked:\n{}",
        run.stderr()
    );
}

#[test]
fn example_config_checks_out_locally() {
    let p = example();
    let check = run(&p, &["check", "-e", "local"]);
    check.success();
    assert!(check.stdout().contains("ok: `local`"), "{}", check.stdout());
    assert!(p.health.hits() >= 1, "check polls the live health endpoint");
    // Checking touches nothing: no database, no journal, no lock.
    assert!(!p.file(".cutover/app.db").exists());
    assert!(p.journals().is_empty() && p.locks().is_empty());
}

#[test]
fn example_production_without_azure_access_names_the_vault_and_secret() {
    let p = example();
    let check = run(&p, &["check", "-e", "production"]);
    no_panic(&check);
    check.expect_code(2);
    assert!(
        check
            .stderr()
            .contains("Key Vault `mealprep-prod-kv`, secret `db-url`"),
        "{}",
        check.stderr()
    );
    assert!(check.stderr().contains("nothing was touched"));
}

#[test]
fn every_example_environment_is_ok_or_refused_cleanly() {
    let p = example();
    let all = run(&p, &["check"]);
    no_panic(&all);
    assert!(all.stdout().contains("ok: `local`"), "{}", all.stdout());
    for env in ["staging", "production"] {
        let one = run(&p, &["check", "-e", env]);
        no_panic(&one);
        one.expect_code(2);
        assert!(one.stderr().contains("error: "), "{}", one.stderr());
        assert!(
            one.stderr().contains("nothing was touched"),
            "{}",
            one.stderr()
        );
    }
}

/// Every shipped pipeline loads, validates and plans against the example project; one
/// that only makes sense in `cutover rollback` (`to: target`) runs as a rollback to the
/// version already deployed.
#[test]
fn every_shipped_pipeline_runs_on_the_example() {
    let p = example();
    run(&p, &["deploy", "-e", "local"]).success();
    let latest = std::fs::read_dir(Path::new(ROOT).join("migrations"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split('_').next()?.parse::<i64>().ok()
        })
        .max()
        .unwrap()
        .to_string();
    let mut pipelines: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    pipelines.sort();
    assert!(pipelines.contains(&"deploy.yaml".to_owned()));
    for name in pipelines {
        let file = format!("pipelines/{name}");
        let text = std::fs::read_to_string(Path::new(ROOT).join(&file)).unwrap();
        let outcome = if text.contains("to: target") {
            run(
                &p,
                &[
                    "rollback", "-e", "local", "--to", &latest, "-p", &file, "--yes",
                ],
            )
        } else {
            run(&p, &["plan", "-e", "local", "-p", &file])
        };
        no_panic(&outcome);
        assert_eq!(
            outcome.code(),
            0,
            "{file}:\n{}{}",
            outcome.stdout(),
            outcome.stderr()
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.file(".cutover/platform/maintenance")).unwrap(),
        "maintenance=false\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.file(".cutover/platform/jobs")).unwrap(),
        "jobs=3\n"
    );
}

// ---- The README and the reference in docs/ ----

/// README.md alone.
fn readme_md() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md")
}

/// What a reader can find: README.md, then every docs/*.md (in name order), concatenated.
fn readme() -> String {
    let mut pages: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "docs/ has no .md pages");
    let mut text = readme_md();
    for page in pages {
        text.push('\n');
        text.push_str(
            &std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display())),
        );
    }
    text
}

/// The lines of the first ```sh block after `heading`.
fn sh_block_after(text: &str, heading: &str) -> Vec<String> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    let rest = &text[start..];
    let open = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("a closed block");
    rest[open..open + close]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[track_caller]
fn executable(rel: &str) {
    let path = Path::new(ROOT).join(rel);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "{rel} must be an executable file"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("#!/usr/bin/env bash\n"),
        "{rel} is a bash script"
    );
}

#[test]
fn readme_quick_start_commands_exist() {
    let text = readme_md();
    assert_eq!(
        sh_block_after(&text, "## Quick start"),
        ["scripts/demo", "scripts/test"]
    );
    assert_eq!(
        sh_block_after(&text, "## How a failed deploy rolls back"),
        ["scripts/demo fail"]
    );
    for script in ["scripts/demo", "scripts/test", ".ci/run"] {
        executable(script);
    }
}

/// The demo, end to end, with the binary this test run built (it needs python3 for its
/// health endpoint, as the README says).
#[test]
fn demo_shows_a_failed_deploy_rolling_back() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: scripts/demo needs python3, which is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(Path::new(ROOT).join("scripts/demo"))
        .arg("fail")
        .env("CUTOVER_BIN", env!("CARGO_BIN_EXE_cutover"))
        .env("TMPDIR", tmp.path())
        .env("NO_COLOR", "1")
        .env("CI", "1")
        .env_remove("CUTOVER_ENV")
        .env_remove("CUTOVER_CONFIG")
        .env_remove("CUTOVER_OUTPUT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("scripts/demo runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{all}");
    for expected in [
        "deployed to local (run ",
        "exit code: 2",
        "the rehearsal on a copy of the data",
        "`duplicate_user_emails` found 1 issue(s)",
        "maintenance never turned on",
        "exit code: 1",
        "rolled back: restore backup pre-20240301100100-",
        "; scale jobs back to 3; maintenance back off",
        "state: as before the run (schema at 20240301100100), checked: schema (",
        "migrate status is unchanged",
        "the platform is as it was",
    ] {
        assert!(all.contains(expected), "no `{expected}` in:\n{all}");
    }
}

/// The CLI's commands, as `help` lists them: `["deploy"], ["migrate", "status"], ...`.
fn commands(prefix: &[String]) -> Vec<Vec<String>> {
    let help = help(prefix);
    let Some(start) = help.find("\nCommands:\n") else {
        return vec![prefix.to_vec()];
    };
    let mut out = Vec::new();
    for line in help[start + "\nCommands:\n".len()..].lines() {
        if !line.starts_with("  ") {
            break;
        }
        // A description that wraps goes on under it, indented further.
        if line.starts_with("   ") {
            continue;
        }
        let name = line.split_whitespace().next().unwrap();
        if name == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(name.to_owned());
        out.extend(commands(&path));
    }
    out
}

fn help(path: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(path)
        .arg("--help")
        .env_remove("CUTOVER_ENV")
        .env_remove("CUTOVER_CONFIG")
        .env_remove("CUTOVER_OUTPUT")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cutover {} --help failed",
        path.join(" ")
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Whether `text` names `flag` as a whole word (`--to` is not found in `--total`).
fn mentions(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        !text[at + flag.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Long flags in a help text's option list.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            let at = l.find("--")?;
            let flag: String = l[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Some(flag)
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

#[test]
fn readme_names_every_command_and_flag() {
    let text = readme();
    let mut missing = Vec::new();
    for flag in flags(&help(&[])) {
        if !mentions(&text, &flag) {
            missing.push(format!("global flag {flag}"));
        }
    }
    let commands = commands(&[]);
    assert!(commands.len() > 10, "{commands:?}");
    for path in commands {
        let name = format!("cutover {}", path.join(" "));
        if !text.contains(&name) {
            missing.push(format!("command `{name}`"));
        }
        for flag in flags(&help(&path)) {
            if !mentions(&text, &flag) {
                missing.push(format!("{name} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md or docs/ does not document:\n  {}",
        missing.join("\n  ")
    );
}

/// Field names declared in a config source file: `    pub name: Type` or `        name: Type`.
fn declared_fields(rel: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("    "))
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let (name, rest) = l.split_once(": ")?;
            (!rest.is_empty()
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn readme_names_every_config_field() {
    let text = readme();
    let mut missing = Vec::new();
    for rel in ["src/config/deploy_file.rs", "src/config/pipeline.rs"] {
        let fields = declared_fields(rel);
        assert!(fields.len() > 10, "{rel}: {fields:?}");
        for field in fields {
            if !text.contains(&format!("`{field}")) {
                missing.push(format!("{rel}: `{field}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md or docs/ does not document:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn readme_names_every_json_event() {
    let source = std::fs::read_to_string(Path::new(ROOT).join("src/run/event.rs")).unwrap();
    let start = source.find("pub enum Event {").expect("the Event enum");
    let end = start + source[start..].find("\n}\n").expect("its end");
    let mut events = Vec::new();
    for line in source[start..end].lines().skip(1) {
        let Some(name) = line.strip_prefix("    ") else {
            continue;
        };
        if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        let name: String = name
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let mut snake = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        }
        events.push(snake);
    }
    assert!(events.len() > 10, "{events:?}");
    let text = readme();
    let missing: Vec<_> = events
        .iter()
        .filter(|e| !text.contains(&format!("| `{e}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "the JSON event table of README.md or docs/ lacks {missing:?}"
    );
}
