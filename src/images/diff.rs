//! Comparing two checkpoints: processes, open files, sockets, and memory pages
//! per mapping (pages are compared by BLAKE3 hash of their contents).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::checkpoint::{Checkpoint, Mapping, OpenFile, Process};
use super::format::ImageError;
use super::pages::{PAGE_SIZE, PageMap};

/// Differences from checkpoint `a` (older) to checkpoint `b` (newer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointDiff {
    pub processes_added: Vec<ProcessSummary>,
    pub processes_removed: Vec<ProcessSummary>,
    /// Processes present in both whose command, state or threads differ.
    pub processes_changed: Vec<ProcessChange>,
    pub files: Vec<FileChange>,
    pub sockets: Vec<FileChange>,
    /// Mappings whose stored pages differ, per process present in both.
    pub memory: Vec<MappingChange>,
}

impl CheckpointDiff {
    pub fn is_empty(&self) -> bool {
        self.processes_added.is_empty()
            && self.processes_removed.is_empty()
            && self.processes_changed.is_empty()
            && self.files.is_empty()
            && self.sockets.is_empty()
            && self.memory.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: String,
    pub argv: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessChange {
    pub pid: u32,
    /// One line per changed attribute, such as `comm: sh -> sleep`.
    pub changes: Vec<String>,
}

/// An open file or socket that appeared, disappeared or changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub pid: u32,
    pub fd: u32,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// Description in `a`; absent for added files.
    pub before: Option<String>,
    /// Description in `b`; absent for removed files.
    pub after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MappingChange {
    pub pid: u32,
    /// File path or `[kind]` of the mapping in `b` (or in `a` when it was removed).
    pub mapping: String,
    pub start: u64,
    pub end: u64,
    /// `changed`, `added` (mapping only in `b`) or `removed` (only in `a`).
    pub change: String,
    /// Pages stored in both checkpoints whose contents differ.
    pub pages_changed: u64,
    /// Pages stored only in `b`.
    pub pages_added: u64,
    /// Pages stored only in `a`.
    pub pages_removed: u64,
    /// First changed page addresses, at most [`MAX_LISTED_PAGES`].
    pub changed_addresses: Vec<u64>,
}

/// Changed page addresses listed per mapping; the counts cover all of them.
pub const MAX_LISTED_PAGES: usize = 16;

/// Compares checkpoint `a` with the newer checkpoint `b`.
///
/// Processes are matched by PID, files by PID and descriptor number, and
/// mappings by PID and start address. Reading the pages of both is the slow
/// part: every stored page of matching mappings is hashed.
pub fn diff(a: &Checkpoint, b: &Checkpoint) -> Result<CheckpointDiff, ImageError> {
    let mut result = CheckpointDiff::default();
    let pids_a: BTreeSet<u32> = a.processes.iter().map(|p| p.pid).collect();
    let pids_b: BTreeSet<u32> = b.processes.iter().map(|p| p.pid).collect();

    for p in b.processes.iter().filter(|p| !pids_a.contains(&p.pid)) {
        result.processes_added.push(summary(p));
    }
    for p in a.processes.iter().filter(|p| !pids_b.contains(&p.pid)) {
        result.processes_removed.push(summary(p));
    }

    for before in &a.processes {
        let Some(after) = b.process(before.pid) else {
            continue;
        };
        let changes = process_changes(before, after);
        if !changes.is_empty() {
            result.processes_changed.push(ProcessChange {
                pid: before.pid,
                changes,
            });
        }
        for change in file_changes(before, after) {
            let is_socket = change_is_socket(before, after, change.fd);
            if is_socket {
                result.sockets.push(change);
            } else {
                result.files.push(change);
            }
        }
        result.memory.extend(memory_changes(
            before,
            a.page_map(before.pid),
            after,
            b.page_map(after.pid),
        )?);
    }
    Ok(result)
}

fn summary(p: &Process) -> ProcessSummary {
    ProcessSummary {
        pid: p.pid,
        comm: p.comm.clone(),
        argv: p.argv.clone(),
    }
}

fn process_changes(a: &Process, b: &Process) -> Vec<String> {
    let mut changes = Vec::new();
    let mut compare = |what: &str, before: String, after: String| {
        if before != after {
            changes.push(format!("{what}: {before} -> {after}"));
        }
    };
    compare("comm", a.comm.clone(), b.comm.clone());
    compare("state", a.state.clone(), b.state.clone());
    compare("argv", a.argv.join(" "), b.argv.join(" "));
    compare("ppid", a.ppid.to_string(), b.ppid.to_string());
    let tids = |p: &Process| {
        p.threads
            .iter()
            .map(|t| t.tid.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    compare("threads", tids(a), tids(b));
    changes
}

/// One-line description of an open file used to detect and show changes.
pub fn describe_file(file: &OpenFile) -> String {
    let mut text = match &file.socket {
        Some(s) => format!(
            "{} {} {} {} local {} remote {}",
            s.family, s.socket_type, s.protocol, s.state, s.local, s.remote
        ),
        None => format!("{} {}", file.kind, file.path.as_deref().unwrap_or("?")),
    };
    if let Some(position) = file.position {
        text.push_str(&format!(" pos {position}"));
    }
    text
}

fn file_changes(a: &Process, b: &Process) -> Vec<FileChange> {
    let before: BTreeMap<u32, &OpenFile> = a.files.iter().map(|f| (f.fd, f)).collect();
    let after: BTreeMap<u32, &OpenFile> = b.files.iter().map(|f| (f.fd, f)).collect();
    let fds: BTreeSet<u32> = before.keys().chain(after.keys()).copied().collect();

    let mut changes = Vec::new();
    for fd in fds {
        let old = before.get(&fd).map(|f| describe_file(f));
        let new = after.get(&fd).map(|f| describe_file(f));
        let change = match (&old, &new) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(x), Some(y)) if x != y => "changed",
            _ => continue,
        };
        changes.push(FileChange {
            pid: a.pid,
            fd,
            change: change.to_string(),
            before: old,
            after: new,
        });
    }
    changes
}

fn change_is_socket(a: &Process, b: &Process, fd: u32) -> bool {
    [a, b]
        .iter()
        .any(|p| p.files.iter().any(|f| f.fd == fd && f.socket.is_some()))
}

fn memory_changes(
    a: &Process,
    map_a: Option<&PageMap>,
    b: &Process,
    map_b: Option<&PageMap>,
) -> Result<Vec<MappingChange>, ImageError> {
    let mappings_a: BTreeMap<u64, &Mapping> =
        a.memory.mappings.iter().map(|m| (m.start, m)).collect();
    let mappings_b: BTreeMap<u64, &Mapping> =
        b.memory.mappings.iter().map(|m| (m.start, m)).collect();
    let starts: BTreeSet<u64> = mappings_a
        .keys()
        .chain(mappings_b.keys())
        .copied()
        .collect();

    let mut changes = Vec::new();
    for start in starts {
        let old = mappings_a.get(&start).copied();
        let new = mappings_b.get(&start).copied();
        let shown = new.or(old).expect("start comes from one of the two maps");
        let hashes_a = match (old, map_a) {
            (Some(m), Some(map)) => page_hashes(map, m.start, m.end)?,
            _ => BTreeMap::new(),
        };
        let hashes_b = match (new, map_b) {
            (Some(m), Some(map)) => page_hashes(map, m.start, m.end)?,
            _ => BTreeMap::new(),
        };

        let mut change = MappingChange {
            pid: a.pid,
            mapping: shown.label(),
            start,
            end: shown.end,
            change: match (old, new) {
                (None, _) => "added".into(),
                (_, None) => "removed".into(),
                _ => "changed".into(),
            },
            pages_changed: 0,
            pages_added: 0,
            pages_removed: 0,
            changed_addresses: Vec::new(),
        };
        for (address, hash) in &hashes_b {
            match hashes_a.get(address) {
                Some(old_hash) if old_hash == hash => {}
                Some(_) => {
                    change.pages_changed += 1;
                    if change.changed_addresses.len() < MAX_LISTED_PAGES {
                        change.changed_addresses.push(*address);
                    }
                }
                None => change.pages_added += 1,
            }
        }
        change.pages_removed = hashes_a
            .keys()
            .filter(|addr| !hashes_b.contains_key(addr))
            .count() as u64;

        let mapping_differs = old.map(|m| (m.end, &m.perms)) != new.map(|m| (m.end, &m.perms));
        if change.pages_changed + change.pages_added + change.pages_removed > 0 || mapping_differs {
            changes.push(change);
        }
    }
    Ok(changes)
}

/// BLAKE3 hash of every stored page in `[start, end)`, by page address.
fn page_hashes(
    map: &PageMap,
    start: u64,
    end: u64,
) -> Result<BTreeMap<u64, blake3::Hash>, ImageError> {
    // Read in blocks of pages to keep the number of reads low.
    const BLOCK_PAGES: u64 = 256;
    let mut hashes = BTreeMap::new();
    let mut buffer = Vec::new();
    for segment in map.segments_in(start, end) {
        let mut offset = 0;
        while offset < segment.len {
            let len = (segment.len - offset).min(BLOCK_PAGES * PAGE_SIZE);
            buffer.resize(len as usize, 0);
            map.read_segment(&segment, offset, &mut buffer)?;
            for (i, page) in buffer.chunks(PAGE_SIZE as usize).enumerate() {
                hashes.insert(
                    segment.vaddr + offset + i as u64 * PAGE_SIZE,
                    blake3::hash(page),
                );
            }
            offset += len;
        }
    }
    Ok(hashes)
}
