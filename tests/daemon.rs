//! End-to-end tests of `ckpt daemon` with real runc, real CRIU and a busybox container
//! checkpointed by a 1 s policy.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Container, TestEnv, can_run_containers, parse_state_line};

/// A `ckpt daemon` process with its own policy directory, socket and log file.
struct Daemon {
    child: Child,
    store: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    policies: PathBuf,
}

impl Daemon {
    fn start(env: &TestEnv) -> Self {
        let policies = env.dir.path().join("policies");
        fs::create_dir_all(&policies).unwrap();
        let socket = env.dir.path().join("run/ckpt.sock");
        let log = env.dir.path().join("daemon.log");
        let child = Command::new(common::ckpt_bin())
            .arg("--store")
            .arg(&env.store)
            .arg("--runtime-root")
            .arg(&env.runtime_root)
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .arg("--policies")
            .arg(&policies)
            .env("CKPT_LOG", "ckpt=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ckpt daemon");
        Self {
            child,
            store: env.store.clone(),
            log,
            socket,
            policies,
        }
    }

    fn write_policy(&self, name: &str, text: &str) {
        // Write beside the directory, then rename, so the daemon never reads half a file.
        let temp = self.policies.parent().unwrap().join(format!(".{name}.tmp"));
        fs::write(&temp, text).unwrap();
        fs::rename(&temp, self.policies.join(name)).unwrap();
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `ckpt` against this daemon's socket and the test's store.
    fn ckpt(&self, env: &TestEnv, args: &[&str]) -> std::process::Output {
        Command::new(common::ckpt_bin())
            .arg("--store")
            .arg(&env.store)
            .arg("--runtime-root")
            .arg(&env.runtime_root)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("CKPT_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run ckpt")
    }

    fn status_json(&self, env: &TestEnv) -> serde_json::Value {
        let output = self.ckpt(env, &["status", "--json"]);
        assert!(
            output.status.success(),
            "ckpt status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Sends SIGTERM and waits up to 60 s for the daemon to exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    /// Stops the daemon and removes the debug containers it restored, even after a failed assert.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let ckpt = |args: &[&str]| {
            Command::new(common::ckpt_bin())
                .arg("--store")
                .arg(&self.store)
                .args(args)
                .output()
        };
        let Ok(output) = ckpt(&["ps", "--json"]) else {
            return;
        };
        let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        for debug in listed.as_array().into_iter().flatten() {
            if let Some(name) = debug["name"].as_str() {
                let _ = ckpt(&["rm", name]);
            }
        }
    }
}

fn policy(container: &Container, extra: &str) -> String {
    format!(
        "container: {}\ninterval: 1s\njitter: 100ms\n{extra}",
        container.id
    )
}

fn checkpoints(env: &TestEnv, container: &Container) -> serde_json::Value {
    let output = env.ckpt(&["list", &container.id, "--json"]);
    if !output.status.success() {
        // The store does not exist before the first checkpoint.
        return serde_json::json!([]);
    }
    serde_json::from_slice(&output.stdout).unwrap()
}

fn count_checkpoints(env: &TestEnv, container: &Container) -> usize {
    checkpoints(env, container).as_array().map_or(0, Vec::len)
}

fn debug_containers(env: &TestEnv) -> Vec<serde_json::Value> {
    let output = env.ckpt_ok(&["ps", "--json"]);
    serde_json::from_str::<serde_json::Value>(&output)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn events(env: &TestEnv) -> Vec<serde_json::Value> {
    let output = env.ckpt_ok(&["events", "--json", "--limit", "1000"]);
    serde_json::from_str::<serde_json::Value>(&output)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

/// Polls `condition` every 50 ms until it is true or `limit` passes. Returns its last value.
fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon supervising one workload container. Bind the fields as `{ env, container,
/// daemon }` so that they drop in reverse: the daemon stops, the container is deleted, and
/// the test directory goes last.
struct Setup {
    daemon: Daemon,
    container: Container,
    env: TestEnv,
}

/// Starts the workload and a daemon with a 1 s policy for it (plus `extra` policy lines),
/// and waits for `checkpoints` checkpoints. Returns `None` when containers cannot run here.
fn start_supervised(extra: &str, checkpoints: usize) -> Option<Setup> {
    if !can_run_containers() {
        return None;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    let daemon = Daemon::start(&env);
    daemon.write_policy("web.yaml", &policy(&container, extra));
    let enough = wait_until(Duration::from_secs(15), || {
        count_checkpoints(&env, &container) >= checkpoints
    });
    assert!(
        enough,
        "fewer than {checkpoints} checkpoints; daemon log:\n{}",
        daemon.log()
    );
    Some(Setup {
        daemon,
        container,
        env,
    })
}

#[test]
fn crash_restores_paused_debug_container() {
    // The 1 s policy produces at least two checkpoints.
    let Some(Setup {
        env,
        container,
        daemon,
    }) = start_supervised("", 2)
    else {
        return;
    };

    // While the daemon runs, `ckpt list` on the daemon's store goes through the daemon.
    let listed = Command::new(common::ckpt_bin())
        .arg("--store")
        .arg(&env.store)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["list", "--json"])
        .env("CKPT_LOG", "ckpt=debug")
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&listed.stderr).contains("listing checkpoints through the daemon"),
        "list did not go through the daemon: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed.as_array().unwrap().len() >= 2, "{listed}");
    assert!(listed[0]["frozen_ms"].as_f64().unwrap() > 0.0, "{listed}");
    let criu_version = ckpt::criu::Criu::locate().unwrap().version;
    assert_eq!(listed[0]["criu_version"], criu_version.as_str());

    // Another --store is not the daemon's: its own (empty) listing shows.
    let other_store = env.dir.path().join("other-store");
    let other = Command::new(common::ckpt_bin())
        .arg("--store")
        .arg(&other_store)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["list"])
        .output()
        .unwrap();
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(
        String::from_utf8_lossy(&other.stdout).starts_with("no checkpoints in store"),
        "the daemon's checkpoints were listed for another store: {}",
        String::from_utf8_lossy(&other.stdout)
    );

    // Crash: a child shell dies of SIGSEGV, then init exits with 139.
    let (token, counter_at_crash) = container.last_state().unwrap();
    let newest_before_crash = checkpoints(&env, &container)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let crashed_at = Instant::now();
    let output = container.runc(&["kill", &container.id, "USR1"]);
    assert!(
        output.status.success(),
        "runc kill USR1: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let restored = wait_until(Duration::from_secs(5), || {
        !debug_containers(&env).is_empty()
    });
    let elapsed = crashed_at.elapsed();
    assert!(
        restored,
        "no debug container within 5 s of the crash; daemon log:\n{}",
        daemon.log()
    );

    let debug = debug_containers(&env).remove(0);
    assert_eq!(debug["state"], "paused");
    assert_eq!(debug["container"], container.id.as_str());
    let chosen = debug["checkpoint"].as_str().unwrap().to_string();
    // The chosen checkpoint is the newest at the crash, or one the daemon took between the
    // crash and init's exit. Either way it is listed and good.
    assert!(
        chosen >= newest_before_crash,
        "restored {chosen}, older than {newest_before_crash}"
    );
    let listed = checkpoints(&env, &container);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == chosen.as_str())
        .expect("chosen checkpoint listed");
    assert_eq!(entry["status"], "good");

    // The failure and the restore are in the event log, with the exit code and the attach commands.
    let events = events(&env);
    let failure = events
        .iter()
        .find(|e| e["kind"] == "failure")
        .expect("failure event");
    assert_eq!(failure["details"]["exit_code"], 139);
    assert_eq!(failure["checkpoint"], chosen.as_str());
    let restore = events
        .iter()
        .find(|e| e["kind"] == "restore")
        .expect("restore event");
    assert!(
        restore["message"]
            .as_str()
            .unwrap()
            .contains(&format!("gdb -p {}", debug["pid"])),
        "{restore}"
    );
    let log = daemon.log();
    assert!(log.contains("container failed"), "{log}");
    assert!(log.contains("restored paused debug container"), "{log}");
    let status = daemon.status_json(&env);
    assert_eq!(status["containers"][0]["failures_detected"], 1);

    // The debug container contains the crashed workload's state: same token, and a counter no
    // later than at the crash.
    let name = debug["name"].as_str().unwrap().to_string();
    env.ckpt_ok(&["resume", &name]);
    let output_log = env.store.join("debug").join(&name).join("output.log");
    let mut restored_state = None;
    wait_until(Duration::from_secs(10), || {
        restored_state = fs::read_to_string(&output_log)
            .unwrap_or_default()
            .lines()
            .find_map(parse_state_line);
        restored_state.is_some()
    });
    let (restored_token, restored_counter) =
        restored_state.expect("restored workload printed nothing");
    assert_eq!(restored_token, token);
    assert!(
        restored_counter <= counter_at_crash + 1,
        "restored counter {restored_counter} is later than {counter_at_crash} at the crash"
    );
    eprintln!(
        "crash to paused debug container: {} ms",
        elapsed.as_millis()
    );
}

#[test]
fn operator_kill_makes_no_debug_container() {
    let Some(Setup {
        env,
        container,
        daemon,
    }) = start_supervised("", 1)
    else {
        return;
    };

    // The operator stops the container with SIGKILL; no OOM kill happened.
    let output = container.runc(&["kill", &container.id, "KILL"]);
    assert!(
        output.status.success(),
        "runc kill: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stopped = wait_until(Duration::from_secs(5), || {
        daemon.log().contains("container stopped")
    });
    assert!(
        stopped,
        "daemon did not notice the stop; log:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(2));

    assert!(
        debug_containers(&env).is_empty(),
        "operator kill produced a debug container"
    );
    assert!(!events(&env).iter().any(|e| e["kind"] == "failure"));
    let status = daemon.status_json(&env);
    assert_eq!(status["containers"][0]["state"], "stopped");
    assert_eq!(status["containers"][0]["failures_detected"], 0);
}

#[test]
fn invalid_policy_reload_keeps_old_policy() {
    let Some(Setup {
        env,
        container,
        daemon,
    }) = start_supervised("", 1)
    else {
        return;
    };

    // A misspelled key: the daemon reports it and keeps checkpointing every second.
    daemon.write_policy(
        "web.yaml",
        &format!("container: {}\nintervl: 1h\n", container.id),
    );
    let reported = wait_until(Duration::from_secs(5), || {
        daemon.status_json(&env)["policy_errors"]
            .as_array()
            .is_some_and(|errors| !errors.is_empty())
    });
    assert!(
        reported,
        "invalid policy not reported; log:\n{}",
        daemon.log()
    );
    let status = daemon.status_json(&env);
    let error = status["policy_errors"][0].as_str().unwrap();
    assert!(
        error.contains("web.yaml:2:1: unknown key `intervl` (did you mean `interval`?)"),
        "{error}"
    );
    assert_eq!(status["containers"][0]["interval_ms"], 1000);
    let before = count_checkpoints(&env, &container);
    let more = wait_until(Duration::from_secs(10), || {
        count_checkpoints(&env, &container) >= before + 2
    });
    assert!(
        more,
        "checkpoints stopped after the invalid reload; log:\n{}",
        daemon.log()
    );

    // SIGHUP also reloads, with the same result.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        daemon.status_json(&env)["containers"][0]["interval_ms"],
        1000
    );
}

#[test]
fn sigterm_mid_checkpoint_leaves_nothing_partial() {
    let Some(Setup {
        env,
        container,
        mut daemon,
    }) = start_supervised("", 0)
    else {
        return;
    };

    // Send SIGTERM while CRIU writes into a staging directory.
    let staging = env.store.join("staging");
    let busy = |dir: &Path| {
        fs::read_dir(dir)
            .map(|entries| entries.count() > 0)
            .unwrap_or(false)
    };
    let caught = wait_until(Duration::from_secs(15), || busy(&staging));
    assert!(
        caught,
        "never saw a checkpoint in progress; log:\n{}",
        daemon.log()
    );
    let status = daemon.terminate();

    assert_eq!(status.code(), Some(0), "daemon log:\n{}", daemon.log());
    assert!(
        !busy(&staging),
        "staging directory left behind: {:?}",
        fs::read_dir(&staging).unwrap().collect::<Vec<_>>()
    );
    let store = ckpt::store::Store::open_existing(&env.store).unwrap();
    let fsck = store.fsck(false).unwrap();
    assert!(fsck.is_clean(), "store not clean after SIGTERM: {fsck:?}");
    let verify = store.verify(None).unwrap();
    assert!(
        verify.all_ok(),
        "a checkpoint failed verification: {verify:?}"
    );
    assert!(!daemon.socket.exists(), "socket left behind");
    assert!(daemon.log().contains("daemon stopped"));
    assert_eq!(
        container.status(),
        "running",
        "SIGTERM to the daemon stopped the container"
    );
}

#[test]
fn retention_keeps_last_good_checkpoint() {
    // The probe fails once /tmp/unhealthy exists; failures do not count as a crash here, so
    // the container keeps running and its checkpoints turn unhealthy.
    let extra = "retention:\n  keep: 1\non_failure:\n  health: false\nhealth:\n  command: [sh, -c, 'test ! -e /tmp/unhealthy']\n  interval: 500ms\n  timeout: 500ms\n";
    let Some(Setup {
        env,
        container,
        daemon,
    }) = start_supervised(extra, 0)
    else {
        return;
    };
    let good = wait_until(Duration::from_secs(15), || {
        checkpoints(&env, &container)
            .as_array()
            .is_some_and(|list| list.iter().any(|c| c["status"] == "good"))
    });
    assert!(good, "no good checkpoint; log:\n{}", daemon.log());

    fs::write(container.rootfs().join("tmp/unhealthy"), "").unwrap();
    let unhealthy = wait_until(Duration::from_secs(15), || {
        let list = checkpoints(&env, &container);
        list.as_array()
            .is_some_and(|list| list.iter().filter(|c| c["status"] == "unhealthy").count() >= 1)
            && events(&env)
                .iter()
                .filter(|e| e["kind"] == "checkpoint" && e["details"]["good"] == false)
                .count()
                >= 3
    });
    assert!(
        unhealthy,
        "no unhealthy checkpoints; log:\n{}",
        daemon.log()
    );

    // keep: 1 leaves the newest checkpoint and the last good one, which is older.
    let list = checkpoints(&env, &container);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["status"], "unhealthy");
    assert_eq!(list[1]["status"], "good");
    assert!(events(&env).iter().any(|e| e["kind"] == "retention"));
}

/// A workload whose subshell fills memory on SIGUSR2, so that the kernel OOM-kills it
/// while init keeps running.
const OOM_WORKLOAD: &str = r#"#!/bin/sh
token=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
trap '( x=$(head -c 400000000 /dev/zero | tr "\0" a) )' USR2
i=0
while true; do
  i=$((i+1))
  echo "token=$token counter=$i"
  sleep 0.2
done
"#;

#[test]
fn oom_kill_restores_paused_debug_container() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let bundle = env.bundle("oom-bundle", OOM_WORKLOAD);
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 64u64 << 20 });
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let container = env.start(&bundle);
    let daemon = Daemon::start(&env);
    daemon.write_policy("web.yaml", &policy(&container, ""));
    let first_checkpoint = wait_until(Duration::from_secs(15), || {
        count_checkpoints(&env, &container) >= 1
    });
    assert!(
        first_checkpoint,
        "no checkpoint; daemon log:\n{}",
        daemon.log()
    );

    let output = container.runc(&["kill", &container.id, "USR2"]);
    assert!(
        output.status.success(),
        "runc kill USR2: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let restored = wait_until(Duration::from_secs(10), || {
        !debug_containers(&env).is_empty()
    });
    assert!(
        restored,
        "no debug container after the OOM kill; daemon log:\n{}",
        daemon.log()
    );

    let events = events(&env);
    let failure = events
        .iter()
        .find(|e| e["kind"] == "failure")
        .expect("failure event");
    assert_eq!(failure["details"]["cause"], "oom_kill");
    assert_eq!(
        container.status(),
        "running",
        "the OOM kill should have hit the subshell, not init"
    );
    let (_, counter) = container.last_state().unwrap();
    container.wait_for_output(&format!("counter={}", counter + 2), Duration::from_secs(5));
}

#[test]
fn control_api_rejects_non_root_peer() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let daemon = Daemon::start(&env);
    let listening = wait_until(Duration::from_secs(10), || daemon.socket.exists());
    assert!(listening, "no socket; daemon log:\n{}", daemon.log());

    // Open the path to everyone so that only the credential check stands in the way.
    for (path, mode) in [
        (env.dir.path(), 0o755),
        (daemon.socket.parent().unwrap(), 0o755),
        (daemon.socket.as_path(), 0o666),
    ] {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::ckpt_bin())
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["status", "--json"])
        .output()
        .expect("run setpriv");

    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        output.stdout.is_empty(),
        "a non-root peer got a status reply"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the daemon serves only root"), "{stderr}");
    let rejected = wait_until(Duration::from_secs(5), || {
        daemon
            .log()
            .contains("rejected control connection from a non-root user")
    });
    assert!(rejected, "daemon log:\n{}", daemon.log());
    // Root still gets an answer.
    assert!(daemon.status_json(&env)["containers"].as_array().is_some());
}

#[test]
fn timed_out_probe_is_killed() {
    // A probe that outlives its timeout: each run must be killed, not left in the container.
    let extra = "on_failure:\n  health: false\nhealth:\n  command: [sleep, '30']\n  interval: 500ms\n  timeout: 300ms\n";
    let Some(Setup {
        env: _env,
        container,
        daemon,
    }) = start_supervised(extra, 1)
    else {
        return;
    };
    let timed_out = wait_until(Duration::from_secs(10), || {
        daemon.log().matches("health probe").count() >= 2 || daemon.log().contains("timed out")
    });
    std::thread::sleep(Duration::from_secs(2));
    let ps = container.runc(&["ps", &container.id]);
    let listing = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.status.success(),
        "runc ps failed: {}",
        String::from_utf8_lossy(&ps.stderr)
    );
    let lingering = listing.lines().filter(|l| l.contains("sleep 30")).count();
    assert!(
        lingering <= 1,
        "{lingering} timed-out probes still run (timed out seen: {timed_out}):\n{listing}"
    );
}
