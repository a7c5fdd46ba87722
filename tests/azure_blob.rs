//! The `azure-blob` backup store against a real Azure Blob Storage emulator (Azurite),
//! through the `cutover` binary. The blobs are read back with the SDK to see what the
//! service really holds, uncommitted blocks included.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use azure_storage_blob::models::{BlockBlobClientGetBlockListOptions, BlockListType};
use sha2::Digest;
use support::azurite::{self, KEY, blobs, download};
use support::fault_proxy::{FaultProxy, Mode};
use support::{Project, Run, exec_sql, replace_once, rt};

/// Committed and uncommitted block counts of a blob (0, 0 when it does not exist).
fn blocks(container_name: &str, blob: &str) -> (usize, usize) {
    rt().block_on(async {
        let c = azurite::client(container_name);
        let list = c
            .client
            .blob_client(blob)
            .block_blob_client()
            .get_block_list(
                BlockListType::All,
                Some(BlockBlobClientGetBlockListOptions::default()),
            )
            .await;
        match list {
            Ok(r) => {
                let list = r.into_model().unwrap();
                (
                    list.committed_blocks.map_or(0, |b| b.len()),
                    list.uncommitted_blocks.map_or(0, |b| b.len()),
                )
            }
            Err(_) => (0, 0),
        }
    })
}

/// A project whose `local` environment keeps its backups in a fresh Azurite container.
fn project(extra: &str) -> (Project, String) {
    let az = azurite::server();
    let name = azurite::container();
    let p = Project::new();
    let config = replace_once(
        &p.default_config(),
        "backups: { kind: local, path: state/backups }",
        &format!("backups: {}", az.backups(&name, extra)),
    );
    p.write_config(&config);
    (p, name)
}

fn result(stdout: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(stdout.lines().last().unwrap()).unwrap()["result"]
        .clone()
}

fn backup_ids(p: &Project) -> Vec<String> {
    let list = p.run(&["backup", "list", "--output", "json"]);
    list.success();
    result(&list.stdout())["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn deploy_backs_up_to_blob_storage_and_restore_reads_it_back() {
    let (p, name) = project("");
    p.deployed_with_data();
    let run = p.run(&["deploy"]);
    run.success();
    let list = p.run(&["backup", "list", "--output", "json"]);
    list.success();
    let backups = result(&list.stdout())["backups"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(backups.len(), 2, "{backups:?}");
    // What the service holds is exactly the dump the manifest describes.
    let newest = &backups[0];
    let id = newest["id"].as_str().unwrap();
    let bytes = download(&name, &format!("{id}.dump"));
    assert_eq!(bytes.len() as u64, newest["size"].as_u64().unwrap());
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        newest["sha256"].as_str().unwrap()
    );
    assert_eq!(
        blocks(&name, &format!("{id}.dump")).1,
        0,
        "no block left over"
    );
    let mut expected: Vec<String> = backups
        .iter()
        .flat_map(|b| {
            let id = b["id"].as_str().unwrap();
            [format!("{id}.dump"), format!("{id}.manifest.json")]
        })
        .collect();
    expected.sort();
    assert_eq!(blobs(&name), expected, "no probe or partial blob left");

    // Restore streams it back over changed data.
    let before = p.db_snapshot();
    exec_sql(
        &p.file("state/app.db"),
        "DELETE FROM recipes; DELETE FROM users;",
    );
    assert_ne!(p.db_snapshot(), before);
    p.run(&["backup", "restore", id, "--yes"]).success();
    support::assert_same_db(&p.db_snapshot(), &before, "after restore from blob");
    p.run(&["backup", "verify", id]).success();
}

#[test]
fn a_backup_bigger_than_a_block_round_trips() {
    let (p, name) = project("");
    p.deployed_with_data();
    // About 20 MiB of incompressible rows: six 4 MiB blocks, staged while the dump runs.
    exec_sql(
        &p.file("state/app.db"),
        "CREATE TABLE filler (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 320) INSERT INTO filler SELECT randomblob(65536) FROM n;",
    );
    let before = p.db_snapshot();
    p.run(&["backup", "create", "--name", "big"]).success();
    assert_eq!(blocks(&name, "big.dump"), (6, 0));
    exec_sql(&p.file("state/app.db"), "DELETE FROM filler;");
    p.run(&["backup", "restore", "big", "--yes"]).success();
    support::assert_same_db(&p.db_snapshot(), &before, "after restore of a big backup");
}

#[test]
fn rollback_by_restore_reads_the_backup_from_blob_storage() {
    let (p, _name) = project("");
    p.deployed_with_data();
    let before = p.db_snapshot();
    // A migration without a down file, and a check that fails once it is applied: only
    // the backup in blob storage can undo it.
    p.add_migration(
        "20250101000000_add_rating",
        "ALTER TABLE recipes ADD COLUMN rating INTEGER NOT NULL DEFAULT 3;\n",
        None,
    );
    p.fail_validation_once_migrated("fails-after-migrating");
    p.edit_pipeline(
        "with: { to: latest, rollback: auto }",
        "with: { to: latest, rollback: restore }",
    );
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    let journal = p.journals().pop().unwrap();
    assert!(
        journal
            .iter()
            .any(|r| r["record"] == "compensation_finished" && r["id"] == "migrate"),
        "{journal:?}"
    );
    assert_eq!(journal.last().unwrap()["status"], "rolled_back");
    support::assert_same_db(&p.db_snapshot(), &before, "after the restore rollback");
}

/// The database grown to about 24 MiB, so its dump takes several blocks.
fn grow(p: &Project) {
    exec_sql(
        &p.file("state/app.db"),
        "CREATE TABLE filler (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 384) INSERT INTO filler SELECT randomblob(65536) FROM n;",
    );
}

#[test]
fn a_killed_upload_never_shows_as_a_backup() {
    let az = azurite::server();
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", az.port).parse().unwrap());
    let (p, name) = project("");
    p.deployed_with_data();
    grow(&p);
    let before = backup_ids(&p);
    // Through a slow link, so the upload is surely half-way when it is killed.
    let config = p.read("deploy.yaml").replace(
        &az.url(),
        &format!("http://127.0.0.1:{}/devstoreaccount1", proxy.port()),
    );
    p.write_config(&config);
    proxy.set(Mode::Latency(Duration::from_millis(20)));
    let mut child = p
        .cmd()
        .args(["backup", "create", "--name", "killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while blocks(&name, "killed.dump").1 == 0 {
        assert!(Instant::now() < deadline, "no block was ever staged");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    proxy.set(Mode::Pass);
    let (committed, uncommitted) = blocks(&name, "killed.dump");
    assert_eq!(committed, 0);
    assert!(uncommitted > 0);
    assert!(
        !blobs(&name).iter().any(|b| b.starts_with("killed")),
        "{:?}",
        blobs(&name)
    );
    assert_eq!(backup_ids(&p), before);
    let verify = p.run(&["backup", "verify", "killed"]);
    // No such backup: bad input.
    verify.expect_code(2);
    assert!(verify.stderr().contains("not found"), "{}", verify.stderr());
    // The dead run is recovered (a backup has nothing to undo); then the same name works:
    // the abandoned blocks are replaced, not mixed in.
    let recover = p.run(&["recover"]);
    recover.expect_code(1);
    assert!(
        recover.stdout().contains("rolled back"),
        "{}",
        recover.stdout()
    );
    p.run(&["backup", "create", "--name", "killed"]).success();
    p.run(&["backup", "verify", "killed"]).success();
}

#[test]
fn a_dump_tool_that_fails_leaves_no_backup() {
    // PostgreSQL, with a pg_dump that writes a whole dump and 20 MB more, then exits 1:
    // blocks are staged, but nothing may be committed.
    let (p, _db) = support::pg::project();
    let az = azurite::server();
    let name = azurite::container();
    let config = p.read("deploy.yaml").replace(
        "backups: { kind: local, path: state/backups }",
        &format!("backups: {}", az.backups(&name, "")),
    );
    p.write_config(&config);
    p.run(&["deploy"]).success();
    let before = backup_ids(&p);
    assert_eq!(before.len(), 1, "the deploy's own backup");
    let bin = tempfile::tempdir().unwrap();
    let wrapper = bin.path().join("pg_dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec '{real}' \"$@\";; esac\n'{real}' \"$@\" && head -c 20000000 /dev/urandom\necho 'pg_dump: error: connection lost' >&2\nexit 1\n",
            real = support::pg::tool("pg_dump").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let run = Run(p
        .cmd()
        .args(["backup", "create", "--name", "doomed"])
        .env("PATH", path)
        .output()
        .unwrap());
    assert_ne!(run.code(), 0, "{}", run.all());
    assert!(run.all().contains("connection lost"), "{}", run.all());
    // Blocks may have been staged (the abort cancels those in flight); none is committed.
    assert_eq!(blocks(&name, "doomed.dump").0, 0);
    assert!(!blobs(&name).iter().any(|b| b.starts_with("doomed")));
    assert_eq!(backup_ids(&p), before);
}

#[test]
fn prune_keeps_the_newest_by_count() {
    let (p, name) = project(", keep: 2");
    p.deployed_with_data();
    for n in ["b1", "b2", "b3"] {
        p.run(&["backup", "create", "--name", n]).success();
        // Distinct creation times, so newest-first is well defined.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let all = backup_ids(&p);
    assert_eq!(all.len(), 4);
    let dry = p.run(&["backup", "prune", "--dry-run"]);
    dry.success();
    assert_eq!(backup_ids(&p).len(), 4, "a dry run deletes nothing");
    p.run(&["backup", "prune"]).success();
    assert_eq!(backup_ids(&p), ["b3", "b2"]);
    let mut left = blobs(&name);
    left.sort();
    assert_eq!(
        left,
        ["b2.dump", "b2.manifest.json", "b3.dump", "b3.manifest.json"]
    );
}

#[test]
fn prune_by_age_deletes_what_is_older() {
    let (p, _name) = project(", keep: 2s");
    p.deployed_with_data();
    p.run(&["backup", "create", "--name", "old"]).success();
    std::thread::sleep(Duration::from_millis(2100));
    p.run(&["backup", "create", "--name", "new"]).success();
    p.run(&["backup", "prune"]).success();
    let ids = backup_ids(&p);
    assert!(ids.contains(&"new".to_owned()), "{ids:?}");
    assert!(!ids.contains(&"old".to_owned()), "{ids:?}");
}

#[test]
fn a_wrong_key_is_a_clear_error_and_nothing_is_touched() {
    let az = azurite::server();
    let name = azurite::container();
    let p = Project::new();
    // A well-formed key of another account.
    let wrong =
        "AAAAAdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let config = replace_once(
        &p.default_config(),
        "backups: { kind: local, path: state/backups }",
        &format!(
            "backups: {{ kind: azure-blob, account: \"{}\", container: {name}, key: \"{wrong}\" }}",
            az.url()
        ),
    );
    p.write_config(&config);
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(err.contains("403"), "{err}");
    assert!(err.contains("account key was refused"), "{err}");
    assert!(err.contains(&format!("container `{name}`")), "{err}");
    assert!(!run.all().contains(wrong), "the key is never shown");
    assert!(p.journals().is_empty());
    assert!(p.calls().is_empty());

    // A SAS given as a key is named for what it is.
    let sas_as_key = config.replace(wrong, "sv=2025-05-05&ss=b&sig=abc");
    p.write_config(&sas_as_key);
    let run = p.run(&["backup", "list"]);
    run.expect_code(2);
    assert!(run.stderr().contains("`sas:`"), "{}", run.stderr());
    assert!(run.stderr().contains("deploy.yaml"), "{}", run.stderr());

    // No key and no SAS means an Entra ID token, which is never sent to a plain-http
    // endpoint such as the emulator's.
    let entra = config.replace(&format!(", key: \"{wrong}\""), "");
    p.write_config(&entra);
    let run = p.run(&["backup", "list"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("only sent over https"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_sas_signs_requests_and_a_bad_one_is_refused() {
    let (p, name) = project("");
    p.deployed_with_data();
    let sas = account_sas("racwdl");
    let config = p
        .read("deploy.yaml")
        .replace(&format!("key: \"{KEY}\""), &format!("sas: \"{sas}\""));
    p.write_config(&config);
    p.run(&["backup", "create", "--name", "with-sas"]).success();
    assert!(blobs(&name).contains(&"with-sas.manifest.json".to_owned()));
    p.run(&["backup", "verify", "with-sas"]).success();

    // A SAS that may only read cannot write: the plan says so and shows no signature.
    let read_only = account_sas("rl");
    p.write_config(&config.replace(&sas, &read_only));
    let run = p.run(&["backup", "create", "--name", "refused"]);
    run.expect_code(2);
    assert!(run.stderr().contains("403"), "{}", run.stderr());
    let sig = read_only.split("sig=").nth(1).unwrap();
    assert!(!run.all().contains(sig), "{}", run.all());
}

/// An account SAS for the development account with permissions `perms`, valid an hour.
fn account_sas(perms: &str) -> String {
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let version = "2025-05-05";
    let to_sign = format!(
        "{}\n{perms}\nb\nsco\n\n{expiry}\n\nhttps,http\n{version}\n\n",
        azurite::ACCOUNT
    );
    let signature = azure_core::hmac::hmac_sha256(
        &to_sign,
        &azure_core::credentials::Secret::new(KEY.to_owned()),
    )
    .unwrap();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("sv", version)
        .append_pair("ss", "b")
        .append_pair("srt", "sco")
        .append_pair("sp", perms)
        .append_pair("se", &expiry)
        .append_pair("spr", "https,http")
        .append_pair("sig", &signature);
    query.finish()
}

// ---- The deploy lock and journal in blob storage (`lock: { kind: azure-blob }`). ----

/// A runner: its own folder, state, database and platform, sharing only the container
/// that holds the lock and the journal. Its pipeline parks at a `hold` step (after
/// maintenance went on) until the file `release` appears.
fn runner(container: &str) -> Project {
    let az = azurite::server();
    let p = Project::new();
    let config = replace_once(
        &p.default_config(),
        "    health:",
        &format!(
            "    lock: {{ kind: azure-blob, lease: 15s, account: \"{}\", container: {container}, key: \"{KEY}\" }}\n    health:",
            az.url()
        ),
    );
    p.write_config(&config);
    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "  - id: jobs-down\n",
        "  - id: hold\n    uses: command\n    with: { run: \"touch holding; while [ ! -e release ]; do sleep 0.05; done\" }\n  - id: jobs-down\n",
    ));
    p
}

fn spawn_deploy(p: &Project) -> std::process::Child {
    p.cmd()
        .arg("deploy")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[track_caller]
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_ids(p: &Project) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(p.file(".cutover/journal"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".jsonl")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn two_runners_one_lease_holder_and_the_other_exits_4_naming_it() {
    let name = azurite::container();
    let (a, b) = (runner(&name), runner(&name));
    // B never parks: were it let in wrongly, it would finish rather than hang.
    b.write("release", "");
    let child = spawn_deploy(&a);
    let pid = child.id();
    wait_for("runner A at its hold step", || a.file("holding").exists());
    let a_run = run_ids(&a).pop().unwrap();

    let blocked = b.run(&["deploy"]);
    blocked.expect_code(4);
    let err = blocked.stderr();
    assert!(err.contains("another run holds the deploy lock"), "{err}");
    assert!(err.contains(&a_run), "names the holder's run: {err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(b.calls().is_empty(), "the blocked runner touched nothing");
    let status = b.run(&["lock", "status"]);
    status.success();
    assert!(status.stdout().contains(&a_run), "{}", status.stdout());
    // Past the 15 s lease the heartbeat has renewed it: B is still refused.
    let held_since = Instant::now();
    wait_for("the lease to outlive its length", || {
        held_since.elapsed() > Duration::from_secs(17)
    });
    let still = b.run(&["deploy"]);
    still.expect_code(4);
    assert!(still.stderr().contains(&a_run), "{}", still.stderr());

    a.write("release", "");
    let out = child.wait_with_output().unwrap();
    Run(out).success();
    // The lease is released at the end: B runs now, and sees A's finished run.
    b.run(&["deploy"]).success();
    let history = b.run(&["history", "--json"]);
    history.success();
    let runs = result(&history.stdout())["runs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    assert!(runs.iter().any(|r| r["run_id"] == a_run.as_str()));
    let stored = blobs(&name);
    assert!(
        stored.contains(&"cutover/testapp/local/lock".to_owned()),
        "{stored:?}"
    );
    assert!(
        stored.contains(&format!("cutover/testapp/local/journal/{a_run}.jsonl")),
        "{stored:?}"
    );
}

/// A run halted on one runner is seen, resumed and leased from another: while the
/// resume holds the lease, the first runner's `rollback` of the same run is refused with
/// exit 4, naming it, and changes nothing.
#[test]
fn resume_from_another_runner_takes_the_lease_and_a_rollback_meanwhile_is_refused() {
    let name = azurite::container();
    let (a, b) = (runner(&name), runner(&name));
    for p in [&a, &b] {
        p.write_pipeline(&replace_once(
            &p.pipeline(),
            "  - id: hold\n",
            "  - id: gate\n    uses: command\n    with: { run: \"test -e fixed\" }\n    on_failure: halt\n  - id: hold\n",
        ));
    }
    a.write("release", "");
    a.run(&["deploy"]).expect_code(3);
    let halted = run_ids(&a).pop().unwrap();

    // B has the fix, and never saw the run: the shared journals bring it.
    b.write("fixed", "");
    let child = b
        .cmd()
        .args(["resume", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("runner B's resume at its hold step", || {
        b.file("holding").exists()
    });
    let refused = a.run(&["rollback", "--yes"]);
    refused.expect_code(4);
    assert!(
        refused
            .stderr()
            .contains("another run holds the deploy lock"),
        "{}",
        refused.stderr()
    );
    assert!(refused.stderr().contains(&halted), "{}", refused.stderr());

    b.write("release", "");
    let resumed = Run(child.wait_with_output().unwrap());
    resumed.success();
    let history = a.run(&["history", "--json"]);
    history.success();
    let runs = result(&history.stdout())["runs"]
        .as_array()
        .unwrap()
        .clone();
    let entry = runs
        .iter()
        .find(|r| r["run_id"] == halted.as_str())
        .unwrap();
    assert_eq!(entry["status"], "succeeded", "{runs:?}");
}

#[test]
fn a_lease_broken_mid_run_stops_the_run_and_rolls_back() {
    let name = azurite::container();
    let (a, b) = (runner(&name), runner(&name));
    let child = spawn_deploy(&a);
    wait_for("runner A at its hold step", || a.file("holding").exists());
    assert_eq!(a.platform(), "maintenance=true\njobs=3\n");
    // Another runner's operator breaks the lease.
    b.run(&["lock", "release", "--force", "--yes"]).success();
    let run = Run(child.wait_with_output().unwrap());
    assert_ne!(run.code(), 0, "{}", run.all());
    assert!(run.all().contains("lost the deploy lock"), "{}", run.all());
    assert_eq!(a.platform(), "maintenance=false\njobs=3\n", "rolled back");
    let journal = a.journals().pop().unwrap();
    assert_eq!(journal.last().unwrap()["status"], "rolled_back");
    assert!(
        !a.calls().contains(&"scale_jobs_0".to_owned()),
        "no step after the hold ran"
    );
}

#[test]
fn history_and_recover_read_the_blob_journal_from_another_state_folder() {
    let name = azurite::container();
    let (a, b) = (runner(&name), runner(&name));
    let mut child = spawn_deploy(&a);
    wait_for("runner A at its hold step", || a.file("holding").exists());
    let a_run = run_ids(&a).pop().unwrap();
    child.kill().unwrap(); // SIGKILL: the runner is lost mid-run
    child.wait().unwrap();

    // B has never seen this run, yet its history shows it unfinished.
    let history = b.run(&["history", "--json"]);
    history.success();
    let runs = result(&history.stdout())["runs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run_id"], a_run.as_str());
    assert!(runs[0]["status"].is_null(), "{runs:?}");

    // B recovers A's run once A's lease has lapsed (until then: exit 4, naming A).
    let mut recover = b.run(&["recover"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while recover.code() == 4 {
        assert!(recover.stderr().contains(&a_run), "{}", recover.stderr());
        assert!(
            Instant::now() < deadline,
            "the dead runner's lease never lapsed"
        );
        std::thread::sleep(Duration::from_millis(500));
        recover = b.run(&["recover"]);
    }
    recover.expect_code(1);
    assert!(recover.stdout().contains(&a_run), "{}", recover.stdout());
    assert!(
        b.calls().contains(&"maintenance_off".to_owned()),
        "{:?}",
        b.calls()
    );

    // The blob journal now closes A's run, so A's own history says so too.
    let history = a.run(&["history", "--json"]);
    history.success();
    let runs = result(&history.stdout())["runs"]
        .as_array()
        .unwrap()
        .clone();
    let a_entry = runs.iter().find(|r| r["run_id"] == a_run.as_str()).unwrap();
    assert_eq!(a_entry["status"], "rolled_back", "{runs:?}");
}

#[test]
fn a_bad_lock_section_is_bad_input() {
    let name = azurite::container();
    let p = runner(&name);
    let config = p.read("deploy.yaml");
    p.write_config(&config.replace("lease: 15s", "lease: 5m"));
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(run.stderr().contains("15s to 60s"), "{}", run.stderr());
    p.write_config(&config.replace(&format!(", container: {name}"), ""));
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("needs `account:` and `container:`"),
        "{}",
        run.stderr()
    );
    assert!(p.calls().is_empty());
}
