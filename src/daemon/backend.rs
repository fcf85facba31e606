//! The operations the daemon drives, behind a trait so that the scheduler, retention and
//! failure handling can be tested without CRIU or runc.

use chrono::{DateTime, Utc};

use crate::model::{CheckpointId, ContainerId};
use crate::policy::{HealthProbe, Policy};

/// A checkpoint in the store, as the daemon needs to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub id: CheckpointId,
    pub container: ContainerId,
    pub created: DateTime<Utc>,
    /// Bytes of the checkpoint's images before deduplication and compression.
    pub logical_bytes: u64,
    /// Bytes the checkpoint added to the store.
    pub added_bytes: u64,
    /// Whether the health probe passed when it was taken; `None` without a probe.
    pub health_passing: Option<bool>,
    /// How long CRIU kept the container frozen, in microseconds.
    pub frozen_time_us: u64,
    /// Version of CRIU that took the checkpoint.
    pub criu_version: String,
}

/// Container state as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    /// Host PID of the container's init process, 0 when it is not running.
    pub pid: i32,
    /// Runtime status: `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The container's cgroup path relative to the hierarchy root, when known.
    pub cgroup: Option<String>,
}

/// A paused debug container restored from a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugContainerInfo {
    pub name: String,
    /// Container the checkpoint was taken from.
    pub container: ContainerId,
    pub checkpoint: CheckpointId,
    pub created: DateTime<Utc>,
    /// Host PID of the restored init process.
    pub pid: i32,
    /// Host PIDs of every restored process.
    pub pids: Vec<i32>,
}

/// Checkpoint, store, restore and runtime operations. All methods block, so the daemon
/// calls them from `spawn_blocking`.
pub trait Backend: Send + Sync + 'static {
    /// Returns the container's state, or `None` when the runtime has no such container.
    fn container_state(&self, policy: &Policy) -> anyhow::Result<Option<ContainerState>>;

    /// Checkpoints the container into the store. Nothing of a failed checkpoint may remain.
    fn checkpoint(
        &self,
        policy: &Policy,
        health_passing: Option<bool>,
    ) -> anyhow::Result<CheckpointRecord>;

    /// Checks a stored checkpoint against its checksums.
    fn verify(&self, id: &CheckpointId) -> anyhow::Result<()>;

    /// Lists the container's checkpoints, newest first.
    fn list_checkpoints(&self, container: &ContainerId) -> anyhow::Result<Vec<CheckpointRecord>>;

    /// Lists the checkpoints of every container, newest first within each container.
    fn list_all_checkpoints(&self) -> anyhow::Result<Vec<CheckpointRecord>>;

    fn delete_checkpoint(&self, id: &CheckpointId) -> anyhow::Result<()>;

    /// Restores a checkpoint into a new paused debug container.
    fn restore_paused(
        &self,
        policy: &Policy,
        id: &CheckpointId,
    ) -> anyhow::Result<DebugContainerInfo>;

    /// Lists the debug containers that exist now.
    fn list_debug(&self) -> anyhow::Result<Vec<DebugContainerInfo>>;

    fn remove_debug(&self, name: &str) -> anyhow::Result<()>;

    /// Runs the health probe inside the container once; `Ok(false)` when it failed.
    fn probe_health(&self, policy: &Policy, probe: &HealthProbe) -> anyhow::Result<bool>;
}
