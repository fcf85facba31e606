//! Framing of CRIU image files.
//!
//! Every image except `inventory.img` starts with two little-endian `u32`
//! magics: the image-set magic (`IMG_COMMON_MAGIC`, or `IMG_SERVICE_MAGIC` for
//! service files such as `stats-dump`) and then the file's own magic.
//! `inventory.img` has only its own magic. The rest of the file is a sequence
//! of entries, each a little-endian `u32` length followed by that many bytes of
//! one protobuf message. An empty file is an image with no entries.
//!
//! ```text
//! +-------------+-------------+---------+-----------+---------+-----------+-----
//! | set magic   | file magic  | len u32 | message   | len u32 | message   | ...
//! +-------------+-------------+---------+-----------+---------+-----------+-----
//! ```
//!
//! `pages-N.img` files have no framing at all: they are raw page data, and the
//! pagemap image lists where each page is stored.

use std::path::{Path, PathBuf};

use prost::Message;

/// Image-set magic at the head of ordinary image files.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Image-set magic at the head of service files (`stats-*`, `irmap-cache`).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;

/// Magic numbers and framing of one kind of image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageKind {
    /// Name used in error messages, such as `pstree`.
    pub name: &'static str,
    /// Image-set magic that precedes `magic`, or `None` for `inventory.img`.
    pub set_magic: Option<u32>,
    pub magic: u32,
}

const fn common(name: &'static str, magic: u32) -> ImageKind {
    ImageKind {
        name,
        set_magic: Some(IMG_COMMON_MAGIC),
        magic,
    }
}

// File magics as defined by CRIU 4.2.1 (criu/include/magic.h).
pub const INVENTORY: ImageKind = ImageKind {
    name: "inventory",
    set_magic: None,
    magic: 0x5831_3116,
};
pub const PSTREE: ImageKind = common("pstree", 0x5027_3030);
pub const FDINFO: ImageKind = common("fdinfo", 0x5621_3732);
pub const PAGEMAP: ImageKind = common("pagemap", 0x5608_4025);
pub const CORE: ImageKind = common("core", 0x5505_3847);
pub const IDS: ImageKind = common("ids", 0x5443_2030);
pub const MM: ImageKind = common("mm", 0x5749_2820);
pub const FS: ImageKind = common("fs", 0x5140_3912);
pub const MNTS: ImageKind = common("mountpoints", 0x5556_3928);
pub const FILES: ImageKind = common("files", 0x5630_3138);
pub const MEMFD_INODE: ImageKind = common("memfd", 0x4845_3499);
pub const STATS: ImageKind = ImageKind {
    name: "stats",
    set_magic: Some(IMG_SERVICE_MAGIC),
    magic: 0x5709_3306,
};

/// Error for an image file that cannot be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("failed to read image {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {path} is truncated at offset {offset}: {detail}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error(
        "image {path} has magic {found:#010x} at offset {offset}, expected {expected:#010x} for a {kind} image"
    )]
    BadMagic {
        path: PathBuf,
        offset: u64,
        kind: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("invalid {kind} entry in image {path} at offset {offset}")]
    Decode {
        path: PathBuf,
        offset: u64,
        kind: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("image {path} has no {kind} entry")]
    Empty { path: PathBuf, kind: &'static str },
    #[error("invalid {kind} entry in image {path} at offset {offset}: {detail}")]
    Invalid {
        path: PathBuf,
        offset: u64,
        kind: &'static str,
        detail: String,
    },
}

/// One framed entry: the message bytes and the file offset of its length prefix.
#[derive(Clone, Copy, Debug)]
pub struct RawEntry<'a> {
    pub offset: u64,
    pub bytes: &'a [u8],
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Checks the magics of an image held in `data` and splits the rest into entries.
///
/// `path` is used only for error messages.
pub fn split_entries<'a>(
    path: &Path,
    data: &'a [u8],
    kind: ImageKind,
) -> Result<Vec<RawEntry<'a>>, ImageError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }

    let mut at = 0usize;
    let expect_magic = |expected: u32, at: &mut usize| -> Result<(), ImageError> {
        let found = read_u32(data, *at).ok_or_else(|| ImageError::Truncated {
            path: path.to_path_buf(),
            offset: *at as u64,
            detail: format!(
                "{} bytes left where a magic number is expected",
                data.len() - *at
            ),
        })?;
        if found != expected {
            return Err(ImageError::BadMagic {
                path: path.to_path_buf(),
                offset: *at as u64,
                kind: kind.name,
                found,
                expected,
            });
        }
        *at += 4;
        Ok(())
    };
    if let Some(set_magic) = kind.set_magic {
        expect_magic(set_magic, &mut at)?;
    }
    expect_magic(kind.magic, &mut at)?;

    let mut entries = Vec::new();
    while at < data.len() {
        let offset = at as u64;
        let len = read_u32(data, at).ok_or_else(|| ImageError::Truncated {
            path: path.to_path_buf(),
            offset,
            detail: format!(
                "{} bytes left where an entry length is expected",
                data.len() - at
            ),
        })? as usize;
        let start = at + 4;
        let bytes =
            data.get(start..start.saturating_add(len))
                .ok_or_else(|| ImageError::Truncated {
                    path: path.to_path_buf(),
                    offset,
                    detail: format!(
                        "entry declares {len} bytes but only {} remain",
                        data.len() - start
                    ),
                })?;
        entries.push(RawEntry { offset, bytes });
        at = start + len;
    }
    Ok(entries)
}

/// Decodes one entry as message `M`.
pub fn decode_entry<M: Message + Default>(
    path: &Path,
    kind: ImageKind,
    entry: RawEntry<'_>,
) -> Result<M, ImageError> {
    M::decode(entry.bytes).map_err(|source| ImageError::Decode {
        path: path.to_path_buf(),
        offset: entry.offset,
        kind: kind.name,
        source,
    })
}

/// Decodes every entry of `data` as message `M`.
pub fn decode_entries<M: Message + Default>(
    path: &Path,
    data: &[u8],
    kind: ImageKind,
) -> Result<Vec<M>, ImageError> {
    split_entries(path, data, kind)?
        .into_iter()
        .map(|entry| decode_entry(path, kind, entry))
        .collect()
}

/// Reads the file at `path` into memory.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and decodes every entry of the image at `path`.
pub fn read_entries<M: Message + Default>(
    path: &Path,
    kind: ImageKind,
) -> Result<Vec<M>, ImageError> {
    decode_entries(path, &read_file(path)?, kind)
}

/// Reads an image that must hold at least one entry and returns the first.
pub fn read_single<M: Message + Default>(path: &Path, kind: ImageKind) -> Result<M, ImageError> {
    read_entries(path, kind)?
        .into_iter()
        .next()
        .ok_or_else(|| ImageError::Empty {
            path: path.to_path_buf(),
            kind: kind.name,
        })
}

/// Encodes `messages` as a complete image of `kind`, the inverse of [`decode_entries`].
///
/// ckpt never writes CRIU images; tests use this to build synthetic ones.
pub fn encode_image<M: Message>(kind: ImageKind, messages: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(set_magic) = kind.set_magic {
        out.extend_from_slice(&set_magic.to_le_bytes());
    }
    out.extend_from_slice(&kind.magic.to_le_bytes());
    for message in messages {
        let len = u32::try_from(message.encoded_len()).expect("test message below 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        message.encode(&mut out).expect("Vec grows as needed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::proto::PstreeEntry;

    fn pstree(pid: u32) -> PstreeEntry {
        PstreeEntry {
            pid,
            ppid: 1,
            pgid: pid,
            sid: pid,
            threads: vec![pid, pid + 1],
        }
    }

    fn path() -> &'static Path {
        Path::new("/images/pstree.img")
    }

    #[test]
    fn entries_round_trip() {
        let data = encode_image(PSTREE, &[pstree(10), pstree(20)]);
        let decoded: Vec<PstreeEntry> = decode_entries(path(), &data, PSTREE).unwrap();
        assert_eq!(decoded, vec![pstree(10), pstree(20)]);
    }

    #[test]
    fn empty_file_has_no_entries() {
        let decoded: Vec<PstreeEntry> = decode_entries(path(), &[], PSTREE).unwrap();
        assert!(decoded.is_empty());
    }

    #[test]
    fn inventory_has_only_its_own_magic() {
        let data = encode_image(INVENTORY, &[pstree(1)]);
        assert_eq!(read_u32(&data, 0), Some(INVENTORY.magic));
        assert_eq!(split_entries(path(), &data, INVENTORY).unwrap().len(), 1);
    }

    #[test]
    fn wrong_file_magic_is_rejected_with_offset() {
        let data = encode_image(CORE, &[pstree(1)]);
        let error = decode_entries::<PstreeEntry>(path(), &data, PSTREE).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ImageError::BadMagic { offset: 4, .. }),
            "{message}"
        );
        assert!(message.contains("/images/pstree.img"), "{message}");
        assert!(message.contains("0x55053847"), "{message}");
    }

    #[test]
    fn wrong_set_magic_is_rejected() {
        let data = encode_image(STATS, &[pstree(1)]);
        let error = decode_entries::<PstreeEntry>(path(), &data, PSTREE).unwrap_err();
        assert!(
            matches!(error, ImageError::BadMagic { offset: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let data = encode_image(PSTREE, &[pstree(10), pstree(20)]);
        let boundaries: Vec<usize> = {
            let entries = split_entries(path(), &data, PSTREE).unwrap();
            entries
                .iter()
                .map(|e| e.offset as usize)
                .chain([data.len()])
                .collect()
        };
        for cut in 1..data.len() {
            let result = decode_entries::<PstreeEntry>(path(), &data[..cut], PSTREE);
            if boundaries.contains(&cut) {
                assert!(
                    result.is_ok(),
                    "cut at entry boundary {cut} failed: {result:?}"
                );
            } else {
                let error = result.expect_err("truncated image decoded");
                assert!(
                    error.to_string().contains("truncated")
                        || matches!(error, ImageError::Decode { .. }),
                    "cut at {cut}: {error}"
                );
            }
        }
    }

    #[test]
    fn truncated_entry_names_its_offset() {
        let data = encode_image(PSTREE, &[pstree(10)]);
        let error =
            decode_entries::<PstreeEntry>(path(), &data[..data.len() - 1], PSTREE).unwrap_err();
        assert!(
            matches!(error, ImageError::Truncated { offset: 8, .. }),
            "{error}"
        );
    }

    #[test]
    fn garbled_bytes_never_panic() {
        let valid = encode_image(PSTREE, &[pstree(10), pstree(20), pstree(30)]);
        let mut state = 0x2545_f491_u32;
        for round in 0..2000 {
            let mut data = valid.clone();
            // xorshift32: cheap, deterministic noise.
            for _ in 0..1 + round % 4 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = 8 + (state as usize) % (data.len() - 8);
                data[at] ^= (state >> 8) as u8 | 1;
            }
            let _ = decode_entries::<PstreeEntry>(path(), &data, PSTREE);
        }
    }

    #[test]
    fn huge_declared_length_is_truncation() {
        let mut data = encode_image::<PstreeEntry>(PSTREE, &[]);
        data.extend_from_slice(&u32::MAX.to_le_bytes());
        data.extend_from_slice(&[0; 16]);
        let error = decode_entries::<PstreeEntry>(path(), &data, PSTREE).unwrap_err();
        assert!(
            error.to_string().contains("declares 4294967295 bytes"),
            "{error}"
        );
    }
}
