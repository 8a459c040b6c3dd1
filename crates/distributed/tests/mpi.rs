//! Multi-process checks: `mpirun -n 2` and `-n 3` on this machine (loopback), running the
//! `mpi_check` binary's cases. Built with `--features mpi` only; `.ci/run` installs Open MPI and runs
//! them, so in CI they never skip. A missing `mpirun` is a failure, not a skip.
#![cfg(feature = "mpi")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `mpirun -n <n> mpi_check <case>`; returns (exit success, stdout + stderr, wall time).
/// Kills the job and fails if it runs past `limit` (a hang).
fn mpirun(n: usize, case: &str, timeout_s: &str, limit: Duration) -> (bool, String, Duration) {
    let out_path = std::env::temp_dir().join(format!("ember-mpi-{case}-{n}-{}.log", std::process::id()));
    let log = std::fs::File::create(&out_path).expect("log file");
    let start = Instant::now();
    let mut child = Command::new("mpirun")
        .args(["-n", &n.to_string(), "--oversubscribe", env!("CARGO_BIN_EXE_mpi_check"), case])
        // Open MPI refuses to run as root (CI containers) without these
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("EMBER_DIST_TIMEOUT", timeout_s)
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start mpirun ({e}): install Open MPI (apt-get install openmpi-bin libopenmpi-dev)")
        });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!("mpirun -n {n} {case} hung past {limit:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    (status.success(), text, start.elapsed())
}

fn passes_on_every_rank(case: &str) {
    for n in [2, 3] {
        let (ok, text, _) = mpirun(n, case, "60", Duration::from_secs(300));
        assert!(ok, "mpirun -n {n} mpi_check {case} failed:\n{text}");
        for r in 0..n {
            assert!(
                text.contains(&format!("PASS {case} rank {r}\n")),
                "rank {r} did not pass {case} with {n} ranks:\n{text}"
            );
        }
        println!("{text}");
    }
}

#[test]
fn collectives_match_their_definitions() {
    passes_on_every_rank("collectives");
}

#[test]
fn ddp_equals_one_process_on_the_whole_batch() {
    passes_on_every_rank("ddp");
}

#[test]
fn no_sync_accumulates_locally_then_averages() {
    passes_on_every_rank("no_sync");
}

#[test]
fn unused_parameters_are_found_or_named() {
    passes_on_every_rank("unused");
}

#[test]
fn sync_batch_norm_equals_batch_norm_on_the_whole_batch() {
    passes_on_every_rank("sync_bn");
}

#[test]
fn a_rank_that_leaves_makes_the_others_time_out() {
    let (ok, text, took) = mpirun(2, "dead_rank", "3", Duration::from_secs(120));
    assert!(text.contains("all_reduce: timed out after 3.0 s on rank 0 of 2"), "no timeout reported:\n{text}");
    assert!(text.contains("PASS dead_rank rank 0"), "rank 0's checks after the timeout failed:\n{text}");
    // the broken group aborts the job when dropped, instead of finalising with a collective in flight
    assert!(!ok, "the job should end with MPI_Abort's status:\n{text}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn a_rank_that_crashes_ends_the_job() {
    let (ok, text, took) = mpirun(3, "crashed_rank", "60", Duration::from_secs(120));
    assert!(!ok && text.contains("exits with status 3"), "{text}");
    assert!(took < Duration::from_secs(30), "the surviving ranks were not stopped promptly: {took:?}\n{text}");
}
