//! Shared helpers for integration tests that need real CRIU and runc.
//!
//! Each test builds its own busybox OCI bundle, runs a container with runc
//! (stdio on pipes, as container managers provide), and uses a private store.
//! A test that cannot run prints why, and under `CI=true` it fails instead.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workload: keeps a random token in a shell variable and a counter that
/// it prints and writes to /tmp/counter five times a second. It also listens
/// on TCP port 7777 inside its network namespace. On SIGUSR1 a child shell
/// dies of SIGSEGV and the workload exits with 139, as a crashing service would.
pub const WORKLOAD: &str = r#"#!/bin/sh
token=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
marker="ckpt-marker-$token"
trap 'sh -c "kill -SEGV \$\$"; exit 139' USR1
nc -l -p 7777 </dev/null >/dev/null 2>&1 &
i=0
while true; do
  i=$((i+1))
  echo "token=$token counter=$i"
  echo $i > /tmp/counter
  sleep 0.2
done
"#;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Path of the ckpt binary under test.
pub fn ckpt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ckpt"))
}

/// Returns whether real-container tests can run here. When they cannot, prints
/// why; under `CI=true` it panics instead, so CI never passes by skipping.
pub fn can_run_containers() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("not running as root".to_string());
    }
    for tool in ["runc", "busybox", "gdb", "strace"] {
        if which(tool).is_none() {
            missing.push(format!("{tool} not found in PATH"));
        }
    }
    if ckpt::criu::Criu::locate().is_err() {
        missing.push("no working CRIU 4.1+ (run scripts/setup.sh)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join(", ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("container test cannot run under CI=true: {reason}");
    }
    eprintln!("skipped: container test cannot run: {reason}");
    false
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// A temporary directory holding a bundle, a store and scratch files for one test.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub runtime_root: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        // Under /var/tmp rather than /tmp: some hosts mount /tmp as tmpfs, and the
        // overlay of a debug container needs a regular file system for its upper layer.
        let dir = tempfile::Builder::new()
            .prefix("ckpt-test-")
            .tempdir_in("/var/tmp")
            .expect("create test directory");
        let store = dir.path().join("store");
        let runtime_root = dir.path().join("runc");
        Self {
            dir,
            store,
            runtime_root,
        }
    }

    /// Runs `ckpt` with this test's store and runtime root.
    pub fn ckpt(&self, args: &[&str]) -> Output {
        Command::new(ckpt_bin())
            .arg("--store")
            .arg(&self.store)
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .args(args)
            .env_remove("CKPT_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run ckpt")
    }

    /// Runs `ckpt` and panics with its output unless it exits 0; returns stdout.
    pub fn ckpt_ok(&self, args: &[&str]) -> String {
        let output = self.ckpt(args);
        assert!(
            output.status.success(),
            "ckpt {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Builds a busybox bundle whose process runs `script`.
    pub fn bundle(&self, name: &str, script: &str) -> PathBuf {
        let bundle = self.dir.path().join(name);
        build_bundle(&bundle, script);
        bundle
    }

    /// Starts a container from a new bundle running [`WORKLOAD`].
    pub fn start_workload(&self) -> Container {
        let bundle = self.bundle("bundle", WORKLOAD);
        self.start(&bundle)
    }

    /// Starts a container from `bundle` with runc, stdio on pipes.
    pub fn start(&self, bundle: &Path) -> Container {
        let id = format!(
            "ckpt-t{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        let mut child = Command::new("runc")
            .arg("--root")
            .arg(&self.runtime_root)
            .args(["run", "-d", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runc");
        // Close our end of stdin so the container's stdin is a pipe with no writer.
        drop(child.stdin.take());
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let status = child.wait().expect("wait for runc run -d");
        assert!(
            status.success(),
            "runc run failed: {:?}",
            lines.lock().unwrap()
        );
        let container = Container {
            id,
            runtime_root: self.runtime_root.clone(),
            bundle: bundle.to_path_buf(),
            output: lines,
        };
        container.wait_for_output("counter=2", Duration::from_secs(10));
        container
    }
}

impl Drop for TestEnv {
    /// Removes the debug containers a test left, also when it failed part way:
    /// their tasks and shims would otherwise outlive the test.
    fn drop(&mut self) {
        let Ok(output) = Command::new(ckpt_bin())
            .arg("--store")
            .arg(&self.store)
            .args(["ps", "--json"])
            .output()
        else {
            return;
        };
        let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        for debug in listed.as_array().into_iter().flatten() {
            if let Some(name) = debug["name"].as_str() {
                let _ = self.ckpt(&["rm", name]);
            }
        }
    }
}

/// A runc container started by a test; deleted when dropped.
pub struct Container {
    pub id: String,
    pub runtime_root: PathBuf,
    pub bundle: PathBuf,
    /// Lines the container printed to its stdout and stderr.
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Container {
    pub fn runc(&self, args: &[&str]) -> Output {
        Command::new("runc")
            .arg("--root")
            .arg(&self.runtime_root)
            .args(args)
            .output()
            .expect("run runc")
    }

    /// Host PID of the container's init process.
    pub fn pid(&self) -> i32 {
        let output = self.runc(&["state", &self.id]);
        let state: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("runc state JSON");
        state["pid"].as_i64().expect("pid in runc state") as i32
    }

    pub fn status(&self) -> String {
        let output = self.runc(&["state", &self.id]);
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        state["status"].as_str().unwrap_or("missing").to_string()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// Waits until a printed line contains `needle`; returns that line.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .output
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "container {} did not print {needle:?} within {timeout:?}; output: {:?}",
                self.id,
                self.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns the last `token=… counter=…` line the container printed, parsed.
    pub fn last_state(&self) -> Option<(String, u64)> {
        self.output
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| parse_state_line(l))
    }

    /// Kills the container's processes with SIGKILL and waits until runc reports it stopped.
    pub fn kill(&self) {
        let _ = self.runc(&["kill", "--all", &self.id, "KILL"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status() == "running" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
    }
}

/// Parses `token=T counter=N` into (T, N).
pub fn parse_state_line(line: &str) -> Option<(String, u64)> {
    let rest = line.trim().strip_prefix("token=")?;
    let (token, counter) = rest.split_once(" counter=")?;
    Some((token.to_string(), counter.trim().parse().ok()?))
}

/// Writes a busybox root file system and an OCI `config.json` under `bundle`.
pub fn build_bundle(bundle: &Path, script: &str) {
    let rootfs = bundle.join("rootfs");
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc", "app"] {
        fs::create_dir_all(rootfs.join(dir)).expect("create rootfs directory");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let busybox = which("busybox").expect("busybox in PATH");
    fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "sleep", "cat", "echo", "ls", "od", "tr", "kill", "nc", "head", "ps",
    ] {
        let link = rootfs.join("bin").join(applet);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("busybox", link).expect("link busybox applet");
    }
    let app = rootfs.join("app/run.sh");
    fs::write(&app, script).expect("write workload");
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();

    // Start from runc's own default spec, then set the process and a writable root.
    let status = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .status()
        .expect("run runc spec");
    assert!(status.success(), "runc spec failed");
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/app/run.sh"]);
    config["root"]["readonly"] = false.into();
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[allow(unused_imports)]
pub use ckpt::ops::debug::process_state;

/// Parses `ckpt restore --json` output.
pub fn restore_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("invalid restore JSON ({e}): {stdout}"))
}

/// Returns the last line of `text`, trimmed.
pub fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("").trim()
}
