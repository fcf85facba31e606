//! Human-readable and JSON renderings of [`Checkpoint`], [`CheckpointDiff`] and [`MemMatch`].

use std::collections::BTreeMap;
use std::fmt::Write;

use super::checkpoint::{Checkpoint, Process};
use super::diff::{CheckpointDiff, FileChange};
use super::memgrep::MemMatch;
use super::pages::PAGE_SIZE;

/// Formats a byte count in binary units, such as `4.0 KiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Command line of a process, or its `[comm]` when argv was not dumped.
fn command_line(comm: &str, argv: &[String]) -> String {
    if argv.is_empty() {
        format!("[{comm}]")
    } else {
        quote_argv(argv)
    }
}

fn quote_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '\'' && c != '"')
            {
                arg.clone()
            } else {
                format!("{arg:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders a checkpoint as an indented process tree with each process's details.
///
/// Environment variables are shown only when `show_env` is set, because they often hold secrets.
pub fn inspect_tree(checkpoint: &Checkpoint, show_env: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "image version:   {}", checkpoint.image_version);
    if let Some(stats) = &checkpoint.dump_stats {
        let _ = writeln!(
            out,
            "dump:            frozen {} ms (freezing {} ms, memory dump {} ms, memory write {} ms), {} pages written of {} scanned",
            stats.frozen_time_us / 1000,
            stats.freezing_time_us / 1000,
            stats.memdump_time_us / 1000,
            stats.memwrite_time_us / 1000,
            stats.pages_written,
            stats.pages_scanned,
        );
    }
    out.push('\n');

    if checkpoint.processes.is_empty() {
        out.push_str("processes: none (pstree.img is empty)\n");
    }
    let children = children_by_parent(checkpoint);
    let pids: Vec<u32> = checkpoint.processes.iter().map(|p| p.pid).collect();
    for process in &checkpoint.processes {
        // Roots are processes whose parent is outside the dumped tree.
        if !pids.contains(&process.ppid) {
            render_process(&mut out, &children, process, 0, show_env);
        }
    }

    out.push_str("\nmounts:");
    if checkpoint.mounts.is_empty() {
        out.push_str(
            " none recorded (CRIU dumps mounts only for a tree in its own mount namespace)\n",
        );
    } else {
        out.push('\n');
        // Sorted by mount point so that parents come before the mounts beneath them.
        let mut mounts: Vec<_> = checkpoint.mounts.iter().collect();
        mounts.sort_by(|a, b| (a.namespace, &a.mountpoint).cmp(&(b.namespace, &b.mountpoint)));
        for mount in mounts {
            let _ = writeln!(
                out,
                "  {:<30} {:<10} {}{} ({})",
                mount.mountpoint,
                mount.fstype,
                mount.source,
                if mount.external { " [external]" } else { "" },
                mount.options
            );
        }
    }
    out
}

fn children_by_parent(checkpoint: &Checkpoint) -> BTreeMap<u32, Vec<&Process>> {
    let mut children: BTreeMap<u32, Vec<&Process>> = BTreeMap::new();
    for process in &checkpoint.processes {
        children.entry(process.ppid).or_default().push(process);
    }
    children
}

fn render_process(
    out: &mut String,
    children: &BTreeMap<u32, Vec<&Process>>,
    process: &Process,
    depth: usize,
    show_env: bool,
) {
    let indent = "    ".repeat(depth);
    let detail = format!("{indent}    ");
    let command = command_line(&process.comm, &process.argv);
    let _ = writeln!(
        out,
        "{indent}{} {} ({}, pgid {}, sid {})",
        process.pid, command, process.state, process.pgid, process.sid
    );

    if process.threads.len() > 1 {
        let tids: Vec<String> = process
            .threads
            .iter()
            .map(|t| format!("{} {}", t.tid, t.comm))
            .collect();
        let _ = writeln!(out, "{detail}threads: {}", tids.join(", "));
    }
    if let Some(creds) = &process.creds {
        let _ = writeln!(
            out,
            "{detail}uid {} gid {} euid {} egid {}",
            creds.uid, creds.gid, creds.euid, creds.egid
        );
    }
    if let Some(cwd) = &process.cwd {
        let _ = writeln!(out, "{detail}cwd: {cwd}");
    }
    let ns = &process.namespaces;
    let ns_ids: Vec<String> = [
        ("pid", ns.pid),
        ("net", ns.net),
        ("mnt", ns.mnt),
        ("ipc", ns.ipc),
        ("uts", ns.uts),
        ("user", ns.user),
        ("cgroup", ns.cgroup),
        ("time", ns.time),
    ]
    .iter()
    .filter_map(|(name, id)| id.map(|id| format!("{name}:{id}")))
    .collect();
    if !ns_ids.is_empty() {
        let _ = writeln!(out, "{detail}namespaces: {}", ns_ids.join(" "));
    }
    if show_env {
        let _ = writeln!(out, "{detail}environment:");
        for var in &process.env {
            let _ = writeln!(out, "{detail}  {var}");
        }
    }

    let memory = &process.memory;
    let _ = writeln!(
        out,
        "{detail}memory: {} mapped in {} mappings, {} dumped",
        format_bytes(memory.total_bytes),
        memory.mappings.len(),
        format_bytes(memory.dumped_pages * PAGE_SIZE)
    );
    for kind in &memory.by_kind {
        let _ = writeln!(
            out,
            "{detail}  {:<12} {:>4} mappings {:>11} mapped {:>11} dumped",
            kind.kind,
            kind.mappings,
            format_bytes(kind.bytes),
            format_bytes(kind.dumped_pages * PAGE_SIZE)
        );
    }

    let (sockets, files): (Vec<_>, Vec<_>) = process.files.iter().partition(|f| f.socket.is_some());
    let _ = writeln!(
        out,
        "{detail}files:{}",
        if files.is_empty() { " none" } else { "" }
    );
    for file in files {
        let position = file
            .position
            .map(|p| format!(" pos {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{detail}  {:>4} {:<5} {}{} [{}]",
            file.fd,
            file.kind,
            file.path.as_deref().unwrap_or("?"),
            position,
            file.flags.join("|")
        );
    }
    let _ = writeln!(
        out,
        "{detail}sockets:{}",
        if sockets.is_empty() { " none" } else { "" }
    );
    for file in sockets {
        let Some(socket) = &file.socket else { continue };
        let remote = if socket.remote.is_empty() {
            String::new()
        } else {
            format!(" -> {}", socket.remote)
        };
        let _ = writeln!(
            out,
            "{detail}  {:>4} {} {} {} {} {}{}",
            file.fd,
            socket.family,
            socket.socket_type,
            socket.protocol,
            socket.state,
            socket.local,
            remote
        );
    }

    for child in children.get(&process.pid).into_iter().flatten() {
        render_process(out, children, child, depth + 1, show_env);
    }
}

/// Renders a checkpoint as JSON, leaving out environment variables unless `show_env` is set.
pub fn inspect_json(checkpoint: &Checkpoint, show_env: bool) -> serde_json::Value {
    let mut value = serde_json::to_value(checkpoint).unwrap_or(serde_json::Value::Null);
    if !show_env && let Some(processes) = value.get_mut("processes").and_then(|p| p.as_array_mut())
    {
        for process in processes {
            if let Some(object) = process.as_object_mut() {
                object.remove("env");
            }
        }
    }
    value
}

/// Renders a diff as sections of `+`, `-` and `~` lines.
pub fn diff_text(diff: &CheckpointDiff) -> String {
    if diff.is_empty() {
        return "no differences\n".to_string();
    }
    let mut out = String::new();
    if !diff.processes_added.is_empty()
        || !diff.processes_removed.is_empty()
        || !diff.processes_changed.is_empty()
    {
        out.push_str("processes:\n");
        for p in &diff.processes_added {
            let _ = writeln!(out, "  + {} {}", p.pid, command_line(&p.comm, &p.argv));
        }
        for p in &diff.processes_removed {
            let _ = writeln!(out, "  - {} {}", p.pid, command_line(&p.comm, &p.argv));
        }
        for p in &diff.processes_changed {
            let _ = writeln!(out, "  ~ {} {}", p.pid, p.changes.join("; "));
        }
    }
    for (title, changes) in [("files", &diff.files), ("sockets", &diff.sockets)] {
        if changes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}:");
        for change in changes {
            render_file_change(&mut out, change);
        }
    }
    if !diff.memory.is_empty() {
        out.push_str("memory:\n");
        for m in &diff.memory {
            let _ = writeln!(
                out,
                "  ~ pid {} {:#x}-{:#x} {} ({}): {} pages changed, {} added, {} removed",
                m.pid,
                m.start,
                m.end,
                m.mapping,
                m.change,
                m.pages_changed,
                m.pages_added,
                m.pages_removed
            );
            if !m.changed_addresses.is_empty() {
                let addresses: Vec<String> = m
                    .changed_addresses
                    .iter()
                    .map(|a| format!("{a:#x}"))
                    .collect();
                let more = if m.pages_changed as usize > addresses.len() {
                    " ..."
                } else {
                    ""
                };
                let _ = writeln!(out, "      changed pages: {}{more}", addresses.join(" "));
            }
        }
    }
    out
}

fn render_file_change(out: &mut String, change: &FileChange) {
    let before = change.before.as_deref().unwrap_or("");
    let after = change.after.as_deref().unwrap_or("");
    let _ = match change.change.as_str() {
        "added" => writeln!(out, "  + pid {} fd {}: {after}", change.pid, change.fd),
        "removed" => writeln!(out, "  - pid {} fd {}: {before}", change.pid, change.fd),
        _ => writeln!(
            out,
            "  ~ pid {} fd {}: {before} -> {after}",
            change.pid, change.fd
        ),
    };
}

/// Renders one memgrep match: a header line, then a hexdump of the context, 16 bytes a row.
pub fn memgrep_text(found: &MemMatch) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pid {} ({}) {:#x} in {} {:#x}-{:#x} {}",
        found.pid,
        found.comm,
        found.address,
        found.mapping,
        found.mapping_start,
        found.mapping_end,
        found.perms
    );
    let match_start = found.address;
    let match_end = found.address + found.matched.len() as u64;
    for (row, bytes) in found.context.chunks(16).enumerate() {
        let row_address = found.context_start + row as u64 * 16;
        let mut hex = String::new();
        let mut text = String::new();
        for (i, byte) in bytes.iter().enumerate() {
            let address = row_address + i as u64;
            let in_match = (match_start..match_end).contains(&address);
            let _ = write!(hex, "{}{byte:02x}", if in_match { '*' } else { ' ' });
            text.push(if byte.is_ascii_graphic() || *byte == b' ' {
                *byte as char
            } else {
                '.'
            });
        }
        let _ = writeln!(out, "  {row_address:016x} {hex:<48}  |{text}|");
    }
    out
}
