//! Status of each supervised container, for `ckpt status` and metrics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{CheckpointId, ContainerId};

/// Phase of a supervised container's life, as the daemon last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Not running yet, or gone; the daemon checks again every second.
    Waiting,
    Running,
    /// Its last end counted as a failure.
    Failed,
    /// Its last end was a stop on purpose.
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// Status and counters of one supervised container.
#[derive(Clone, Debug)]
pub struct ContainerStatus {
    pub container: ContainerId,
    pub policy_path: PathBuf,
    pub interval: Duration,
    pub state: RunState,
    pub next_checkpoint: Option<DateTime<Utc>>,
    /// `ok` or `failed: <cause>`; empty before the first attempt.
    pub last_result: String,
    pub last_good: Option<(CheckpointId, DateTime<Utc>)>,
    pub checkpoints_taken: u64,
    pub checkpoints_failed: u64,
    pub failures_detected: u64,
    /// Sum and count of the durations of successful checkpoints, in seconds.
    pub checkpoint_seconds_sum: f64,
    pub checkpoint_seconds_count: u64,
    /// Time the container stayed frozen during the last checkpoint, in microseconds.
    pub last_frozen_time_us: u64,
    /// Sum of the bytes each checkpoint added to the store since the daemon started.
    pub bytes_stored: u64,
}

impl ContainerStatus {
    pub fn new(container: ContainerId, policy_path: PathBuf, interval: Duration) -> Self {
        Self {
            container,
            policy_path,
            interval,
            state: RunState::Waiting,
            next_checkpoint: None,
            last_result: String::new(),
            last_good: None,
            checkpoints_taken: 0,
            checkpoints_failed: 0,
            failures_detected: 0,
            checkpoint_seconds_sum: 0.0,
            checkpoint_seconds_count: 0,
            last_frozen_time_us: 0,
            bytes_stored: 0,
        }
    }
}

/// Status of every supervised container, shared by supervisors, the control API and metrics.
#[derive(Debug, Default)]
pub struct StatusBoard {
    containers: Mutex<BTreeMap<ContainerId, ContainerStatus>>,
}

impl StatusBoard {
    pub fn insert(&self, status: ContainerStatus) {
        self.lock().insert(status.container.clone(), status);
    }

    /// Removes the container's status if it still belongs to the policy file `policy_path`,
    /// so that a supervisor that stops late does not remove its successor's status.
    pub fn remove(&self, container: &ContainerId, policy_path: &std::path::Path) {
        let mut containers = self.lock();
        if containers
            .get(container)
            .is_some_and(|status| status.policy_path == policy_path)
        {
            containers.remove(container);
        }
    }

    /// Applies `change` to the container's status, if it is supervised.
    pub fn update(&self, container: &ContainerId, change: impl FnOnce(&mut ContainerStatus)) {
        if let Some(status) = self.lock().get_mut(container) {
            change(status);
        }
    }

    /// Copies every status, sorted by container name.
    pub fn list(&self) -> Vec<ContainerStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ContainerId, ContainerStatus>> {
        self.containers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
