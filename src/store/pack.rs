//! Writing packs of chunk records, and the in-memory index that finds a chunk's record.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::backend::Backend;
use super::error::StoreError;
use super::format::{self, ChunkHash, Codec, PACK_HEADER_LEN, RECORD_HEADER_LEN, RecordLocation};

/// Directory (key prefix) of packs and their indexes.
pub const PACKS: &str = "packs";
/// A pack is closed and a new one started once it reaches this size, in bytes.
pub const PACK_TARGET_BYTES: u64 = 64 << 20;

pub fn pack_key(name: &str) -> String {
    format!("{PACKS}/{name}.pack")
}

pub fn index_key(name: &str) -> String {
    format!("{PACKS}/{name}.idx")
}

/// A pack being written to a temporary file. Nothing is visible in the store until
/// [`PackWriter::finish`]; dropping the writer deletes the temporary file.
pub struct PackWriter {
    root: PathBuf,
    file: BufWriter<NamedTempFile>,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<(ChunkHash, RecordLocation)>,
}

/// A pack published by [`PackWriter::finish`].
pub struct PublishedPack {
    pub name: String,
    /// Size of the pack file in bytes.
    pub bytes: u64,
}

impl PackWriter {
    pub fn create(root: &Path, tmp_dir: &Path) -> Result<Self, StoreError> {
        let temp = tempfile::Builder::new()
            .prefix(".pack-")
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(tmp_dir)
            .map_err(|e| {
                StoreError::write(|| "a new pack".into(), root, "create pack in", tmp_dir, e)
            })?;
        let mut writer = PackWriter {
            root: root.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, temp),
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        };
        writer.write_bytes(&format::pack_header(), || "a pack header".into())?;
        Ok(writer)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends one chunk record and returns where it sits in the pack.
    pub fn append(
        &mut self,
        hash: &ChunkHash,
        codec: Codec,
        raw_len: u32,
        data: &[u8],
    ) -> Result<RecordLocation, StoreError> {
        let location = RecordLocation {
            offset: self.len,
            raw_len,
            stored_len: data.len() as u32,
            codec,
        };
        let object = || format!("chunk {hash}");
        self.write_bytes(&format::encode_record_header(hash, &location), object)?;
        self.write_bytes(data, object)?;
        self.entries.push((*hash, location));
        Ok(location)
    }

    fn write_bytes(
        &mut self,
        data: &[u8],
        object: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        self.file.write_all(data).map_err(|e| {
            let path = self.file.get_ref().path().to_path_buf();
            StoreError::write(object, &self.root, "write pack", path, e)
        })?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Flushes the pack to disk and publishes it and then its index, both named after the
    /// pack's BLAKE3 hash. Returns `None` for a pack without records, which is discarded.
    pub fn finish(self, backend: &dyn Backend) -> Result<Option<PublishedPack>, StoreError> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let root = self.root;
        let temp = self.file.into_inner().map_err(|e| {
            StoreError::write(
                || "a pack".into(),
                &root,
                "flush pack",
                &root,
                e.into_error(),
            )
        })?;
        let temp_path = temp.path().to_path_buf();
        temp.as_file().sync_all().map_err(|e| {
            StoreError::write(|| "a pack".into(), &root, "fsync pack", &temp_path, e)
        })?;

        let name = self.hasher.finalize().to_hex().to_string();
        let key = pack_key(&name);
        // The temporary file is consumed by the rename below; keep it from being deleted.
        let (_file, temp_path) = temp
            .keep()
            .map_err(|e| StoreError::io("keep temporary pack", &temp_path, e.error))?;
        if let Err(e) = backend.put_file(&key, &temp_path) {
            let _ = std::fs::remove_file(&temp_path);
            return Err(StoreError::write(
                || format!("pack {name}"),
                &root,
                "publish pack",
                backend.location(&key),
                e,
            ));
        }

        // The index goes last: an index in the store promises that its pack is complete.
        let index_key = index_key(&name);
        backend
            .put_bytes(&index_key, &format::encode_index(&self.entries))
            .map_err(|e| {
                StoreError::write(
                    || format!("pack index {name}"),
                    &root,
                    "publish pack index",
                    backend.location(&index_key),
                    e,
                )
            })?;
        Ok(Some(PublishedPack {
            name,
            bytes: self.len,
        }))
    }
}

/// Where every chunk of the store lives, loaded from the pack indexes.
#[derive(Default)]
pub struct ChunkIndex {
    packs: Vec<String>,
    chunks: HashMap<ChunkHash, (u32, RecordLocation)>,
}

impl ChunkIndex {
    /// Loads every pack index. Damaged indexes are skipped and returned as
    /// `(path, reason)`: their chunks count as missing, so a commit stores them again.
    pub fn load(backend: &dyn Backend) -> Result<(ChunkIndex, Vec<(PathBuf, String)>), StoreError> {
        let mut index = ChunkIndex::default();
        let mut damaged = Vec::new();
        let names = backend
            .list(PACKS)
            .map_err(|e| StoreError::io("list packs in", backend.location(PACKS), e))?;
        for name in names.iter().filter_map(|n| n.strip_suffix(".idx")) {
            let key = index_key(name);
            let bytes = match backend.get(&key) {
                Ok(bytes) => bytes,
                // A concurrent garbage collection removed it after the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("read pack index", backend.location(&key), e)),
            };
            match format::decode_index(&bytes) {
                Ok(entries) => index.add_pack(name, &entries),
                Err(reason) => damaged.push((backend.location(&key), reason)),
            }
        }
        Ok((index, damaged))
    }

    pub fn add_pack(&mut self, name: &str, entries: &[(ChunkHash, RecordLocation)]) {
        let pack = self.packs.len() as u32;
        self.packs.push(name.to_string());
        for (hash, location) in entries {
            self.chunks.entry(*hash).or_insert((pack, *location));
        }
    }

    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.chunks.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn pack_names(&self) -> &[String] {
        &self.packs
    }

    /// Reads one chunk, checking the record header, the length and the BLAKE3 hash.
    /// The error is the reason only; the caller names the checkpoint, file and chunk.
    pub fn read_chunk(&self, backend: &dyn Backend, hash: &ChunkHash) -> Result<Vec<u8>, String> {
        let (pack, location) = self
            .chunks
            .get(hash)
            .ok_or("chunk is missing from every pack index")?;
        let record = read_record(backend, &self.packs[*pack as usize], hash, location)?;
        Ok(record.data)
    }
}

/// A chunk record read from a pack and checked against its hash.
pub struct VerifiedRecord {
    pub data: Vec<u8>,
    /// The record's bytes as stored, after its header.
    pub stored: Vec<u8>,
}

/// Reads the record of `hash` at `location` in pack `pack` and checks it.
pub fn read_record(
    backend: &dyn Backend,
    pack: &str,
    hash: &ChunkHash,
    location: &RecordLocation,
) -> Result<VerifiedRecord, String> {
    let key = pack_key(pack);
    let mut record = backend
        .get_range(&key, location.offset, location.record_len() as usize)
        .map_err(|e| {
            format!(
                "failed to read pack {}: {e}",
                backend.location(&key).display()
            )
        })?;
    format::check_record_header(&record, hash, location)?;
    let stored = record.split_off(RECORD_HEADER_LEN);
    let data = decode_record(&stored, hash, location)
        .map_err(|reason| format!("{reason} in pack {pack}"))?;
    Ok(VerifiedRecord { data, stored })
}

thread_local! {
    /// One zstd decompression context per thread: creating one per chunk costs
    /// more than decompressing an 8 KiB chunk.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(stored: &[u8], capacity: usize) -> Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| format!("failed to create a zstd decompressor: {e}"))?,
            );
        }
        let decompressor = slot.as_mut().expect("decompressor was just created");
        decompressor
            .decompress(stored, capacity)
            .map_err(|e| format!("zstd decompression failed: {e}"))
    })
}

fn decode_record(
    stored: &[u8],
    hash: &ChunkHash,
    location: &RecordLocation,
) -> Result<Vec<u8>, String> {
    let data = match location.codec {
        Codec::Raw => stored.to_vec(),
        Codec::Zstd => decompress(stored, location.raw_len as usize)?,
    };
    if data.len() != location.raw_len as usize {
        return Err(format!(
            "decoded to {} bytes instead of {}",
            data.len(),
            location.raw_len
        ));
    }
    let actual = ChunkHash::of(&data);
    if actual != *hash {
        return Err(format!("content hashes to {actual}"));
    }
    Ok(data)
}

/// Walks a whole pack without its index, checking every record, and returns the entries
/// of a new index for it. Used by fsck to rebuild a damaged index.
pub fn scan_pack(bytes: &[u8]) -> Result<Vec<(ChunkHash, RecordLocation)>, String> {
    let header_len = PACK_HEADER_LEN as usize;
    if bytes.len() < header_len || bytes[..header_len] != format::pack_header() {
        return Err("missing or unsupported pack header".to_string());
    }
    let mut entries = Vec::new();
    let mut offset = header_len;
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + RECORD_HEADER_LEN)
            .ok_or(format!("truncated record header at offset {offset}"))?;
        let hash = ChunkHash(header[..32].try_into().unwrap_or_default());
        let raw_len = u32::from_le_bytes(header[32..36].try_into().unwrap_or_default());
        let stored_len = u32::from_le_bytes(header[36..40].try_into().unwrap_or_default());
        let codec =
            Codec::from_byte(header[40]).ok_or(format!("unknown codec at offset {offset}"))?;
        let location = RecordLocation {
            offset: offset as u64,
            raw_len,
            stored_len,
            codec,
        };
        let start = offset + RECORD_HEADER_LEN;
        let stored = bytes
            .get(start..start + stored_len as usize)
            .ok_or(format!("truncated record at offset {offset}"))?;
        decode_record(stored, &hash, &location)
            .map_err(|reason| format!("record at offset {offset}: {reason}"))?;
        entries.push((hash, location));
        offset = start + stored_len as usize;
    }
    Ok(entries)
}

/// Reads and checks the index of pack `name`.
pub fn load_pack_entries(
    backend: &dyn Backend,
    name: &str,
) -> Result<Vec<(ChunkHash, RecordLocation)>, String> {
    let key = index_key(name);
    let bytes = backend
        .get(&key)
        .map_err(|e| format!("failed to read {}: {e}", backend.location(&key).display()))?;
    format::decode_index(&bytes)
}
