//! Byte layouts of the store's files: the version file, manifests, packs and pack indexes.
//! The layouts are drawn in the module documentation of [`crate::store`].

use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::model::CheckpointMeta;

/// Version of the store layout, written in the `FORMAT` file.
pub const STORE_VERSION: u32 = 1;
/// First word of the `FORMAT` file.
pub const STORE_MAGIC: &str = "ckpt-store";

/// First word of a manifest file.
pub const MANIFEST_MAGIC: &str = "ckpt-manifest";
pub const MANIFEST_VERSION: u32 = 1;

pub const PACK_MAGIC: &[u8; 8] = b"CKPTPACK";
pub const PACK_VERSION: u32 = 1;
/// Bytes before the first record of a pack: magic and version.
pub const PACK_HEADER_LEN: u64 = 12;
/// Bytes of a record header: hash (32), raw length (4), stored length (4), codec (1).
pub const RECORD_HEADER_LEN: usize = 41;

pub const INDEX_MAGIC: &[u8; 8] = b"CKPTPIDX";
pub const INDEX_VERSION: u32 = 1;
/// Bytes of one index entry: hash (32), offset (8), raw length (4), stored length (4), codec (1).
const INDEX_ENTRY_LEN: usize = 49;

/// BLAKE3 hash of a chunk's uncompressed bytes; its hex form names the chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    pub fn of(data: &[u8]) -> Self {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        blake3::Hash::from_hex(text)
            .ok()
            .map(|h| ChunkHash(*h.as_bytes()))
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", self.to_hex())
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ChunkHash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid chunk hash {text:?}")))
    }
}

/// A committed checkpoint: its metadata and the chunks of each of its files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub meta: CheckpointMeta,
    pub files: Vec<FileEntry>,
    /// Sum of the file sizes: the size of the CRIU images and side files.
    pub logical_bytes: u64,
    /// Bytes this checkpoint added to the store when it was committed: its new chunks,
    /// compressed, with their record headers.
    pub added_bytes: u64,
    /// Number of chunk references over all files.
    pub chunk_count: u64,
}

/// One regular file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the image directory, with `/` separators, such as `checkpoint/pages-1.img`.
    pub path: String,
    pub size: u64,
    /// Permission bits the file had when it was staged.
    pub mode: u32,
    /// BLAKE3 hash of the whole file.
    pub blake3: ChunkHash,
    pub chunks: Vec<ChunkRef>,
}

/// One chunk of a file, in file order. Serialized as the pair `["<hash>", size]`,
/// because a 1 GiB page image has 131072 of them and field names would double the
/// manifest's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(ChunkHash, u32)", into = "(ChunkHash, u32)")]
pub struct ChunkRef {
    pub hash: ChunkHash,
    /// Uncompressed length in bytes.
    pub size: u32,
}

impl From<(ChunkHash, u32)> for ChunkRef {
    fn from((hash, size): (ChunkHash, u32)) -> Self {
        ChunkRef { hash, size }
    }
}

impl From<ChunkRef> for (ChunkHash, u32) {
    fn from(chunk: ChunkRef) -> Self {
        (chunk.hash, chunk.size)
    }
}

/// Encodes a manifest as its header line followed by its compact JSON body.
pub fn encode_manifest(manifest: &Manifest) -> Vec<u8> {
    // serde_json fails only on maps with non-string keys and on failing Serialize impls;
    // these types have neither.
    let body = serde_json::to_vec(manifest).unwrap_or_default();
    let checksum = blake3::hash(&body).to_hex();
    let mut out = format!("{MANIFEST_MAGIC} {MANIFEST_VERSION} blake3={checksum}\n").into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Decodes a manifest, checking magic, version, checksum and the file paths it names.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("missing header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not UTF-8")?;
    let body = &bytes[newline + 1..];

    let mut words = header.split(' ');
    if words.next() != Some(MANIFEST_MAGIC) {
        return Err(format!(
            "header {header:?} does not start with {MANIFEST_MAGIC}"
        ));
    }
    let version = words.next().unwrap_or_default();
    if version != MANIFEST_VERSION.to_string() {
        return Err(format!("unsupported manifest version {version:?}"));
    }
    let expected = words
        .next()
        .and_then(|w| w.strip_prefix("blake3="))
        .ok_or("header lacks the blake3= checksum")?;
    let actual = blake3::hash(body).to_hex();
    if actual.as_str() != expected {
        return Err(format!(
            "checksum mismatch: header has {expected}, body hashes to {actual}"
        ));
    }

    let manifest: Manifest =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    for file in &manifest.files {
        check_relative_path(&file.path)?;
        let chunk_total: u64 = file.chunks.iter().map(|c| u64::from(c.size)).sum();
        if chunk_total != file.size {
            return Err(format!(
                "file {} has size {} but its chunks add up to {chunk_total}",
                file.path, file.size
            ));
        }
    }
    Ok(manifest)
}

/// Checks that `path` is relative and stays inside its base directory.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty file path".to_string());
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) => {}
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("file path {path:?} contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("file path {path:?} is absolute"));
            }
        }
    }
    Ok(())
}

/// Encoding of a record's stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is, because compression did not make it smaller.
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Position and lengths of a chunk's record inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLocation {
    /// Offset of the record header within the pack.
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub codec: Codec,
}

impl RecordLocation {
    /// Bytes the record takes in the pack, header included.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

pub fn pack_header() -> [u8; PACK_HEADER_LEN as usize] {
    let mut header = [0; PACK_HEADER_LEN as usize];
    header[..8].copy_from_slice(PACK_MAGIC);
    header[8..].copy_from_slice(&PACK_VERSION.to_le_bytes());
    header
}

pub fn encode_record_header(
    hash: &ChunkHash,
    location: &RecordLocation,
) -> [u8; RECORD_HEADER_LEN] {
    let mut header = [0; RECORD_HEADER_LEN];
    header[..32].copy_from_slice(&hash.0);
    header[32..36].copy_from_slice(&location.raw_len.to_le_bytes());
    header[36..40].copy_from_slice(&location.stored_len.to_le_bytes());
    header[40] = location.codec as u8;
    header
}

/// Checks that a record header read from a pack matches what the index promised.
pub fn check_record_header(
    header: &[u8],
    hash: &ChunkHash,
    location: &RecordLocation,
) -> Result<(), String> {
    if header.len() < RECORD_HEADER_LEN {
        return Err("record header is truncated".to_string());
    }
    if header[..RECORD_HEADER_LEN] != encode_record_header(hash, location) {
        return Err(format!(
            "record header at offset {} does not match the pack index",
            location.offset
        ));
    }
    Ok(())
}

/// Encodes a pack index: magic, version, entry count, entries, then a BLAKE3 checksum
/// of everything before it.
pub fn encode_index(entries: &[(ChunkHash, RecordLocation)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * INDEX_ENTRY_LEN + 32);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (hash, location) in entries {
        out.extend_from_slice(&hash.0);
        out.extend_from_slice(&location.offset.to_le_bytes());
        out.extend_from_slice(&location.raw_len.to_le_bytes());
        out.extend_from_slice(&location.stored_len.to_le_bytes());
        out.push(location.codec as u8);
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

pub fn decode_index(bytes: &[u8]) -> Result<Vec<(ChunkHash, RecordLocation)>, String> {
    if bytes.len() < 16 + 32 {
        return Err(format!("{} bytes is too short for an index", bytes.len()));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != checksum {
        return Err("checksum mismatch".to_string());
    }
    if &body[..8] != INDEX_MAGIC {
        return Err("bad magic".to_string());
    }
    let version = u32::from_le_bytes(body[8..12].try_into().unwrap_or_default());
    if version != INDEX_VERSION {
        return Err(format!("unsupported index version {version}"));
    }
    let count = u32::from_le_bytes(body[12..16].try_into().unwrap_or_default()) as usize;
    let entries = &body[16..];
    if entries.len() != count * INDEX_ENTRY_LEN {
        return Err(format!(
            "{count} entries announced but {} entry bytes present",
            entries.len()
        ));
    }

    let mut out = Vec::with_capacity(count);
    for entry in entries.chunks_exact(INDEX_ENTRY_LEN) {
        let mut hash = [0; 32];
        hash.copy_from_slice(&entry[..32]);
        let field = |range: std::ops::Range<usize>| entry[range].to_vec();
        let offset = u64::from_le_bytes(field(32..40).try_into().unwrap_or_default());
        let raw_len = u32::from_le_bytes(field(40..44).try_into().unwrap_or_default());
        let stored_len = u32::from_le_bytes(field(44..48).try_into().unwrap_or_default());
        let codec = Codec::from_byte(entry[48]).ok_or(format!("unknown codec {}", entry[48]))?;
        out.push((
            ChunkHash(hash),
            RecordLocation {
                offset,
                raw_len,
                stored_len,
                codec,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_manifest() -> Manifest {
        let data = b"hello";
        Manifest {
            meta: crate::store::tests::meta("web", "2026-01-02T03:04:05Z"),
            files: vec![FileEntry {
                path: "checkpoint/pages-1.img".to_string(),
                size: 5,
                mode: 0o600,
                blake3: ChunkHash::of(data),
                chunks: vec![ChunkRef {
                    hash: ChunkHash::of(data),
                    size: 5,
                }],
            }],
            logical_bytes: 5,
            added_bytes: 46,
            chunk_count: 1,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let manifest = sample_manifest();
        let decoded = decode_manifest(&encode_manifest(&manifest)).unwrap();
        assert_eq!(decoded, manifest);
    }

    #[test]
    fn manifest_rejects_flipped_byte() {
        let mut bytes = encode_manifest(&sample_manifest());
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        let error = decode_manifest(&bytes).unwrap_err();
        assert!(error.starts_with("checksum mismatch"), "{error}");
    }

    #[test]
    fn manifest_rejects_escaping_path() {
        let mut manifest = sample_manifest();
        manifest.files[0].path = "../../etc/passwd".to_string();
        let error = decode_manifest(&encode_manifest(&manifest)).unwrap_err();
        assert!(error.contains("'..'"), "{error}");
    }

    #[test]
    fn manifest_rejects_wrong_version() {
        let bytes = encode_manifest(&sample_manifest());
        let text = String::from_utf8(bytes).unwrap().replacen(" 1 ", " 2 ", 1);
        let error = decode_manifest(text.as_bytes()).unwrap_err();
        assert!(error.contains("unsupported manifest version"), "{error}");
    }

    #[test]
    fn index_round_trips_and_detects_damage() {
        let entries = vec![(
            ChunkHash::of(b"x"),
            RecordLocation {
                offset: 12,
                raw_len: 1,
                stored_len: 1,
                codec: Codec::Raw,
            },
        )];
        let mut bytes = encode_index(&entries);
        assert_eq!(decode_index(&bytes).unwrap(), entries);
        bytes[20] ^= 0xff;
        assert_eq!(decode_index(&bytes).unwrap_err(), "checksum mismatch");
    }
}
