//! End-to-end tests of checkpoint, paused restore, resume and removal with
//! real runc, real CRIU and a busybox container.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    TestEnv, can_run_containers, last_line, parse_state_line, process_state, restore_json,
};

/// Waits until `path` has a `token=… counter=…` line; returns the first one.
fn first_state_line(path: &std::path::Path, timeout: Duration) -> (String, u64) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if let Some(state) = text.lines().find_map(parse_state_line) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "no output in {} within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn paused_restore_attach_resume_and_remove() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    container.wait_for_output("counter=4", Duration::from_secs(10));

    // Checkpoint while running; the last stdout line is the checkpoint id.
    let (token, before) = container.last_state().expect("workload output");
    let stdout = env.ckpt_ok(&["checkpoint", &container.id]);
    let (_, after) = container.last_state().expect("workload output");
    let checkpoint = last_line(&stdout).to_string();
    assert_eq!(
        checkpoint.len(),
        "20261204T200301Z-3fa9c2".len(),
        "id line: {stdout}"
    );
    assert_eq!(
        container.status(),
        "running",
        "checkpoint stopped the container"
    );
    let listed = env.ckpt_ok(&["list", &container.id, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["id"], checkpoint.as_str());
    assert_eq!(listed[0]["status"], "good");
    assert!(listed[0]["logical_bytes"].as_u64().unwrap() > 0);
    assert!(
        listed[0]["frozen_ms"].as_f64().unwrap() > 0.0,
        "CRIU's dump statistics missing: {listed}"
    );

    // The container dies; its rootfs keeps the last counter it wrote.
    container.kill();
    let rootfs_counter = fs::read_to_string(container.rootfs().join("tmp/counter")).unwrap();

    // Restore paused: every task is stopped.
    let report = restore_json(&env.ckpt_ok(&["restore", &container.id, "--paused", "--json"]));
    let name = report["name"].as_str().unwrap().to_string();
    let pid = report["pid"].as_i64().unwrap() as i32;
    let pids: Vec<i32> = report["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap() as i32)
        .collect();
    assert_eq!(report["checkpoint"], checkpoint.as_str());
    assert_eq!(pids[0], pid);
    assert!(pids.len() >= 3, "expected sh, nc and sleep, got {pids:?}");
    for &task in &pids {
        assert_eq!(process_state(task), Some('T'), "task {task} is not stopped");
    }

    // gdb attaches and prints a backtrace; the task stays stopped afterwards.
    let gdb = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-ex", "bt"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let gdb_out = String::from_utf8_lossy(&gdb.stdout);
    assert!(
        gdb_out.contains("#0"),
        "no backtrace from gdb: {gdb_out}\n{}",
        String::from_utf8_lossy(&gdb.stderr)
    );
    assert_eq!(
        process_state(pid),
        Some('T'),
        "gdb left the root task running"
    );

    // strace attaches to another task and detaches.
    let strace = Command::new("strace")
        .args(["-p", &pids[1].to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let strace_out = strace.wait_with_output().unwrap();
    let strace_err = String::from_utf8_lossy(&strace_out.stderr);
    assert!(
        strace_err.contains(&format!("Process {} attached", pids[1])),
        "strace: {strace_err}"
    );

    let ps: serde_json::Value = serde_json::from_str(&env.ckpt_ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["name"], name.as_str());
    let states: Vec<(i32, Option<char>)> = pids.iter().map(|&p| (p, process_state(p))).collect();
    assert_eq!(ps[0]["state"], "paused", "task states: {states:?}");
    assert_eq!(ps[0]["container"], container.id.as_str());

    // Resume: same token, and the counter continues from the checkpointed value.
    env.ckpt_ok(&["resume", &name]);
    let output_log = env.store.join("debug").join(&name).join("output.log");
    let (restored_token, restored_counter) = first_state_line(&output_log, Duration::from_secs(10));
    assert_eq!(restored_token, token);
    assert!(
        restored_counter > before && restored_counter <= after + 1,
        "restored counter {restored_counter} is not right after the checkpoint (between {before} and {after})"
    );

    // The debug container writes only to its own overlay.
    let debug_root = format!("/proc/{pid}/root");
    fs::write(format!("{debug_root}/tmp/written-by-debug"), "x").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read_to_string(format!("{debug_root}/tmp/counter")).unwrap_or_default()
        == rootfs_counter
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(
        fs::read_to_string(format!("{debug_root}/tmp/counter")).unwrap(),
        rootfs_counter
    );
    assert_eq!(
        fs::read_to_string(container.rootfs().join("tmp/counter")).unwrap(),
        rootfs_counter
    );
    assert!(!container.rootfs().join("tmp/written-by-debug").exists());

    // rm leaves no processes, cgroups, mounts or files.
    let cgroups: Vec<String> = ps[0]["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(!cgroups.is_empty());
    env.ckpt_ok(&["rm", &name]);
    for &task in &pids {
        assert!(
            matches!(process_state(task), None | Some('Z')),
            "task {task} survived rm"
        );
    }
    for cgroup in &cgroups {
        assert!(
            !std::path::Path::new(cgroup).exists(),
            "cgroup {cgroup} left behind"
        );
    }
    assert!(!env.store.join("debug").join(&name).exists());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(env.store.to_str().unwrap()),
        "mount left behind"
    );
    assert!(env.ckpt_ok(&["ps"]).starts_with("no debug containers"));
}

#[test]
fn unknown_container_is_bad_input() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let output = env.ckpt(&["checkpoint", "no-such-container"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("ckpt: container no-such-container not found"),
        "{stderr}"
    );

    let output = env.ckpt(&["restore", "no-such-container", "--paused"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("ckpt: container no-such-container has no checkpoints"),
        "{stderr}"
    );
}

#[test]
fn traced_target_is_refused_and_keeps_running() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    let pid = container.pid();
    let mut strace = Command::new("strace")
        .args(["-p", &pid.to_string(), "-o", "/dev/null"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let output = env.ckpt(&["checkpoint", &container.id]);
    let _ = strace.kill();
    let _ = strace.wait();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "ckpt: container {}: cannot checkpoint: pid {pid} is traced by pid {} (strace); detach it first",
        container.id,
        strace.id()
    );
    assert_eq!(stderr.trim(), expected);

    // The target keeps running, and nothing was listed.
    let (_, counter) = container.last_state().unwrap();
    container.wait_for_output(&format!("counter={}", counter + 2), Duration::from_secs(5));
    assert!(env.ckpt_ok(&["list"]).starts_with("no checkpoints"));
}

/// A workload that keeps a deleted 2 MiB file open: CRIU must copy it into the
/// checkpoint ("ghost file"), which its default limit of 1 MiB forbids.
const GHOST_WORKLOAD: &str = r#"#!/bin/sh
head -c 2097152 /dev/zero > /tmp/big
exec 3</tmp/big
rm /tmp/big
i=0
while true; do i=$((i+1)); echo "token=ghost counter=$i"; sleep 0.2; done
"#;

#[test]
fn criu_failure_names_cause_and_log() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let bundle = env.bundle("bundle", GHOST_WORKLOAD);
    let container = env.start(&bundle);

    let output = env.ckpt(&["checkpoint", &container.id]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "ckpt: container {}: cannot checkpoint: criu dump failed: ",
            container.id
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("ghost file"),
        "CRIU's own message missing: {stderr}"
    );
    assert!(stderr.contains("(log "), "no log path: {stderr}");
    let log_path = stderr
        .split("(log ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert!(
        std::path::Path::new(log_path).exists(),
        "log {log_path} missing"
    );
    assert_eq!(container.status(), "running");
    assert!(env.ckpt_ok(&["list"]).starts_with("no checkpoints"));

    // With --ghost-limit large enough for the file, the checkpoint succeeds.
    env.ckpt_ok(&["checkpoint", "--ghost-limit", "4MiB", &container.id]);
    let listed: serde_json::Value =
        serde_json::from_str(&env.ckpt_ok(&["list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(container.status(), "running");
}

#[test]
fn host_file_stdout_is_refused_up_front() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let bundle = env.bundle("bundle", common::WORKLOAD);
    // A container whose stdout is a file on the host: CRIU could not dump it.
    let id = format!("ckpt-hostfile-{}", std::process::id());
    let log_path = env.dir.path().join("host-stdout.log");
    let log = fs::File::create(&log_path).unwrap();
    let status = Command::new("runc")
        .arg("--root")
        .arg(&env.runtime_root)
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success());
    let container = common::Container {
        id: id.clone(),
        runtime_root: env.runtime_root.clone(),
        bundle,
        output: Default::default(),
    };

    let output = env.ckpt(&["checkpoint", &id]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "ckpt: container {id}: cannot checkpoint: its stdout (descriptor 1) is {}, a file outside the container",
        log_path.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert_eq!(container.status(), "running");
    assert!(env.ckpt_ok(&["list"]).starts_with("no checkpoints"));
}

#[test]
fn corrupt_or_missing_store_data_is_refused_before_criu() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    env.ckpt_ok(&["checkpoint", &container.id]);
    container.kill();

    // Flip one byte in the middle of every pack file.
    let packs: Vec<_> = walkdir::WalkDir::new(&env.store)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().to_string_lossy().contains("/packs/"))
        .map(|e| e.into_path())
        .collect();
    assert!(!packs.is_empty(), "no pack files in the store");
    let originals: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    for (path, bytes) in packs.iter().zip(&originals) {
        let mut bytes = bytes.clone();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        fs::write(path, bytes).unwrap();
    }
    let output = env.ckpt(&["restore", &container.id, "--paused"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(env.ckpt_ok(&["ps"]).starts_with("no debug containers"));

    // A missing pack file is refused too.
    for (path, bytes) in packs.iter().zip(&originals) {
        fs::write(path, bytes).unwrap();
    }
    fs::remove_file(&packs[0]).unwrap();
    let output = env.ckpt(&["restore", &container.id, "--paused"]);
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("ckpt: "));
    assert!(env.ckpt_ok(&["ps"]).starts_with("no debug containers"));
}

#[test]
fn unreadable_store_is_refused() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let not_a_dir = env.dir.path().join("store-file");
    fs::write(&not_a_dir, "not a store").unwrap();
    for args in [vec!["restore", "web", "--paused"], vec!["list"]] {
        let output = Command::new(common::ckpt_bin())
            .arg("--store")
            .arg(&not_a_dir)
            .args(&args)
            .output()
            .unwrap();
        assert_ne!(output.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("ckpt: "), "{stderr}");
        assert!(
            stderr.contains(not_a_dir.to_str().unwrap()),
            "store path not named: {stderr}"
        );
    }
}

#[test]
fn debug_batch_gdb_prints_backtrace() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    env.ckpt_ok(&["checkpoint", &container.id]);
    container.kill();

    let output = env.ckpt(&[
        "debug",
        &container.id,
        "--batch",
        "--ex",
        "bt",
        "--ex",
        "info proc",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("#0"), "no backtrace: {stdout}");
    assert!(
        stdout.contains("cmdline = '/bin/sh /app/run.sh'"),
        "gdb attached elsewhere: {stdout}"
    );
    assert!(stderr.starts_with("ckpt: debugging pid "), "{stderr}");
    assert!(stderr.contains("ckpt: removed debug container"), "{stderr}");
    assert!(env.ckpt_ok(&["ps"]).starts_with("no debug containers"));
}

#[test]
fn debug_strace_shows_calls_after_resume() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    let (token, _) = container.last_state().unwrap();
    env.ckpt_ok(&["checkpoint", &container.id]);
    container.kill();

    let output = env.ckpt(&[
        "debug",
        &container.id,
        "--debugger",
        "strace",
        "--duration",
        "2s",
        "--keep",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The restored shell prints its state with write(2) once resumed.
    assert!(
        stderr.contains("--- SIGCONT"),
        "strace saw no resume: {stderr}"
    );
    assert!(
        stderr.contains(&format!("write(1, \"token={token}")),
        "no write of the token: {stderr}"
    );
    assert!(stderr.contains("ckpt: kept debug container"), "{stderr}");

    let ps: serde_json::Value = serde_json::from_str(&env.ckpt_ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "running");
    env.ckpt_ok(&["rm", ps[0]["name"].as_str().unwrap()]);
}

#[test]
fn interrupted_restore_leaves_nothing() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    env.ckpt_ok(&["checkpoint", &container.id]);
    container.kill();

    let child = Command::new(common::ckpt_bin())
        .arg("--store")
        .arg(&env.store)
        .args(["restore", &container.id, "--paused"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    // Either the signal arrived before the restore began and killed ckpt, or
    // ckpt finished the restore and then removed what it made.
    assert!(!output.status.success(), "restore ignored SIGINT: {stderr}");
    if output.status.code().is_some() {
        assert!(
            stderr.starts_with("ckpt: interrupted by SIGINT; removed debug container"),
            "{stderr}"
        );
    } else {
        eprintln!(
            "note: SIGINT arrived before the restore began, so the deferred path was not taken"
        );
    }
    assert!(env.ckpt_ok(&["ps"]).starts_with("no debug containers"));
    let debug_dirs = fs::read_dir(env.store.join("debug"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(debug_dirs, 0, "debug directory left behind");
}
