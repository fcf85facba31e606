//! Supervisor and reload tests against a fake backend. The container is a real process, so
//! the pidfd and the process events connector are exercised; CRIU and runc are not.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::backend::{CheckpointRecord, ContainerState, DebugContainerInfo};
use super::events::{EventKind, read_events};
use super::*;
use crate::model::CheckpointId;
use crate::policy::{HealthProbe, Policy, parse_policy};

/// A store and runtime in memory; the container is whatever process `pid` names.
#[derive(Default)]
struct FakeBackend {
    pid: AtomicI32,
    checkpoints: Mutex<Vec<CheckpointRecord>>,
    failing_verify: Mutex<HashSet<CheckpointId>>,
    restores: Mutex<Vec<CheckpointId>>,
    debug: Mutex<Vec<DebugContainerInfo>>,
    probe_passes: std::sync::atomic::AtomicBool,
    checkpoint_fails: std::sync::atomic::AtomicBool,
}

impl FakeBackend {
    fn newest_checkpoint(&self) -> Option<CheckpointRecord> {
        lock(&self.checkpoints).first().cloned()
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

impl Backend for FakeBackend {
    fn container_state(&self, _policy: &Policy) -> anyhow::Result<Option<ContainerState>> {
        let pid = self.pid.load(Ordering::SeqCst);
        let running = alive(pid);
        Ok(Some(ContainerState {
            pid: if running { pid } else { 0 },
            status: if running { "running" } else { "stopped" }.to_string(),
            cgroup: None,
        }))
    }

    fn checkpoint(
        &self,
        policy: &Policy,
        health_passing: Option<bool>,
    ) -> anyhow::Result<CheckpointRecord> {
        if self.checkpoint_fails.load(Ordering::SeqCst) {
            anyhow::bail!("criu dump failed");
        }
        let created: DateTime<Utc> = Utc::now();
        let record = CheckpointRecord {
            id: CheckpointId::generate(created),
            container: policy.container.clone(),
            created,
            logical_bytes: 100,
            added_bytes: 10,
            health_passing,
            frozen_time_us: 1000,
            criu_version: "4.2.1".to_string(),
        };
        lock(&self.checkpoints).insert(0, record.clone());
        Ok(record)
    }

    fn verify(&self, id: &CheckpointId) -> anyhow::Result<()> {
        if lock(&self.failing_verify).contains(id) {
            anyhow::bail!("checksum mismatch in checkpoint {id}");
        }
        Ok(())
    }

    fn list_checkpoints(&self, container: &ContainerId) -> anyhow::Result<Vec<CheckpointRecord>> {
        Ok(lock(&self.checkpoints)
            .iter()
            .filter(|r| &r.container == container)
            .cloned()
            .collect())
    }

    fn list_all_checkpoints(&self) -> anyhow::Result<Vec<CheckpointRecord>> {
        Ok(lock(&self.checkpoints).clone())
    }

    fn delete_checkpoint(&self, id: &CheckpointId) -> anyhow::Result<()> {
        lock(&self.checkpoints).retain(|record| &record.id != id);
        Ok(())
    }

    fn restore_paused(
        &self,
        policy: &Policy,
        id: &CheckpointId,
    ) -> anyhow::Result<DebugContainerInfo> {
        lock(&self.restores).push(id.clone());
        let info = DebugContainerInfo {
            name: format!("{}-debug-{}", policy.container, lock(&self.restores).len()),
            container: policy.container.clone(),
            checkpoint: id.clone(),
            created: Utc::now(),
            pid: 4242,
            pids: vec![4242, 4243],
        };
        lock(&self.debug).push(info.clone());
        Ok(info)
    }

    fn list_debug(&self) -> anyhow::Result<Vec<DebugContainerInfo>> {
        Ok(lock(&self.debug).clone())
    }

    fn remove_debug(&self, name: &str) -> anyhow::Result<()> {
        lock(&self.debug).retain(|debug| debug.name != name);
        Ok(())
    }

    fn probe_health(&self, _policy: &Policy, _probe: &HealthProbe) -> anyhow::Result<bool> {
        Ok(self.probe_passes.load(Ordering::SeqCst))
    }
}

/// Starts `script` in a shell as a grandchild, so that it is not this process's child, as a
/// container's init is not the daemon's child. Returns its pid.
fn start_workload(script: &str) -> i32 {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("sh -c '{script}' >/dev/null 2>&1 & echo $!"))
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipped: the process events connector needs root");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI runs as root"
    );
    true
}

struct Harness {
    backend: Arc<FakeBackend>,
    shared: Arc<Shared>,
    store: tempfile::TempDir,
    _shutdown: watch::Sender<bool>,
}

fn harness() -> Harness {
    let backend = Arc::new(FakeBackend::default());
    backend.probe_passes.store(true, Ordering::SeqCst);
    let store = tempfile::tempdir().unwrap();
    let (shutdown_sender, shutdown) = watch::channel(false);
    let shared = Arc::new(Shared {
        backend: backend.clone(),
        events: EventLog::new(store.path()),
        exits: ExitMonitor::start(),
        criu_slots: Semaphore::new(2),
        board: Arc::new(StatusBoard::default()),
        shutdown,
    });
    Harness {
        backend,
        shared,
        store,
        _shutdown: shutdown_sender,
    }
}

fn loaded(text: &str) -> LoadedPolicy {
    let path = PathBuf::from("/policies/web.yaml");
    LoadedPolicy {
        policy: parse_policy(&path, text).unwrap(),
        path,
    }
}

/// Polls `condition` every 50 ms for at most `limit`.
async fn wait_for(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

#[tokio::test]
async fn crash_restores_last_good_checkpoint() {
    if skip_unless_root() {
        return;
    }
    let harness = harness();
    let pid = start_workload("sleep 2; exit 139");
    harness.backend.pid.store(pid, Ordering::SeqCst);
    let (_commands, _task) = supervisor::spawn(
        harness.shared.clone(),
        loaded("container: web\ninterval: 500ms\n"),
    );

    let ended = wait_for(Duration::from_secs(5), || !alive(pid)).await;
    assert!(ended, "workload did not exit");
    let newest_before_crash = harness.backend.newest_checkpoint();
    let restored = wait_for(Duration::from_secs(3), || {
        !lock(&harness.backend.restores).is_empty()
    })
    .await;

    assert!(restored, "no restore after the crash");
    let checkpoints_taken = lock(&harness.backend.checkpoints).len();
    assert!(
        checkpoints_taken >= 2,
        "only {checkpoints_taken} checkpoints before the crash"
    );
    assert_eq!(
        Some(&lock(&harness.backend.restores)[0]),
        newest_before_crash.as_ref().map(|r| &r.id)
    );
    let events = read_events(harness.store.path(), 100).unwrap();
    let failure = events
        .iter()
        .find(|e| e.kind == EventKind::Failure)
        .expect("no failure event");
    assert_eq!(failure.details["exit_code"], 139);
    assert_eq!(failure.checkpoint, newest_before_crash.map(|r| r.id));
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::Restore && e.message.contains("gdb -p 4242"))
    );
}

#[tokio::test]
async fn operator_sigterm_is_not_failure() {
    if skip_unless_root() {
        return;
    }
    let harness = harness();
    let pid = start_workload("exec sleep 30");
    harness.backend.pid.store(pid, Ordering::SeqCst);
    let (_commands, _task) = supervisor::spawn(
        harness.shared.clone(),
        loaded("container: web\ninterval: 500ms\n"),
    );

    let running = wait_for(Duration::from_secs(3), || {
        harness
            .shared
            .board
            .list()
            .first()
            .is_some_and(|s| s.state == status::RunState::Running)
    })
    .await;
    assert!(running, "supervisor never saw the workload running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopped = wait_for(Duration::from_secs(3), || {
        harness
            .shared
            .board
            .list()
            .first()
            .is_some_and(|s| s.state == status::RunState::Stopped)
    })
    .await;

    assert!(stopped, "supervisor did not report the stop");
    assert!(lock(&harness.backend.restores).is_empty());
    assert_eq!(harness.shared.board.list()[0].failures_detected, 0);
}

#[tokio::test]
async fn restore_falls_back_when_newest_fails_verification() {
    if skip_unless_root() {
        return;
    }
    let harness = harness();
    let pid = start_workload("exec sleep 30");
    harness.backend.pid.store(pid, Ordering::SeqCst);
    let (_commands, _task) = supervisor::spawn(
        harness.shared.clone(),
        loaded("container: web\ninterval: 500ms\n"),
    );

    let two = wait_for(Duration::from_secs(5), || {
        lock(&harness.backend.checkpoints).len() >= 2
    })
    .await;
    assert!(two, "fewer than two checkpoints");
    // Later checkpoints fail, so the corrupt one below stays the newest.
    harness
        .backend
        .checkpoint_fails
        .store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (newest, older) = {
        let checkpoints = lock(&harness.backend.checkpoints);
        (checkpoints[0].id.clone(), checkpoints[1].id.clone())
    };
    lock(&harness.backend.failing_verify).insert(newest.clone());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .unwrap();
    let restored = wait_for(Duration::from_secs(3), || {
        !lock(&harness.backend.restores).is_empty()
    })
    .await;

    assert!(restored, "no restore after SIGSEGV");
    assert_eq!(lock(&harness.backend.restores)[0], older);
    let events = read_events(harness.store.path(), 100).unwrap();
    let failure = events
        .iter()
        .find(|e| e.kind == EventKind::Failure)
        .expect("no failure event");
    assert_eq!(failure.details["signal"], "SIGSEGV");
    assert_eq!(failure.checkpoint.as_ref(), Some(&older));
}

#[tokio::test]
async fn failing_health_probe_triggers_restore() {
    if skip_unless_root() {
        return;
    }
    let harness = harness();
    let pid = start_workload("exec sleep 30");
    harness.backend.pid.store(pid, Ordering::SeqCst);
    let text = "container: web\ninterval: 500ms\ngood_checkpoint:\n  health_passing: true\nhealth:\n  command: [true]\n  interval: 500ms\n  timeout: 500ms\n  failures: 2\n";
    let (_commands, _task) = supervisor::spawn(harness.shared.clone(), loaded(text));

    let good = wait_for(Duration::from_secs(5), || {
        lock(&harness.backend.checkpoints).len() >= 2
    })
    .await;
    assert!(good, "no checkpoints while healthy");
    harness.backend.probe_passes.store(false, Ordering::SeqCst);
    let restored = wait_for(Duration::from_secs(5), || {
        !lock(&harness.backend.restores).is_empty()
    })
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );

    assert!(restored, "no restore after the probe kept failing");
    let restored_id = lock(&harness.backend.restores)[0].clone();
    let checkpoints = lock(&harness.backend.checkpoints);
    let record = checkpoints
        .iter()
        .find(|r| r.id == restored_id)
        .expect("restored checkpoint deleted");
    assert_eq!(
        record.health_passing,
        Some(true),
        "restored a checkpoint taken while unhealthy"
    );
    let events = read_events(harness.store.path(), 100).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::Failure && e.details["cause"] == "health")
    );
}

#[tokio::test]
async fn retention_keeps_count_and_in_use_checkpoint() {
    if skip_unless_root() {
        return;
    }
    let harness = harness();
    let pid = start_workload("exec sleep 30");
    harness.backend.pid.store(pid, Ordering::SeqCst);
    let text = "container: web\ninterval: 500ms\nretention:\n  keep: 2\n";
    let (_commands, _task) = supervisor::spawn(harness.shared.clone(), loaded(text));

    let first = wait_for(Duration::from_secs(3), || {
        !lock(&harness.backend.checkpoints).is_empty()
    })
    .await;
    assert!(first, "no checkpoint taken");
    let in_use = lock(&harness.backend.checkpoints)[0].clone();
    lock(&harness.backend.debug).push(DebugContainerInfo {
        name: "web-debug".to_string(),
        container: in_use.container.clone(),
        checkpoint: in_use.id.clone(),
        created: Utc::now(),
        pid: 1,
        pids: vec![1],
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );

    let checkpoints = lock(&harness.backend.checkpoints);
    assert_eq!(
        checkpoints.len(),
        3,
        "expected two newest plus the one in use"
    );
    assert!(checkpoints.iter().any(|r| r.id == in_use.id));
    let events = read_events(harness.store.path(), 100).unwrap();
    assert!(events.iter().any(|e| e.kind == EventKind::Retention));
}

#[tokio::test]
async fn invalid_reload_keeps_previous_policy() {
    let harness = harness();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yaml");
    std::fs::write(&path, "container: web\ninterval: 30s\n").unwrap();
    let registry = Mutex::new(Registry::default());
    let mut tasks = Vec::new();

    let first = reload(dir.path(), &harness.shared, &registry, &mut tasks);
    std::fs::write(&path, "container: web\ninterval: soon\n").unwrap();
    let second = reload(dir.path(), &harness.shared, &registry, &mut tasks);

    assert_eq!(first.policies, 1);
    assert!(first.errors.is_empty());
    assert_eq!(second.policies, 1);
    assert_eq!(second.errors.len(), 1);
    assert!(
        second.errors[0].contains("web.yaml:2:11"),
        "{}",
        second.errors[0]
    );
    let registry = lock(&registry);
    let entry = registry.supervised.get(&path).expect("policy dropped");
    assert_eq!(entry.loaded.policy.interval.0, Duration::from_secs(30));
}

#[tokio::test]
async fn valid_reload_updates_and_removes_policies() {
    let harness = harness();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        "container: web\ninterval: 30s\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("db.yaml"), "container: db\ninterval: 30s\n").unwrap();
    let registry = Mutex::new(Registry::default());
    let mut tasks = Vec::new();
    reload(dir.path(), &harness.shared, &registry, &mut tasks);

    std::fs::write(
        dir.path().join("web.yaml"),
        "container: web\ninterval: 10s\n",
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("db.yaml")).unwrap();
    let outcome = reload(dir.path(), &harness.shared, &registry, &mut tasks);

    assert_eq!(outcome.policies, 1);
    let registry = lock(&registry);
    let web = registry.sender_for(&"web".parse().unwrap());
    assert!(web.is_some());
    assert!(registry.sender_for(&"db".parse().unwrap()).is_none());
    let entry = registry.supervised.values().next().unwrap();
    assert_eq!(entry.loaded.policy.interval.0, Duration::from_secs(10));
}
