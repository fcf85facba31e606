//! Debug containers: records of paused restores, and resuming and removing them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::cgroup;
use super::shim::{EXIT_FILE, ExitRecord};
use crate::fsutil;
use crate::model::{CheckpointId, ContainerId};
use crate::runtime::descendants;

/// Subdirectory of the store that contains one directory per debug container.
pub const DEBUG_DIR: &str = "debug";
/// Record of a debug container inside its directory.
pub const STATE_FILE: &str = "state.json";

/// State of a debug container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DebugState {
    /// Every task is stopped (state `T`): ready for a debugger.
    Paused,
    Running,
    /// The restored root task has exited.
    Exited,
}

impl DebugState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// A checkpoint restored into an isolated container for debugging.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DebugContainer {
    pub name: String,
    pub container: ContainerId,
    pub checkpoint: CheckpointId,
    pub created: DateTime<Utc>,
    /// Host PID of the restored root task.
    pub pid: i32,
    /// Host PIDs of every restored task, root first.
    pub pids: Vec<i32>,
    pub state: DebugState,
    /// Host path of the debug container's root file system (visible through `/proc/PID/root`).
    pub root: PathBuf,
    pub shim_pid: i32,
    /// Start time of the shim (field 22 of `/proc/PID/stat`), to detect PID reuse.
    pub shim_start_time: u64,
    pub cgroups: Vec<PathBuf>,
    pub dir: PathBuf,
    /// Exit status of the root task, once it has exited.
    #[serde(default)]
    pub exit: Option<ExitRecord>,
}

/// Error from listing, resuming or removing debug containers.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("debug container {name:?} not found in {dir}; list them with `ckpt ps`")]
    NotFound { name: String, dir: PathBuf },
    #[error("failed to read debug container record {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid debug container record {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("debug container {name} has exited; nothing to resume")]
    Exited { name: String },
    #[error("failed to continue pid {pid} of debug container {name}")]
    Resume {
        name: String,
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("debug container {name}: cgroups {paths} still have tasks after SIGKILL")]
    Busy { name: String, paths: String },
    #[error("failed to remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Directory holding all debug containers of the store at `store_root`.
pub fn debug_root(store_root: &Path) -> PathBuf {
    store_root.join(DEBUG_DIR)
}

impl DebugContainer {
    /// Loads the record of debug container `name` and refreshes its state.
    pub fn load(store_root: &Path, name: &str) -> Result<Self, DebugError> {
        let root = debug_root(store_root);
        let path = root.join(name).join(STATE_FILE);
        if name.contains('/') || name.starts_with('.') || !path.exists() {
            return Err(DebugError::NotFound {
                name: name.to_string(),
                dir: root,
            });
        }
        let bytes = fs::read(&path).map_err(|source| DebugError::Read {
            path: path.clone(),
            source,
        })?;
        let mut debug: Self = serde_json::from_slice(&bytes).map_err(|e| DebugError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        debug.refresh();
        Ok(debug)
    }

    /// Writes the record atomically.
    pub fn save(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        fsutil::write_private_file(&self.dir.join(STATE_FILE), &bytes)
    }

    /// Updates `state`, `pids` and `exit` from the live system.
    pub fn refresh(&mut self) {
        if let Ok(bytes) = fs::read(self.dir.join(EXIT_FILE)) {
            self.exit = serde_json::from_slice(&bytes).ok();
        }
        if self.exit.is_some() || !self.root_task_alive() {
            self.state = DebugState::Exited;
            self.pids.clear();
            return;
        }
        // A task that a tracer detaches from passes through running on its way
        // back to stopped, so a mix of stopped and running tasks is sampled again.
        for attempt in 0..5 {
            self.pids = descendants(self.pid);
            let stopped = self
                .pids
                .iter()
                .filter(|&&pid| matches!(process_state(pid), Some('T') | Some('t') | None))
                .count();
            if stopped == self.pids.len() {
                self.state = DebugState::Paused;
                return;
            }
            self.state = DebugState::Running;
            if stopped == 0 || attempt == 4 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns whether the root task still exists and is still the shim's
    /// child, which rules out a recycled PID.
    fn root_task_alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some(fields) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            return false;
        };
        let mut fields = fields.split_whitespace();
        let state = fields.next();
        let parent: Option<i32> = fields.next().and_then(|p| p.parse().ok());
        state != Some("Z") && parent == Some(self.shim_pid)
    }

    /// Returns whether the recorded shim process is still ours.
    fn shim_alive(&self) -> bool {
        start_time(self.shim_pid) == Some(self.shim_start_time)
            && process_state(self.shim_pid) != Some('Z')
    }
}

/// Returns the one-letter state of a process (`R`, `S`, `T`...), or `None` if it is gone.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Returns a process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at field 3 (state); field 22 is the 20th of them.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Lists the debug containers of a store, oldest first.
pub fn list(store_root: &Path) -> Result<Vec<DebugContainer>, DebugError> {
    let root = debug_root(store_root);
    let entries = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(DebugError::Read { path: root, source }),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match DebugContainer::load(store_root, &name) {
            Ok(debug) => found.push(debug),
            // A directory without a record is a restore in progress or a leftover.
            Err(DebugError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    found.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(found)
}

/// Continues every task of a paused debug container.
pub fn resume(store_root: &Path, name: &str) -> Result<DebugContainer, DebugError> {
    let mut debug = DebugContainer::load(store_root, name)?;
    if debug.state == DebugState::Exited {
        return Err(DebugError::Exited {
            name: name.to_string(),
        });
    }
    for &pid in &debug.pids {
        match kill(Pid::from_raw(pid), Signal::SIGCONT) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(source) => {
                return Err(DebugError::Resume {
                    name: name.to_string(),
                    pid,
                    source,
                });
            }
        }
    }
    debug.refresh();
    // Tasks that a debugger has stopped stay stopped until it detaches or continues them.
    if debug.state == DebugState::Paused {
        std::thread::sleep(Duration::from_millis(50));
        debug.refresh();
    }
    let _ = debug.save();
    let (name, pid) = (&debug.name, debug.pid);
    tracing::info!(debug_container = %name, pid, "debug container resumed");
    Ok(debug)
}

/// Kills a debug container and removes its cgroups, files and record.
pub fn remove(store_root: &Path, name: &str) -> Result<(), DebugError> {
    let debug = DebugContainer::load(store_root, name)?;
    destroy(&debug)?;
    tracing::info!(debug_container = %name, "debug container removed");
    Ok(())
}

/// Kills every task of a debug container and its shim, then deletes what it used.
pub fn destroy(debug: &DebugContainer) -> Result<(), DebugError> {
    // Kill the tree: every task in its cgroups, plus whatever the walk from the root finds.
    let mut victims = cgroup::member_pids(&debug.cgroups);
    if debug.root_task_alive() {
        victims.extend(descendants(debug.pid));
    }
    for pid in victims {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // The shim reaps the killed tasks and exits once it has no children left.
    // Killing it first would leave the tasks as zombies of PID 1.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while debug.shim_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if debug.shim_alive() {
        let _ = kill(Pid::from_raw(debug.shim_pid), Signal::SIGKILL);
    }

    // Remove cgroups once the tasks are gone; the overlay lived only in the
    // shim's mount namespace, so it is gone with the last task.
    let left = cgroup::remove_with_timeout(&debug.cgroups, Duration::from_secs(5));
    if !left.is_empty() {
        let paths: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
        return Err(DebugError::Busy {
            name: debug.name.clone(),
            paths: paths.join(", "),
        });
    }
    match fs::remove_dir_all(&debug.dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DebugError::Remove {
            path: debug.dir.clone(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_state_and_start_time_of_self() {
        let me = std::process::id() as i32;
        assert!(matches!(process_state(me), Some('R') | Some('S')));
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert_eq!(process_state(i32::MAX), None);
    }

    #[test]
    fn load_rejects_unknown_and_path_names() {
        let store = tempfile::tempdir().unwrap();
        for name in ["missing", "../etc", ".hidden"] {
            let error = DebugContainer::load(store.path(), name).unwrap_err();
            assert!(
                matches!(error, DebugError::NotFound { .. }),
                "{name}: {error}"
            );
        }
        assert!(list(store.path()).unwrap().is_empty());
    }
}
