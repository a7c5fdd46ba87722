//! The first minutes with cutover: `init` in an empty folder, the README's walkthrough run
//! as written, and the mistakes a newcomer makes (a typo in a SQLite path, a variable only
//! the deploy needs, several environments) answered without harm.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Project, ROOT, Run, command_in};

fn cutover(dir: &Path, args: &[&str]) -> Run {
    Run(command_in(dir).args(args).output().expect("cutover runs"))
}

#[test]
fn init_scaffolds_a_project_that_deploys_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(".gitignore"), "target").unwrap();

    let init = cutover(&dir, &["init"]);
    init.expect_code(0);
    for file in [
        "deploy.yaml",
        "pipelines/deploy.yaml",
        "validations/no_failed_migrations.sql",
    ] {
        assert!(dir.join(file).is_file(), "{file}: {}", init.all());
        assert!(
            init.stdout().contains(&format!("created  {file}")),
            "{}",
            init.stdout()
        );
    }
    assert!(dir.join("migrations").is_dir());
    let deploy_yaml = std::fs::read_to_string(dir.join("deploy.yaml")).unwrap();
    assert!(deploy_yaml.contains("project: shop\n"), "{deploy_yaml}");
    assert_eq!(
        std::fs::read_to_string(dir.join(".gitignore")).unwrap(),
        "target\n/.cutover/\n"
    );

    // A second `init` keeps every file, edited or not.
    std::fs::write(dir.join("deploy.yaml"), format!("{deploy_yaml}# mine\n")).unwrap();
    let again = cutover(&dir, &["init"]);
    again.expect_code(0);
    assert!(
        again
            .stdout()
            .contains("kept     deploy.yaml (it exists; not overwritten)"),
        "{}",
        again.stdout()
    );
    assert!(
        std::fs::read_to_string(dir.join("deploy.yaml"))
            .unwrap()
            .ends_with("# mine\n")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(".gitignore")).unwrap(),
        "target\n/.cutover/\n"
    );

    // No -e, no variables: a migration, then a deploy.
    let new = cutover(&dir, &["migrate", "new", "create users"]);
    new.expect_code(0);
    let up = new.stdout().lines().next().unwrap().to_owned();
    std::fs::write(
        dir.join(&up),
        "CREATE TABLE users (id INTEGER PRIMARY KEY);\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(up.replace(".up.sql", ".down.sql")),
        "DROP TABLE users;\n",
    )
    .unwrap();
    let deploy = cutover(&dir, &["deploy"]);
    deploy.expect_code(0);
    assert!(
        deploy.stdout().contains("deployed to local (run "),
        "{}",
        deploy.all()
    );
    let status = cutover(&dir, &["migrate", "status"]);
    status.expect_code(0);
    assert!(status.stdout().contains("applied"), "{}", status.stdout());
    assert!(!status.stdout().contains("pending"), "{}", status.stdout());

    // A second migration made in the same second still gets a later version.
    let a = cutover(&dir, &["migrate", "new", "a"]);
    let b = cutover(&dir, &["migrate", "new", "b"]);
    let version = |run: &Run| -> i64 {
        let out = run.stdout();
        let name = Path::new(out.lines().next().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        name.split('_').next().unwrap().parse().unwrap()
    };
    assert!(version(&b) > version(&a), "{}{}", a.stdout(), b.stdout());
}

/// The ```sh blocks of the README's "Your own project in 5 minutes", run as written in
/// one shell, in an empty folder, with the binary this test run built first on PATH. A
/// line's `# exit N` is the exit code the README promises (0 unless it says).
#[test]
fn the_readmes_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let start = readme
        .find("## Your own project in 5 minutes")
        .expect("the walkthrough's heading");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + 3 + e);
    let section = &readme[start..end];
    let mut script = String::from("set -u\n");
    let mut commands = 0;
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed block");
        let mut lines = body[..close].lines();
        while let Some(line) = lines.next() {
            if line.trim().is_empty() {
                continue;
            }
            let (command, code) = match line.split_once(" # exit ") {
                Some((c, n)) => (c.to_owned(), n.trim().parse::<i32>().expect("# exit N")),
                None => (line.to_owned(), 0),
            };
            let mut text = command.clone();
            // A here-document goes on to its terminator.
            if let Some(at) = command.find("<<'") {
                let tag = command[at + 3..].trim_end_matches('\'').to_owned();
                for more in lines.by_ref() {
                    text.push('\n');
                    text.push_str(more);
                    if more == tag {
                        break;
                    }
                }
            }
            commands += 1;
            script.push_str(&format!(
                "echo '>>> {n}'\n{text}\ncode=$?\nif [ $code != {code} ]; then echo \"README walkthrough: \\`{quoted}\\` exited $code, the README says {code}\" >&2; exit 99; fi\n",
                n = commands,
                quoted = command.replace('`', "").replace('"', "\\\"").replace('$', "\\$"),
            ));
        }
        rest = &body[close + 3..];
    }
    assert!(commands >= 15, "{script}");
    let tmp = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_cutover")).parent().unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(tmp.path())
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env_remove("CUTOVER_ENV")
        .env_remove("CUTOVER_CONFIG")
        .env_remove("CUTOVER_OUTPUT")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let run = Run(output);
    assert_eq!(run.code(), 0, "{}\n--- script\n{script}", run.all());
    let out = run.all();
    // What the prose around the blocks says happened.
    for said in [
        "deployed to local (run ",
        "the rehearsal on a copy",
        "unique_emails",
        "ann@example.com",
        "rolled back",
    ] {
        assert!(out.contains(said), "no `{said}` in:\n{out}");
    }
    let status = cutover(&tmp.path().join("shop"), &["migrate", "status"]);
    assert!(status.stdout().contains("pending"), "{}", status.stdout());
    assert!(
        status.stdout().contains("import legacy users"),
        "{}",
        status.stdout()
    );
}

/// A typo in a SQLite path (`data/` instead of `state/`) is an error that names the
/// path, touches nothing and creates no file; `create: true` is the way to ask for a new
/// database there.
#[test]
fn a_sqlite_path_whose_folder_is_missing_is_an_error_not_a_new_database() {
    let p = Project::new();
    p.write_config(
        &p.default_config()
            .replace("sqlite://state/app.db", "sqlite://data/app.db"),
    );
    for args in [
        &["deploy", "-y"][..],
        &["plan"],
        &["migrate", "status"],
        &["migrate", "up"],
    ] {
        let run = p.run(args);
        assert_ne!(run.code(), 0, "{args:?}: {}", run.all());
        assert!(
            run.stderr()
                .contains("does not exist, and neither does its folder")
                && run.stderr().contains("create: true"),
            "{args:?}: {}",
            run.stderr()
        );
    }
    let deploy = p.run(&["deploy", "-y"]);
    deploy.expect_code(2);
    assert!(!p.file("data").exists());
    assert_eq!(p.read("platform/maintenance"), "maintenance=false\n");

    p.write_config(&p.default_config().replace(
        "url: \"sqlite://state/app.db\"",
        "url: \"sqlite://data/app.db\", create: true",
    ));
    p.run(&["deploy", "-y"]).expect_code(0);
    assert!(p.file("data/app.db").is_file());
}

/// With several environments `default_environment:` picks one; it must name one the
/// file defines (at its line).
#[test]
fn default_environment_picks_the_environment_and_is_checked() {
    let p = Project::new();
    let config = p.default_config();
    let two = config.replace(
        "environments:\n",
        "environments:\n  production:\n    confirm: typed\n    database: { kind: sqlite, url: \"sqlite://prod.db\" }\n",
    );
    p.write_config(&two);
    let run = p.run(&["migrate", "status"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("default_environment"),
        "{}",
        run.stderr()
    );

    p.write_config(&two.replace(
        "environments:\n",
        "default_environment: local\nenvironments:\n",
    ));
    let run = p.run(&["migrate", "status"]);
    run.expect_code(0);
    assert!(
        run.stdout().contains("sqlite://state/app.db"),
        "{}",
        run.stdout()
    );

    p.write_config(&two.replace(
        "environments:\n",
        "default_environment: locl\nenvironments:\n",
    ));
    let run = p.run(&["migrate", "status"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains(
            "deploy.yaml:5:22: default_environment `locl` is not defined; did you mean `local`?"
        ),
        "{}",
        run.stderr()
    );
}

/// An environment's health URL from an unset variable does not stop the commands that do
/// not poll it; a deploy, whose `health` step does, stops at the plan naming it.
#[test]
fn an_unset_health_variable_only_stops_what_polls_health() {
    let p = Project::new();
    let url = p.health.url.clone();
    p.write_config(
        &p.default_config()
            .replace(&url, "${env:TEST_UNSET_HEALTH_URL}"),
    );
    for args in [
        &["migrate", "status"][..],
        &["backup", "list"],
        &["history"],
    ] {
        let run = p.run(args);
        run.expect_code(0);
    }
    let deploy = p.run(&["deploy", "-y"]);
    deploy.expect_code(2);
    assert!(
        deploy.stderr().contains("TEST_UNSET_HEALTH_URL"),
        "{}",
        deploy.stderr()
    );
    assert_eq!(p.read("platform/maintenance"), "maintenance=false\n");
    let with = p
        .cmd()
        .args(["deploy", "-y"])
        .env("TEST_UNSET_HEALTH_URL", &url)
        .output()
        .unwrap();
    Run(with).expect_code(0);
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let bash = cutover(dir.path(), &["completions", "bash"]);
    bash.expect_code(0);
    assert!(
        bash.stdout().contains("complete -F _cutover"),
        "{}",
        bash.stdout()
    );
    assert!(bash.stdout().contains("rollback"));
    let man = cutover(dir.path(), &["man"]);
    man.expect_code(0);
    assert!(
        man.stdout().starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &man.stdout()[..200.min(man.stdout().len())]
    );
    assert!(man.stdout().contains(".TH cutover 1"), "{}", man.stdout());
}

/// `cutover completions bash | head` is not an error: the script (more than a pipe's
/// 64 KiB) meets a reader that stopped early.
#[test]
fn generated_text_into_a_closed_pipe_is_not_an_error() {
    use std::io::Read;
    let bash = cutover(
        tempfile::tempdir().unwrap().path(),
        &["completions", "bash"],
    );
    assert!(bash.0.stdout.len() > 64 * 1024, "{}", bash.0.stdout.len());
    let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Status words are coloured when asked (`--color always`, `CLICOLOR_FORCE`), never with
/// `NO_COLOR` or `--color never`, and never in JSON.
#[test]
fn colour_follows_the_flag_and_the_conventions() {
    let p = Project::new();
    let green_ok = "\u{1b}[32mok\u{1b}[0m";
    let run = |args: &[&str], vars: &[(&str, &str)]| {
        let mut c = p.cmd();
        c.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = Run(c.args(args).output().unwrap());
        out.expect_code(0);
        out
    };
    for (args, vars) in [
        (
            &["deploy", "-y", "--color", "always"][..],
            &[("NO_COLOR", "1")][..],
        ),
        (&["deploy", "-y"], &[("CLICOLOR_FORCE", "1")]),
    ] {
        let out = run(args, vars);
        assert!(
            out.all().contains(green_ok),
            "{args:?} {vars:?}: {}",
            out.all()
        );
    }
    for (args, vars) in [
        (
            &["deploy", "-y", "--color", "never"][..],
            &[("CLICOLOR_FORCE", "1")][..],
        ),
        (
            &["deploy", "-y"],
            &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
        ),
        (
            &["deploy", "-y", "--output", "json", "--color", "always"],
            &[],
        ),
        (&["deploy", "-y"], &[]),
    ] {
        let out = run(args, vars);
        assert!(
            !out.all().contains('\u{1b}'),
            "{args:?} {vars:?}: {}",
            out.all()
        );
    }
}

/// A SQLite file that is gone after a deploy succeeded on it is not taken for a first
/// deploy: the plan stops (exit 2) naming the file and the run; `create: true` starts over.
#[test]
fn a_database_file_gone_after_a_deploy_is_not_a_first_deploy() {
    let p = Project::new();
    p.run(&["deploy", "-y"]).expect_code(0);
    std::fs::remove_file(p.file("state/app.db")).unwrap();
    let again = p.run(&["deploy", "-y"]);
    again.expect_code(2);
    assert!(
        again
            .stderr()
            .contains("state/app.db does not exist, but run ")
            && again
                .stderr()
                .contains("deployed to it: was it moved or deleted?"),
        "{}",
        again.stderr()
    );
    assert!(!p.file("state/app.db").exists());
    p.write_config(&p.default_config().replace(
        "url: \"sqlite://state/app.db\"",
        "url: \"sqlite://state/app.db\", create: true",
    ));
    p.run(&["deploy", "-y"]).expect_code(0);
}

/// A variable set to nothing is named at its line, not passed on as an empty URL; a
/// health URL that is not http(s) is refused where it is written.
#[test]
fn an_empty_variable_and_a_health_url_that_is_not_http_are_named_at_their_lines() {
    let p = Project::new();
    p.write_config(&p.default_config().replace(
        "url: \"sqlite://state/app.db\"",
        "url: \"${env:CUTOVER_TEST_EMPTY_URL}\"",
    ));
    let run = Run(p
        .cmd()
        .args(["migrate", "status"])
        .env("CUTOVER_TEST_EMPTY_URL", "")
        .output()
        .unwrap());
    run.expect_code(2);
    assert!(
        run.stderr().contains("deploy.yaml:7:37:")
            && run
                .stderr()
                .contains("environment variable `CUTOVER_TEST_EMPTY_URL` is set but empty"),
        "{}",
        run.stderr()
    );
    let url = p.health.url.clone();
    p.write_config(&p.default_config().replace(&url, "htp:/127.0.0.1/health"));
    let run = p.run(&["migrate", "status"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("deploy.yaml:16:20:")
            && run
                .stderr()
                .contains("invalid health URL: `htp:` is not http or https"),
        "{}",
        run.stderr()
    );
}

/// A version a digit short is not a version: going "down to" it would take back every
/// migration above it. The plan stops (exit 2) with the nearest version and touches nothing.
#[test]
fn a_version_to_go_back_to_must_exist() {
    let p = Project::new();
    p.run(&["deploy", "-y"]).expect_code(0);
    let before = p.db_snapshot();
    for args in [
        &["migrate", "down", "--to", "2024030110000"][..],
        &["rollback", "--to", "2024030110000", "-y"],
    ] {
        let run = p.run(args);
        run.expect_code(2);
        assert!(
            run.stderr()
                .contains("version 2024030110000 is not a migration of this project")
                && run.stderr().contains("did you mean `20240301100"),
            "{args:?}: {}",
            run.stderr()
        );
    }
    assert_eq!(p.db_snapshot(), before);
    p.run(&["migrate", "down", "--to", "20240301100000"])
        .expect_code(0);
}
