//! `ckpt daemon`: periodic checkpoints per policy, failure detection, and a paused restore
//! of the last good checkpoint when a container fails.
//!
//! The main loop owns the policies and starts one [`supervisor`] task per policy file. It
//! reloads on SIGHUP, on a change in the policy directory and on request through the
//! control API. On SIGTERM or SIGINT it waits for in-flight operations, then returns.

pub mod backend;
pub mod control;
pub mod events;
pub mod exits;
pub mod failure;
pub mod metrics;
pub mod oom;
pub mod ops_backend;
pub mod retention;
pub mod status;
pub mod supervisor;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::daemon::backend::Backend;
use crate::daemon::events::EventLog;
use crate::daemon::exits::ExitMonitor;
use crate::daemon::status::StatusBoard;
use crate::daemon::supervisor::{Command, Shared};
use crate::model::ContainerId;
use crate::policy::{LoadedPolicy, PolicyError, load_dir};

/// How often the policy directory is checked for changes.
const POLICY_POLL: Duration = Duration::from_secs(1);

/// Settings of one daemon run.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub policy_dir: PathBuf,
    pub store_root: PathBuf,
    pub socket: PathBuf,
    /// Loopback address of the Prometheus endpoint; `None` disables it.
    pub metrics: Option<SocketAddr>,
    /// Maximum number of CRIU operations running at once over all containers.
    pub max_parallel: usize,
}

/// A supervisor started for one policy file.
struct Supervised {
    loaded: LoadedPolicy,
    commands: mpsc::Sender<Command>,
}

/// Policies in force, by file, and the messages of files that failed to load.
#[derive(Default)]
pub struct Registry {
    supervised: BTreeMap<PathBuf, Supervised>,
    pub errors: Vec<String>,
}

impl Registry {
    /// Returns the command channel of the container's supervisor.
    pub fn sender_for(&self, container: &ContainerId) -> Option<mpsc::Sender<Command>> {
        self.supervised
            .values()
            .find(|entry| &entry.loaded.policy.container == container)
            .map(|entry| entry.commands.clone())
    }
}

/// Result of reloading the policy directory.
#[derive(Clone, Debug, Default)]
pub struct ReloadOutcome {
    /// Policies in force after the reload.
    pub policies: usize,
    /// One message per file that failed; the previous policy of such a file stays in force.
    pub errors: Vec<String>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the daemon until SIGTERM or SIGINT. In-flight checkpoints finish before it returns.
pub async fn run(config: DaemonConfig, backend: Arc<dyn Backend>) -> anyhow::Result<()> {
    // Set up the store directory, the event log and the exit monitor.
    crate::fsutil::create_private_dir_all(&config.store_root).with_context(|| {
        format!(
            "failed to create store directory {}",
            config.store_root.display()
        )
    })?;
    let (shutdown_sender, shutdown) = watch::channel(false);
    let shared = Arc::new(Shared {
        backend,
        events: EventLog::new(&config.store_root),
        exits: ExitMonitor::start(),
        criu_slots: Semaphore::new(config.max_parallel.max(1)),
        board: Arc::new(StatusBoard::default()),
        shutdown,
    });

    // Open the endpoints before starting supervisors, so that a socket in use stops the daemon
    // before it touches any container.
    let listener = control::bind(&config.socket).await?;
    let metrics_listener = match config.metrics {
        Some(address) => {
            let address = metrics::check_address(address)?;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("failed to listen for metrics on {address}"))?;
            tracing::info!(address = %address, "serving metrics");
            Some(listener)
        }
        None => None,
    };

    let registry = Arc::new(Mutex::new(Registry::default()));
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let outcome = reload(&config.policy_dir, &shared, &registry, &mut tasks);
    tracing::info!(
        path = %config.policy_dir.display(),
        policies = outcome.policies,
        errors = outcome.errors.len(),
        socket = %config.socket.display(),
        "daemon started"
    );

    let (reload_sender, mut reload_requests) = mpsc::channel::<oneshot::Sender<ReloadOutcome>>(4);
    let service = control::ControlService {
        shared: Arc::clone(&shared),
        store_root: config.store_root.clone(),
        registry: Arc::clone(&registry),
        reload: reload_sender,
    };
    let mut control_shutdown = shared.shutdown.clone();
    let control_task = tokio::spawn(async move {
        let stop = async move {
            let _ = control_shutdown.wait_for(|stopping| *stopping).await;
        };
        if let Err(err) = control::serve(listener, service, stop).await {
            tracing::error!(error = %err, "control API stopped");
        }
    });
    let metrics_task = metrics_listener
        .map(|listener| tokio::spawn(metrics::serve(listener, Arc::clone(&shared.board))));

    // Main loop: reload on SIGHUP, directory changes or API requests; stop on SIGTERM/SIGINT.
    let mut hangup = signal(SignalKind::hangup()).context("failed to install SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("failed to install SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("failed to install SIGINT handler")?;
    let mut fingerprint = dir_fingerprint(&config.policy_dir);
    let mut poll = tokio::time::interval(POLICY_POLL);
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("received SIGTERM; shutting down");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("received SIGINT; shutting down");
                break;
            }
            _ = hangup.recv() => {
                tracing::info!("received SIGHUP; reloading policies");
                fingerprint = dir_fingerprint(&config.policy_dir);
                reload(&config.policy_dir, &shared, &registry, &mut tasks);
            }
            Some(reply) = reload_requests.recv() => {
                fingerprint = dir_fingerprint(&config.policy_dir);
                let outcome = reload(&config.policy_dir, &shared, &registry, &mut tasks);
                let _ = reply.send(outcome);
            }
            _ = poll.tick() => {
                let current = dir_fingerprint(&config.policy_dir);
                if current != fingerprint {
                    fingerprint = current;
                    tracing::info!(path = %config.policy_dir.display(), "policy directory changed; reloading policies");
                    reload(&config.policy_dir, &shared, &registry, &mut tasks);
                }
            }
        }
    }

    // Shutdown: supervisors finish an in-flight operation, then return.
    let _ = shutdown_sender.send(true);
    lock(&registry).supervised.clear();
    for task in tasks {
        let _ = task.await;
    }
    let _ = control_task.await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Err(err) = std::fs::remove_file(&config.socket) {
        tracing::warn!(path = %config.socket.display(), error = %err, "failed to remove control socket");
    }
    tracing::info!("daemon stopped");
    Ok(())
}

/// Names, sizes and modification times of the policy files, to notice changes.
fn dir_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((entry.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// Rereads the policy directory and starts, updates or stops supervisors to match. A file
/// that fails to load keeps its previous policy in force.
fn reload(
    dir: &Path,
    shared: &Arc<Shared>,
    registry: &Mutex<Registry>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> ReloadOutcome {
    let mut registry = lock(registry);
    let set = match load_dir(dir) {
        Ok(set) => set,
        Err(err) => {
            let message = format!("{:#}", anyhow::Error::new(err));
            tracing::error!(error = %message, "failed to load policies; keeping the policies in force");
            registry.errors = vec![message];
            return ReloadOutcome {
                policies: registry.supervised.len(),
                errors: registry.errors.clone(),
            };
        }
    };

    let failed_paths: HashSet<PathBuf> = set
        .errors
        .iter()
        .map(|err| err.path().to_path_buf())
        .collect();
    let mut errors: Vec<String> = set.errors.iter().map(PolicyError::to_string).collect();
    for err in &set.errors {
        let previous_in_force = registry.supervised.contains_key(err.path());
        tracing::error!(error = %err, previous_in_force, "invalid policy");
    }

    // Stop supervisors whose file is gone, or whose file now names another container.
    let mut new_by_path: BTreeMap<PathBuf, LoadedPolicy> = set
        .policies
        .into_iter()
        .map(|loaded| (loaded.path.clone(), loaded))
        .collect();
    let stale: Vec<PathBuf> = registry
        .supervised
        .iter()
        .filter(|(path, entry)| match new_by_path.get(*path) {
            Some(loaded) => loaded.policy.container != entry.loaded.policy.container,
            None => !failed_paths.contains(*path),
        })
        .map(|(path, _)| path.clone())
        .collect();
    for path in stale {
        if let Some(entry) = registry.supervised.remove(&path) {
            tracing::info!(container = %entry.loaded.policy.container, path = %path.display(), "policy removed");
        }
    }

    // Update changed policies in place.
    for (path, entry) in registry.supervised.iter_mut() {
        if let Some(loaded) = new_by_path.remove(path)
            && loaded.policy != entry.loaded.policy
        {
            entry.loaded = loaded.clone();
            if entry
                .commands
                .try_send(Command::Update(Box::new(loaded)))
                .is_err()
            {
                tracing::warn!(container = %entry.loaded.policy.container, "failed to pass the updated policy to its supervisor");
            }
        }
    }

    // Start supervisors for new files, unless a kept policy already covers the container.
    for (path, loaded) in new_by_path {
        if let Some(existing) = registry
            .supervised
            .values()
            .find(|entry| entry.loaded.policy.container == loaded.policy.container)
        {
            let message = PolicyError::Duplicate {
                path: path.clone(),
                container: loaded.policy.container.clone(),
                first: existing.loaded.path.clone(),
            }
            .to_string();
            tracing::error!(error = %message, "invalid policy");
            errors.push(message);
            continue;
        }
        let (commands, task) = supervisor::spawn(Arc::clone(shared), loaded.clone());
        tasks.push(task);
        registry
            .supervised
            .insert(path, Supervised { loaded, commands });
    }
    tasks.retain(|task| !task.is_finished());

    registry.errors = errors;
    ReloadOutcome {
        policies: registry.supervised.len(),
        errors: registry.errors.clone(),
    }
}

#[cfg(test)]
mod tests;
