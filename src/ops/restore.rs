//! The paused restore: a checkpoint brought back as an isolated debug
//! container whose tasks are all stopped, ready for `gdb -p` and `strace -p`.
//!
//! Isolation: a fresh PID namespace (the container's own, recreated by CRIU),
//! a fresh network namespace, a copy-on-write overlay of the original root
//! file system whose upper layer is thrown away on `ckpt rm`, and cgroups of
//! its own under `ckpt/NAME`.

use std::fs;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::Utc;
use serde::Serialize;

use super::checkpoint::IMAGES_DIR;
use super::debug::{DebugContainer, DebugState, debug_root, start_time};
use super::shim::{REQUEST_FILE, RESULT_FILE, ShimRequest, ShimResult};
use super::{Context, cgroup};
use crate::criu::{Criu, SetupError};
use crate::fsutil;
use crate::model::{CheckpointId, ContainerId};
use crate::runtime::descendants;
use crate::store::{Manifest, StoreError};

/// A request to restore a checkpoint into a paused debug container.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub container: ContainerId,
    /// A checkpoint id or unique prefix; the newest good checkpoint when `None`.
    pub checkpoint: Option<String>,
    /// Name of the debug container; generated when `None`.
    pub name: Option<String>,
}

impl From<StoreError> for RestoreError {
    fn from(error: StoreError) -> Self {
        Self::Store(Box::new(error))
    }
}

/// Error from `ckpt restore --paused`.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(
        "container {container} has no checkpoints in store {store}; take one with `ckpt checkpoint {container}`"
    )]
    NoCheckpoint {
        container: ContainerId,
        store: PathBuf,
    },
    #[error("checkpoint {checkpoint} belongs to container {actual}, not {requested}")]
    WrongContainer {
        checkpoint: CheckpointId,
        actual: ContainerId,
        requested: ContainerId,
    },
    #[error("invalid debug container name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error(
        "debug container {name} already exists; remove it with `ckpt rm {name}` or pick another --name"
    )]
    NameTaken { name: String },
    #[error(
        "root file system {path} of container {container} is missing; the debug container needs it as its lower layer"
    )]
    MissingRootfs {
        container: ContainerId,
        path: PathBuf,
    },
    #[error("bind mount source {path} (mounted at {key} in the container) is missing")]
    MissingMountSource { key: String, path: PathBuf },
    #[error(
        "no cgroup hierarchy on this host matches the container's cgroup mount {key} ({controllers})"
    )]
    MissingCgroup { key: String, controllers: String },
    #[error("failed to {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("restore of checkpoint {checkpoint} failed: {message}")]
    Shim {
        checkpoint: CheckpointId,
        message: String,
    },
}

impl RestoreError {
    /// Returns whether the error is about the user's input rather than a failed operation.
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::Store(e) => matches!(
                **e,
                StoreError::NotFound { .. } | StoreError::Ambiguous { .. }
            ),
            Self::NoCheckpoint { .. }
            | Self::WrongContainer { .. }
            | Self::InvalidName { .. }
            | Self::NameTaken { .. } => true,
            _ => false,
        }
    }
}

/// JSON shape of `ckpt restore --json`: the debug container plus attach commands.
#[derive(Debug, Serialize)]
pub struct RestoreReport<'a> {
    #[serde(flatten)]
    pub debug: &'a DebugContainer,
    pub attach: Vec<String>,
}

/// Restores a checkpoint of `request.container` into a paused debug container.
#[tracing::instrument(skip_all, fields(container = %request.container))]
pub fn restore_paused(
    ctx: &Context,
    request: &RestoreRequest,
) -> Result<DebugContainer, RestoreError> {
    let criu = Criu::locate()?;
    // No store yet means no checkpoint yet; an unreadable store is an error.
    if !ctx.store_root.exists() {
        return Err(RestoreError::NoCheckpoint {
            container: request.container.clone(),
            store: ctx.store_root.clone(),
        });
    }
    let store = ctx.open_existing_store()?;

    // Choose the checkpoint and the name.
    let manifest = choose_checkpoint(ctx, &store, request)?;
    let checkpoint = manifest.meta.id.clone();
    let name = match &request.name {
        Some(name) => validate_name(name)?,
        None => generate_name(&request.container),
    };
    let dir = debug_root(&ctx.store_root).join(&name);
    if dir.exists() {
        return Err(RestoreError::NameTaken { name });
    }
    let rootfs = PathBuf::from(&manifest.meta.runtime.rootfs);
    if !rootfs.is_dir() {
        return Err(RestoreError::MissingRootfs {
            container: request.container.clone(),
            path: rootfs,
        });
    }

    // Lay out the debug container's directory and cgroups; undo both on failure.
    let mut cleanup = Cleanup {
        dir: Some(dir.clone()),
        cgroups: Vec::new(),
        shim: None,
    };
    // The images are needed only while CRIU restores from them: in memory when
    // they fit, and deleted as soon as the restore is over either way.
    let images = match super::scratch::memory_dir_for(manifest.logical_bytes) {
        Some(scratch) => scratch.join(format!("{name}.images")),
        None => dir.join("images"),
    };
    let _images_guard = RemoveOnDrop(images.clone());
    let criu_work = dir.join("criu");
    let (upper, overlay_work, root) = (dir.join("upper"), dir.join("work"), dir.join("root"));
    for path in [&dir, &images, &criu_work, &upper, &overlay_work, &root] {
        fsutil::create_private_dir_all(path).map_err(|source| RestoreError::Io {
            step: "create",
            path: path.clone(),
            source,
        })?;
    }
    // The overlay's root directory takes its mode and owner from the upper
    // layer, and CRIU checks them against the original root.
    copy_mode_and_owner(&rootfs, &upper)?;
    store.materialize(&checkpoint, &images)?;

    let hierarchies = cgroup::hierarchies().map_err(|source| RestoreError::Io {
        step: "read cgroup mounts from",
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    cleanup.cgroups = cgroup::create(&hierarchies, &name).map_err(|source| RestoreError::Io {
        step: "create cgroups for",
        path: PathBuf::from(cgroup::cgroup_root(&name)),
        source,
    })?;
    let external_mounts = map_external_mounts(&manifest, &hierarchies, &name)?;

    // Start the shim, which restores the tree as its child and stays as its reaper.
    let shim_request = ShimRequest {
        criu_binary: criu.binary.clone(),
        images: images.join(IMAGES_DIR),
        lower: rootfs,
        upper,
        overlay_work,
        root: root.clone(),
        criu_work: criu_work.clone(),
        cgroup_root: cgroup::cgroup_root(&name),
        external_mounts,
        stdio: manifest.meta.runtime.stdio.clone(),
        tcp_established: manifest.meta.options.tcp_established,
    };
    let request_path = dir.join(REQUEST_FILE);
    let encoded = serde_json::to_vec_pretty(&shim_request).map_err(io::Error::other);
    encoded
        .and_then(|bytes| fsutil::write_private_file(&request_path, &bytes))
        .map_err(|source| RestoreError::Io {
            step: "write",
            path: request_path.clone(),
            source,
        })?;
    ctx.start_step("restoring with CRIU");
    let shim_pid = spawn_shim(&dir);
    ctx.finish_step();
    let shim_pid = shim_pid?;
    cleanup.shim = Some(shim_pid);

    let result_path = dir.join(RESULT_FILE);
    let result: ShimResult = fs::read(&result_path)
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(io::Error::other))
        .map_err(|source| RestoreError::Shim {
            checkpoint: checkpoint.clone(),
            message: format!(
                "the restore helper gave no result ({source}); see {}",
                dir.join("shim.log").display()
            ),
        })?;
    let pid = match result {
        ShimResult::Restored { pid } => pid,
        ShimResult::Failed { message } => {
            // Keep CRIU's log where the user can read it after the cleanup.
            let kept = keep_restore_log(ctx, &name, &criu_work);
            let message = match kept {
                Some(path) => message.replace(
                    &criu_work.join("restore.log").display().to_string(),
                    &path.display().to_string(),
                ),
                None => message,
            };
            return Err(RestoreError::Shim {
                checkpoint,
                message,
            });
        }
    };

    // Record the debug container.
    let mut debug = DebugContainer {
        name: name.clone(),
        container: request.container.clone(),
        checkpoint,
        created: Utc::now(),
        pid,
        pids: descendants(pid),
        state: DebugState::Paused,
        root,
        shim_pid,
        shim_start_time: start_time(shim_pid).unwrap_or(0),
        cgroups: std::mem::take(&mut cleanup.cgroups),
        dir: dir.clone(),
        exit: None,
    };
    debug.refresh();
    debug.save().map_err(|source| RestoreError::Io {
        step: "write",
        path: dir.join(super::debug::STATE_FILE),
        source,
    })?;
    cleanup.disarm();
    let checkpoint = &debug.checkpoint;
    tracing::info!(debug_container = %name, checkpoint = %checkpoint, pid, "checkpoint restored paused");
    Ok(debug)
}

fn choose_checkpoint(
    ctx: &Context,
    store: &crate::store::Store,
    request: &RestoreRequest,
) -> Result<Manifest, RestoreError> {
    if let Some(prefix) = &request.checkpoint {
        let manifest = store.resolve(prefix)?;
        if manifest.meta.container != request.container {
            return Err(RestoreError::WrongContainer {
                checkpoint: manifest.meta.id,
                actual: manifest.meta.container,
                requested: request.container.clone(),
            });
        }
        return Ok(manifest);
    }
    let candidates = store.list(Some(&request.container))?;
    // Newest first; a checkpoint taken while the health probe failed is not good.
    candidates
        .into_iter()
        .find(|m| m.meta.health_passing != Some(false))
        .ok_or_else(|| RestoreError::NoCheckpoint {
            container: request.container.clone(),
            store: ctx.store_root.clone(),
        })
}

fn validate_name(name: &str) -> Result<String, RestoreError> {
    name.parse::<ContainerId>()
        .map(String::from)
        .map_err(|e| RestoreError::InvalidName {
            name: name.to_string(),
            reason: e.to_string(),
        })
}

fn generate_name(container: &ContainerId) -> String {
    let suffix: u32 = rand::random::<u32>() & 0x00ff_ffff;
    format!("{container}-debug-{suffix:06x}")
}

fn copy_mode_and_owner(from: &Path, to: &Path) -> Result<(), RestoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let io_error = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Io { step, path, source }
    };
    let metadata = fs::metadata(from).map_err(io_error("read the mode of", from))?;
    std::os::unix::fs::chown(to, Some(metadata.uid()), Some(metadata.gid()))
        .map_err(io_error("change the owner of", to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(metadata.mode() & 0o7777))
        .map_err(io_error("set the mode of", to))
}

/// Translates the checkpoint's external mount keys into host paths for this debug container.
fn map_external_mounts(
    manifest: &Manifest,
    hierarchies: &[cgroup::Hierarchy],
    name: &str,
) -> Result<Vec<(String, String)>, RestoreError> {
    manifest
        .meta
        .runtime
        .external_mounts
        .iter()
        .map(|mount| {
            let source = match mount.kind.as_str() {
                "cgroup" => {
                    cgroup::host_path(hierarchies, &mount.source, name).ok_or_else(|| {
                        RestoreError::MissingCgroup {
                            key: mount.key.clone(),
                            controllers: mount.source.clone(),
                        }
                    })?
                }
                _ => {
                    let path = PathBuf::from(&mount.source);
                    if !path.exists() {
                        return Err(RestoreError::MissingMountSource {
                            key: mount.key.clone(),
                            path,
                        });
                    }
                    path
                }
            };
            Ok((mount.key.clone(), source.display().to_string()))
        })
        .collect()
}

/// Starts `ckpt __shim DIR` in a new session and waits until it reports.
fn spawn_shim(dir: &Path) -> Result<i32, RestoreError> {
    let exe = std::env::current_exe().map_err(|source| RestoreError::Io {
        step: "find the ckpt executable at",
        path: "/proc/self/exe".into(),
        source,
    })?;
    let log_path = dir.join("shim.log");
    let log = fsutil::create_private_file(&log_path).map_err(|source| RestoreError::Io {
        step: "create",
        path: log_path.clone(),
        source,
    })?;
    let mut command = Command::new(&exe);
    command
        .arg("__shim")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and takes no arguments; it detaches the
    // shim from our session so that closing a terminal does not signal the tree.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| RestoreError::Io {
        step: "start the restore helper",
        path: exe.clone(),
        source,
    })?;
    // The shim closes its stdout once it has written its result.
    let mut sink = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut sink);
    }
    let pid = child.id() as i32;
    // The shim outlives this call on purpose: it is the restored tree's reaper.
    // A long-lived caller such as the daemon must still reap it when it exits.
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// Moves CRIU's restore log out of a debug container that is about to be deleted.
fn keep_restore_log(ctx: &Context, name: &str, criu_work: &Path) -> Option<PathBuf> {
    let logs = ctx.store_root.join("logs");
    fsutil::create_private_dir_all(&logs).ok()?;
    let kept = logs.join(format!("restore-{name}.log"));
    fs::rename(criu_work.join("restore.log"), &kept).ok()?;
    Some(kept)
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), %error, "failed to remove restored images");
        }
    }
}

/// Undoes a partial restore when dropped, unless disarmed.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroups: Vec<PathBuf>,
    shim: Option<i32>,
}

impl Cleanup {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroups.clear();
        self.shim = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.shim {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        for pid in cgroup::member_pids(&self.cgroups) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        cgroup::remove_with_timeout(&self.cgroups, std::time::Duration::from_secs(5));
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}
