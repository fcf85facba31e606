//! Verification, garbage collection, fsck and statistics.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::error::StoreError;
use super::format::{self, ChunkHash, RecordLocation};
use super::pack::{self, PACK_TARGET_BYTES, PACKS, PackWriter};
use super::{LockMode, MANIFESTS, STAGING, Store, TMP, sync_directory};
use crate::model::CheckpointId;

/// A pack whose live records take less than this share of its bytes is rewritten by gc.
const REWRITE_BELOW_LIVE_SHARE: f64 = 0.5;

/// Result of [`Store::verify`].
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub checkpoints: Vec<CheckpointCheck>,
}

/// Outcome of verifying one checkpoint.
#[derive(Debug, Serialize)]
pub struct CheckpointCheck {
    pub id: String,
    /// Bytes read and checked.
    pub bytes: u64,
    /// Failure with its cause chain; `None` when the checkpoint verified.
    pub error: Option<String>,
}

impl VerifyReport {
    pub fn all_ok(&self) -> bool {
        self.checkpoints.iter().all(|c| c.error.is_none())
    }
}

/// Result of [`Store::gc`].
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub packs_deleted: usize,
    pub packs_rewritten: usize,
    /// Pack bytes removed minus pack bytes written by rewrites.
    pub bytes_freed: u64,
    pub temp_files_removed: usize,
    pub duration_ms: u64,
}

/// Result of [`Store::fsck`]. With `repair`, every item listed has been fixed, except
/// corrupt manifests and missing chunks, which have no copy to restore from.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub repaired: bool,
    /// Staging directories whose owning process is gone.
    pub stale_staging: Vec<PathBuf>,
    /// Temporary files left by an interrupted write.
    pub temp_files: Vec<PathBuf>,
    /// Packs without an index: written by a commit that did not finish.
    pub orphan_packs: Vec<String>,
    /// Pack indexes that failed their checksum, with the reason; repair rebuilds them from the pack.
    pub damaged_indexes: Vec<(String, String)>,
    /// Packs that no committed checkpoint refers to.
    pub unreferenced_packs: Vec<String>,
    /// Manifests that failed their checksum; repair renames them to `*.manifest.corrupt`.
    pub corrupt_manifests: Vec<(PathBuf, String)>,
    /// Checkpoints that refer to chunks no pack holds, with the number of such chunks.
    pub missing_chunks: Vec<(String, usize)>,
}

impl FsckReport {
    /// Returns true when fsck found nothing to report.
    pub fn is_clean(&self) -> bool {
        self.stale_staging.is_empty()
            && self.temp_files.is_empty()
            && self.orphan_packs.is_empty()
            && self.damaged_indexes.is_empty()
            && self.unreferenced_packs.is_empty()
            && self.corrupt_manifests.is_empty()
            && self.missing_chunks.is_empty()
    }
}

/// Result of [`Store::stats`].
#[derive(Debug, Default, Serialize)]
pub struct StoreStats {
    pub checkpoints: usize,
    pub containers: usize,
    /// Sum of the checkpoints' logical sizes: what full copies would take uncompressed.
    pub logical_bytes: u64,
    /// Bytes of all pack files.
    pub stored_bytes: u64,
    pub packs: usize,
    pub unique_chunks: usize,
    /// `logical_bytes / stored_bytes`: how many times smaller the store is than full copies.
    pub dedup_ratio: f64,
}

/// Chunks referenced by the committed checkpoints, and the manifests that could not be read.
struct References {
    chunks: HashSet<ChunkHash>,
    corrupt: Vec<(PathBuf, String)>,
    missing: Vec<(String, usize)>,
}

impl Store {
    /// Reads back every chunk of one checkpoint, or of all, and checks every hash.
    pub fn verify(&self, id: Option<&CheckpointId>) -> Result<VerifyReport, StoreError> {
        let explicit = id.is_some();
        let ids = match id {
            Some(id) => vec![id.clone()],
            None => self.manifest_ids()?,
        };
        let index = self.load_index()?;
        let mut report = VerifyReport::default();
        self.progress.start("verifying", 0);
        for id in ids {
            let started = Instant::now();
            let outcome = self.load_manifest(&id).and_then(|manifest| {
                for file in &manifest.files {
                    self.read_file(&index, &manifest, file, &mut io::sink())?;
                }
                Ok(manifest.logical_bytes)
            });
            // A checkpoint deleted since the listing is not a failure, but a named one is.
            if matches!(outcome, Err(StoreError::NotFound { .. })) {
                match explicit {
                    true => {
                        return Err(StoreError::NotFound {
                            input: id.to_string(),
                        });
                    }
                    false => continue,
                }
            }
            let check = match outcome {
                Ok(bytes) => CheckpointCheck {
                    id: id.to_string(),
                    bytes,
                    error: None,
                },
                Err(e) => {
                    tracing::debug!(checkpoint = %id, error = %crate::error::chain(&e), "checkpoint failed verification");
                    CheckpointCheck {
                        id: id.to_string(),
                        bytes: 0,
                        error: Some(crate::error::chain(&e)),
                    }
                }
            };
            tracing::debug!(checkpoint = %id, duration_ms = started.elapsed().as_millis() as u64, "checkpoint verified");
            report.checkpoints.push(check);
        }
        self.progress.finish();
        Ok(report)
    }

    /// Removes packs that no checkpoint refers to and rewrites packs that are mostly
    /// unreferenced. Waits for in-flight commits, which hold the store lock shared.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let started = Instant::now();
        self.progress.start("collecting garbage", 0);
        let result = self.collect_garbage(started);
        self.progress.finish();
        result
    }

    fn collect_garbage(&self, started: Instant) -> Result<GcReport, StoreError> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let references = self.collect_references()?;
        if let Some((path, reason)) = references.corrupt.first() {
            // A corrupt manifest's chunks are unknown, so collecting could destroy them.
            return Err(StoreError::CorruptManifest {
                path: path.clone(),
                reason: format!(
                    "{reason}; gc stopped before deleting anything (run `ckpt fsck --repair` to set it aside)"
                ),
            });
        }

        let mut report = GcReport {
            temp_files_removed: self.remove_temp_files()?.len(),
            ..Default::default()
        };
        let (indexed, orphans) = self.pack_names()?;
        for name in orphans {
            report.bytes_freed += self.delete_pack(&name, false)?;
            report.packs_deleted += 1;
        }

        for name in indexed {
            let entries = match pack::load_pack_entries(self.backend.as_ref(), &name) {
                Ok(entries) => entries,
                Err(reason) => {
                    tracing::warn!(pack = %name, %reason, "skipping pack with damaged index; run fsck --repair");
                    continue;
                }
            };
            let pack_bytes = self.pack_size(&name)?;
            let live: Vec<_> = entries
                .iter()
                .filter(|(hash, _)| references.chunks.contains(hash))
                .cloned()
                .collect();
            if live.is_empty() {
                report.bytes_freed += self.delete_pack(&name, true)?;
                report.packs_deleted += 1;
                continue;
            }
            let live_bytes: u64 = live.iter().map(|(_, l)| l.record_len()).sum();
            if (live_bytes as f64) < REWRITE_BELOW_LIVE_SHARE * pack_bytes as f64 {
                let written = self.rewrite_pack(&name, &live)?;
                report.bytes_freed += self.delete_pack(&name, true)?.saturating_sub(written);
                report.packs_rewritten += 1;
            }
        }

        report.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            packs_deleted = report.packs_deleted,
            packs_rewritten = report.packs_rewritten,
            bytes = report.bytes_freed,
            duration_ms = report.duration_ms,
            "garbage collection finished"
        );
        Ok(report)
    }

    /// Finds leftovers of interrupted operations and damage; with `repair`, fixes them
    /// without touching any committed checkpoint that still verifies.
    pub fn fsck(&self, repair: bool) -> Result<FsckReport, StoreError> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let mut report = FsckReport {
            repaired: repair,
            ..Default::default()
        };

        report.stale_staging = self.stale_staging(repair)?;
        report.temp_files = if repair {
            self.remove_temp_files()?
        } else {
            self.list_dir(&self.root.join(TMP))?
        };

        // Packs: orphans, damaged indexes (rebuilt from the pack when repairing).
        let (indexed, orphans) = self.pack_names()?;
        for name in &orphans {
            if repair {
                self.delete_pack(name, false)?;
            }
        }
        report.orphan_packs = orphans;
        for name in &indexed {
            if let Err(reason) = pack::load_pack_entries(self.backend.as_ref(), name) {
                if repair {
                    self.rebuild_index(name)?;
                }
                report.damaged_indexes.push((name.clone(), reason));
            }
        }

        // Manifests: corrupt ones are set aside, and every referenced chunk must be indexed.
        let references = self.collect_references()?;
        if repair {
            for (path, _) in &references.corrupt {
                let aside = path.with_extension("manifest.corrupt");
                fs::rename(path, &aside)
                    .map_err(|e| StoreError::io("rename corrupt manifest", path, e))?;
            }
            sync_directory(&self.root.join(MANIFESTS))?;
        }
        report.corrupt_manifests = references.corrupt.clone();
        report.missing_chunks = references.missing.clone();

        // Unreferenced packs are only judged when every manifest could be read: a corrupt
        // manifest's chunks are unknown, and they stay until an explicit `gc`.
        if references.corrupt.is_empty() {
            for name in &indexed {
                let Ok(entries) = pack::load_pack_entries(self.backend.as_ref(), name) else {
                    continue;
                };
                if entries
                    .iter()
                    .all(|(hash, _)| !references.chunks.contains(hash))
                {
                    if repair {
                        self.delete_pack(name, true)?;
                    }
                    report.unreferenced_packs.push(name.clone());
                }
            }
        }

        tracing::info!(repair, clean = report.is_clean(), "fsck finished");
        Ok(report)
    }

    /// Totals over the whole store.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let manifests = self.list(None)?;
        let index = self.load_index()?;
        let mut stats = StoreStats {
            checkpoints: manifests.len(),
            containers: manifests
                .iter()
                .map(|m| &m.meta.container)
                .collect::<BTreeSet<_>>()
                .len(),
            logical_bytes: manifests.iter().map(|m| m.logical_bytes).sum(),
            unique_chunks: index.len(),
            packs: index.pack_names().len(),
            ..Default::default()
        };
        for name in index.pack_names() {
            stats.stored_bytes += self.pack_size(name)?;
        }
        if stats.stored_bytes > 0 {
            stats.dedup_ratio = stats.logical_bytes as f64 / stats.stored_bytes as f64;
        }
        Ok(stats)
    }

    fn collect_references(&self) -> Result<References, StoreError> {
        let index = self.load_index()?;
        let mut references = References {
            chunks: HashSet::new(),
            corrupt: Vec::new(),
            missing: Vec::new(),
        };
        for id in self.manifest_ids()? {
            match self.load_manifest(&id) {
                Ok(manifest) => {
                    let mut missing = 0;
                    for chunk in manifest.files.iter().flat_map(|f| &f.chunks) {
                        if references.chunks.insert(chunk.hash) && !index.contains(&chunk.hash) {
                            missing += 1;
                        }
                    }
                    if missing > 0 {
                        references.missing.push((id.to_string(), missing));
                    }
                }
                Err(StoreError::CorruptManifest { path, reason }) => {
                    references.corrupt.push((path, reason))
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(references)
    }

    /// Pack names split into those with an index and those without one.
    fn pack_names(&self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let names = self
            .backend
            .list(PACKS)
            .map_err(|e| StoreError::io("list packs in", self.backend.location(PACKS), e))?;
        let indexes: HashSet<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".idx"))
            .collect();
        let mut indexed = Vec::new();
        let mut orphans = Vec::new();
        for name in names.iter().filter_map(|n| n.strip_suffix(".pack")) {
            if indexes.contains(name) {
                indexed.push(name.to_string());
            } else {
                orphans.push(name.to_string());
            }
        }
        Ok((indexed, orphans))
    }

    fn pack_size(&self, name: &str) -> Result<u64, StoreError> {
        let key = pack::pack_key(name);
        self.backend
            .size(&key)
            .map_err(|e| StoreError::io("stat pack", self.backend.location(&key), e))
    }

    /// Deletes a pack, its index first, so that no index ever points at a missing pack.
    /// Returns the bytes freed.
    fn delete_pack(&self, name: &str, with_index: bool) -> Result<u64, StoreError> {
        let bytes = self.pack_size(name).unwrap_or(0);
        if with_index {
            let key = pack::index_key(name);
            self.backend
                .delete(&key)
                .map_err(|e| StoreError::io("delete pack index", self.backend.location(&key), e))?;
        }
        let key = pack::pack_key(name);
        self.backend
            .delete(&key)
            .map_err(|e| StoreError::io("delete pack", self.backend.location(&key), e))?;
        tracing::debug!(pack = %name, bytes, "pack deleted");
        Ok(bytes)
    }

    /// Copies the live records of pack `name` into a new pack. Returns the new pack's size.
    fn rewrite_pack(
        &self,
        name: &str,
        live: &[(ChunkHash, RecordLocation)],
    ) -> Result<u64, StoreError> {
        let mut writer = PackWriter::create(&self.root, &self.root.join(TMP))?;
        let mut written = 0;
        for (hash, location) in live {
            let record = pack::read_record(self.backend.as_ref(), name, hash, location).map_err(
                |reason| StoreError::CorruptIndex {
                    path: self.backend.location(&pack::pack_key(name)),
                    reason: format!("chunk {hash}: {reason}"),
                },
            )?;
            writer.append(hash, location.codec, location.raw_len, &record.stored)?;
            if writer.len() >= PACK_TARGET_BYTES {
                written += writer.len();
                writer.finish(self.backend.as_ref())?;
                writer = PackWriter::create(&self.root, &self.root.join(TMP))?;
            }
        }
        written += writer.len();
        writer.finish(self.backend.as_ref())?;
        Ok(written)
    }

    fn rebuild_index(&self, name: &str) -> Result<(), StoreError> {
        let key = pack::pack_key(name);
        let path = self.backend.location(&key);
        let bytes = self
            .backend
            .get(&key)
            .map_err(|e| StoreError::io("read pack", &path, e))?;
        let entries = pack::scan_pack(&bytes).map_err(|reason| StoreError::CorruptIndex {
            path: path.clone(),
            reason,
        })?;
        let index_key = pack::index_key(name);
        self.backend
            .put_bytes(&index_key, &format::encode_index(&entries))
            .map_err(|e| {
                self.write_error(
                    "a rebuilt pack index",
                    "write",
                    self.backend.location(&index_key),
                    e,
                )
            })?;
        tracing::info!(pack = %name, chunks = entries.len(), "pack index rebuilt");
        Ok(())
    }

    /// Removes every file in `tmp/`. Callers hold the store lock exclusively, so no
    /// write is in flight.
    fn remove_temp_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let files = self.list_dir(&self.root.join(TMP))?;
        for path in &files {
            fs::remove_file(path).map_err(|e| StoreError::io("remove temporary file", path, e))?;
        }
        Ok(files)
    }

    /// Finds staging directories and lock files whose owner is gone; with `repair`, removes them.
    fn stale_staging(&self, repair: bool) -> Result<Vec<PathBuf>, StoreError> {
        let staging = self.root.join(STAGING);
        let mut stale = Vec::new();
        for path in self.list_dir(&staging)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let lock_path = if name.ends_with(".lock") {
                path.clone()
            } else {
                staging.join(format!("{name}.lock"))
            };
            if is_locked(&lock_path)? {
                continue;
            }
            // A staging directory outside the store is named in its lock file.
            if let Some(external) = external_staging_dir(&path, name) {
                if repair {
                    match fs::remove_dir_all(&external) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(StoreError::io("remove stale staging entry", &external, e));
                        }
                    }
                }
                stale.push(external);
            }
            if repair {
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("remove stale staging entry", &path, e)),
                }
            }
            stale.push(path);
        }
        Ok(stale)
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))? {
            paths.push(entry.map_err(|e| StoreError::io("list", dir, e))?.path());
        }
        paths.sort();
        Ok(paths)
    }
}

/// Returns the staging directory outside the store that the lock file `path`
/// (named `name`) records. The recorded directory must be absolute and carry
/// the lock's own name, so a damaged lock file cannot point fsck at anything else.
fn external_staging_dir(path: &Path, name: &str) -> Option<PathBuf> {
    let stem = name.strip_suffix(".lock")?;
    let recorded = PathBuf::from(fs::read_to_string(path).ok()?);
    let is_outside = recorded.parent() != path.parent();
    let matches = recorded.is_absolute() && recorded.file_name()?.to_str()? == stem;
    (is_outside && matches && recorded.is_dir()).then_some(recorded)
}

/// Returns true when another process holds the lock file at `path`. A missing file is not locked.
fn is_locked(path: &Path) -> Result<bool, StoreError> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io("open staging lock", path, e)),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(StoreError::io("test staging lock", path, e.into())),
    }
}
