//! One run per environment at a time: deploys started together from separate processes,
//! and lock files left by dead, expired and live holders.

mod support;

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};
use std::time::Duration;

use chrono::Utc;
use cutover::engine::lock::LockInfo;
use support::{Project, Run, State, hostname, replace_once};

const NEW: &str = "20250101000000_add_x";
const NEW_UP: &str = "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\nINSERT INTO x_notes (note) VALUES ('hello');\n";
const NEW_DOWN: &str = "DROP TABLE x_notes;\n";

/// A deployed project with data and one pending migration; its state.
fn prepared() -> (Project, State) {
    support::prepared(NEW, NEW_UP, NEW_DOWN)
}

/// The new migration is applied, the platform is back up and no lock is left.
#[track_caller]
fn assert_deployed(p: &Project) {
    let state = p.state();
    assert_eq!(state.db["table x_notes"].len(), 2, "{:?}", state.db);
    assert_eq!(state.platform, "maintenance=false\njobs=3\n");
    assert!(state.locks.is_empty(), "{:?}", state.locks);
    assert_eq!(
        p.journals().last().unwrap().last().unwrap()["status"],
        "succeeded"
    );
}

fn write_lock(p: &Project, info: &LockInfo) {
    p.write(
        ".cutover/locks/local.lock.json",
        &serde_json::to_string_pretty(info).unwrap(),
    );
}

fn lock_info(run_id: &str, host: String, pid: u32, expires_in: chrono::Duration) -> LockInfo {
    let now = Utc::now();
    LockInfo {
        run_id: run_id.into(),
        command: "deploy".into(),
        host,
        pid,
        pid_started: None,
        user: "someone".into(),
        acquired_at: now - chrono::Duration::minutes(5),
        expires_at: now + expires_in,
    }
}

#[test]
fn simultaneous_deploys_one_runs_and_the_others_exit_4() {
    const N: usize = 10;
    let (p, _) = prepared();
    // Right after preflight the run waits for `go`, holding the lock, before touching
    // anything. The loop is bounded so a bug cannot hang the suite.
    let gate = "  - id: gate\n    uses: command\n    with:\n      run: 'touch at-gate; i=0; while [ ! -f go ]; do i=$((i+1)); if [ $i -gt 1200 ]; then exit 1; fi; sleep 0.05; done'\n";
    let text = replace_once(
        &p.pipeline(),
        "  - id: maintenance-on\n",
        &format!("{gate}  - id: maintenance-on\n"),
    );
    p.write_pipeline(&text);

    let (tx, rx) = mpsc::channel::<(usize, Output)>();
    let mut pids = Vec::new();
    for i in 0..N {
        let child = p
            .cmd()
            .arg("deploy")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        pids.push(child.id());
        let tx = tx.clone();
        std::thread::spawn(move || {
            tx.send((i, child.wait_with_output().unwrap())).ok();
        });
    }
    drop(tx);

    // Every deploy but one stops: the winner is parked at the gate until `go` exists.
    let wait = Duration::from_secs(60);
    let mut losers = Vec::new();
    for _ in 1..N {
        let (i, output) = rx
            .recv_timeout(wait)
            .expect("all but one deploy should stop at once");
        losers.push((i, Run(output)));
    }
    let winner = (0..N).find(|i| losers.iter().all(|(l, _)| l != i)).unwrap();
    let holder: LockInfo =
        serde_json::from_str(&std::fs::read_to_string(p.lock_file()).unwrap()).unwrap();
    assert_eq!(
        holder.pid, pids[winner],
        "the lock names the running deploy"
    );
    for (_, run) in &losers {
        run.expect_code(4);
        let out = run.all();
        assert!(
            out.contains(&holder.run_id),
            "should name the holder {}:\n{out}",
            holder.run_id
        );
        assert!(
            out.contains("holds the deploy lock") || out.contains("did not finish"),
            "{out}"
        );
    }
    let status = p.run(&["lock", "status"]);
    status.success();
    assert!(
        status
            .all()
            .contains(&format!("is locked by run {}", holder.run_id)),
        "{}",
        status.all()
    );
    // Only the winner started a run, and it has not touched the platform yet. The losers
    // stop at the lock, which the winner takes before its plan: wait for it to reach the
    // gate.
    let parked = std::time::Instant::now() + wait;
    while !p.file("at-gate").exists() {
        assert!(
            std::time::Instant::now() < parked,
            "the winner never reached the gate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.journals().len(), 2);
    assert!(p.calls().is_empty(), "{:?}", p.calls());

    p.write("go", "");
    let (i, output) = rx.recv_timeout(wait).expect("the winner finishes");
    assert_eq!(i, winner);
    Run(output).success();
    assert_deployed(&p);
    assert_eq!(
        p.calls(),
        [
            "maintenance_on",
            "scale_jobs_0",
            "maintenance_off",
            "scale_jobs_3"
        ]
    );
}

#[test]
fn lock_of_a_dead_process_is_taken_over() {
    let (p, _) = prepared();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{dead}")).exists());
    // Its lease has an hour to go, but its process is gone from this host.
    write_lock(
        &p,
        &lock_info(
            "20250101T000000000Z-dead01",
            hostname(),
            dead,
            chrono::Duration::hours(1),
        ),
    );
    let status = p.run(&["lock", "status"]);
    status.success();
    assert!(status.all().contains("stale lock"), "{}", status.all());

    let run = p.run(&["deploy"]);
    run.success();
    assert_deployed(&p);
    let run_id = p.journals().last().unwrap()[0]["run_id"].clone();
    assert_ne!(run_id, "20250101T000000000Z-dead01");
}

#[test]
fn expired_lock_is_taken_over() {
    let (p, _) = prepared();
    write_lock(
        &p,
        &lock_info(
            "20250101T000000000Z-gone02",
            "build-agent-7".into(),
            1,
            chrono::Duration::minutes(-1),
        ),
    );
    p.run(&["deploy"]).success();
    assert_deployed(&p);
}

#[test]
fn live_lock_blocks_deploy_until_force_released() {
    let (p, before) = prepared();
    // This test process is alive, on this host, with a lease an hour long.
    let info = lock_info(
        "20250101T000000000Z-live03",
        hostname(),
        std::process::id(),
        chrono::Duration::hours(1),
    );
    write_lock(&p, &info);
    let lock_text = std::fs::read_to_string(p.lock_file()).unwrap();

    let run = p.run(&["deploy"]);
    run.expect_code(4);
    let out = run.all();
    assert!(out.contains("holds the deploy lock"), "{out}");
    assert!(out.contains(&info.run_id), "{out}");
    assert!(out.contains(&format!("pid {}", info.pid)), "{out}");
    assert_eq!(p.state().db, before.db);
    assert_eq!(p.state().platform, before.platform);
    assert_eq!(std::fs::read_to_string(p.lock_file()).unwrap(), lock_text);
    assert_eq!(p.journals().len(), 1, "no run started");
    assert!(p.calls().is_empty());

    let status = p.run(&["lock", "status"]);
    status.success();
    let out = status.all();
    assert!(
        out.contains(&format!("is locked by run {}", info.run_id)),
        "{out}"
    );
    assert!(out.contains(&format!("pid {}", info.pid)), "{out}");

    // Without a terminal, releasing needs --yes; the lock stays.
    p.run(&["lock", "release", "--force"]).expect_code(5);
    assert_eq!(std::fs::read_to_string(p.lock_file()).unwrap(), lock_text);

    p.run(&["lock", "release", "--force", "--yes"]).success();
    assert!(p.locks().is_empty(), "{:?}", p.locks());
    let status = p.run(&["lock", "status"]);
    assert!(status.all().contains("is not locked"), "{}", status.all());

    p.run(&["deploy"]).success();
    assert_deployed(&p);
}

/// Several runners find the same stale lock at the same moment: however they interleave,
/// at most one of them may end up holding the lock. (Taking a stale lock by renaming it
/// away let a slow taker rename away the fresh lock of a fast one: both ran.)
#[test]
fn racing_takers_of_a_stale_lock_never_both_hold_it() {
    const TAKERS: usize = 8;
    const ROUNDS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = cutover::engine::lock::lock_path(dir.path(), "local");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let stale = serde_json::to_string(&lock_info(
        "20250101T000000000Z-old004",
        "build-agent-7".into(),
        1,
        chrono::Duration::minutes(-1),
    ))
    .unwrap();
    let winners = AtomicUsize::new(0);
    let doubles = AtomicUsize::new(0);
    let won = AtomicUsize::new(0);
    let lock_left = AtomicUsize::new(0);
    let (reset, start, done, released) = (
        Barrier::new(TAKERS),
        Barrier::new(TAKERS),
        Barrier::new(TAKERS),
        Barrier::new(TAKERS),
    );
    std::thread::scope(|s| {
        for t in 0..TAKERS {
            let path = &path;
            let (stale, winners, doubles, won, lock_left) =
                (&stale, &winners, &doubles, &won, &lock_left);
            let (reset, start, done, released) = (&reset, &start, &done, &released);
            let dir = dir.path();
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for round in 0..ROUNDS {
                        // One taker puts a fresh stale lock in place; then all go at once.
                        if reset.wait().is_leader() {
                            std::fs::write(path, stale).unwrap();
                            winners.store(0, Ordering::SeqCst);
                        }
                        start.wait();
                        let guard = cutover::engine::lock::acquire(
                            dir,
                            "local",
                            &format!("taker-{t}-{round}"),
                            "deploy",
                            Duration::from_secs(60),
                        );
                        if guard.is_ok() {
                            winners.fetch_add(1, Ordering::SeqCst);
                        }
                        // Everyone holds what they got until all have tried.
                        done.wait();
                        drop(guard);
                        if released.wait().is_leader() {
                            let n = winners.load(Ordering::SeqCst);
                            doubles.fetch_add(usize::from(n > 1), Ordering::SeqCst);
                            won.fetch_add(usize::from(n == 1), Ordering::SeqCst);
                            lock_left.fetch_add(usize::from(path.exists()), Ordering::SeqCst);
                        }
                    }
                });
            });
        }
    });
    let (doubles, won) = (doubles.into_inner(), won.into_inner());
    assert_eq!(
        lock_left.into_inner(),
        0,
        "rounds after which a lock was left"
    );
    assert_eq!(doubles, 0, "rounds where two takers held the lock at once");
    assert!(
        won > ROUNDS / 2,
        "the stale lock was taken in {won}/{ROUNDS} rounds"
    );
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left in the lock folder: {left:?}");
}

/// Runners taking and releasing the lock as fast as they can: never two holders at once.
/// (A lock file created in place was briefly empty; a runner reading it then took it for
/// a damaged, stale lock and stole it.)
#[test]
fn hammered_lock_is_never_held_twice() {
    const RUNNERS: usize = 4;
    let budget = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let holding = AtomicUsize::new(0);
    let doubles = AtomicUsize::new(0);
    let taken = AtomicUsize::new(0);
    let start = Barrier::new(RUNNERS);
    std::thread::scope(|s| {
        for t in 0..RUNNERS {
            let (holding, doubles, taken, start, dir) =
                (&holding, &doubles, &taken, &start, dir.path());
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    start.wait();
                    let began = std::time::Instant::now();
                    let mut i = 0;
                    while began.elapsed() < budget {
                        i += 1;
                        let Ok(guard) = cutover::engine::lock::acquire(
                            dir,
                            "local",
                            &format!("runner-{t}-{i}"),
                            "deploy",
                            Duration::from_secs(60),
                        ) else {
                            continue;
                        };
                        taken.fetch_add(1, Ordering::SeqCst);
                        if holding.fetch_add(1, Ordering::SeqCst) > 0 {
                            doubles.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::yield_now();
                        holding.fetch_sub(1, Ordering::SeqCst);
                        guard.release();
                    }
                });
            });
        }
    });
    let taken = taken.load(Ordering::SeqCst);
    assert!(taken > 10, "the lock was taken only {taken} time(s)");
    assert_eq!(
        doubles.load(Ordering::SeqCst),
        0,
        "times a runner took the lock while another held it (of {taken})"
    );
}
