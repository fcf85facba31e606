//! Searching the dumped memory pages of a checkpoint for a string or regex.
//!
//! Each mapping's stored pages are read in chunks. Consecutive chunks overlap
//! by [`Pattern::overlap`] bytes, so a match that straddles a page or chunk
//! boundary is still found, and each match is reported once.

use std::ops::ControlFlow;

use regex::bytes::{Regex, RegexBuilder};
use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::format::ImageError;
use super::pages::{PageMap, Segment};

/// Bytes read from the pages file per step.
const CHUNK_SIZE: usize = 1 << 20;

/// Overlap kept between chunks for regex searches: the longest regex match
/// that is guaranteed to be found across a chunk boundary.
const REGEX_OVERLAP: usize = 64 * 1024;

/// Error for an invalid memgrep pattern.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("empty search pattern")]
    Empty,
    #[error("invalid regex {pattern:?}")]
    InvalidRegex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

/// Compiled search pattern for [`memgrep`].
#[derive(Clone, Debug)]
pub struct Pattern {
    regex: Regex,
    overlap: usize,
}

impl Pattern {
    /// Pattern matching `text` byte for byte.
    pub fn literal(text: &str) -> Result<Self, PatternError> {
        let overlap = text.len().saturating_sub(1);
        Self::build(text, &regex::escape(text), overlap)
    }

    /// Pattern from a regex in the `regex` crate's syntax, matched against raw bytes.
    ///
    /// Unicode mode is off so that `.` and classes match any byte, as memory is not UTF-8.
    pub fn regex(pattern: &str) -> Result<Self, PatternError> {
        Self::build(pattern, pattern, REGEX_OVERLAP)
    }

    fn build(text: &str, regex: &str, overlap: usize) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let regex = RegexBuilder::new(regex)
            .unicode(false)
            .build()
            .map_err(|source| PatternError::InvalidRegex {
                pattern: text.to_string(),
                source,
            })?;
        Ok(Self { regex, overlap })
    }

    /// Bytes shared by consecutive chunks.
    pub fn overlap(&self) -> usize {
        self.overlap
    }
}

/// Options for [`memgrep`].
#[derive(Clone, Debug)]
pub struct MemgrepOptions {
    /// Bytes of context shown before and after each match.
    pub context: usize,
    /// Search only this process.
    pub pid: Option<u32>,
}

impl Default for MemgrepOptions {
    fn default() -> Self {
        Self {
            context: 32,
            pid: None,
        }
    }
}

/// One match in a process's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemMatch {
    pub pid: u32,
    pub comm: String,
    /// The mapping's file path, or its kind in brackets (`[heap]`).
    pub mapping: String,
    pub mapping_start: u64,
    pub mapping_end: u64,
    pub perms: String,
    /// Virtual address of the first matched byte.
    pub address: u64,
    #[serde(with = "hex_bytes")]
    pub matched: Vec<u8>,
    /// Address of the first byte of `context`.
    pub context_start: u64,
    /// Matched bytes with up to `MemgrepOptions::context` bytes on each side,
    /// cut where the stored pages end.
    #[serde(with = "hex_bytes")]
    pub context: Vec<u8>,
}

/// Serializes bytes as a lowercase hex string, readable in JSON.
mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        serializer.serialize_str(&hex)
    }
}

/// Searches the dumped pages of every process (or `options.pid`) for `pattern`,
/// calling `on_match` for each match in address order within each process.
///
/// The search stops early when `on_match` returns `ControlFlow::Break`.
/// Returns the number of matches reported. Pages that CRIU did not store
/// (not dumped, or in a parent checkpoint) are not searched.
pub fn memgrep(
    checkpoint: &Checkpoint,
    pattern: &Pattern,
    options: &MemgrepOptions,
    mut on_match: impl FnMut(MemMatch) -> ControlFlow<()>,
) -> Result<usize, ImageError> {
    let mut count = 0;
    for process in &checkpoint.processes {
        if options.pid.is_some_and(|pid| pid != process.pid) {
            continue;
        }
        let Some(map) = checkpoint.page_map(process.pid) else {
            continue;
        };
        for mapping in &process.memory.mappings {
            for segment in map.segments_in(mapping.start, mapping.end) {
                let mut report =
                    |address: u64, matched: &[u8]| -> Result<ControlFlow<()>, ImageError> {
                        let (context_start, context) =
                            read_context(map, &segment, address, matched.len(), options.context)?;
                        count += 1;
                        Ok(on_match(MemMatch {
                            pid: process.pid,
                            comm: process.comm.clone(),
                            mapping: mapping.label(),
                            mapping_start: mapping.start,
                            mapping_end: mapping.end,
                            perms: mapping.perms.clone(),
                            address,
                            matched: matched.to_vec(),
                            context_start,
                            context,
                        }))
                    };
                if search_segment(map, &segment, pattern, CHUNK_SIZE, &mut report)?.is_break() {
                    return Ok(count);
                }
            }
        }
    }
    Ok(count)
}

/// Streams one segment through the regex in overlapping chunks.
fn search_segment(
    map: &PageMap,
    segment: &Segment,
    pattern: &Pattern,
    chunk_size: usize,
    report: &mut impl FnMut(u64, &[u8]) -> Result<ControlFlow<()>, ImageError>,
) -> Result<ControlFlow<()>, ImageError> {
    let segment_len = segment.len as usize;
    let mut buffer: Vec<u8> = Vec::with_capacity(chunk_size + pattern.overlap);
    // Segment offset of buffer[0].
    let mut buffer_start = 0usize;
    // Segment offset of the next byte to read from the pages file.
    let mut read_pos = 0usize;
    // Matches starting before this segment offset were already reported.
    let mut reported_until = 0usize;

    while read_pos < segment_len {
        let step = chunk_size.min(segment_len - read_pos);
        let old_len = buffer.len();
        buffer.resize(old_len + step, 0);
        map.read_segment(segment, read_pos as u64, &mut buffer[old_len..])?;
        read_pos += step;
        let at_end = read_pos == segment_len;

        // A match that starts in the last `overlap` bytes may continue into the
        // next chunk, so it is left to the next round unless this is the end.
        let limit = if at_end {
            buffer.len()
        } else {
            buffer.len().saturating_sub(pattern.overlap)
        };
        for found in pattern.regex.find_iter(&buffer) {
            let start = buffer_start + found.start();
            if found.start() >= limit {
                break;
            }
            if start < reported_until {
                continue;
            }
            reported_until = buffer_start + found.end().max(found.start() + 1);
            if report(segment.vaddr + start as u64, found.as_bytes())?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }

        // Keep the unsearched tail as the head of the next buffer.
        buffer.drain(..limit);
        buffer_start += limit;
    }
    Ok(ControlFlow::Continue(()))
}

/// Reads the match plus `context` bytes on each side, clipped to the segment.
fn read_context(
    map: &PageMap,
    segment: &Segment,
    address: u64,
    match_len: usize,
    context: usize,
) -> Result<(u64, Vec<u8>), ImageError> {
    let start = address.saturating_sub(context as u64).max(segment.vaddr);
    let end = (address + match_len as u64)
        .saturating_add(context as u64)
        .min(segment.end());
    let mut bytes = vec![0u8; (end - start) as usize];
    map.read_segment(segment, start - segment.vaddr, &mut bytes)?;
    Ok((start, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::pages::PAGE_SIZE;
    use crate::images::tests::{Fixture, HEAP, Memory};

    /// Runs `search_segment` over the heap with the given chunk size and collects match addresses.
    fn heap_matches(
        checkpoint: &Checkpoint,
        pattern: &Pattern,
        chunk_size: usize,
    ) -> Vec<(u64, Vec<u8>)> {
        let map = checkpoint.page_map(100).unwrap();
        let segment = map.segments_in(HEAP, HEAP + 2 * PAGE_SIZE)[0];
        let mut found = Vec::new();
        let mut report = |address: u64, bytes: &[u8]| {
            found.push((address, bytes.to_vec()));
            Ok(ControlFlow::Continue(()))
        };
        let flow = search_segment(map, &segment, pattern, chunk_size, &mut report).unwrap();
        assert!(flow.is_continue());
        found
    }

    #[test]
    fn chunked_search_matches_whole_search() {
        let mut memory = Memory::new();
        memory.heap.fill(b'.');
        for (at, text) in [
            (0, "needle"),
            (1000, "needleneedle"),
            (4093, "needle"),
            (8186, "needle"),
        ] {
            memory.heap[at..at + text.len()].copy_from_slice(text.as_bytes());
        }
        let checkpoint = Fixture::new(&memory).load();
        let whole: Vec<u64> = Pattern::literal("needle")
            .unwrap()
            .regex
            .find_iter(&memory.heap)
            .map(|m| HEAP + m.start() as u64)
            .collect();
        assert_eq!(whole.len(), 5);

        for chunk_size in [1, 5, 6, 7, 100, 4096, 4099, 1 << 20] {
            let found = heap_matches(
                &checkpoint,
                &Pattern::literal("needle").unwrap(),
                chunk_size,
            );
            let addresses: Vec<u64> = found.iter().map(|(a, _)| *a).collect();
            assert_eq!(addresses, whole, "chunk size {chunk_size}");
        }
    }

    #[test]
    fn regex_match_across_chunk_boundary() {
        let mut memory = Memory::new();
        memory.heap.fill(0);
        memory.heap[4090..4104].copy_from_slice(b"counter=123456");
        let checkpoint = Fixture::new(&memory).load();

        let found = heap_matches(
            &checkpoint,
            &Pattern::regex("counter=[0-9]+").unwrap(),
            4096,
        );
        assert_eq!(found, vec![(HEAP + 4090, b"counter=123456".to_vec())]);
    }
}
