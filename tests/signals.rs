//! Ctrl-C / SIGTERM during a run stops the current step and rolls back.

mod support;

use std::time::{Duration, Instant};

use support::{Project, Run};

/// Waits for a file the running step writes: the event we synchronise on.
fn wait_for(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::yield_now();
    }
}

#[test]
fn sigterm_mid_step_rolls_back_and_exits_130() {
    let p = Project::new();
    p.deployed_with_data();
    p.write(
        "migrations/20250101000000_add_rating.up.sql",
        "ALTER TABLE recipes ADD COLUMN rating INTEGER;\n",
    );
    p.write(
        "migrations/20250101000000_add_rating.down.sql",
        "ALTER TABLE recipes DROP COLUMN rating;\n",
    );
    let pipeline = p.read("pipelines/deploy.yaml").replace(
        "  - uses: validate",
        "  - id: long-task\n    uses: command\n    with: { run: \"touch started; while true; do sleep 0.05; done\" }\n  - uses: validate",
    );
    p.write("pipelines/deploy.yaml", &pipeline);
    let db_before = p.db_snapshot();
    let platform_before = p.platform();

    let child = p
        .cmd()
        .arg("deploy")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&p.file("started"));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = Run(child.wait_with_output().unwrap());
    run.expect_code(130);
    assert!(run.stderr().contains("interrupted"), "{}", run.stderr());
    assert_eq!(p.db_snapshot(), db_before, "the new migration was reverted");
    assert_eq!(p.platform(), platform_before);
    assert!(p.locks().is_empty());
    let journals = p.journals();
    assert_eq!(
        journals.last().unwrap().last().unwrap()["status"],
        "rolled_back"
    );
}
