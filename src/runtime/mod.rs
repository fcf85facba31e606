//! Reading containers from their OCI runtime, and mapping them to CRIU's view.
//!
//! ckpt supports runc (and runtimes with runc's command line and state format,
//! such as crun). It reads `runc state` and the bundle's `config.json`, and
//! from the container's mountinfo decides which mounts CRIU must record as
//! external: host bind mounts, masked files and cgroup mounts.

pub mod mountinfo;
mod proctree;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::Deserialize;

use crate::model::{ContainerId, ExternalMount};
pub use proctree::{TracedTask, descendants, find_traced_task};

/// Environment variable that names the runtime binary (default `runc`).
pub const RUNTIME_ENV: &str = "CKPT_RUNTIME";

/// runc's default state root.
pub const DEFAULT_RUNTIME_ROOT: &str = "/run/runc";

/// Error from reading a container from its runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "container {container} not found by {runtime} (state root {root}); check the name with `{runtime} --root {root} list`"
    )]
    NotFound {
        container: ContainerId,
        runtime: String,
        root: String,
    },
    #[error("failed to run {runtime} state {container}")]
    Spawn {
        runtime: String,
        container: ContainerId,
        #[source]
        source: io::Error,
    },
    #[error("{runtime} state {container} failed: {message}")]
    State {
        runtime: String,
        container: ContainerId,
        message: String,
    },
    #[error("failed to read the OCI spec {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("failed to read {path}")]
    Proc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RuntimeError {
    /// Returns whether the error is about a name the user gave rather than a failure.
    pub fn is_input_error(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// The runtime binary and state root to ask about containers.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub binary: String,
    pub root: PathBuf,
}

impl Runtime {
    /// Creates the runtime named by `CKPT_RUNTIME` (default `runc`) with state root `root`, or runc's default root.
    pub fn new(root: Option<&Path>) -> Self {
        Self {
            binary: std::env::var(RUNTIME_ENV).unwrap_or_else(|_| "runc".to_string()),
            root: root.map_or_else(|| PathBuf::from(DEFAULT_RUNTIME_ROOT), Path::to_path_buf),
        }
    }

    /// Reads a container's state and OCI spec.
    pub fn container(&self, id: &ContainerId) -> Result<Container, RuntimeError> {
        let output = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .arg("state")
            .arg(id.as_str())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                runtime: self.binary.clone(),
                container: id.clone(),
                source,
            })?;
        if !output.status.success() {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if message.contains("does not exist") || message.contains("not exist") {
                return Err(RuntimeError::NotFound {
                    container: id.clone(),
                    runtime: self.binary.clone(),
                    root: self.root.display().to_string(),
                });
            }
            return Err(RuntimeError::State {
                runtime: self.binary.clone(),
                container: id.clone(),
                message,
            });
        }
        let state: RuncState =
            serde_json::from_slice(&output.stdout).map_err(|e| RuntimeError::State {
                runtime: self.binary.clone(),
                container: id.clone(),
                message: format!("unexpected output: {e}"),
            })?;

        let config = Path::new(&state.bundle).join("config.json");
        let spec = Spec::load(&config).map_err(|e| RuntimeError::Spec {
            path: config.clone(),
            reason: e.to_string(),
        })?;
        Ok(Container {
            id: id.clone(),
            pid: state.pid,
            status: state.status,
            bundle: PathBuf::from(state.bundle),
            rootfs: PathBuf::from(state.rootfs),
            config_path: config,
            spec,
        })
    }
}

#[derive(Deserialize)]
struct RuncState {
    pid: i32,
    status: String,
    bundle: String,
    rootfs: String,
}

/// A container as its runtime reports it.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: ContainerId,
    /// Host PID of the container's init process (0 when it is not running).
    pub pid: i32,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub config_path: PathBuf,
    pub spec: Spec,
}

impl Container {
    /// Returns whether the spec gives the container a namespace of `kind` of its own.
    ///
    /// A namespace entry with a `path` joins an existing namespace, so it is not the container's own.
    pub fn has_own_namespace(&self, kind: LinuxNamespaceType) -> bool {
        self.spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|namespaces| {
                namespaces
                    .iter()
                    .any(|ns| ns.typ() == kind && ns.path().is_none())
            })
    }

    /// Returns whether the container's process was started with a terminal.
    pub fn has_terminal(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }

    /// Reads the mounts of the container's init process.
    pub fn mounts(&self) -> Result<Vec<mountinfo::MountInfo>, RuntimeError> {
        let path = PathBuf::from(format!("/proc/{}/mountinfo", self.pid));
        let text =
            fs::read_to_string(&path).map_err(|source| RuntimeError::Proc { path, source })?;
        Ok(mountinfo::parse(&text))
    }

    /// Mounts CRIU must record by key rather than by content.
    pub fn external_mounts(&self) -> Result<Vec<ExternalMount>, RuntimeError> {
        Ok(classify_external_mounts(
            &self.spec,
            &self.bundle,
            &self.mounts()?,
        ))
    }

    /// Returns the init process's descriptors 0, 1 and 2 that CRIU cannot dump:
    /// files that are not reachable inside the container, such as a log file or
    /// a terminal of the host. A file is reachable when its path, taken inside
    /// the container's root, names the same inode. Pipes, sockets and deleted
    /// files (which CRIU copies into the checkpoint) are fine.
    pub fn external_stdio(&self) -> Result<Vec<(i32, String)>, RuntimeError> {
        let mut external = Vec::new();
        for (fd, target) in self.stdio_ids()?.into_iter().enumerate() {
            let special = ["pipe:", "socket:", "anon_inode:"]
                .iter()
                .any(|p| target.starts_with(p));
            if special || !target.starts_with('/') || target.ends_with(" (deleted)") {
                continue;
            }
            let Ok(opened) = nix::sys::stat::stat(format!("/proc/{}/fd/{fd}", self.pid).as_str())
            else {
                continue;
            };
            let inside = format!("/proc/{}/root{target}", self.pid);
            let reachable = nix::sys::stat::stat(inside.as_str())
                .is_ok_and(|found| (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino));
            if !reachable {
                external.push((fd as i32, target));
            }
        }
        Ok(external)
    }

    /// Reads the CRIU-style ids (`pipe:[123]`) of the init process's descriptors 0, 1 and 2.
    pub fn stdio_ids(&self) -> Result<Vec<String>, RuntimeError> {
        (0..3)
            .map(|fd| {
                let path = PathBuf::from(format!("/proc/{}/fd/{fd}", self.pid));
                fs::read_link(&path)
                    .map(|target| target.to_string_lossy().into_owned())
                    .map_err(|source| RuntimeError::Proc { path, source })
            })
            .collect()
    }
}

/// Decides which of the container's mounts are external to CRIU.
///
/// - cgroup and cgroup2 mounts: restored as bind mounts of the debug container's own cgroups;
/// - bind mounts from the spec: the host path they came from;
/// - masked files (a bind mount of `/dev/null` over a path in `linux.maskedPaths`).
fn classify_external_mounts(
    spec: &Spec,
    bundle: &Path,
    mounts: &[mountinfo::MountInfo],
) -> Vec<ExternalMount> {
    let masked: Vec<String> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    let binds: Vec<(String, String)> = spec
        .mounts()
        .as_ref()
        .map(|mounts| {
            mounts
                .iter()
                .filter(|m| {
                    m.options()
                        .as_ref()
                        .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
                        || m.typ().as_deref() == Some("bind")
                })
                .filter_map(|m| {
                    let source = m.source().as_ref()?;
                    let source = if source.is_absolute() {
                        source.clone()
                    } else {
                        bundle.join(source)
                    };
                    Some((
                        m.destination().to_string_lossy().into_owned(),
                        source.to_string_lossy().into_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();

    let mut external = Vec::new();
    for mount in mounts {
        let point = &mount.mount_point;
        if mount.fs_type == "cgroup" || mount.fs_type == "cgroup2" {
            let source = if mount.fs_type == "cgroup2" {
                "cgroup2".to_string()
            } else {
                mount.cgroup_controllers().join(",")
            };
            external.push(ExternalMount {
                key: point.clone(),
                source,
                kind: "cgroup".to_string(),
            });
        } else if let Some((_, source)) = binds.iter().find(|(dest, _)| dest == point) {
            external.push(ExternalMount {
                key: point.clone(),
                source: source.clone(),
                kind: "bind".to_string(),
            });
        } else if masked.iter().any(|m| m == point) && mount.root != "/" {
            external.push(ExternalMount {
                key: point.clone(),
                source: "/dev/null".to_string(),
                kind: "masked".to_string(),
            });
        }
    }
    external
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn external_mounts_cover_binds_masks_and_cgroups() {
        let spec = spec_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
                "mounts":[{"destination":"/data","type":"bind","source":"data","options":["rbind","rw"]},
                          {"destination":"/proc","type":"proc","source":"proc"}],
                "linux":{"maskedPaths":["/proc/kcore","/proc/acpi"]}}"#,
        );
        let mounts = mountinfo::parse(
            "1 0 254:0 /b/rootfs / rw - ext4 /dev/vda rw\n\
             2 1 0:5 / /proc rw - proc proc rw\n\
             3 1 254:0 /b/data /data rw - ext4 /dev/vda rw\n\
             4 2 0:42 /null /proc/kcore rw - tmpfs tmpfs rw\n\
             5 2 0:43 / /proc/acpi ro - tmpfs tmpfs ro\n\
             6 1 0:29 /t1 /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
        );
        let external = classify_external_mounts(&spec, Path::new("/b"), &mounts);
        let summary: Vec<(&str, &str, &str)> = external
            .iter()
            .map(|e| (e.key.as_str(), e.source.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("/data", "/b/data", "bind"),
                ("/proc/kcore", "/dev/null", "masked"),
                ("/sys/fs/cgroup/cpu", "cpu", "cgroup"),
            ]
        );
    }
}
