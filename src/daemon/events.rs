//! The event log: one JSON object per line in `<store>/events.jsonl`, readable without the
//! daemon.
//!
//! When the file passes [`ROTATE_BYTES`] it is renamed to `events.jsonl.1` (replacing the
//! previous one) and a new file starts, so the log keeps between one and two files' worth.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{CheckpointId, ContainerId};

/// File name of the current event log inside the store directory.
pub const EVENTS_FILE: &str = "events.jsonl";

/// Size at which the event log is rotated.
pub const ROTATE_BYTES: u64 = 4 << 20;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Checkpoint,
    CheckpointFailed,
    Failure,
    Restore,
    RestoreFailed,
    Retention,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkpoint => "checkpoint",
            Self::CheckpointFailed => "checkpoint_failed",
            Self::Failure => "failure",
            Self::Restore => "restore",
            Self::RestoreFailed => "restore_failed",
            Self::Retention => "retention",
        }
    }
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub kind: EventKind,
    pub container: ContainerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointId>,
    /// One-line description for people.
    pub message: String,
    /// Values for programs, such as `exit_code`, `signal`, `debug_container` or `pids`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    pub fn new(kind: EventKind, container: &ContainerId, message: impl Into<String>) -> Self {
        Self {
            time: Utc::now(),
            kind,
            container: container.clone(),
            checkpoint: None,
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }

    pub fn with_checkpoint(mut self, id: &CheckpointId) -> Self {
        self.checkpoint = Some(id.clone());
        self
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

/// Error from appending to or reading the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("failed to append to event log {path}")]
    Append {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to rotate event log {path}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read event log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Appends events to the log of one store. Safe to share between tasks.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl EventLog {
    pub fn new(store_root: &Path) -> Self {
        Self {
            path: store_root.join(EVENTS_FILE),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event as a line, rotating the file first when it is full.
    pub fn append(&self, event: &Event) -> Result<(), EventLogError> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let full = fs::metadata(&self.path).is_ok_and(|meta| meta.len() >= ROTATE_BYTES);
        if full {
            fs::rename(&self.path, rotated_path(&self.path)).map_err(|source| {
                EventLogError::Rotate {
                    path: self.path.clone(),
                    source,
                }
            })?;
        }
        let append_error = |source| EventLogError::Append {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(event).map_err(|err| append_error(err.into()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(append_error)?;
        // One write call per line, so that lines from concurrent writers do not interleave.
        file.write_all(&line).map_err(append_error)
    }
}

fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Reads the newest `limit` events of a store, oldest first. Lines that do not parse (a
/// line cut short by a crash, or written by a newer version) are skipped.
pub fn read_events(store_root: &Path, limit: usize) -> Result<Vec<Event>, EventLogError> {
    let path = store_root.join(EVENTS_FILE);
    let mut events = Vec::new();
    for file in [rotated_path(&path), path.clone()] {
        let handle = match fs::File::open(&file) {
            Ok(handle) => handle,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(EventLogError::Read { path: file, source }),
        };
        for line in BufReader::new(handle).lines() {
            let line = line.map_err(|source| EventLogError::Read {
                path: file.clone(),
                source,
            })?;
            if let Ok(event) = serde_json::from_str::<Event>(&line) {
                events.push(event);
            }
        }
    }
    let skip = events.len().saturating_sub(limit);
    Ok(events.split_off(skip))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn web() -> ContainerId {
        "web".parse().unwrap()
    }

    #[test]
    fn events_round_trip_with_details() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let id: CheckpointId = "20260101T000000Z-abcdef".parse().unwrap();
        let event = Event::new(EventKind::Failure, &web(), "init exited with code 139")
            .with_checkpoint(&id)
            .with_detail("exit_code", 139);
        log.append(&event).unwrap();
        log.append(&Event::new(
            EventKind::Checkpoint,
            &web(),
            "checkpoint taken",
        ))
        .unwrap();

        let events = read_events(dir.path(), 10).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], event);
        assert_eq!(events[1].kind, EventKind::Checkpoint);
        let mode = fs::metadata(log.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn read_returns_newest_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        for index in 0..5 {
            log.append(&Event::new(
                EventKind::Checkpoint,
                &web(),
                format!("n{index}"),
            ))
            .unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(log.path()).unwrap();
        file.write_all(b"{\"time\":").unwrap();

        let events = read_events(dir.path(), 2).unwrap();
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["n3", "n4"]);
    }

    #[test]
    fn full_log_rotates_and_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        log.append(&Event::new(EventKind::Checkpoint, &web(), "old"))
            .unwrap();
        let file = OpenOptions::new().append(true).open(log.path()).unwrap();
        file.set_len(ROTATE_BYTES).unwrap();
        log.append(&Event::new(EventKind::Checkpoint, &web(), "new"))
            .unwrap();

        assert!(rotated_path(log.path()).exists());
        let events = read_events(dir.path(), 10).unwrap();
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["old", "new"]);
    }

    #[test]
    fn missing_log_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_events(dir.path(), 10).unwrap().is_empty());
    }
}
