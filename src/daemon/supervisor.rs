//! One task per policy: waits for the container, checkpoints it on schedule, watches for
//! its failure, and restores a paused debug container when it fails.
//!
//! The task does every operation on its container itself, one after the other, so a
//! checkpoint, a health probe and a checkpoint requested through the control API never
//! overlap. That is the per-container lock: a probe process started during a checkpoint
//! would be frozen and checkpointed with the container.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::daemon::backend::{Backend, CheckpointRecord, ContainerState, DebugContainerInfo};
use crate::daemon::events::{Event, EventKind, EventLog};
use crate::daemon::exits::ExitMonitor;
use crate::daemon::failure::{FailureCause, InitExit, classify_exit, signal_name};
use crate::daemon::oom::OomCounter;
use crate::daemon::retention::{is_good, plan_deletions};
use crate::daemon::status::{ContainerStatus, RunState, StatusBoard};
use crate::model::ContainerId;
use crate::policy::{LoadedPolicy, Policy, RestoreMode};

/// How often a container that is not running is looked up again.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// How often the OOM kill counter is read; bounds how late an OOM kill is noticed.
const OOM_POLL: Duration = Duration::from_millis(250);
/// How long to wait for init to end after an OOM kill, so that one OOM kill that also
/// ends init is reported once.
const OOM_EXIT_GRACE: Duration = Duration::from_millis(300);
/// Maximum delay between retries of a failing checkpoint, unless the interval is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// State shared by every supervisor.
pub struct Shared {
    pub backend: Arc<dyn Backend>,
    pub events: EventLog,
    pub exits: ExitMonitor,
    /// Bounds how many CRIU operations (checkpoints, verifications, restores) run at once.
    pub criu_slots: Semaphore,
    pub board: Arc<StatusBoard>,
    /// Becomes true when the daemon shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// Requests sent to a supervisor.
#[derive(Debug)]
pub enum Command {
    /// Take a checkpoint now and send back its record or the error message.
    CheckpointNow(oneshot::Sender<Result<CheckpointRecord, String>>),
    /// The policy file changed; apply the new policy from the next scheduled checkpoint.
    Update(Box<LoadedPolicy>),
}

/// Reason a supervisor stopped watching the current init process.
enum End {
    /// Init ended; wait for the container to run again.
    Exited,
    /// Shutdown, or the policy was removed.
    Quit,
}

/// Starts a supervisor task for `loaded`; dropping every sender of the returned channel
/// stops it.
pub fn spawn(
    shared: Arc<Shared>,
    loaded: LoadedPolicy,
) -> (mpsc::Sender<Command>, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(8);
    shared.board.insert(ContainerStatus::new(
        loaded.policy.container.clone(),
        loaded.path.clone(),
        loaded.policy.interval.0,
    ));
    let supervisor = Supervisor {
        shutdown: shared.shutdown.clone(),
        shared,
        loaded,
        commands: receiver,
        consecutive_errors: 0,
        last_error: String::new(),
        probe_failures: 0,
        last_probe: None,
    };
    let task = tokio::spawn(supervisor.run());
    (sender, task)
}

struct Supervisor {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    loaded: LoadedPolicy,
    commands: mpsc::Receiver<Command>,
    /// Checkpoint attempts that failed in a row, for backoff and log summaries.
    consecutive_errors: u32,
    last_error: String,
    /// Health probe runs that failed in a row.
    probe_failures: u32,
    /// Result of the last health probe; `None` before the first run.
    last_probe: Option<bool>,
}

impl Supervisor {
    fn policy(&self) -> &Policy {
        &self.loaded.policy
    }

    fn container(&self) -> &ContainerId {
        &self.loaded.policy.container
    }

    async fn run(mut self) {
        let container = self.container().clone();
        tracing::info!(container = %container, path = %self.loaded.path.display(), "supervising container");
        let mut handled_pid = None;
        loop {
            let Some(state) = self.wait_until_running(handled_pid).await else {
                break;
            };
            handled_pid = Some(state.pid);
            match self.supervise(state).await {
                End::Exited => continue,
                End::Quit => break,
            }
        }
        self.shared.board.remove(&container, &self.loaded.path);
        tracing::info!(container = %container, "stopped supervising container");
    }

    fn set_state(&self, state: RunState) {
        self.shared
            .board
            .update(self.container(), |status| status.state = state);
    }

    fn record_event(&self, event: Event) {
        if let Err(err) = self.shared.events.append(&event) {
            tracing::warn!(container = %self.container(), error = %err, "failed to record event");
        }
    }

    /// Runs a blocking backend call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Backend, &Policy) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let backend = Arc::clone(&self.shared.backend);
        let policy = self.policy().clone();
        match tokio::task::spawn_blocking(move || call(backend.as_ref(), &policy)).await {
            Ok(result) => result,
            Err(err) => Err(anyhow::anyhow!("backend task failed: {err}")),
        }
    }

    /// Handles a command that arrives while no init process is watched.
    fn handle_idle_command(&mut self, command: Command) {
        match command {
            Command::CheckpointNow(reply) => {
                let _ = reply.send(Err(format!(
                    "container {} is not running",
                    self.container()
                )));
            }
            Command::Update(loaded) => self.apply_update(*loaded),
        }
    }

    fn apply_update(&mut self, loaded: LoadedPolicy) {
        tracing::info!(container = %self.container(), path = %loaded.path.display(), "policy updated");
        self.shared.board.update(self.container(), |status| {
            status.interval = loaded.policy.interval.0;
            status.policy_path = loaded.path.clone();
        });
        self.loaded = loaded;
    }

    /// Waits until the runtime reports the container running with an init other than
    /// `handled_pid`. Returns `None` on shutdown or when the policy is removed.
    async fn wait_until_running(&mut self, handled_pid: Option<i32>) -> Option<ContainerState> {
        let mut logged = false;
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            match self
                .blocking(|backend, policy| backend.container_state(policy))
                .await
            {
                Ok(Some(state))
                    if state.status == "running"
                        && state.pid > 0
                        && Some(state.pid) != handled_pid =>
                {
                    return Some(state);
                }
                Ok(_) => {
                    if !logged {
                        tracing::info!(container = %self.container(), "waiting for container to run");
                        logged = true;
                    }
                }
                Err(err) => {
                    if !logged {
                        tracing::warn!(container = %self.container(), error = %format!("{err:#}"), "failed to read container state; retrying");
                        logged = true;
                    }
                }
            }
            if handled_pid.is_none() {
                self.set_state(RunState::Waiting);
            }
            self.shared
                .board
                .update(self.container(), |status| status.next_checkpoint = None);
            tokio::select! {
                _ = self.shutdown.changed() => return None,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_idle_command(command),
                    None => return None,
                },
                _ = tokio::time::sleep(WAIT_POLL) => {}
            }
        }
    }

    /// Delay before the next checkpoint: the interval plus jitter, stretched by backoff
    /// after failed attempts.
    fn next_delay(&self) -> Duration {
        let interval = self.policy().interval.0;
        let base = if self.consecutive_errors == 0 {
            interval
        } else {
            let factor = 1u32 << self.consecutive_errors.min(6);
            interval
                .saturating_mul(factor)
                .min(MAX_BACKOFF.max(interval))
        };
        let jitter_ms = self.policy().jitter().as_millis() as u64;
        let jitter = if jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ms)
        };
        base + Duration::from_millis(jitter)
    }

    fn schedule(&self) -> tokio::time::Instant {
        let delay = self.next_delay();
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.shared
            .board
            .update(self.container(), |status| status.next_checkpoint = Some(at));
        tokio::time::Instant::now() + delay
    }

    /// Watches one init process until it ends, taking checkpoints and running the health
    /// probe meanwhile.
    async fn supervise(&mut self, state: ContainerState) -> End {
        let pid = state.pid;
        let container = self.container().clone();
        let mut exit_watch = self.shared.exits.watch(pid);
        let exit = exit_watch.wait();
        tokio::pin!(exit);
        let oom = OomCounter::for_pid(pid);
        let mut oom_seen = oom.as_ref().and_then(OomCounter::read).unwrap_or(0);
        self.set_state(RunState::Running);
        self.probe_failures = 0;
        self.last_probe = None;
        tracing::info!(container = %container, pid, "container running");

        let mut next_checkpoint = self.schedule();
        let mut oom_tick = tokio::time::interval(OOM_POLL);
        let probe_period = self
            .policy()
            .health
            .as_ref()
            .map_or(Duration::from_secs(3600), |probe| probe.interval.0);
        let mut probe_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + probe_period, probe_period);
        loop {
            let probing = self.policy().health.is_some();
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => return End::Quit,
                ended = &mut exit => {
                    let oom_killed = oom.as_ref().and_then(OomCounter::read).is_some_and(|count| count > oom_seen);
                    self.handle_exit(pid, ended, oom_killed).await;
                    return End::Exited;
                }
                command = self.commands.recv() => match command {
                    Some(Command::CheckpointNow(reply)) => {
                        let result = self.take_checkpoint().await;
                        let _ = reply.send(result);
                    }
                    Some(Command::Update(loaded)) => {
                        self.apply_update(*loaded);
                        next_checkpoint = self.schedule();
                    }
                    None => return End::Quit,
                },
                _ = tokio::time::sleep_until(next_checkpoint) => {
                    let _ = self.take_checkpoint().await;
                    next_checkpoint = self.schedule();
                }
                _ = oom_tick.tick() => {
                    let count = oom.as_ref().and_then(OomCounter::read).unwrap_or(oom_seen);
                    if count > oom_seen {
                        oom_seen = count;
                        // An OOM kill of init ends the container; report that as one failure.
                        if let Ok(ended) = tokio::time::timeout(OOM_EXIT_GRACE, &mut exit).await {
                            self.handle_exit(pid, ended, true).await;
                            return End::Exited;
                        }
                        self.handle_failure(FailureCause::OomKill, None).await;
                        self.set_state(RunState::Running);
                    }
                }
                _ = probe_tick.tick(), if probing => {
                    if let Some(cause) = self.run_probe().await {
                        self.handle_failure(cause, None).await;
                        self.set_state(RunState::Running);
                    }
                }
            }
        }
    }

    /// Runs the health probe once and returns a failure when it failed too often in a row.
    async fn run_probe(&mut self) -> Option<FailureCause> {
        let probe = self.policy().health.clone()?;
        let passed = match self
            .blocking(move |backend, policy| backend.probe_health(policy, &probe))
            .await
        {
            Ok(passed) => passed,
            Err(err) => {
                tracing::warn!(container = %self.container(), error = %format!("{err:#}"), "failed to run health probe");
                false
            }
        };
        self.last_probe = Some(passed);
        if passed {
            if self.probe_failures > 0 {
                tracing::info!(container = %self.container(), failures = self.probe_failures, "health probe passes again");
            }
            self.probe_failures = 0;
            return None;
        }
        self.probe_failures += 1;
        tracing::warn!(container = %self.container(), failures = self.probe_failures, "health probe failed");
        let limit = self
            .policy()
            .health
            .as_ref()
            .map_or(u32::MAX, |probe| probe.failures);
        if self.probe_failures >= limit && self.policy().on_failure.health {
            let count = self.probe_failures;
            self.probe_failures = 0;
            return Some(FailureCause::HealthProbe(count));
        }
        None
    }

    /// Takes, verifies and records one checkpoint, then applies retention.
    async fn take_checkpoint(&mut self) -> Result<CheckpointRecord, String> {
        let health_passing = if self.policy().health.is_some() {
            if self.last_probe.is_none() {
                let _ = self.run_probe().await;
            }
            self.last_probe
        } else {
            None
        };

        let started = Instant::now();
        let result = {
            let _permit = self.shared.criu_slots.acquire().await;
            let verify = self.policy().good_checkpoint.verify;
            self.blocking(move |backend, policy| {
                let record = backend.checkpoint(policy, health_passing)?;
                if verify && let Err(err) = backend.verify(&record.id) {
                    // A checkpoint that fails verification right away is not kept.
                    if let Err(delete_err) = backend.delete_checkpoint(&record.id) {
                        tracing::warn!(container = %record.container, checkpoint = %record.id, error = %format!("{delete_err:#}"), "failed to delete unverified checkpoint");
                    }
                    return Err(err.context(format!("checkpoint {} failed verification", record.id)));
                }
                Ok(record)
            })
            .await
        };
        let duration = started.elapsed();

        match result {
            Ok(record) => {
                self.record_success(&record, duration);
                self.apply_retention().await;
                Ok(record)
            }
            Err(err) => {
                let message = format!("{err:#}");
                self.record_error(&message);
                Err(message)
            }
        }
    }

    fn record_success(&mut self, record: &CheckpointRecord, duration: Duration) {
        let container = self.container().clone();
        if self.consecutive_errors > 0 {
            tracing::info!(container = %container, failed_attempts = self.consecutive_errors, "checkpoints succeed again");
        }
        self.consecutive_errors = 0;
        self.last_error.clear();

        let good = is_good(record, self.policy().requires_health());
        self.shared.board.update(&container, |status| {
            status.checkpoints_taken += 1;
            status.checkpoint_seconds_sum += duration.as_secs_f64();
            status.checkpoint_seconds_count += 1;
            status.last_frozen_time_us = record.frozen_time_us;
            status.bytes_stored += record.added_bytes;
            status.last_result = "ok".to_string();
            if good {
                status.last_good = Some((record.id.clone(), record.created));
            }
        });
        let duration_ms = duration.as_millis() as u64;
        tracing::info!(
            container = %container,
            checkpoint = %record.id,
            duration_ms,
            added_bytes = record.added_bytes,
            frozen_time_us = record.frozen_time_us,
            good,
            "checkpoint taken"
        );
        self.record_event(
            Event::new(
                EventKind::Checkpoint,
                &container,
                format!("checkpoint taken in {duration_ms} ms"),
            )
            .with_checkpoint(&record.id)
            .with_detail("duration_ms", duration_ms)
            .with_detail("logical_bytes", record.logical_bytes)
            .with_detail("added_bytes", record.added_bytes)
            .with_detail("frozen_time_us", record.frozen_time_us)
            .with_detail("good", good),
        );
    }

    /// Counts a failed attempt. The log and the event log get the first error, a changed
    /// error, and then only every attempt whose count is a power of two.
    fn record_error(&mut self, message: &str) {
        let container = self.container().clone();
        self.consecutive_errors += 1;
        let attempts = self.consecutive_errors;
        self.shared.board.update(&container, |status| {
            status.checkpoints_failed += 1;
            status.last_result = format!("failed: {message}");
        });
        let changed = message != self.last_error;
        if changed || attempts.is_power_of_two() {
            tracing::warn!(container = %container, attempts, error = %message, "checkpoint failed; retrying with backoff");
            self.record_event(
                Event::new(EventKind::CheckpointFailed, &container, message.to_string())
                    .with_detail("attempts", attempts),
            );
        }
        self.last_error = message.to_string();
    }

    /// Deletes the checkpoints that the retention rules no longer keep.
    async fn apply_retention(&mut self) {
        let container = self.container().clone();
        let requires_health = self.policy().requires_health();
        let rules = self.policy().retention.clone();
        let deleted = self
            .blocking(move |backend, policy| {
                let checkpoints = backend.list_checkpoints(&policy.container)?;
                let in_use: HashSet<_> = backend.list_debug()?.into_iter().map(|debug| debug.checkpoint).collect();
                let plan = plan_deletions(&checkpoints, &rules, requires_health, &in_use, Utc::now());
                let mut deleted = Vec::new();
                for id in plan {
                    match backend.delete_checkpoint(&id) {
                        Ok(()) => deleted.push(id),
                        Err(err) => tracing::warn!(container = %policy.container, checkpoint = %id, error = %format!("{err:#}"), "failed to delete checkpoint"),
                    }
                }
                Ok(deleted)
            })
            .await;
        match deleted {
            Ok(deleted) => {
                for id in deleted {
                    tracing::info!(container = %container, checkpoint = %id, "retention deleted checkpoint");
                    self.record_event(
                        Event::new(EventKind::Retention, &container, "deleted by retention")
                            .with_checkpoint(&id),
                    );
                }
            }
            Err(err) => {
                tracing::warn!(container = %container, error = %format!("{err:#}"), "failed to apply retention")
            }
        }
    }

    /// Classifies the end of init and handles a failure.
    async fn handle_exit(&mut self, pid: i32, ended: InitExit, oom_killed: bool) {
        let container = self.container().clone();
        match classify_exit(ended, oom_killed, &self.policy().on_failure) {
            Some(cause) => self.handle_failure(cause, Some(ended)).await,
            None => {
                self.set_state(RunState::Stopped);
                match ended {
                    InitExit::Code(code) => {
                        tracing::info!(container = %container, pid, exit_code = code, "container stopped")
                    }
                    InitExit::Signal(number) => {
                        tracing::info!(container = %container, pid, signal = %signal_name(number), "container stopped")
                    }
                    InitExit::Unknown => {
                        tracing::info!(container = %container, pid, "container stopped; exit status unknown")
                    }
                }
            }
        }
    }

    /// Records a failure, then restores the newest good checkpoint that verifies into a
    /// paused debug container when the policy has `restore: paused`.
    async fn handle_failure(&mut self, cause: FailureCause, ended: Option<InitExit>) {
        let container = self.container().clone();
        self.set_state(RunState::Failed);
        self.shared
            .board
            .update(&container, |status| status.failures_detected += 1);

        // Choose the checkpoint: the newest good one that still verifies.
        let requires_health = self.policy().requires_health();
        let chosen = {
            let _permit = self.shared.criu_slots.acquire().await;
            self.blocking(move |backend, policy| {
                for record in backend.list_checkpoints(&policy.container)? {
                    if !is_good(&record, requires_health) {
                        continue;
                    }
                    match backend.verify(&record.id) {
                        Ok(()) => return Ok(Some(record)),
                        Err(err) => tracing::warn!(container = %policy.container, checkpoint = %record.id, error = %format!("{err:#}"), "checkpoint failed verification; trying an older one"),
                    }
                }
                Ok(None)
            })
            .await
        };
        let chosen = match chosen {
            Ok(chosen) => chosen,
            Err(err) => {
                tracing::warn!(container = %container, error = %format!("{err:#}"), "failed to list checkpoints");
                None
            }
        };

        // Record the failure once, with the checkpoint chosen.
        let mut event = Event::new(EventKind::Failure, &container, cause.to_string())
            .with_detail("cause", cause.kind());
        if let Some(record) = &chosen {
            event = event.with_checkpoint(&record.id);
        }
        let (exit_code, signal) = match ended {
            Some(InitExit::Code(code)) => (Some(code), None),
            Some(InitExit::Signal(number)) => (None, Some(signal_name(number))),
            _ => (None, None),
        };
        tracing::error!(
            container = %container,
            cause = %cause,
            exit_code,
            signal,
            checkpoint = %chosen.as_ref().map(|record| record.id.to_string()).unwrap_or_else(|| "none".to_string()),
            "container failed"
        );
        if let Some(code) = exit_code {
            event = event.with_detail("exit_code", code);
        }
        if let Some(signal) = signal {
            event = event.with_detail("signal", signal);
        }
        self.record_event(event);

        if self.policy().on_failure.restore == RestoreMode::None {
            return;
        }
        let Some(record) = chosen else {
            tracing::warn!(container = %container, "no good checkpoint to restore");
            return;
        };

        // Make room for the new debug container, then restore.
        self.remove_old_debug_containers().await;
        let id = record.id.clone();
        let restored = {
            let _permit = self.shared.criu_slots.acquire().await;
            self.blocking(move |backend, policy| backend.restore_paused(policy, &id))
                .await
        };
        match restored {
            Ok(restored) => self.report_restore(&restored),
            Err(err) => {
                let message = format!("{err:#}");
                tracing::error!(container = %container, checkpoint = %record.id, error = %message, "failed to restore paused debug container");
                self.record_event(
                    Event::new(EventKind::RestoreFailed, &container, message)
                        .with_checkpoint(&record.id),
                );
            }
        }
    }

    fn report_restore(&self, restored: &DebugContainerInfo) {
        let pids: Vec<String> = restored.pids.iter().map(i32::to_string).collect();
        // The same commands that `ckpt restore` prints; the sysroot lets gdb load the
        // container's libraries.
        let gdb = format!(
            "gdb -p {pid} -ex 'set sysroot /proc/{pid}/root'",
            pid = restored.pid
        );
        let strace = format!("strace -f -p {}", restored.pid);
        tracing::info!(
            container = %restored.container,
            checkpoint = %restored.checkpoint,
            debug_container = %restored.name,
            pid = restored.pid,
            pids = %pids.join(","),
            gdb = %gdb,
            strace = %strace,
            "restored paused debug container"
        );
        self.record_event(
            Event::new(
                EventKind::Restore,
                &restored.container,
                format!(
                    "restored paused debug container {}; attach with `{gdb}` or `{strace}`",
                    restored.name
                ),
            )
            .with_checkpoint(&restored.checkpoint)
            .with_detail("debug_container", restored.name.clone())
            .with_detail("pid", restored.pid)
            .with_detail("pids", restored.pids.clone()),
        );
    }

    /// Removes this container's oldest debug containers so that, with the one about to be
    /// restored, at most `keep_debug_containers` remain.
    async fn remove_old_debug_containers(&self) {
        let keep = self
            .policy()
            .on_failure
            .keep_debug_containers
            .saturating_sub(1);
        let result = self
            .blocking(move |backend, policy| {
                let mut debug_containers: Vec<DebugContainerInfo> = backend
                    .list_debug()?
                    .into_iter()
                    .filter(|debug| debug.container == policy.container)
                    .collect();
                debug_containers.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
                let names: Vec<String> = debug_containers.into_iter().map(|debug| debug.name).collect();
                for name in crate::daemon::retention::plan_debug_removals(&names, keep) {
                    backend.remove_debug(&name)?;
                    tracing::info!(container = %policy.container, debug_container = %name, "removed old debug container");
                }
                Ok(())
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(container = %self.container(), error = %format!("{err:#}"), "failed to remove old debug containers");
        }
    }
}
