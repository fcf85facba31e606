//! Cgroups of debug containers, on cgroup v1, v2 and hybrid hosts.
//!
//! Each debug container gets `ckpt/<name>` in every mounted hierarchy. CRIU
//! puts the restored tasks there (`cg_root`), and the container's own
//! cgroup mounts are bound to these directories, so a debug container never
//! shares a cgroup with the original or its restart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::runtime::mountinfo;

/// Directory under each hierarchy's root that contains debug containers' cgroups.
pub const PARENT: &str = "ckpt";

/// A mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// Sorted v1 controllers (`name=systemd` included), or empty for cgroup v2.
    pub controllers: Vec<String>,
}

impl Hierarchy {
    fn is_v2(&self) -> bool {
        self.controllers.is_empty()
    }
}

/// Lists the cgroup hierarchies mounted in this mount namespace, one mount each.
pub fn hierarchies() -> io::Result<Vec<Hierarchy>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<Hierarchy> = Vec::new();
    for mount in mountinfo::parse(&text) {
        let controllers = match mount.fs_type.as_str() {
            "cgroup" => mount.cgroup_controllers(),
            "cgroup2" => Vec::new(),
            _ => continue,
        };
        // Only the root of each hierarchy; bind mounts of subtrees are skipped.
        if mount.root != "/" || found.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        found.push(Hierarchy {
            mount: PathBuf::from(mount.mount_point),
            controllers,
        });
    }
    Ok(found)
}

/// Path of the CRIU cgroup root for debug container `name`, relative to each hierarchy.
pub fn cgroup_root(name: &str) -> String {
    format!("/{PARENT}/{name}")
}

/// Creates the cgroups of debug container `name` and returns their paths.
pub fn create(hierarchies: &[Hierarchy], name: &str) -> io::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for hierarchy in hierarchies {
        let parent = hierarchy.mount.join(PARENT);
        let dir = parent.join(name);
        let result = (|| {
            for level in [&parent, &dir] {
                match fs::create_dir(level) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                if hierarchy.controllers.iter().any(|c| c == "cpuset") {
                    inherit_cpuset(level)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            remove(&created);
            return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
        }
        created.push(dir);
    }
    Ok(created)
}

/// Copies the parent's CPUs and memory nodes into a new v1 cpuset cgroup, which starts with none.
fn inherit_cpuset(dir: &Path) -> io::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = fs::read_to_string(dir.join(file))?;
        if current.trim().is_empty() {
            fs::write(
                dir.join(file),
                fs::read_to_string(parent.join(file))?.trim(),
            )?;
        }
    }
    Ok(())
}

/// Maps a cgroup mount key recorded at checkpoint time (`cpu`, `name=systemd`,
/// `cgroup2`) to the debug container's directory in that hierarchy.
pub fn host_path(hierarchies: &[Hierarchy], controllers: &str, name: &str) -> Option<PathBuf> {
    let hierarchy = if controllers == "cgroup2" {
        hierarchies.iter().find(|h| h.is_v2())?
    } else {
        let mut requested: Vec<&str> = controllers.split(',').collect();
        requested.sort_unstable();
        hierarchies.iter().find(|h| h.controllers == requested)?
    };
    Some(hierarchy.mount.join(PARENT).join(name))
}

/// Returns the PIDs of every process in the given cgroups and their subgroups.
pub fn member_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in dirs {
        for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
            if entry.file_type().is_dir() {
                let procs =
                    fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the given cgroups, deepest first, waiting up to `timeout` for dying
/// tasks to leave. Returns the directories that could not be removed.
pub fn remove_with_timeout(dirs: &[PathBuf], timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = remove(dirs);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn remove(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for dir in dirs {
        if !dir.exists() {
            continue;
        }
        let mut subdirs: Vec<PathBuf> = walkdir::WalkDir::new(dir)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        subdirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for sub in subdirs {
            let _ = fs::remove_dir(&sub);
        }
        if dir.exists() {
            left.push(dir.clone());
        } else if let Some(parent) = dir.parent() {
            // The shared parent goes once its last debug container has gone.
            let _ = fs::remove_dir(parent);
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_matches_controller_sets() {
        let hierarchies = vec![
            Hierarchy {
                mount: "/sys/fs/cgroup/cpu,cpuacct".into(),
                controllers: vec!["cpu".into(), "cpuacct".into()],
            },
            Hierarchy {
                mount: "/sys/fs/cgroup/unified".into(),
                controllers: vec![],
            },
        ];
        assert_eq!(
            host_path(&hierarchies, "cpuacct,cpu", "d1"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/ckpt/d1"))
        );
        assert_eq!(
            host_path(&hierarchies, "cgroup2", "d1"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/ckpt/d1"))
        );
        assert_eq!(host_path(&hierarchies, "memory", "d1"), None);
    }
}
