//! Identifiers and records shared by the store, the CRIU driver, the CLI and the daemon.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Maximum length of a container name or checkpoint id, in bytes.
const MAX_ID_LEN: usize = 128;

/// Error for a container name or checkpoint id that cannot be used as a file name.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    kind: &'static str,
    value: String,
    reason: &'static str,
}

fn validate_id(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let invalid = |reason| InvalidId {
        kind,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(invalid("must be at most 128 bytes"));
    }
    if value.starts_with('.') || value.starts_with('-') {
        return Err(invalid("must not start with '.' or '-'"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !value.chars().all(allowed) {
        return Err(invalid(
            "may contain only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

/// Name of a container as the runtime lists it (`runc list`).
///
/// Validated so that it can be used as a path component of the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        validate_id("container name", s)?;
        Ok(Self(s.to_string()))
    }
}

impl TryFrom<String> for ContainerId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate_id("container name", &s)?;
        Ok(Self(s))
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> String {
        id.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifier of one checkpoint in the store: `YYYYMMDDTHHMMSSZ-XXXXXX`,
/// the UTC creation time followed by six random hex digits.
///
/// Ids sort by creation time, and any unique prefix names a checkpoint on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CheckpointId(String);

impl CheckpointId {
    /// Creates a fresh id for a checkpoint taken at `created`.
    pub fn generate(created: DateTime<Utc>) -> Self {
        let suffix: u32 = rand::random::<u32>() & 0x00ff_ffff;
        Self(format!("{}-{suffix:06x}", created.format("%Y%m%dT%H%M%SZ")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CheckpointId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        validate_id("checkpoint id", s)?;
        Ok(Self(s.to_string()))
    }
}

impl TryFrom<String> for CheckpointId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate_id("checkpoint id", &s)?;
        Ok(Self(s))
    }
}

impl From<CheckpointId> for String {
    fn from(id: CheckpointId) -> String {
        id.0
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// CRIU options that a checkpoint was taken with; each maps to one CRIU RPC field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointOptions {
    /// Dump established TCP connections (`tcp_established`).
    pub tcp_established: bool,
    /// Dump file locks (`file_locks`).
    pub file_locks: bool,
    /// Skip TCP connections that are still being set up (`tcp_skip_in_flight`).
    pub skip_in_flight: bool,
    /// Allow connections to Unix sockets outside the container (`ext_unix_sk`).
    pub ext_unix_sk: bool,
    /// Largest deleted-but-open file CRIU copies into the images, in bytes (`ghost_limit`).
    pub ghost_limit: Option<u64>,
}

/// CRIU's own dump statistics, read from the `stats-dump` image. Times are in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DumpStats {
    /// Time spent freezing the tree.
    pub freezing_time_us: u64,
    /// Time the tree stayed frozen: what the application experiences as a pause.
    pub frozen_time_us: u64,
    /// Time spent collecting memory pages while frozen.
    pub memdump_time_us: u64,
    /// Time spent writing memory pages.
    pub memwrite_time_us: u64,
    pub pages_scanned: u64,
    pub pages_skipped_parent: u64,
    pub pages_written: u64,
    pub pages_lazy: u64,
}

/// Runtime details a checkpoint needs, besides the CRIU images, to be restored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeInfo {
    /// Runtime that ran the container, such as `runc`.
    pub runtime: String,
    /// Bundle directory of the container when it was checkpointed.
    pub bundle: String,
    /// Absolute path of the container's root file system on the host.
    pub rootfs: String,
    /// Host PID of the container's init process at checkpoint time.
    pub init_pid: i32,
    /// External mount keys that the images refer to, and the host path each stood for.
    pub external_mounts: Vec<ExternalMount>,
    /// CRIU ids (such as `pipe:[1234]`) of the init process's descriptors 0, 1 and 2.
    pub stdio: Vec<String>,
}

/// A mount that CRIU recorded by key instead of by content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalMount {
    /// Key stored in the images (the mount point inside the container).
    pub key: String,
    /// Host source of the key: a path, or a cgroup controller for `kind: cgroup`.
    pub source: String,
    /// `bind`, `masked` or `cgroup`.
    pub kind: String,
}

/// Record of a checkpoint that the checkpoint operation writes into its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub id: CheckpointId,
    pub container: ContainerId,
    pub created: DateTime<Utc>,
    /// Output of `criu --version`, such as `4.2.1`.
    pub criu_version: String,
    /// Kernel release from `uname -r`.
    pub kernel: String,
    pub options: CheckpointOptions,
    pub dump_stats: DumpStats,
    pub runtime: RuntimeInfo,
    /// Whether the container's health probe passed when the checkpoint was taken;
    /// `None` where no probe is configured.
    #[serde(default)]
    pub health_passing: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_rejects_path_tricks() {
        for bad in ["", "..", "a/b", ".hidden", "-x", "a b", "x\0y"] {
            assert!(bad.parse::<ContainerId>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            "web-1.prod_a".parse::<ContainerId>().unwrap().as_str(),
            "web-1.prod_a"
        );
    }

    #[test]
    fn checkpoint_ids_sort_by_time() {
        let early = CheckpointId::generate("2026-01-01T00:00:00Z".parse().unwrap());
        let late = CheckpointId::generate("2026-01-01T00:00:01Z".parse().unwrap());
        assert!(early < late);
        assert!(early.as_str().starts_with("20260101T000000Z-"));
        assert_eq!(early.as_str().len(), "20260101T000000Z-".len() + 6);
    }
}
