//! Reading CRIU's log for error messages.

use std::fs;
use std::path::Path;

/// Lines of CRIU's log that are noise on hosts without CAP_SYS_RESOURCE.
const HARMLESS: &[&str] = &["Can't setup RLIMIT_NOFILE"];

/// Returns whether a CRIU error line is known noise.
pub fn is_harmless(line: &str) -> bool {
    HARMLESS.iter().any(|h| line.contains(h))
}

/// Returns the last `count` error lines of a CRIU log, or its last lines when
/// it has no error lines. A missing log yields nothing.
pub fn log_tail(path: &Path, count: usize) -> Vec<String> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("Error (") && !is_harmless(l))
        .collect();
    let chosen = if errors.is_empty() { &lines } else { &errors };
    let start = chosen.len().saturating_sub(count);
    chosen[start..]
        .iter()
        .map(|l| l.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_prefers_error_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        fs::write(
            &log,
            "(00.01) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self\n\
             (00.02) info line\n\
             (00.03) Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1\n\
             (00.04) Unfreezing tasks\n",
        )
        .unwrap();
        let tail = log_tail(&log, 5);
        assert_eq!(tail.len(), 1);
        assert!(tail[0].contains("Can't lookup mount=27"));
    }

    #[test]
    fn log_tail_without_errors_gives_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&log, 2), vec!["b", "c"]);
        assert!(log_tail(&dir.path().join("missing"), 2).is_empty());
    }
}
