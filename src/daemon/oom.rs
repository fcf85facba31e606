//! Reading the OOM kill counter of a container's memory cgroup, v1 or v2.

use std::fs;
use std::path::{Path, PathBuf};

/// Mount point of the cgroup file systems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Location of a container's OOM kill counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomCounter {
    /// `memory.oom_control` (v1) or `memory.events` (v2); both have an `oom_kill N` line.
    pub path: PathBuf,
}

impl OomCounter {
    /// Finds the memory cgroup of process `pid` from `/proc/PID/cgroup`.
    pub fn for_pid(pid: i32) -> Option<Self> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let unified_root = if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            PathBuf::from(CGROUP_ROOT)
        } else {
            Path::new(CGROUP_ROOT).join("unified")
        };
        counter_path(&text, Path::new(CGROUP_ROOT), &unified_root).map(|path| Self { path })
    }

    /// Reads the counter; `None` when the cgroup is gone or the file has no `oom_kill` line.
    pub fn read(&self) -> Option<u64> {
        parse_oom_kill(&fs::read_to_string(&self.path).ok()?)
    }
}

/// Picks the counter file from the text of `/proc/PID/cgroup`: the v1 memory controller
/// when it is mounted, else the v2 hierarchy.
fn counter_path(proc_cgroup: &str, v1_root: &Path, unified_root: &Path) -> Option<PathBuf> {
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.split(',').any(|name| name == "memory") {
            return Some(
                v1_root
                    .join("memory")
                    .join(relative)
                    .join("memory.oom_control"),
            );
        }
        if controllers.is_empty() {
            unified = Some(unified_root.join(relative).join("memory.events"));
        }
    }
    unified
}

fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_controller_wins() {
        let text = "12:memory:/user.slice/web\n0::/user.slice\n";
        let path = counter_path(text, Path::new("/cg"), Path::new("/cg/unified")).unwrap();
        assert_eq!(
            path,
            Path::new("/cg/memory/user.slice/web/memory.oom_control")
        );
    }

    #[test]
    fn v2_used_without_v1_memory() {
        let text = "0::/system.slice/web\n";
        let path = counter_path(text, Path::new("/cg"), Path::new("/cg")).unwrap();
        assert_eq!(path, Path::new("/cg/system.slice/web/memory.events"));
    }

    #[test]
    fn joined_v1_controllers_are_split() {
        let text = "4:cpu,memory:/web\n";
        let path = counter_path(text, Path::new("/cg"), Path::new("/cg")).unwrap();
        assert_eq!(path, Path::new("/cg/memory/web/memory.oom_control"));
    }

    #[test]
    fn oom_kill_line_is_parsed() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom 1\n"), None);
    }

    #[test]
    fn own_cgroup_has_readable_counter() {
        let Some(counter) = OomCounter::for_pid(std::process::id() as i32) else {
            eprintln!("skipped: no memory cgroup found for this process");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no memory cgroup in CI"
            );
            return;
        };
        assert!(
            counter.read().is_some(),
            "no oom_kill line in {}",
            counter.path.display()
        );
    }
}
