//! The deduplicating, verified, crash-safe checkpoint store.
//!
//! A checkpoint's files (CRIU images under `checkpoint/`, plus side files such as
//! `spec.dump`) are cut into chunks. Each chunk is named by the BLAKE3 hash of its bytes,
//! compressed with zstd and stored once, however many checkpoints share it. CRIU page
//! images (`pages-*.img`) are cut every 8 KiB, so one changed page costs one small chunk;
//! other files are cut by FastCDC. Chunks are appended to pack files, and a manifest per
//! checkpoint lists every file and its chunks.
//!
//! # On-disk layout (format version 1)
//!
//! ```text
//! <root>/                        0700
//!   FORMAT                       "ckpt-store 1\n"
//!   lock                         flock: commits hold it shared, gc and fsck exclusive
//!   manifests/<id>.manifest      one per committed checkpoint
//!   packs/<blake3>.pack          chunk records; named by the hash of the whole pack
//!   packs/<blake3>.idx           where each chunk of that pack sits
//!   staging/<id>.<nonce>/        image directories being written (CRIU's target)
//!   staging/<id>.<nonce>.lock    held by the process that owns the staging directory
//!   tmp/                         temporary files before their atomic rename
//! ```
//!
//! Manifest: a header line `ckpt-manifest 1 blake3=<hex>` and a JSON body ([`Manifest`]);
//! the checksum covers the body.
//!
//! Pack: `CKPTPACK`, a little-endian u32 version (1), then records. A record is the chunk
//! hash (32 bytes), its raw length (u32), its stored length (u32), a codec byte (0 raw,
//! 1 zstd) and the stored bytes.
//!
//! Pack index: `CKPTPIDX`, u32 version (1), u32 entry count, then per chunk its hash (32),
//! record offset (u64), raw length (u32), stored length (u32) and codec (u8), and finally
//! the BLAKE3 hash (32 bytes) of everything before it.
//!
//! # Crash safety
//!
//! Every file is written under a temporary name, flushed, renamed into place, and its
//! directory flushed. The order of publication keeps the invariants that readers rely on:
//! a pack is published before its index, and every pack a manifest needs is indexed before
//! the manifest is published. A crash therefore leaves at worst unreferenced packs, packs
//! without an index, temporary files and staging directories; [`Store::fsck`] removes them.
//! Garbage collection takes the store lock exclusively, so it never runs while a commit
//! has chunks in flight whose manifest is not yet published.
//!
//! Every read checks the checksums of manifests and indexes and the hash of every chunk
//! and file. Details and measurements: docs/store-format.md.

mod archive;
mod backend;
mod error;
mod format;
mod ingest;
mod maintenance;
mod pack;
pub mod progress;

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use archive::{ImportLimits, META_FILE};
pub use backend::{Backend, LocalDir};
pub use error::StoreError;
pub use format::{ChunkHash, ChunkRef, FileEntry, Manifest};
pub use maintenance::{CheckpointCheck, FsckReport, GcReport, StoreStats, VerifyReport};

use backend::{create_private, create_private_dir, sync_dir};
use ingest::StagedFile;
use pack::ChunkIndex;

use crate::model::{CheckpointId, CheckpointMeta, ContainerId};

const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "lock";
const MANIFESTS: &str = "manifests";
const STAGING: &str = "staging";
const TMP: &str = "tmp";
const MANIFEST_SUFFIX: &str = ".manifest";

/// A checkpoint store rooted at one directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    backend: Box<dyn Backend>,
    progress: progress::ProgressHandle,
}

/// A fresh image directory inside the store, where CRIU writes a checkpoint's images.
/// Dropping it without [`Store::commit`] removes the directory.
#[derive(Debug)]
pub struct Staging {
    id: CheckpointId,
    dir: PathBuf,
    /// zstd level for the chunks this checkpoint adds.
    compression_level: i32,
    lock_path: PathBuf,
    /// Held for the staging directory's lifetime; fsck removes only unlocked ones.
    _lock: File,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn id(&self) -> &CheckpointId {
        &self.id
    }

    /// Sets the zstd level (1 to 19) for the chunks this checkpoint adds; 3 by default.
    pub fn set_compression_level(&mut self, level: i32) {
        self.compression_level = level.clamp(1, 19);
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.dir)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.dir.display(), %error, "failed to remove staging directory");
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Kind of lock on the store's lock file.
#[derive(Clone, Copy)]
enum LockMode {
    /// Commits and imports: many at once.
    Shared,
    /// Garbage collection and fsck: alone.
    Exclusive,
}

impl Store {
    /// Creates the store (0700 directories) if missing and checks its format version.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for dir in [
            root.to_path_buf(),
            root.join(MANIFESTS),
            root.join(pack::PACKS),
            root.join(STAGING),
            root.join(TMP),
        ] {
            create_private_dir(&dir).map_err(|e| {
                StoreError::write(
                    || format!("directory {}", dir.display()),
                    root,
                    "create store directory",
                    &dir,
                    e,
                )
            })?;
        }
        let format_path = root.join(FORMAT_FILE);
        if !format_path.exists() {
            let store = Store::with_backend(root);
            store
                .backend
                .put_bytes(
                    FORMAT_FILE,
                    format!("{} {}\n", format::STORE_MAGIC, format::STORE_VERSION).as_bytes(),
                )
                .map_err(|e| {
                    StoreError::write(|| "the FORMAT file".into(), root, "write", &format_path, e)
                })?;
        }
        Store::open_existing(root)
    }

    /// Opens an existing store. A missing or unreadable root, or a directory that is not a
    /// store of this format version, is an error that names the path.
    pub fn open_existing(root: &Path) -> Result<Store, StoreError> {
        let not_readable = |e: io::Error| StoreError::NotReadable {
            path: root.to_path_buf(),
            reason: describe_io(&e),
        };
        let metadata = fs::metadata(root).map_err(not_readable)?;
        if !metadata.is_dir() {
            return Err(StoreError::NotReadable {
                path: root.to_path_buf(),
                reason: "not a directory".to_string(),
            });
        }
        fs::read_dir(root.join(MANIFESTS)).map_err(not_readable)?;

        let format_path = root.join(FORMAT_FILE);
        let text = match fs::read_to_string(&format_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotAStore {
                    path: root.to_path_buf(),
                    reason: "it has no FORMAT file".to_string(),
                });
            }
            Err(e) => return Err(not_readable(e)),
        };
        let mut words = text.split_whitespace();
        if words.next() != Some(format::STORE_MAGIC) {
            return Err(StoreError::NotAStore {
                path: root.to_path_buf(),
                reason: format!(
                    "its FORMAT file does not start with {:?}",
                    format::STORE_MAGIC
                ),
            });
        }
        let version = words.next().unwrap_or_default();
        if version != format::STORE_VERSION.to_string() {
            return Err(StoreError::UnsupportedVersion {
                path: root.to_path_buf(),
                found: version.to_string(),
                expected: format::STORE_VERSION,
            });
        }
        Ok(Store::with_backend(root))
    }

    fn with_backend(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
            backend: Box::new(LocalDir::new(root, &root.join(TMP))),
            progress: progress::ProgressHandle::silent(),
        }
    }

    /// Sends progress reports of later operations to `progress`.
    pub fn set_progress(&mut self, progress: progress::ProgressHandle) {
        self.progress = progress;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a fresh 0700 staging directory for checkpoint `id`, on the store's file system.
    pub fn stage(&self, id: &CheckpointId) -> Result<Staging, StoreError> {
        self.stage_in(id, &self.root.join(STAGING))
    }

    /// Creates a fresh 0700 staging directory for checkpoint `id` under `parent`,
    /// which may be on another file system, such as a private tmpfs directory.
    ///
    /// The staging lock stays in the store and records the directory's path, so
    /// that fsck finds and removes the directory if its writer dies.
    pub fn stage_in(&self, id: &CheckpointId, parent: &Path) -> Result<Staging, StoreError> {
        // fsck removes unlocked staging entries under the exclusive lock, so hold the
        // shared lock until this staging directory's own lock is taken.
        let _store_lock = self.lock(LockMode::Shared)?;
        let nonce = rand::random::<u32>() & 0x00ff_ffff;
        let name = format!("{id}.{nonce:06x}");
        let base = parent.join(&name);
        let lock_path = self.root.join(STAGING).join(format!("{name}.lock"));
        let mut lock = create_private(&lock_path)
            .map_err(|e| self.write_error("a staging lock", "create", &lock_path, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| StoreError::io("lock", &lock_path, e.into()))?;
        if let Err(e) = io::Write::write_all(&mut lock, base.as_os_str().as_encoded_bytes()) {
            let _ = fs::remove_file(&lock_path);
            return Err(self.write_error("a staging lock", "write", &lock_path, e));
        }
        if let Err(e) = create_private_dir(&base) {
            let _ = fs::remove_file(&lock_path);
            return Err(self.write_error("a staging directory", "create", &base, e));
        }
        Ok(Staging {
            id: id.clone(),
            dir: base,
            compression_level: ingest::DEFAULT_ZSTD_LEVEL,
            lock_path,
            _lock: lock,
        })
    }

    /// Stores every regular file under the staging directory, publishes the manifest
    /// atomically and removes the staging directory.
    pub fn commit(&self, staging: Staging, meta: CheckpointMeta) -> Result<Manifest, StoreError> {
        let started = Instant::now();
        if meta.id != staging.id {
            return Err(StoreError::InvalidStaging {
                path: staging.dir.clone(),
                reason: format!(
                    "it was staged for checkpoint {} but the metadata names {}",
                    staging.id, meta.id
                ),
            });
        }
        let files = collect_staged_files(&staging.dir)?;

        // Hold the lock from loading the chunk index until the manifest is published,
        // so that gc cannot remove a chunk this commit relies on without writing it.
        let _lock = self.lock(LockMode::Shared)?;
        if self.manifest_exists(&meta.id)? {
            return Err(StoreError::AlreadyExists { id: meta.id });
        }
        let known = self.load_index()?;

        let total: u64 = files
            .iter()
            .filter_map(|f| fs::metadata(&f.absolute).ok())
            .map(|m| m.len())
            .sum();
        self.progress.start("storing", total);
        let output = ingest::ingest(
            &self.root,
            &self.root.join(TMP),
            self.backend.as_ref(),
            &known,
            &files,
            staging.compression_level,
            &*self.progress,
        );
        self.progress.finish();
        let output = output?;
        let manifest = Manifest {
            logical_bytes: output.files.iter().map(|f| f.size).sum(),
            chunk_count: output.files.iter().map(|f| f.chunks.len() as u64).sum(),
            added_bytes: output.added_bytes,
            files: output.files,
            meta,
        };

        let key = manifest_key(&manifest.meta.id);
        self.backend
            .put_bytes(&key, &format::encode_manifest(&manifest))
            .map_err(|e| {
                self.write_error(
                    &format!("manifest of checkpoint {}", manifest.meta.id),
                    "publish manifest",
                    self.backend.location(&key),
                    e,
                )
            })?;
        drop(staging);

        for pack in &output.packs {
            tracing::debug!(checkpoint = %manifest.meta.id, pack = %pack.name, bytes = pack.bytes, "pack published");
        }
        tracing::info!(
            checkpoint = %manifest.meta.id,
            container = %manifest.meta.container,
            bytes = manifest.logical_bytes,
            added_bytes = manifest.added_bytes,
            packs = output.packs.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "checkpoint committed to store"
        );
        Ok(manifest)
    }

    /// Committed checkpoints, newest first (by creation time, then id). Manifests that
    /// fail their checksum are left out with a warning; `fsck` reports them.
    ///
    /// Listed manifests carry no file list (`files` is empty); [`Store::resolve`]
    /// returns a checkpoint's full manifest.
    pub fn list(&self, container: Option<&ContainerId>) -> Result<Vec<Manifest>, StoreError> {
        let mut manifests = Vec::new();
        for id in self.manifest_ids()? {
            match self.load_manifest(&id) {
                Ok(mut manifest) => {
                    if container.is_none_or(|c| *c == manifest.meta.container) {
                        // A 1 GiB checkpoint lists about 131,000 chunks; keeping every
                        // listed manifest's chunk lists made the daemon's memory grow
                        // with image size and checkpoint count.
                        manifest.files = Vec::new();
                        manifests.push(manifest);
                    }
                }
                Err(StoreError::CorruptManifest { path, reason }) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping corrupt manifest");
                }
                // Deleted between listing and reading.
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        manifests.sort_by(|a, b| (b.meta.created, &b.meta.id).cmp(&(a.meta.created, &a.meta.id)));
        Ok(manifests)
    }

    /// Finds a checkpoint by its full id or a unique prefix of it.
    pub fn resolve(&self, id_or_prefix: &str) -> Result<Manifest, StoreError> {
        let not_found = || StoreError::NotFound {
            input: id_or_prefix.to_string(),
        };
        if id_or_prefix.is_empty() {
            return Err(not_found());
        }
        let ids = self.manifest_ids()?;
        if let Some(id) = ids.iter().find(|id| id.as_str() == id_or_prefix) {
            return self.load_manifest(id);
        }
        let matches: Vec<&CheckpointId> = ids
            .iter()
            .filter(|id| id.as_str().starts_with(id_or_prefix))
            .collect();
        match matches.as_slice() {
            [] => Err(not_found()),
            [id] => self.load_manifest(id),
            _ => Err(StoreError::Ambiguous {
                input: id_or_prefix.to_string(),
                candidates: matches.iter().map(|id| id.to_string()).collect(),
            }),
        }
    }

    /// Rebuilds the checkpoint's files under `dest` (0700 directories, 0600 files),
    /// checking every chunk and file hash. On failure the files written so far are removed.
    pub fn materialize(&self, id: &CheckpointId, dest: &Path) -> Result<(), StoreError> {
        let started = Instant::now();
        let manifest = self.load_manifest(id)?;
        let index = self.load_index()?;
        create_private_dir(dest).map_err(|e| StoreError::io("create directory", dest, e))?;

        let mut written = Vec::new();
        self.progress.start("unpacking", manifest.logical_bytes);
        let result: Result<(), StoreError> = (|| {
            for file in &manifest.files {
                let path = dest.join(&file.path);
                if let Some(parent) = path.parent() {
                    create_private_dir(parent)
                        .map_err(|e| StoreError::io("create directory", parent, e))?;
                }
                let out = create_private(&path).map_err(|e| StoreError::io("create", &path, e))?;
                written.push(path.clone());
                let mut out = io::BufWriter::with_capacity(1 << 20, out);
                self.read_file(&index, &manifest, file, &mut out)
                    .and_then(|()| out.flush().map_err(|e| StoreError::io("write", &path, e)))?;
            }
            Ok(())
        })();
        self.progress.finish();
        if result.is_err() {
            for path in written {
                let _ = fs::remove_file(path);
            }
        }
        result?;

        tracing::info!(
            checkpoint = %id,
            path = %dest.display(),
            bytes = manifest.logical_bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            "checkpoint materialized"
        );
        Ok(())
    }

    /// Removes a checkpoint's manifest. Its chunks stay until [`Store::gc`].
    pub fn delete(&self, id: &CheckpointId) -> Result<(), StoreError> {
        if !self.manifest_exists(id)? {
            return Err(StoreError::NotFound {
                input: id.to_string(),
            });
        }
        let key = manifest_key(id);
        self.backend
            .delete(&key)
            .map_err(|e| StoreError::io("delete manifest", self.backend.location(&key), e))?;
        tracing::info!(checkpoint = %id, "checkpoint deleted");
        Ok(())
    }

    /// Streams one file of `manifest` into `out`, checking each chunk and the whole file.
    ///
    /// Worker threads read, decompress and check chunks; worker `k` takes chunks
    /// `k`, `k + N`, `k + 2N`... and sends them on its own bounded channel, so this
    /// thread receives them in order and memory stays bounded.
    fn read_file(
        &self,
        index: &ChunkIndex,
        manifest: &Manifest,
        file: &FileEntry,
        out: &mut dyn Write,
    ) -> Result<(), StoreError> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8)
            .min(file.chunks.len().max(1));
        let read_chunk = |position: usize| -> Result<Vec<u8>, StoreError> {
            let chunk = &file.chunks[position];
            let corrupt = |reason: String| StoreError::CorruptChunk {
                checkpoint: manifest.meta.id.clone(),
                file: file.path.clone(),
                index: position,
                hash: chunk.hash.to_hex(),
                reason,
            };
            let data = index
                .read_chunk(self.backend.as_ref(), &chunk.hash)
                .map_err(corrupt)?;
            if data.len() != chunk.size as usize {
                return Err(corrupt(format!(
                    "has {} bytes but the manifest expects {}",
                    data.len(),
                    chunk.size
                )));
            }
            Ok(data)
        };

        let mut hasher = blake3::Hasher::new();
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let mut receivers = Vec::with_capacity(workers);
            for worker in 0..workers {
                let (sender, receiver) = std::sync::mpsc::sync_channel(4);
                receivers.push(receiver);
                let read_chunk = &read_chunk;
                scope.spawn(move || {
                    for position in (worker..file.chunks.len()).step_by(workers) {
                        let result = read_chunk(position);
                        let failed = result.is_err();
                        // A closed channel means the reader stopped early.
                        if sender.send(result).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            for position in 0..file.chunks.len() {
                let data = receivers[position % workers].recv().map_err(|_| {
                    StoreError::io(
                        "read chunk of",
                        Path::new(&file.path),
                        io::Error::other("chunk reader stopped"),
                    )
                })??;
                hasher.update(&data);
                out.write_all(&data)
                    .map_err(|e| StoreError::io("write restored file", &file.path, e))?;
                self.progress.advance(data.len() as u64);
            }
            Ok(())
        })?;

        let actual = ChunkHash(*hasher.finalize().as_bytes());
        if actual != file.blake3 {
            return Err(StoreError::CorruptFile {
                checkpoint: manifest.meta.id.clone(),
                file: file.path.clone(),
                reason: format!(
                    "content hashes to {actual}, manifest expects {}",
                    file.blake3
                ),
            });
        }
        Ok(())
    }

    fn load_index(&self) -> Result<ChunkIndex, StoreError> {
        let (index, damaged) = ChunkIndex::load(self.backend.as_ref())?;
        for (path, reason) in damaged {
            tracing::warn!(path = %path.display(), %reason, "ignoring damaged pack index");
        }
        Ok(index)
    }

    fn manifest_ids(&self) -> Result<Vec<CheckpointId>, StoreError> {
        let names = self.backend.list(MANIFESTS).map_err(|e| {
            StoreError::io("list manifests in", self.backend.location(MANIFESTS), e)
        })?;
        Ok(names
            .iter()
            .filter_map(|name| name.strip_suffix(MANIFEST_SUFFIX))
            .filter_map(|stem| stem.parse().ok())
            .collect())
    }

    fn manifest_exists(&self, id: &CheckpointId) -> Result<bool, StoreError> {
        let path = self.backend.location(&manifest_key(id));
        path.try_exists()
            .map_err(|e| StoreError::io("check manifest", &path, e))
    }

    fn load_manifest(&self, id: &CheckpointId) -> Result<Manifest, StoreError> {
        let key = manifest_key(id);
        let path = self.backend.location(&key);
        let bytes = match self.backend.get(&key) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    input: id.to_string(),
                });
            }
            Err(e) => return Err(StoreError::io("read manifest", &path, e)),
        };
        let manifest =
            format::decode_manifest(&bytes).map_err(|reason| StoreError::CorruptManifest {
                path: path.clone(),
                reason,
            })?;
        if manifest.meta.id != *id {
            return Err(StoreError::CorruptManifest {
                path,
                reason: format!("it describes checkpoint {}", manifest.meta.id),
            });
        }
        Ok(manifest)
    }

    /// Takes the store lock; the lock is released when the returned file is closed,
    /// including when the process is killed.
    fn lock(&self, mode: LockMode) -> Result<File, StoreError> {
        let path = self.root.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| self.write_error("the lock file", "open", &path, e))?;
        let operation = match mode {
            LockMode::Shared => rustix::fs::FlockOperation::LockShared,
            LockMode::Exclusive => rustix::fs::FlockOperation::LockExclusive,
        };
        rustix::fs::flock(&file, operation).map_err(|e| StoreError::io("lock", &path, e.into()))?;
        Ok(file)
    }

    fn write_error(
        &self,
        object: &str,
        step: &'static str,
        path: impl AsRef<Path>,
        e: io::Error,
    ) -> StoreError {
        StoreError::write(|| object.to_string(), &self.root, step, path, e)
    }
}

fn manifest_key(id: &CheckpointId) -> String {
    format!("{MANIFESTS}/{id}{MANIFEST_SUFFIX}")
}

/// Lists the regular files under a staging directory in path order. Symbolic links and
/// special files are rejected: CRIU writes neither, and storing them could leak host data.
fn collect_staged_files(dir: &Path) -> Result<Vec<StagedFile>, StoreError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            StoreError::io("walk staging directory", path, e.into())
        })?;
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let Some(relative) = relative.to_str() else {
            return Err(StoreError::InvalidStaging {
                path: dir.to_path_buf(),
                reason: format!("file name {:?} is not UTF-8", relative),
            });
        };
        if !file_type.is_file() {
            return Err(StoreError::InvalidStaging {
                path: dir.to_path_buf(),
                reason: format!("{relative} is not a regular file"),
            });
        }
        let metadata = entry
            .metadata()
            .map_err(|e| StoreError::io("stat", entry.path(), e.into()))?;
        files.push(StagedFile {
            path: relative.to_string(),
            absolute: entry.path().to_path_buf(),
            mode: metadata.mode() & 0o7777,
        });
    }
    Ok(files)
}

/// Describes an I/O error in lowercase words, without the OS error number.
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::NotADirectory => "not a directory".to_string(),
        _ => error.to_string(),
    }
}

/// Flushes `dir` so that entries renamed or removed in it survive a crash.
fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    sync_dir(dir).map_err(|e| StoreError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests;
