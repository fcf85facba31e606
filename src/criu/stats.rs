//! Decoding of CRIU's `stats-dump` image into [`DumpStats`].
//!
//! Layout (CRIU 3.x and 4.x): a little-endian u32 service magic `0x55105940`,
//! the stats magic `0x57093306`, a u32 payload length, then a protobuf
//! `stats_entry` whose field 1 is `dump_stats_entry`. In `dump_stats_entry`
//! fields 1-4 are times in microseconds (uint32) and fields 5, 6, 7 and 9 are
//! page counts (uint64).

use std::fs;
use std::io;
use std::path::Path;

use protobuf::CodedInputStream;

use crate::model::DumpStats;

const SERVICE_MAGIC: u32 = 0x5510_5940;
const STATS_MAGIC: u32 = 0x5709_3306;

/// Name of the file CRIU writes its dump statistics to, in the image directory.
pub const STATS_DUMP_FILE: &str = "stats-dump";

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid stats image {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Reads the dump statistics CRIU left in `path`.
pub fn read_dump_stats(path: &Path) -> Result<DumpStats, StatsError> {
    let bytes = fs::read(path).map_err(|source| StatsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    decode_dump_stats(&bytes).map_err(|reason| StatsError::Invalid {
        path: path.display().to_string(),
        reason,
    })
}

fn read_u32(bytes: &[u8], offset: usize) -> Result<u32, String> {
    let field = bytes
        .get(offset..offset + 4)
        .ok_or_else(|| format!("truncated at byte {offset}"))?;
    Ok(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

fn decode_dump_stats(bytes: &[u8]) -> Result<DumpStats, String> {
    if read_u32(bytes, 0)? != SERVICE_MAGIC || read_u32(bytes, 4)? != STATS_MAGIC {
        return Err("wrong magic numbers".to_string());
    }
    let length = read_u32(bytes, 8)? as usize;
    let payload = bytes
        .get(12..12 + length)
        .ok_or_else(|| format!("entry of {length} bytes is truncated"))?;

    let mut stats = DumpStats::default();
    let mut entry = CodedInputStream::from_bytes(payload);
    while let Some(tag) = entry.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
        let (field, wire_type) = (tag >> 3, tag & 7);
        if field == 1 && wire_type == 2 {
            let dump = entry.read_bytes().map_err(|e| e.to_string())?;
            decode_dump_entry(&dump, &mut stats)?;
        } else {
            skip_field(&mut entry, wire_type)?;
        }
    }
    Ok(stats)
}

fn decode_dump_entry(bytes: &[u8], stats: &mut DumpStats) -> Result<(), String> {
    let mut input = CodedInputStream::from_bytes(bytes);
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
        let (field, wire_type) = (tag >> 3, tag & 7);
        if wire_type != 0 {
            skip_field(&mut input, wire_type)?;
            continue;
        }
        let value = input.read_uint64().map_err(|e| e.to_string())?;
        match field {
            1 => stats.freezing_time_us = value,
            2 => stats.frozen_time_us = value,
            3 => stats.memdump_time_us = value,
            4 => stats.memwrite_time_us = value,
            5 => stats.pages_scanned = value,
            6 => stats.pages_skipped_parent = value,
            7 => stats.pages_written = value,
            9 => stats.pages_lazy = value,
            _ => {}
        }
    }
    Ok(())
}

fn skip_field(input: &mut CodedInputStream<'_>, wire_type: u32) -> Result<(), String> {
    let result = match wire_type {
        0 => input.read_uint64().map(drop),
        1 => input.read_fixed64().map(drop),
        2 => input.read_bytes().map(drop),
        5 => input.read_fixed32().map(drop),
        other => return Err(format!("unsupported wire type {other}")),
    };
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn stats_image(fields: &[(u64, u64)]) -> Vec<u8> {
        let mut dump = Vec::new();
        for &(field, value) in fields {
            varint(field << 3, &mut dump);
            varint(value, &mut dump);
        }
        let mut entry = vec![0x0a];
        varint(dump.len() as u64, &mut entry);
        entry.extend(dump);

        let mut image = Vec::new();
        image.extend(SERVICE_MAGIC.to_le_bytes());
        image.extend(STATS_MAGIC.to_le_bytes());
        image.extend((entry.len() as u32).to_le_bytes());
        image.extend(entry);
        image
    }

    #[test]
    fn decodes_dump_times_and_pages() {
        let image = stats_image(&[(1, 120), (2, 4500), (3, 300), (4, 200), (5, 1000), (7, 250)]);
        let stats = decode_dump_stats(&image).unwrap();
        assert_eq!(stats.freezing_time_us, 120);
        assert_eq!(stats.frozen_time_us, 4500);
        assert_eq!(stats.memdump_time_us, 300);
        assert_eq!(stats.memwrite_time_us, 200);
        assert_eq!(stats.pages_scanned, 1000);
        assert_eq!(stats.pages_written, 250);
    }

    #[test]
    fn rejects_wrong_magic_and_truncation() {
        let mut image = stats_image(&[(2, 1)]);
        assert!(decode_dump_stats(&image[..10]).is_err());
        image[0] ^= 0xff;
        assert!(decode_dump_stats(&image).unwrap_err().contains("magic"));
    }
}
