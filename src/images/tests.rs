//! Tests on synthetic image directories built with prost.

use std::ops::ControlFlow;
use std::path::Path;

use prost::Message;

use super::format::{self, encode_image};
use super::pages::{PAGE_SIZE, PE_PRESENT};
use super::proto::*;
use super::*;

const STACK: u64 = 0x7ffd_0000_0000;
pub(crate) const HEAP: u64 = 0x5600_0000_0000;
const VMA_ANON_PRIVATE_HEAP: u32 = (1 << 9) | (1 << 5) | 1;
const VMA_ANON_PRIVATE_STACK: u32 = (1 << 9) | (1 << 1) | 1;
const VMA_FILE_PRIVATE: u32 = (1 << 6) | 1;
const LIB: u64 = 0x7f00_0000_0000;

/// Synthetic image directory: process 100 (`sh`, two threads) and its child 101 (`nc`) with a listening socket.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
}

/// Memory of the root process: two heap pages and one stack page, all dumped.
pub(crate) struct Memory {
    pub heap: Vec<u8>,
    pub stack: Vec<u8>,
}

impl Memory {
    pub fn new() -> Self {
        let mut stack = vec![0u8; PAGE_SIZE as usize];
        stack[..ARGS.len()].copy_from_slice(ARGS);
        Self {
            heap: vec![0xAA; 2 * PAGE_SIZE as usize],
            stack,
        }
    }
}

/// argv `sh -c "echo hi"` then environment `HOME=/root PATH=/bin`, as at the bottom of a stack.
const ARGS: &[u8] = b"sh\0-c\0echo hi\0HOME=/root\0PATH=/bin\0";
const ARGV_LEN: u64 = 14;

fn write(dir: &Path, name: &str, data: Vec<u8>) {
    std::fs::write(dir.join(name), data).unwrap();
}

fn core(comm: &str, thread_comm: Option<&str>) -> CoreEntry {
    CoreEntry {
        mtype: 1,
        tc: Some(TaskCoreEntry {
            task_state: 1,
            comm: comm.into(),
            ..Default::default()
        }),
        ids: None,
        thread_core: Some(ThreadCoreEntry {
            comm: thread_comm.map(String::from),
            creds: Some(CredsEntry {
                uid: 0,
                gid: 0,
                euid: 1000,
                egid: 1000,
                groups: vec![10],
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn ids(files_id: u32) -> TaskKobjIdsEntry {
    TaskKobjIdsEntry {
        vm_id: files_id,
        files_id,
        fs_id: files_id,
        sighand_id: files_id,
        pid_ns_id: Some(1),
        net_ns_id: Some(2),
        mnt_ns_id: Some(3),
        ..Default::default()
    }
}

fn reg(id: u32, name: &str, pos: u64, flags: u32) -> FileEntry {
    FileEntry {
        r#type: FdType::Reg as i32,
        id,
        reg: Some(RegFileEntry {
            id,
            flags,
            pos,
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn vma(start: u64, pages: u64, status: u32, shmid: u64) -> VmaEntry {
    VmaEntry {
        start,
        end: start + pages * PAGE_SIZE,
        prot: 3,
        flags: 2,
        status,
        shmid,
        fd: -1,
        ..Default::default()
    }
}

fn pagemap(pages_id: u32, runs: &[(u64, u64)]) -> Vec<u8> {
    let mut data = encode_image(format::PAGEMAP, &[PagemapHead { pages_id }]);
    for &(vaddr, nr_pages) in runs {
        let bytes = PagemapEntry {
            vaddr,
            flags: Some(PE_PRESENT),
            nr_pages: Some(nr_pages),
            ..Default::default()
        }
        .encode_to_vec();
        data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        data.extend_from_slice(&bytes);
    }
    data
}

impl Fixture {
    pub fn new(memory: &Memory) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        write(
            d,
            "inventory.img",
            encode_image(
                format::INVENTORY,
                &[InventoryEntry {
                    img_version: 2,
                    dump_criu_run_id: Some("run-1".into()),
                    ..Default::default()
                }],
            ),
        );
        write(
            d,
            "pstree.img",
            encode_image(
                format::PSTREE,
                &[
                    PstreeEntry {
                        pid: 100,
                        ppid: 0,
                        pgid: 100,
                        sid: 100,
                        threads: vec![100, 102],
                    },
                    PstreeEntry {
                        pid: 101,
                        ppid: 100,
                        pgid: 100,
                        sid: 100,
                        threads: vec![101],
                    },
                ],
            ),
        );
        write(
            d,
            "core-100.img",
            encode_image(format::CORE, &[core("sh", None)]),
        );
        write(
            d,
            "core-102.img",
            encode_image(format::CORE, &[core("sh", Some("worker"))]),
        );
        write(
            d,
            "core-101.img",
            encode_image(format::CORE, &[core("nc", None)]),
        );
        write(d, "ids-100.img", encode_image(format::IDS, &[ids(1)]));
        write(d, "ids-101.img", encode_image(format::IDS, &[ids(2)]));

        let loopback = u32::from_le_bytes([127, 0, 0, 1]);
        write(
            d,
            "files.img",
            encode_image(
                format::FILES,
                &[
                    reg(1, "/bin/busybox", 0, 0),
                    reg(2, "/var/log/app.log", 4096, 0o2001),
                    reg(3, "/", 0, 0o200000),
                    FileEntry {
                        r#type: FdType::Inetsk as i32,
                        id: 4,
                        isk: Some(InetSkEntry {
                            id: 4,
                            ino: 555,
                            family: 2,
                            r#type: 1,
                            proto: 6,
                            state: 10,
                            src_port: 8080,
                            src_addr: vec![loopback],
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    FileEntry {
                        r#type: FdType::Pipe as i32,
                        id: 5,
                        pipe: Some(PipeEntry {
                            id: 5,
                            pipe_id: 777,
                            flags: 1,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
            ),
        );
        write(
            d,
            "fdinfo-1.img",
            encode_image(
                format::FDINFO,
                &[
                    FdinfoEntry {
                        id: 2,
                        flags: 1,
                        r#type: FdType::Reg as i32,
                        fd: 3,
                    },
                    FdinfoEntry {
                        id: 5,
                        flags: 0,
                        r#type: FdType::Pipe as i32,
                        fd: 1,
                    },
                ],
            ),
        );
        write(
            d,
            "fdinfo-2.img",
            encode_image(
                format::FDINFO,
                &[FdinfoEntry {
                    id: 4,
                    flags: 0,
                    r#type: FdType::Inetsk as i32,
                    fd: 3,
                }],
            ),
        );
        write(
            d,
            "fs-100.img",
            encode_image(
                format::FS,
                &[FsEntry {
                    cwd_id: 3,
                    root_id: 3,
                    umask: None,
                }],
            ),
        );

        write(
            d,
            "mm-100.img",
            encode_image(
                format::MM,
                &[MmEntry {
                    mm_arg_start: STACK,
                    mm_arg_end: STACK + ARGV_LEN,
                    mm_env_start: STACK + ARGV_LEN,
                    mm_env_end: STACK + ARGS.len() as u64,
                    vmas: vec![
                        vma(LIB, 4, VMA_FILE_PRIVATE, 1),
                        vma(HEAP, 2, VMA_ANON_PRIVATE_HEAP, 0),
                        vma(STACK, 1, VMA_ANON_PRIVATE_STACK, 0),
                    ],
                    ..Default::default()
                }],
            ),
        );
        write(d, "pagemap-100.img", pagemap(1, &[(HEAP, 2), (STACK, 1)]));
        let mut pages = memory.heap.clone();
        pages.extend_from_slice(&memory.stack);
        write(d, "pages-1.img", pages);

        write(
            d,
            "mountpoints-3.img",
            encode_image(
                format::MNTS,
                &[MntEntry {
                    fstype: 1,
                    mnt_id: 10,
                    parent_mnt_id: 1,
                    mountpoint: "/proc".into(),
                    source: "proc".into(),
                    root: "/".into(),
                    options: "rw".into(),
                    ..Default::default()
                }],
            ),
        );
        write(
            d,
            "stats-dump",
            encode_image(
                format::STATS,
                &[StatsEntry {
                    dump: Some(DumpStatsEntry {
                        frozen_time: 12_000,
                        pages_written: 3,
                        pages_scanned: 40,
                        ..Default::default()
                    }),
                }],
            ),
        );
        Self { dir }
    }

    pub fn load(&self) -> Checkpoint {
        Checkpoint::load(self.dir.path()).unwrap()
    }
}

fn collect(checkpoint: &Checkpoint, pattern: &Pattern) -> Vec<MemMatch> {
    let mut found = Vec::new();
    memgrep(checkpoint, pattern, &MemgrepOptions::default(), |m| {
        found.push(m);
        ControlFlow::Continue(())
    })
    .unwrap();
    found
}

#[test]
fn load_builds_process_tree() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    let pids: Vec<(u32, u32)> = checkpoint
        .processes
        .iter()
        .map(|p| (p.pid, p.ppid))
        .collect();
    assert_eq!(pids, vec![(100, 0), (101, 100)]);
    let root = &checkpoint.processes[0];
    assert_eq!(root.comm, "sh");
    assert_eq!(root.state, "alive");
    let threads: Vec<(u32, &str)> = root
        .threads
        .iter()
        .map(|t| (t.tid, t.comm.as_str()))
        .collect();
    assert_eq!(threads, vec![(100, "sh"), (102, "worker")]);
    assert_eq!(root.creds.as_ref().map(|c| c.euid), Some(1000));
    assert_eq!(root.namespaces.mnt, Some(3));
    assert_eq!(root.cwd.as_deref(), Some("/"));
    assert_eq!(checkpoint.criu_run_id.as_deref(), Some("run-1"));
}

#[test]
fn argv_and_env_come_from_pages() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    let root = &checkpoint.processes[0];
    assert_eq!(root.argv, vec!["sh", "-c", "echo hi"]);
    assert_eq!(root.env, vec!["HOME=/root", "PATH=/bin"]);
    // The child has no mm image, so nothing can be read.
    assert!(checkpoint.processes[1].argv.is_empty());
}

#[test]
fn open_files_have_paths_positions_and_flags() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    let files = &checkpoint.processes[0].files;
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].fd, 1);
    assert_eq!(files[0].path.as_deref(), Some("pipe:[777]"));
    assert_eq!(files[1].fd, 3);
    assert_eq!(files[1].path.as_deref(), Some("/var/log/app.log"));
    assert_eq!(files[1].position, Some(4096));
    assert_eq!(files[1].flags, vec!["O_WRONLY", "O_APPEND"]);
    assert!(files[1].close_on_exec);
}

#[test]
fn listening_socket_is_decoded() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    let socket = checkpoint.processes[1].files[0]
        .socket
        .clone()
        .expect("fd 3 is a socket");
    assert_eq!(socket.family, "inet");
    assert_eq!(socket.protocol, "tcp");
    assert_eq!(socket.state, "LISTEN");
    assert_eq!(socket.local, "127.0.0.1:8080");
}

#[test]
fn memory_totals_by_kind() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    let memory = &checkpoint.processes[0].memory;
    assert_eq!(memory.total_bytes, 7 * PAGE_SIZE);
    assert_eq!(memory.dumped_pages, 3);
    let kinds: Vec<(&str, u64, u64)> = memory
        .by_kind
        .iter()
        .map(|k| (k.kind.as_str(), k.bytes, k.dumped_pages))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("file", 4 * PAGE_SIZE, 0),
            ("heap", 2 * PAGE_SIZE, 2),
            ("stack", PAGE_SIZE, 1)
        ]
    );
    assert_eq!(memory.mappings[0].path.as_deref(), Some("/bin/busybox"));
}

#[test]
fn mounts_and_stats_are_loaded() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    assert_eq!(checkpoint.mounts.len(), 1);
    assert_eq!(checkpoint.mounts[0].mountpoint, "/proc");
    assert_eq!(checkpoint.mounts[0].fstype, "proc");
    let stats = checkpoint.dump_stats.expect("stats-dump was written");
    assert_eq!(stats.frozen_time_us, 12_000);
    assert_eq!(stats.pages_written, 3);
}

#[test]
fn memgrep_finds_match_across_page_boundary() {
    let mut memory = Memory::new();
    let marker = b"MARKER-ACROSS";
    let at = PAGE_SIZE as usize - 5;
    memory.heap[at..at + marker.len()].copy_from_slice(marker);
    let checkpoint = Fixture::new(&memory).load();

    let found = collect(&checkpoint, &Pattern::literal("MARKER-ACROSS").unwrap());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].pid, 100);
    assert_eq!(found[0].address, HEAP + at as u64);
    assert_eq!(found[0].mapping, "[heap]");
    assert_eq!(found[0].matched, marker);
    assert_eq!(found[0].context_start, HEAP + at as u64 - 32);
    assert_eq!(found[0].context.len(), 32 + marker.len() + 32);
}

#[test]
fn memgrep_regex_and_context_clipping() {
    let mut memory = Memory::new();
    memory.heap[..9].copy_from_slice(b"count=417");
    let checkpoint = Fixture::new(&memory).load();

    let found = collect(&checkpoint, &Pattern::regex(r"count=[0-9]+").unwrap());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].matched, b"count=417");
    // The heap is the first stored byte of its segment, so no context precedes it.
    assert_eq!(found[0].context_start, HEAP);

    let stack_hits = collect(&checkpoint, &Pattern::literal("PATH=/bin").unwrap());
    assert_eq!(stack_hits.len(), 1);
    assert_eq!(stack_hits[0].mapping, "[stack]");
}

#[test]
fn memgrep_stops_when_asked() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    let mut seen = 0;
    let count = memgrep(
        &checkpoint,
        &Pattern::regex(r"\xAA").unwrap(),
        &MemgrepOptions::default(),
        |_| {
            seen += 1;
            ControlFlow::Break(())
        },
    )
    .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(count, 1);
}

#[test]
fn memgrep_rejects_bad_patterns() {
    assert!(matches!(Pattern::literal(""), Err(PatternError::Empty)));
    let error = Pattern::regex("(").unwrap_err();
    assert!(
        error.to_string().starts_with("invalid regex \"(\""),
        "{error}"
    );
}

#[test]
fn diff_reports_changed_page() {
    let before = Fixture::new(&Memory::new());
    let mut memory = Memory::new();
    memory.heap[PAGE_SIZE as usize + 8] = 0x01;
    let after = Fixture::new(&memory);

    let changes = diff(&before.load(), &after.load()).unwrap();
    assert_eq!(changes.memory.len(), 1);
    let heap = &changes.memory[0];
    assert_eq!(heap.mapping, "[heap]");
    assert_eq!(heap.pages_changed, 1);
    assert_eq!(heap.changed_addresses, vec![HEAP + PAGE_SIZE]);
    assert!(changes.processes_added.is_empty());
    assert!(changes.files.is_empty());
}

#[test]
fn diff_of_identical_checkpoints_is_empty() {
    let a = Fixture::new(&Memory::new());
    let b = Fixture::new(&Memory::new());
    let changes = diff(&a.load(), &b.load()).unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(render::diff_text(&changes), "no differences\n");
}

#[test]
fn diff_reports_removed_process_and_file() {
    let a = Fixture::new(&Memory::new());
    let b = Fixture::new(&Memory::new());
    let only_root = PstreeEntry {
        pid: 100,
        ppid: 0,
        pgid: 100,
        sid: 100,
        threads: vec![100, 102],
    };
    std::fs::write(
        b.dir.path().join("pstree.img"),
        encode_image(format::PSTREE, &[only_root]),
    )
    .unwrap();
    let only_pipe = FdinfoEntry {
        id: 5,
        flags: 0,
        r#type: FdType::Pipe as i32,
        fd: 1,
    };
    std::fs::write(
        b.dir.path().join("fdinfo-1.img"),
        encode_image(format::FDINFO, &[only_pipe]),
    )
    .unwrap();

    let changes = diff(&a.load(), &b.load()).unwrap();
    assert_eq!(changes.processes_removed.len(), 1);
    assert_eq!(changes.processes_removed[0].pid, 101);
    assert!(changes.processes_added.is_empty());
    assert_eq!(changes.files.len(), 1);
    assert_eq!(changes.files[0].fd, 3);
    assert_eq!(changes.files[0].change, "removed");
    assert_eq!(
        changes.files[0].before.as_deref(),
        Some("REG /var/log/app.log pos 4096")
    );
    assert!(changes.sockets.is_empty());
    let text = render::diff_text(&changes);
    assert!(text.contains("  - 101 [nc]"), "{text}");
    assert!(
        text.contains("  - pid 100 fd 3: REG /var/log/app.log pos 4096"),
        "{text}"
    );
}

#[test]
fn load_rejects_directory_without_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let error = Checkpoint::load(dir.path()).unwrap_err();
    assert!(matches!(error, LoadError::NotImageDirectory { .. }));
    assert!(
        error
            .to_string()
            .ends_with("is not a CRIU image directory: inventory.img not found")
    );
}

#[test]
fn load_names_corrupt_image() {
    let fixture = Fixture::new(&Memory::new());
    let path = fixture.dir.path().join("core-101.img");
    let mut data = std::fs::read(&path).unwrap();
    data.truncate(data.len() - 3);
    std::fs::write(&path, data).unwrap();

    let error = Checkpoint::load(fixture.dir.path()).unwrap_err();
    let chain = format!("{}: {}", error, std::error::Error::source(&error).unwrap());
    assert!(
        chain.contains("core-101.img is truncated at offset 8"),
        "{chain}"
    );
}

#[test]
fn truncated_pages_file_fails_load() {
    let fixture = Fixture::new(&Memory::new());
    let pages = fixture.dir.path().join("pages-1.img");
    std::fs::write(&pages, vec![0u8; PAGE_SIZE as usize]).unwrap();
    // argv lives on the stack page, now missing from the file.
    let error = Checkpoint::load(fixture.dir.path()).unwrap_err();
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(source.contains("pages-1.img is truncated"), "{source}");
}

#[test]
fn garbled_images_never_panic() {
    let fixture = Fixture::new(&Memory::new());
    let names: Vec<String> = std::fs::read_dir(fixture.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("pages-"))
        .collect();
    let mut state = 0x9e37_79b9_u32;
    for name in &names {
        let path = fixture.dir.path().join(name);
        let original = std::fs::read(&path).unwrap();
        for _ in 0..50 {
            let mut data = original.clone();
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let at = state as usize % data.len();
            data[at] ^= (state >> 8) as u8 | 1;
            if state.is_multiple_of(3) {
                data.truncate(at);
            }
            std::fs::write(&path, &data).unwrap();
            let _ = Checkpoint::load(fixture.dir.path());
        }
        std::fs::write(&path, &original).unwrap();
    }
    // Every file was restored, so the directory loads again.
    assert_eq!(
        Checkpoint::load(fixture.dir.path())
            .unwrap()
            .processes
            .len(),
        2
    );
}

#[test]
fn tree_rendering_hides_environment_unless_asked() {
    let checkpoint = Fixture::new(&Memory::new()).load();
    let text = render::inspect_tree(&checkpoint, false);
    assert!(text.contains("100 sh -c \"echo hi\" (alive"), "{text}");
    assert!(text.contains("    101 [nc] (alive"), "{text}");
    assert!(text.contains("tcp LISTEN 127.0.0.1:8080"), "{text}");
    assert!(text.contains("/var/log/app.log pos 4096"), "{text}");
    assert!(!text.contains("HOME=/root"), "{text}");
    assert!(render::inspect_tree(&checkpoint, true).contains("HOME=/root"));

    let json = render::inspect_json(&checkpoint, false);
    assert!(json["processes"][0].get("env").is_none());
    assert_eq!(json["processes"][0]["argv"][2], "echo hi");
    assert_eq!(
        render::inspect_json(&checkpoint, true)["processes"][0]["env"][0],
        "HOME=/root"
    );
}

#[test]
fn hexdump_marks_matched_bytes() {
    let mut memory = Memory::new();
    memory.heap[100..104].copy_from_slice(b"WXYZ");
    let checkpoint = Fixture::new(&memory).load();
    let found = collect(&checkpoint, &Pattern::literal("WXYZ").unwrap());
    let text = render::memgrep_text(&found[0]);
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "pid 100 (sh) {:#x} in [heap] {:#x}-{:#x} rw-p",
            HEAP + 100,
            HEAP,
            HEAP + 2 * PAGE_SIZE
        )
    );
    assert!(text.contains("*57*58*59*5a"), "{text}");
    assert!(text.contains("|WXYZ....."), "{text}");
}
