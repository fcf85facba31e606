//! Export and import of checkpoint archives in the layout Podman and CRI-O use:
//! a tar file, usually zstd-compressed, with CRIU images under `checkpoint/` and side
//! files such as `spec.dump` and `config.dump` at the top level (file names as listed in
//! checkpointctl's `lib/metadata.go`).
//!
//! ckpt adds `ckpt-meta.json`, the checkpoint's [`CheckpointMeta`], so that an archive
//! exported by ckpt imports with its original id and metadata.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use chrono::Utc;

use super::Store;
use super::backend::{create_private, create_private_dir, sync_parent};
use super::error::StoreError;
use super::format::Manifest;
use super::pack::ChunkIndex;
use crate::model::{CheckpointId, CheckpointMeta, ContainerId};

/// File in an archive that holds ckpt's checkpoint metadata as JSON.
pub const META_FILE: &str = "ckpt-meta.json";
/// Podman's container metadata file; checkpointctl uses it to recognize a container archive.
const CONFIG_DUMP: &str = "config.dump";
/// CRIU writes this image first in every dump; an archive without it holds no checkpoint.
const INVENTORY: &str = "checkpoint/inventory.img";
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd level for exported archives (zstd's default).
const EXPORT_ZSTD_LEVEL: i32 = 3;

/// Bounds on what [`Store::import_with_limits`] accepts from an archive.
#[derive(Clone, Debug)]
pub struct ImportLimits {
    /// Largest single file, in bytes.
    pub max_file_bytes: u64,
    /// Largest sum of all file sizes, in bytes.
    pub max_total_bytes: u64,
    /// Largest number of entries.
    pub max_entries: usize,
}

impl Default for ImportLimits {
    /// Limits sized for checkpoints of processes up to 64 GiB of memory.
    fn default() -> Self {
        ImportLimits {
            max_file_bytes: 64 << 30,
            max_total_bytes: 64 << 30,
            max_entries: 100_000,
        }
    }
}

/// The subset of Podman's `config.dump` that ckpt reads and writes.
#[derive(serde::Serialize, serde::Deserialize)]
struct ConfigDump {
    id: String,
    name: String,
    #[serde(default, rename = "runtime")]
    oci_runtime: String,
    #[serde(default, rename = "createdTime")]
    created_time: Option<chrono::DateTime<Utc>>,
}

impl Store {
    /// Writes checkpoint `id` as a tar+zstd archive to `out`, atomically: the archive
    /// appears complete or not at all. Every chunk is checked while it is read.
    pub fn export(&self, id: &CheckpointId, out: &Path) -> Result<(), StoreError> {
        let started = Instant::now();
        let manifest = self.load_manifest(id)?;
        let index = self.load_index()?;

        let dir = match out.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".ckpt-export-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| StoreError::io("create temporary archive in", dir, e))?;
        let write_error = |e: io::Error| {
            unwrap_store_error(e).unwrap_or_else(|e| StoreError::io("write archive", out, e))
        };

        let mut encoder =
            zstd::Encoder::new(temp.as_file(), EXPORT_ZSTD_LEVEL).map_err(write_error)?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        encoder.multithread(workers).map_err(write_error)?;
        let mut builder = tar::Builder::new(encoder);
        let mtime = manifest.meta.created.timestamp().max(0) as u64;

        self.progress.start("exporting", manifest.logical_bytes);
        let appended: Result<(), StoreError> = manifest.files.iter().try_for_each(|file| {
            let reader = ChunkReader::new(self, &index, &manifest, file);
            append_file(&mut builder, &file.path, file.size, mtime, reader).map_err(write_error)
        });
        self.progress.finish();
        appended?;
        if !manifest.files.iter().any(|f| f.path == CONFIG_DUMP) {
            let config = ConfigDump {
                id: manifest.meta.id.to_string(),
                name: manifest.meta.container.to_string(),
                oci_runtime: manifest.meta.runtime.runtime.clone(),
                created_time: Some(manifest.meta.created),
            };
            let bytes = serde_json::to_vec_pretty(&config).unwrap_or_default();
            append_file(
                &mut builder,
                CONFIG_DUMP,
                bytes.len() as u64,
                mtime,
                &bytes[..],
            )
            .map_err(write_error)?;
        }
        let meta = serde_json::to_vec_pretty(&manifest.meta).unwrap_or_default();
        append_file(&mut builder, META_FILE, meta.len() as u64, mtime, &meta[..])
            .map_err(write_error)?;

        let encoder = builder.into_inner().map_err(write_error)?;
        encoder.finish().map_err(write_error)?;
        temp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("fsync archive", temp.path(), e))?;
        temp.persist(out)
            .map_err(|e| StoreError::io("rename archive to", out, e.error))?;
        sync_parent(out).map_err(|e| StoreError::io("fsync directory of", out, e))?;

        tracing::info!(
            checkpoint = %id,
            path = %out.display(),
            bytes = manifest.logical_bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            "checkpoint exported"
        );
        Ok(())
    }

    /// Imports a checkpoint archive with the default [`ImportLimits`].
    pub fn import(&self, archive: &Path) -> Result<Manifest, StoreError> {
        self.import_with_limits(archive, &ImportLimits::default())
    }

    /// Imports a checkpoint archive (tar or tar+zstd). Extraction is confined to a staging
    /// directory of the store: `..` and absolute paths, links, device nodes and fifos, and
    /// sizes beyond `limits` are rejected before anything is committed.
    pub fn import_with_limits(
        &self,
        archive: &Path,
        limits: &ImportLimits,
    ) -> Result<Manifest, StoreError> {
        let started = Instant::now();
        // Import's own steps are quick next to the commit, which reports bytes.
        self.progress.start("reading archive", 0);
        self.progress.finish();
        let mut file =
            File::open(archive).map_err(|e| StoreError::io("open archive", archive, e))?;
        let mut magic = [0u8; 4];
        let read = read_prefix(&mut file, &mut magic)
            .map_err(|e| StoreError::io("read archive", archive, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| StoreError::io("read archive", archive, e))?;

        let placeholder = CheckpointId::generate(Utc::now());
        let mut staging = self.stage(&placeholder)?;
        if read == 4 && magic == ZSTD_MAGIC {
            let decoder =
                zstd::Decoder::new(file).map_err(|e| StoreError::io("read archive", archive, e))?;
            extract(decoder, archive, staging.dir(), limits)?;
        } else {
            extract(BufReader::new(file), archive, staging.dir(), limits)?;
        }

        let rejected = |reason: String| StoreError::ArchiveRejected {
            archive: archive.to_path_buf(),
            reason,
        };
        if !staging.dir().join(INVENTORY).is_file() {
            return Err(rejected(format!(
                "it is not a checkpoint archive: {INVENTORY} is missing"
            )));
        }
        let meta = read_meta(archive, staging.dir(), &placeholder)?;
        staging.id = meta.id.clone();
        let manifest = self.commit(staging, meta)?;

        tracing::info!(
            checkpoint = %manifest.meta.id,
            container = %manifest.meta.container,
            path = %archive.display(),
            bytes = manifest.logical_bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            "checkpoint imported"
        );
        Ok(manifest)
    }
}

fn read_prefix(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data)
}

/// Recovers a [`StoreError`] that travelled through an `io::Error` (from [`ChunkReader`]).
fn unwrap_store_error(error: io::Error) -> Result<StoreError, io::Error> {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<StoreError>())
    {
        let inner = error
            .into_inner()
            .unwrap_or_else(|| unreachable!("checked above"));
        return Ok(*inner
            .downcast::<StoreError>()
            .unwrap_or_else(|_| unreachable!("checked above")));
    }
    Err(error)
}

/// Reads one stored file chunk by chunk, checking each chunk and, at the end, the file hash.
struct ChunkReader<'a> {
    store: &'a Store,
    index: &'a ChunkIndex,
    manifest: &'a Manifest,
    file: &'a super::format::FileEntry,
    next_chunk: usize,
    buffer: Vec<u8>,
    position: usize,
    hasher: blake3::Hasher,
}

impl<'a> ChunkReader<'a> {
    fn new(
        store: &'a Store,
        index: &'a ChunkIndex,
        manifest: &'a Manifest,
        file: &'a super::format::FileEntry,
    ) -> Self {
        ChunkReader {
            store,
            index,
            manifest,
            file,
            next_chunk: 0,
            buffer: Vec::new(),
            position: 0,
            hasher: blake3::Hasher::new(),
        }
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.position == self.buffer.len() {
            let Some(chunk) = self.file.chunks.get(self.next_chunk) else {
                let actual = super::format::ChunkHash(*self.hasher.finalize().as_bytes());
                if actual != self.file.blake3 {
                    return Err(io::Error::other(StoreError::CorruptFile {
                        checkpoint: self.manifest.meta.id.clone(),
                        file: self.file.path.clone(),
                        reason: format!(
                            "content hashes to {actual}, manifest expects {}",
                            self.file.blake3
                        ),
                    }));
                }
                return Ok(0);
            };
            let data = self
                .index
                .read_chunk(self.store.backend.as_ref(), &chunk.hash)
                .map_err(|reason| {
                    io::Error::other(StoreError::CorruptChunk {
                        checkpoint: self.manifest.meta.id.clone(),
                        file: self.file.path.clone(),
                        index: self.next_chunk,
                        hash: chunk.hash.to_hex(),
                        reason,
                    })
                })?;
            self.hasher.update(&data);
            self.store.progress.advance(data.len() as u64);
            self.buffer = data;
            self.position = 0;
            self.next_chunk += 1;
        }
        let count = out.len().min(self.buffer.len() - self.position);
        out[..count].copy_from_slice(&self.buffer[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

/// Extracts the regular files and directories of a tar stream under `dest`, rejecting
/// every entry that could write outside it or that is not plain data.
fn extract(
    reader: impl Read,
    archive: &Path,
    dest: &Path,
    limits: &ImportLimits,
) -> Result<(), StoreError> {
    let rejected = |reason: String| StoreError::ArchiveRejected {
        archive: archive.to_path_buf(),
        reason,
    };
    let read_error = |e: io::Error| StoreError::io("read archive", archive, e);
    let mut tar = tar::Archive::new(reader);
    let mut total = 0u64;
    let mut count = 0usize;

    for entry in tar.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        count += 1;
        if count > limits.max_entries {
            return Err(rejected(format!(
                "it has more than {} entries",
                limits.max_entries
            )));
        }
        let path = entry.path().map_err(read_error)?.into_owned();
        let relative = confined_path(&path).map_err(rejected)?;
        let shown = path.display();

        let kind = entry.header().entry_type();
        if relative.as_os_str().is_empty() && kind != tar::EntryType::Directory {
            return Err(rejected(format!("entry {shown:?} has no file name")));
        }
        match kind {
            tar::EntryType::Directory => {
                let dir = dest.join(&relative);
                create_private_dir(&dir)
                    .map_err(|e| StoreError::io("create directory", &dir, e))?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = if kind == tar::EntryType::Symlink {
                    "symlink"
                } else {
                    "hard link"
                };
                let target = entry
                    .link_name()
                    .map_err(read_error)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let base = if kind == tar::EntryType::Symlink {
                    relative.parent().unwrap_or(Path::new(""))
                } else {
                    Path::new("")
                };
                if escapes(base, &target) {
                    return Err(rejected(format!(
                        "{link} {shown} -> {} escapes the archive",
                        target.display()
                    )));
                }
                return Err(rejected(format!(
                    "{link} {shown} -> {} is not supported: a checkpoint holds only regular files",
                    target.display()
                )));
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(rejected(format!("device node {shown} is not allowed")));
            }
            tar::EntryType::Fifo => return Err(rejected(format!("fifo {shown} is not allowed"))),
            other => {
                return Err(rejected(format!(
                    "entry {shown} has unsupported type {other:?}"
                )));
            }
        }

        let size = entry.header().size().map_err(read_error)?;
        if size > limits.max_file_bytes {
            return Err(rejected(format!(
                "entry {shown} is {size} bytes, above the limit of {} bytes",
                limits.max_file_bytes
            )));
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(rejected(format!(
                "its files add up to more than the limit of {} bytes",
                limits.max_total_bytes
            )));
        }

        let target = dest.join(&relative);
        if let Some(parent) = target.parent() {
            create_private_dir(parent)
                .map_err(|e| StoreError::io("create directory", parent, e))?;
        }
        let mut out = match create_private(&target) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(rejected(format!("entry {shown} appears twice")));
            }
            Err(e) => return Err(StoreError::io("create", &target, e)),
        };
        let copied = io::copy(&mut (&mut entry).take(size), &mut out).map_err(|e| {
            if super::error::is_no_space(&e) {
                StoreError::NoSpace {
                    object: format!("imported file {shown}"),
                    root: dest.to_path_buf(),
                }
            } else {
                StoreError::io("extract archive entry to", &target, e)
            }
        })?;
        if copied != size {
            return Err(rejected(format!(
                "entry {shown} is truncated: {copied} of {size} bytes"
            )));
        }
    }
    Ok(())
}

/// Returns `path` as a relative path without `.` components, or why it would leave the
/// extraction directory. The archive root itself (`./`) comes back empty.
fn confined_path(path: &Path) -> Result<PathBuf, String> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("entry {} contains '..'", path.display())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry {} is an absolute path", path.display()));
            }
        }
    }
    Ok(relative)
}

/// Whether a link at directory `base` (relative to the archive root) pointing at `target`
/// would resolve outside the archive root.
fn escapes(base: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth = base.components().count() as isize;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Builds the imported checkpoint's metadata from `ckpt-meta.json`, or else from Podman's
/// `config.dump`, and removes `ckpt-meta.json` from the staged files.
fn read_meta(
    archive: &Path,
    dir: &Path,
    fresh_id: &CheckpointId,
) -> Result<CheckpointMeta, StoreError> {
    let missing = |reason: String| StoreError::ArchiveMetadata {
        archive: archive.to_path_buf(),
        reason,
    };
    let meta_path = dir.join(META_FILE);
    if meta_path.is_file() {
        let bytes = fs::read(&meta_path).map_err(|e| StoreError::io("read", &meta_path, e))?;
        let meta: CheckpointMeta = serde_json::from_slice(&bytes)
            .map_err(|e| missing(format!("invalid {META_FILE}: {e}")))?;
        fs::remove_file(&meta_path).map_err(|e| StoreError::io("remove", &meta_path, e))?;
        return Ok(meta);
    }

    let config_path = dir.join(CONFIG_DUMP);
    let bytes = fs::read(&config_path)
        .map_err(|_| missing(format!("it has neither {META_FILE} nor {CONFIG_DUMP}")))?;
    let config: ConfigDump = serde_json::from_slice(&bytes)
        .map_err(|e| missing(format!("invalid {CONFIG_DUMP}: {e}")))?;
    let container: ContainerId = config
        .name
        .parse()
        .map_err(|e| missing(format!("container name in {CONFIG_DUMP} is unusable: {e}")))?;
    Ok(CheckpointMeta {
        id: fresh_id.clone(),
        container,
        created: Utc::now(),
        criu_version: String::new(),
        kernel: String::new(),
        options: Default::default(),
        dump_stats: Default::default(),
        runtime: crate::model::RuntimeInfo {
            runtime: config.oci_runtime,
            ..Default::default()
        },
        health_passing: None,
    })
}
