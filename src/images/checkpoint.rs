//! Loading an image directory into a [`Checkpoint`]: the process tree with its
//! threads, memory, open files and sockets, plus mounts and dump statistics.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::{self, ImageError};
use super::names;
use super::pages::PageMap;
use super::proto::{
    CoreEntry, FdType, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MemfdInodeEntry, MmEntry,
    MntEntry, PstreeEntry, StatsEntry, TaskKobjIdsEntry, VmaEntry,
};
use crate::model::DumpStats;

/// Error for [`Checkpoint::load`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{dir} is not a CRIU image directory: inventory.img not found")]
    NotImageDirectory { dir: PathBuf },
    #[error("failed to load CRIU images from {dir}")]
    Image {
        dir: PathBuf,
        #[source]
        source: ImageError,
    },
}

/// Contents of one CRIU image directory, decoded without restoring it.
#[derive(Debug, Serialize)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// `img_version` from inventory.img.
    pub image_version: u32,
    /// Id CRIU gave the dump run, when it recorded one.
    pub criu_run_id: Option<String>,
    /// Processes in pstree order: the root first, each parent before its children.
    pub processes: Vec<Process>,
    /// Mounts of every dumped mount namespace; empty when CRIU did not dump mounts.
    pub mounts: Vec<Mount>,
    /// Statistics from `stats-dump`, absent when CRIU did not write them.
    pub dump_stats: Option<DumpStats>,
    #[serde(skip)]
    pagemaps: HashMap<u32, PageMap>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub comm: String,
    /// `alive`, `stopped`, `zombie` or `dead`.
    pub state: String,
    pub exit_code: u32,
    /// Command line read from the dumped stack pages; empty when they were not dumped.
    pub argv: Vec<String>,
    /// Environment read from the dumped stack pages.
    pub env: Vec<String>,
    pub threads: Vec<Thread>,
    pub creds: Option<Creds>,
    pub namespaces: Namespaces,
    pub cwd: Option<String>,
    pub root: Option<String>,
    pub memory: Memory,
    pub files: Vec<OpenFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Thread {
    pub tid: u32,
    pub comm: String,
    pub sched_policy: Option<u32>,
    pub nice: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub groups: Vec<u32>,
}

/// CRIU's ids of the namespaces a process is in; equal ids mean the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Namespaces {
    pub pid: Option<u32>,
    pub net: Option<u32>,
    pub ipc: Option<u32>,
    pub uts: Option<u32>,
    pub mnt: Option<u32>,
    pub user: Option<u32>,
    pub cgroup: Option<u32>,
    pub time: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub mappings: Vec<Mapping>,
    /// Totals per mapping kind, sorted by kind.
    pub by_kind: Vec<KindTotal>,
    pub total_bytes: u64,
    /// Pages whose contents are stored in this image directory.
    pub dumped_pages: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindTotal {
    pub kind: String,
    pub mappings: usize,
    pub bytes: u64,
    pub dumped_pages: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Permissions as in `/proc/PID/maps`, such as `rw-p`.
    pub perms: String,
    /// `file`, `anon`, `heap`, `stack`, `vdso`... (see [`names::mapping_kind`]).
    pub kind: String,
    pub path: Option<String>,
    /// Offset into the mapped file, in bytes.
    pub offset: u64,
    pub dumped_pages: u64,
}

impl Mapping {
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Short label: the file path, or the kind in brackets.
    pub fn label(&self) -> String {
        match &self.path {
            Some(path) => path.clone(),
            None => format!("[{}]", self.kind),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenFile {
    pub fd: u32,
    /// CRIU's file type: `REG`, `PIPE`, `INETSK`, `UNIXSK`...
    pub kind: String,
    /// Path of a regular file, or a description such as `pipe:[1234]`.
    pub path: Option<String>,
    /// File position of a regular file.
    pub position: Option<u64>,
    /// open(2) flags by name.
    pub flags: Vec<String>,
    pub close_on_exec: bool,
    pub socket: Option<Socket>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Socket {
    /// `inet`, `inet6` or `unix`.
    pub family: String,
    /// `stream`, `dgram`, `seqpacket` or `raw`.
    pub socket_type: String,
    /// `tcp`, `udp`, or empty for unix sockets.
    pub protocol: String,
    /// Kernel state name such as `LISTEN` or `ESTABLISHED`.
    pub state: String,
    /// `address:port` for inet sockets, the bound name for unix sockets.
    pub local: String,
    /// Peer `address:port`, or the peer's `socket:[inode]` for unix sockets. Empty when unconnected.
    pub remote: String,
    pub inode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub namespace: u32,
    pub mount_id: u32,
    pub parent_id: u32,
    pub mountpoint: String,
    pub source: String,
    pub fstype: String,
    pub root: String,
    pub options: String,
    /// Bind-mounted from outside the container (CRIU's external mount).
    pub external: bool,
}

impl Checkpoint {
    /// Loads the image directory `dir`, the one that contains `inventory.img`.
    ///
    /// Page maps are kept in memory, and page contents are read on demand by
    /// [`Checkpoint::read_memory`], [`fn@super::memgrep`] and [`fn@super::diff`].
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let inventory_path = dir.join("inventory.img");
        if !inventory_path.is_file() {
            return Err(LoadError::NotImageDirectory {
                dir: dir.to_path_buf(),
            });
        }
        Loader::new(dir).load().map_err(|source| LoadError::Image {
            dir: dir.to_path_buf(),
            source,
        })
    }

    /// Reads `len` bytes at `addr` of process `pid`, or `None` if any of them was not dumped.
    pub fn read_memory(
        &self,
        pid: u32,
        addr: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, ImageError> {
        match self.pagemaps.get(&pid) {
            Some(map) => map.read_memory(addr, len),
            None => Ok(None),
        }
    }

    /// Page map of process `pid`, absent for processes without memory (zombies).
    pub fn page_map(&self, pid: u32) -> Option<&PageMap> {
        self.pagemaps.get(&pid)
    }

    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.iter().find(|p| p.pid == pid)
    }
}

/// Reads the images of one directory; files.img is shared by all processes.
struct Loader<'a> {
    dir: &'a Path,
    files: HashMap<u32, FileEntry>,
    /// memfd.img entries by inode id.
    memfd_inodes: HashMap<u64, MemfdInodeEntry>,
    /// Page maps of shared memory objects by shmid, `None` when CRIU stored no pages for it.
    shared_pages: RefCell<HashMap<u64, Option<PageMap>>>,
}

/// A shared memory object behind a mapping.
struct SharedObject {
    shmid: u64,
    /// memfd name; `None` for a plain `MAP_SHARED|MAP_ANONYMOUS` mapping.
    name: Option<String>,
}

/// Name the kernel gives the memfd behind a `MAP_SHARED|MAP_ANONYMOUS` mapping.
const ANON_SHARED_MEMFD_NAME: &str = "/dev/zero";

impl<'a> Loader<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            files: HashMap::new(),
            memfd_inodes: HashMap::new(),
            shared_pages: RefCell::new(HashMap::new()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads an image that may be absent (for example mm for a zombie), as `None`.
    fn read_optional<M: prost::Message + Default>(
        &self,
        name: &str,
        kind: format::ImageKind,
    ) -> Result<Option<Vec<M>>, ImageError> {
        let path = self.path(name);
        if !path.exists() {
            return Ok(None);
        }
        format::read_entries(&path, kind).map(Some)
    }

    fn load(mut self) -> Result<Checkpoint, ImageError> {
        let inventory: InventoryEntry =
            format::read_single(&self.path("inventory.img"), format::INVENTORY)?;
        let tree: Vec<PstreeEntry> =
            format::read_entries(&self.path("pstree.img"), format::PSTREE)?;

        // files.img contains every open file description. Older CRIU versions
        // wrote per-type images instead, which ckpt does not read.
        let files: Vec<FileEntry> = self
            .read_optional("files.img", format::FILES)?
            .unwrap_or_default();
        self.files = files.into_iter().map(|f| (f.id, f)).collect();
        let memfd_inodes: Vec<MemfdInodeEntry> = self
            .read_optional("memfd.img", format::MEMFD_INODE)?
            .unwrap_or_default();
        self.memfd_inodes = memfd_inodes.into_iter().map(|m| (m.inode_id, m)).collect();

        let mut processes = Vec::with_capacity(tree.len());
        let mut pagemaps = HashMap::new();
        for entry in &tree {
            let (process, pagemap) = self.load_process(entry)?;
            if let Some(map) = pagemap {
                pagemaps.insert(entry.pid, map);
            }
            processes.push(process);
        }

        let mount_namespaces: BTreeSet<u32> =
            processes.iter().filter_map(|p| p.namespaces.mnt).collect();
        let mut mounts = Vec::new();
        for ns in mount_namespaces {
            let entries: Vec<MntEntry> = self
                .read_optional(&format!("mountpoints-{ns}.img"), format::MNTS)?
                .unwrap_or_default();
            mounts.extend(entries.into_iter().map(|m| mount(ns, m)));
        }

        let stats_path = self.path(STATS_DUMP_FILE);
        let dump_stats = if stats_path.exists() {
            read_dump_stats(&stats_path)?
        } else {
            None
        };

        Ok(Checkpoint {
            dir: self.dir.to_path_buf(),
            image_version: inventory.img_version,
            criu_run_id: inventory.dump_criu_run_id,
            processes,
            mounts,
            dump_stats,
            pagemaps,
        })
    }

    fn load_process(&self, entry: &PstreeEntry) -> Result<(Process, Option<PageMap>), ImageError> {
        let pid = entry.pid;

        // Task state and threads.
        let core: CoreEntry =
            format::read_single(&self.path(&format!("core-{pid}.img")), format::CORE)?;
        let task = core.tc.clone().unwrap_or_default();
        let mut threads = Vec::with_capacity(entry.threads.len());
        for &tid in &entry.threads {
            let thread_core = if tid == pid {
                core.clone()
            } else {
                format::read_single(&self.path(&format!("core-{tid}.img")), format::CORE)?
            };
            let tc = thread_core.thread_core.unwrap_or_default();
            threads.push(Thread {
                tid,
                comm: tc.comm.unwrap_or_else(|| task.comm.clone()),
                sched_policy: tc.sched_policy,
                nice: tc.sched_nice,
            });
        }
        let creds = core
            .thread_core
            .as_ref()
            .and_then(|tc| tc.creds.as_ref())
            .map(|c| Creds {
                uid: c.uid,
                gid: c.gid,
                euid: c.euid,
                egid: c.egid,
                groups: c.groups.clone(),
            });

        // Kernel object and namespace ids: ids-PID.img, or the copy in core.
        let ids: Option<TaskKobjIdsEntry> =
            match self.read_optional(&format!("ids-{pid}.img"), format::IDS)? {
                Some(entries) => entries.into_iter().next(),
                None => core.ids,
            };

        // Memory: mappings, and the page map that lists which pages were dumped.
        let mm: Option<MmEntry> = self
            .read_optional(&format!("mm-{pid}.img"), format::MM)?
            .and_then(|entries| entries.into_iter().next());
        let pagemap_path = self.path(&format!("pagemap-{pid}.img"));
        let mut pagemap = if pagemap_path.exists() {
            Some(PageMap::load(self.dir, &pagemap_path)?)
        } else {
            None
        };
        if let (Some(mm), Some(map)) = (&mm, &mut pagemap) {
            self.add_shared_pages(mm, map)?;
        }
        let memory = mm
            .as_ref()
            .map(|mm| self.memory(mm, pagemap.as_ref()))
            .unwrap_or_default();
        let (argv, env) = match (&mm, &pagemap) {
            (Some(mm), Some(map)) => (
                read_strings(map, mm.mm_arg_start, mm.mm_arg_end)?,
                read_strings(map, mm.mm_env_start, mm.mm_env_end)?,
            ),
            _ => (Vec::new(), Vec::new()),
        };

        // Open files and working directory.
        let files = match &ids {
            Some(ids) => self.open_files(ids.files_id)?,
            None => Vec::new(),
        };
        let fs: Option<FsEntry> = self
            .read_optional(&format!("fs-{pid}.img"), format::FS)?
            .and_then(|entries| entries.into_iter().next());

        let process = Process {
            pid,
            ppid: entry.ppid,
            pgid: entry.pgid,
            sid: entry.sid,
            comm: task.comm.clone(),
            state: names::task_state(task.task_state),
            exit_code: task.exit_code,
            argv,
            env,
            threads,
            creds,
            namespaces: ids.as_ref().map(namespaces).unwrap_or_default(),
            cwd: fs.as_ref().and_then(|fs| self.file_path(fs.cwd_id)),
            root: fs.as_ref().and_then(|fs| self.file_path(fs.root_id)),
            memory,
            files,
        };
        Ok((process, pagemap))
    }

    fn file_path(&self, id: u32) -> Option<String> {
        self.files
            .get(&id)?
            .reg
            .as_ref()
            .map(|reg| reg.name.clone())
    }

    /// Finds the shared memory object a mapping shows, if any.
    fn shared_object(&self, vma: &VmaEntry) -> Option<SharedObject> {
        if names::vma_is_memfd(vma.status) {
            let file = self.files.get(&u32::try_from(vma.shmid).ok()?)?;
            let inode = self
                .memfd_inodes
                .get(&file.memfd.as_ref()?.inode_id.into())?;
            let name = (inode.name != ANON_SHARED_MEMFD_NAME).then(|| inode.name.clone());
            return Some(SharedObject {
                shmid: inode.shmid.into(),
                name,
            });
        }
        names::vma_is_anon_shared(vma.status).then_some(SharedObject {
            shmid: vma.shmid,
            name: None,
        })
    }

    /// Adds the stored pages of every shared memory mapping to the process's page map.
    fn add_shared_pages(&self, mm: &MmEntry, map: &mut PageMap) -> Result<(), ImageError> {
        let mut cache = self.shared_pages.borrow_mut();
        for vma in &mm.vmas {
            let Some(object) = self.shared_object(vma) else {
                continue;
            };
            let shared = match cache.entry(object.shmid) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let path = self.path(&format!("pagemap-shmem-{}.img", object.shmid));
                    let loaded = if path.exists() {
                        Some(PageMap::load(self.dir, &path)?)
                    } else {
                        None
                    };
                    entry.insert(loaded)
                }
            };
            if let Some(shared) = shared {
                map.add_shared(shared, vma.start, vma.end.max(vma.start), vma.pgoff);
            }
        }
        Ok(())
    }

    fn memory(&self, mm: &MmEntry, pagemap: Option<&PageMap>) -> Memory {
        let mut memory = Memory::default();
        let mut by_kind: BTreeMap<&'static str, KindTotal> = BTreeMap::new();
        for vma in &mm.vmas {
            let end = vma.end.max(vma.start);
            let mut kind = names::mapping_kind(vma.status);
            // CRIU 4.2.1 does not set VMA_AREA_STACK on the main stack, so
            // it is recognized by containing the initial stack pointer.
            if kind == "anon" && (vma.start..end).contains(&mm.mm_start_stack) {
                kind = "stack";
            }
            let mut path = if names::vma_maps_file(vma.status) {
                u32::try_from(vma.shmid)
                    .ok()
                    .and_then(|id| self.file_path(id))
            } else {
                None
            };
            if let Some(object) = self.shared_object(vma) {
                match object.name {
                    Some(name) => path = Some(name),
                    None => kind = "anon-shared",
                }
            }
            let dumped_pages = pagemap.map_or(0, |map| map.present_pages_in(vma.start, end));
            let mapping = Mapping {
                start: vma.start,
                end,
                perms: names::protection(vma.prot, vma.flags),
                kind: kind.to_string(),
                path,
                offset: vma.pgoff,
                dumped_pages,
            };

            let total = by_kind.entry(kind).or_insert_with(|| KindTotal {
                kind: kind.to_string(),
                mappings: 0,
                bytes: 0,
                dumped_pages: 0,
            });
            total.mappings += 1;
            total.bytes += mapping.size();
            total.dumped_pages += dumped_pages;
            memory.total_bytes += mapping.size();
            memory.dumped_pages += dumped_pages;
            memory.mappings.push(mapping);
        }
        memory.by_kind = by_kind.into_values().collect();
        memory
    }

    fn open_files(&self, files_id: u32) -> Result<Vec<OpenFile>, ImageError> {
        let fdinfo: Vec<FdinfoEntry> = self
            .read_optional(&format!("fdinfo-{files_id}.img"), format::FDINFO)?
            .unwrap_or_default();
        let mut files: Vec<OpenFile> = fdinfo.iter().map(|fd| self.open_file(fd)).collect();
        files.sort_by_key(|f| f.fd);
        Ok(files)
    }

    fn open_file(&self, fdinfo: &FdinfoEntry) -> OpenFile {
        const FD_CLOEXEC: u32 = 1;
        let kind = FdType::try_from(fdinfo.r#type).map_or_else(
            |_| format!("UNKNOWN({})", fdinfo.r#type),
            |t| t.as_str_name().to_string(),
        );
        let mut file = OpenFile {
            fd: fdinfo.fd,
            kind,
            path: None,
            position: None,
            flags: Vec::new(),
            close_on_exec: fdinfo.flags & FD_CLOEXEC != 0,
            socket: None,
        };
        let Some(entry) = self.files.get(&fdinfo.id) else {
            return file;
        };

        if let Some(reg) = &entry.reg {
            file.path = Some(reg.name.clone());
            file.position = Some(reg.pos);
            file.flags = names::open_flags(reg.flags)
                .into_iter()
                .map(String::from)
                .collect();
        } else if let Some(pipe) = &entry.pipe {
            file.path = Some(format!("pipe:[{}]", pipe.pipe_id));
            file.flags = names::open_flags(pipe.flags)
                .into_iter()
                .map(String::from)
                .collect();
        } else if let Some(fifo) = &entry.fifo {
            file.path = fifo.regf_id.and_then(|id| self.file_path(id));
        } else if let Some(isk) = &entry.isk {
            let endpoint = |words: &[u32], port: u32| {
                if port == 0 && words.iter().all(|w| *w == 0) {
                    return String::new();
                }
                let address = names::ip_address(isk.family, words).unwrap_or_else(|| "?".into());
                format!("{address}:{port}")
            };
            file.path = Some(format!("socket:[{}]", isk.ino));
            file.flags = names::open_flags(isk.flags)
                .into_iter()
                .map(String::from)
                .collect();
            file.socket = Some(Socket {
                family: names::socket_family(isk.family).into(),
                socket_type: names::socket_type(isk.r#type).into(),
                protocol: names::ip_protocol(isk.proto).into(),
                state: names::socket_state(isk.state).into(),
                local: endpoint(&isk.src_addr, isk.src_port),
                remote: endpoint(&isk.dst_addr, isk.dst_port),
                inode: isk.ino,
            });
        } else if let Some(usk) = &entry.usk {
            file.path = Some(format!("socket:[{}]", usk.ino));
            file.flags = names::open_flags(usk.flags)
                .into_iter()
                .map(String::from)
                .collect();
            file.socket = Some(Socket {
                family: "unix".into(),
                socket_type: names::socket_type(usk.r#type).into(),
                protocol: String::new(),
                state: names::socket_state(usk.state).into(),
                local: names::unix_name(&usk.name, usk.name_dir.as_deref()),
                remote: if usk.peer == 0 {
                    String::new()
                } else {
                    format!("socket:[{}]", usk.peer)
                },
                inode: usk.ino,
            });
        } else if let Some(memfd) = &entry.memfd {
            file.path = self
                .memfd_inodes
                .get(&memfd.inode_id.into())
                .map(|inode| inode.name.clone());
            file.position = Some(memfd.pos);
            file.flags = names::open_flags(memfd.flags)
                .into_iter()
                .map(String::from)
                .collect();
        } else if let Some(nsf) = &entry.nsf {
            file.path = Some(format!("ns:[{}]", nsf.ns_id));
        }
        file
    }
}

/// Name of the file in which CRIU writes its dump statistics.
pub const STATS_DUMP_FILE: &str = "stats-dump";

/// Reads CRIU's dump statistics from a `stats-dump` file, `None` if it has no dump entry.
pub fn read_dump_stats(path: &Path) -> Result<Option<DumpStats>, ImageError> {
    let entries: Vec<StatsEntry> = format::read_entries(path, format::STATS)?;
    let dump = entries.into_iter().next().and_then(|stats| stats.dump);
    Ok(dump.map(|d| DumpStats {
        freezing_time_us: d.freezing_time.into(),
        frozen_time_us: d.frozen_time.into(),
        memdump_time_us: d.memdump_time.into(),
        memwrite_time_us: d.memwrite_time.into(),
        pages_scanned: d.pages_scanned,
        pages_skipped_parent: d.pages_skipped_parent,
        pages_written: d.pages_written,
        pages_lazy: d.pages_lazy,
    }))
}

fn namespaces(ids: &TaskKobjIdsEntry) -> Namespaces {
    Namespaces {
        pid: ids.pid_ns_id,
        net: ids.net_ns_id,
        ipc: ids.ipc_ns_id,
        uts: ids.uts_ns_id,
        mnt: ids.mnt_ns_id,
        user: ids.user_ns_id,
        cgroup: ids.cgroup_ns_id,
        time: ids.time_ns_id,
    }
}

fn mount(namespace: u32, m: MntEntry) -> Mount {
    Mount {
        namespace,
        mount_id: m.mnt_id,
        parent_id: m.parent_mnt_id,
        fstype: m
            .fsname
            .clone()
            .unwrap_or_else(|| fstype_name(m.fstype).to_string()),
        mountpoint: m.mountpoint,
        source: m.source,
        root: m.root,
        options: m.options,
        external: m.ext_mount.unwrap_or(false) || m.ext_key.is_some(),
    }
}

/// Name of CRIU's `fstype` enum value. CRIU 4.2.1 records 0 (`UNSUPPORTED`) for a
/// file system it has no special handling for, sometimes without `fsname` (seen for
/// a runc container's root on /dev/vda), so 0 is shown as `other`.
fn fstype_name(fstype: u32) -> &'static str {
    const NAMES: [&str; 20] = [
        "other",
        "proc",
        "sysfs",
        "devtmpfs",
        "binfmt_misc",
        "tmpfs",
        "devpts",
        "simfs",
        "pstore",
        "securityfs",
        "fusectl",
        "debugfs",
        "cgroup",
        "aufs",
        "mqueue",
        "fuse",
        "auto",
        "overlay",
        "autofs",
        "tracefs",
    ];
    match fstype {
        23 => "cgroup2",
        n => NAMES.get(n as usize).copied().unwrap_or("unknown"),
    }
}

/// Largest argv or environment area read, in bytes. Linux limits argv plus
/// environment to a quarter of RLIMIT_STACK, which is 2 MiB with the default 8 MiB stack.
const MAX_STRINGS_AREA: u64 = 2 * 1024 * 1024;

/// Reads the NUL-separated strings in `[start, end)`, or none if those pages were not dumped.
fn read_strings(map: &PageMap, start: u64, end: u64) -> Result<Vec<String>, ImageError> {
    if end <= start || end - start > MAX_STRINGS_AREA {
        return Ok(Vec::new());
    }
    let Some(bytes) = map.read_memory(start, end - start)? else {
        return Ok(Vec::new());
    };
    let mut strings: Vec<String> = bytes
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    while strings.last().is_some_and(|s| s.is_empty()) {
        strings.pop();
    }
    Ok(strings)
}
