//! Walking a process tree through /proc.

use std::collections::BTreeSet;
use std::fs;

/// Returns `root` and every descendant of it, found through each thread's
/// `/proc/PID/task/TID/children` list. Processes that exit during the walk are skipped.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut seen = BTreeSet::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    let mut pids: Vec<i32> = seen.into_iter().collect();
    // Keep the root first; the rest in ascending order.
    pids.retain(|&p| p != root);
    pids.insert(0, root);
    pids
}

/// A task of the tree that some process is tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedTask {
    pub pid: i32,
    pub tracer: i32,
    /// Command name of the tracer, such as `strace`.
    pub tracer_comm: String,
}

/// Returns the first task under `root` whose `TracerPid` is set, if any.
/// CRIU cannot checkpoint a task that another process traces.
pub fn find_traced_task(root: i32) -> Option<TracedTask> {
    descendants(root).into_iter().find_map(|pid| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let tracer: i32 = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))?
            .trim()
            .parse()
            .ok()?;
        if tracer == 0 {
            return None;
        }
        let tracer_comm = fs::read_to_string(format!("/proc/{tracer}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        Some(TracedTask {
            pid,
            tracer,
            tracer_comm,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn descendants_include_children() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id() as i32;
        let tree = descendants(me);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
