//! The [`Backend`] that runs the real operations: runc for container state and health
//! probes, [`crate::ops`] for checkpoints and paused restores, and the store.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::daemon::backend::{Backend, CheckpointRecord, ContainerState, DebugContainerInfo};
use crate::model::{CheckpointId, ContainerId};
use crate::ops::{self, Context, RestoreRequest};
use crate::policy::{HealthProbe, Policy};
use crate::runtime::{DEFAULT_RUNTIME_ROOT, Runtime, RuntimeError};
use crate::store::Manifest;

/// How often a running health probe is checked for completion.
const PROBE_POLL: Duration = Duration::from_millis(20);

/// Runs the operations against the store at `store_root`.
pub struct OpsBackend {
    pub store_root: PathBuf,
    /// Runtime state root for policies without `runtime_root`; runc's default when `None`.
    pub runtime_root: Option<PathBuf>,
}

impl OpsBackend {
    fn runtime_root(&self, policy: &Policy) -> Option<PathBuf> {
        policy
            .runtime_root
            .clone()
            .or_else(|| self.runtime_root.clone())
    }

    fn context(&self, policy: Option<&Policy>) -> Context {
        Context {
            store_root: self.store_root.clone(),
            runtime_root: policy.and_then(|policy| self.runtime_root(policy)),
            runtime_binary: policy.map(|policy| policy.runtime.clone()),
            compression_level: policy.map(|policy| policy.checkpoint.compression_level),
            progress: None,
        }
    }

    fn runtime(&self, policy: &Policy) -> Runtime {
        Runtime {
            binary: policy.runtime.clone(),
            root: self
                .runtime_root(policy)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_ROOT)),
        }
    }
}

fn record(manifest: Manifest) -> CheckpointRecord {
    CheckpointRecord {
        frozen_time_us: manifest.meta.dump_stats.frozen_time_us,
        criu_version: manifest.meta.criu_version,
        health_passing: manifest.meta.health_passing,
        id: manifest.meta.id,
        container: manifest.meta.container,
        created: manifest.meta.created,
        logical_bytes: manifest.logical_bytes,
        added_bytes: manifest.added_bytes,
    }
}

fn debug_info(debug: ops::DebugContainer) -> DebugContainerInfo {
    DebugContainerInfo {
        name: debug.name,
        container: debug.container,
        checkpoint: debug.checkpoint,
        created: debug.created,
        pid: debug.pid,
        pids: debug.pids,
    }
}

impl Backend for OpsBackend {
    fn container_state(&self, policy: &Policy) -> anyhow::Result<Option<ContainerState>> {
        match self.runtime(policy).container(&policy.container) {
            Ok(container) => Ok(Some(ContainerState {
                pid: container.pid,
                status: container.status,
                cgroup: None,
            })),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    fn checkpoint(
        &self,
        policy: &Policy,
        health_passing: Option<bool>,
    ) -> anyhow::Result<CheckpointRecord> {
        // NOTE: ops::checkpoint reads the runtime binary from CKPT_RUNTIME, not from the
        // policy's `runtime`, and compresses at the store's fixed level, not at the policy's
        // `compression_level`.
        let manifest = ops::checkpoint(
            &self.context(Some(policy)),
            &policy.container,
            &policy.checkpoint_options(),
            health_passing,
        )?;
        Ok(record(manifest))
    }

    fn verify(&self, id: &CheckpointId) -> anyhow::Result<()> {
        let store = self.context(None).open_existing_store()?;
        let report = store.verify(Some(id))?;
        match report
            .checkpoints
            .iter()
            .find_map(|check| check.error.clone())
        {
            Some(error) => anyhow::bail!("checkpoint {id} failed verification: {error}"),
            None => Ok(()),
        }
    }

    fn list_checkpoints(&self, container: &ContainerId) -> anyhow::Result<Vec<CheckpointRecord>> {
        let store = self.context(None).open_store()?;
        Ok(store
            .list(Some(container))?
            .into_iter()
            .map(record)
            .collect())
    }

    fn list_all_checkpoints(&self) -> anyhow::Result<Vec<CheckpointRecord>> {
        let store = self.context(None).open_store()?;
        Ok(store.list(None)?.into_iter().map(record).collect())
    }

    fn delete_checkpoint(&self, id: &CheckpointId) -> anyhow::Result<()> {
        let store = self.context(None).open_existing_store()?;
        store.delete(id)?;
        Ok(())
    }

    fn restore_paused(
        &self,
        policy: &Policy,
        id: &CheckpointId,
    ) -> anyhow::Result<DebugContainerInfo> {
        let request = RestoreRequest {
            container: policy.container.clone(),
            checkpoint: Some(id.to_string()),
            name: None,
        };
        let debug = ops::restore_paused(&self.context(Some(policy)), &request)?;
        Ok(debug_info(debug))
    }

    fn list_debug(&self) -> anyhow::Result<Vec<DebugContainerInfo>> {
        Ok(ops::list_debug(&self.store_root)?
            .into_iter()
            .map(debug_info)
            .collect())
    }

    fn remove_debug(&self, name: &str) -> anyhow::Result<()> {
        ops::remove_debug(&self.store_root, name)?;
        Ok(())
    }

    fn probe_health(&self, policy: &Policy, probe: &HealthProbe) -> anyhow::Result<bool> {
        let runtime = self.runtime(policy);
        // runc writes the probe process's host PID here, so that a timeout can kill it.
        let scratch =
            tempfile::tempdir().context("failed to create a directory for the probe's PID file")?;
        let pid_file = scratch.path().join("probe.pid");
        let mut child = Command::new(&runtime.binary)
            .arg("--root")
            .arg(&runtime.root)
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(policy.container.as_str())
            .args(&probe.command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("failed to run {} exec for the health probe", runtime.binary)
            })?;
        let deadline = Instant::now() + probe.timeout.0;
        loop {
            if let Some(status) = child
                .try_wait()
                .context("failed to wait for the health probe")?
            {
                return Ok(status.success());
            }
            if Instant::now() >= deadline {
                // The probe timed out: that counts as a failed probe, not an error.
                // Killing `runc exec` alone would leave the command running in the container.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|text| text.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                tracing::debug!(container = %policy.container, timeout_ms = probe.timeout.0.as_millis() as u64, "health probe timed out");
                return Ok(false);
            }
            std::thread::sleep(PROBE_POLL);
        }
    }
}
