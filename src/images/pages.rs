//! Page maps (`pagemap-PID.img`) and the raw page data they index (`pages-N.img`).
//!
//! A pagemap image contains a `PagemapHead`, naming the pages file, then runs of
//! pages. Runs flagged `PE_PRESENT` have their data in the pages file, stored
//! back to back in pagemap order, so a run's file offset is the sum of the
//! sizes of the present runs before it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::format::{self, ImageError, PAGEMAP, RawEntry};
use super::proto::{PagemapEntry, PagemapHead};

/// Page size of the dumped tasks; CRIU writes 4 KiB pages on x86_64.
pub const PAGE_SIZE: u64 = 4096;

/// The pages are in the parent checkpoint (an incremental dump).
pub const PE_PARENT: u32 = 1 << 0;
/// The pages may be restored lazily.
pub const PE_LAZY: u32 = 1 << 1;
/// The pages are stored in this image directory's pages file.
pub const PE_PRESENT: u32 = 1 << 2;

/// A run of consecutive pages from one pagemap entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRun {
    pub vaddr: u64,
    pub nr_pages: u64,
    pub flags: u32,
    /// Offset of the run's data in the pages file, for runs flagged `PE_PRESENT`.
    pub file_offset: Option<u64>,
}

impl PageRun {
    pub fn end(&self) -> u64 {
        self.vaddr + self.nr_pages * PAGE_SIZE
    }
}

/// Address range whose bytes lie contiguously in the pages file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub len: u64,
    pub file_offset: u64,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.vaddr + self.len
    }
}

/// Page map of one process, with lazy access to its pages file.
#[derive(Debug)]
pub struct PageMap {
    pub pages_path: PathBuf,
    /// Runs in pagemap order, which CRIU writes sorted by address.
    pub runs: Vec<PageRun>,
    pages_file: OnceLock<File>,
}

impl PageMap {
    /// Reads `pagemap_path`; the pages file is looked up in `dir` but opened only on first read.
    pub fn load(dir: &Path, pagemap_path: &Path) -> Result<Self, ImageError> {
        let data = format::read_file(pagemap_path)?;
        Self::parse(dir, pagemap_path, &data)
    }

    /// Parses the bytes of a pagemap image read from `pagemap_path`.
    pub fn parse(dir: &Path, pagemap_path: &Path, data: &[u8]) -> Result<Self, ImageError> {
        let entries = format::split_entries(pagemap_path, data, PAGEMAP)?;
        let Some((head, rest)) = entries.split_first() else {
            return Err(ImageError::Empty {
                path: pagemap_path.to_path_buf(),
                kind: PAGEMAP.name,
            });
        };
        let head: PagemapHead = format::decode_entry(pagemap_path, PAGEMAP, *head)?;

        let mut runs = Vec::with_capacity(rest.len());
        let mut next_offset = 0u64;
        for raw in rest {
            let run = parse_run(pagemap_path, *raw, &mut next_offset)?;
            runs.push(run);
        }

        Ok(Self {
            pages_path: dir.join(format!("pages-{}.img", head.pages_id)),
            runs,
            pages_file: OnceLock::new(),
        })
    }

    /// Number of pages stored in the pages file that fall inside `[start, end)`.
    pub fn present_pages_in(&self, start: u64, end: u64) -> u64 {
        self.segments_in(start, end)
            .iter()
            .map(|s| s.len / PAGE_SIZE)
            .sum()
    }

    /// Stored ranges inside `[start, end)`, merging runs that touch in memory and in the file.
    pub fn segments_in(&self, start: u64, end: u64) -> Vec<Segment> {
        let mut segments: Vec<Segment> = Vec::new();
        for run in &self.runs {
            let Some(run_offset) = run.file_offset else {
                continue;
            };
            let from = run.vaddr.max(start);
            let to = run.end().min(end);
            if from >= to {
                continue;
            }
            let file_offset = run_offset + (from - run.vaddr);
            if let Some(last) = segments.last_mut()
                && last.end() == from
                && last.file_offset + last.len == file_offset
            {
                last.len += to - from;
                continue;
            }
            segments.push(Segment {
                vaddr: from,
                len: to - from,
                file_offset,
            });
        }
        segments
    }

    /// Reads `len` bytes at `offset` of the pages file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let file = match self.pages_file.get() {
            Some(file) => file,
            None => {
                let opened = File::open(&self.pages_path).map_err(|source| ImageError::Read {
                    path: self.pages_path.clone(),
                    source,
                })?;
                self.pages_file.get_or_init(|| opened)
            }
        };
        file.read_exact_at(buf, offset).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                ImageError::Truncated {
                    path: self.pages_path.clone(),
                    offset,
                    detail: format!("{} bytes of page data expected", buf.len()),
                }
            } else {
                ImageError::Read {
                    path: self.pages_path.clone(),
                    source,
                }
            }
        })
    }

    /// Reads `[addr, addr + len)` of the process's memory, or `None` if any page of it was not dumped.
    pub fn read_memory(&self, addr: u64, len: u64) -> Result<Option<Vec<u8>>, ImageError> {
        let Some(end) = addr.checked_add(len) else {
            return Ok(None);
        };
        let segments = self.segments_in(addr, end);
        let covered: u64 = segments.iter().map(|s| s.len).sum();
        if covered != len {
            return Ok(None);
        }
        let mut out = vec![0u8; len as usize];
        for segment in segments {
            let at = (segment.vaddr - addr) as usize;
            self.read_at(segment.file_offset, &mut out[at..at + segment.len as usize])?;
        }
        Ok(Some(out))
    }
}

/// Decodes one pagemap entry, applying the defaults CRIU uses for images of older versions.
fn parse_run(path: &Path, raw: RawEntry<'_>, next_offset: &mut u64) -> Result<PageRun, ImageError> {
    let entry: PagemapEntry = format::decode_entry(path, PAGEMAP, raw)?;
    let invalid = |detail: String| ImageError::Invalid {
        path: path.to_path_buf(),
        offset: raw.offset,
        kind: PAGEMAP.name,
        detail,
    };

    let flags = match (entry.flags, entry.in_parent) {
        (_, Some(true)) => entry.flags.unwrap_or(0) | PE_PARENT,
        (Some(flags), _) => flags,
        (None, _) => PE_PRESENT,
    };
    let nr_pages = entry.nr_pages.unwrap_or(u64::from(entry.compat_nr_pages));
    if !entry.vaddr.is_multiple_of(PAGE_SIZE) {
        return Err(invalid(format!(
            "address {:#x} is not page aligned",
            entry.vaddr
        )));
    }
    let bytes = nr_pages
        .checked_mul(PAGE_SIZE)
        .filter(|bytes| entry.vaddr.checked_add(*bytes).is_some())
        .ok_or_else(|| {
            invalid(format!(
                "{nr_pages} pages at {:#x} overflow the address space",
                entry.vaddr
            ))
        })?;

    let file_offset = if flags & PE_PRESENT != 0 {
        let offset = *next_offset;
        *next_offset = offset
            .checked_add(bytes)
            .ok_or_else(|| invalid("pages file offset overflows".to_string()))?;
        Some(offset)
    } else {
        None
    };
    Ok(PageRun {
        vaddr: entry.vaddr,
        nr_pages,
        flags,
        file_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::format::encode_image;
    use prost::Message;

    fn entry(vaddr: u64, nr_pages: u64, flags: u32) -> Vec<u8> {
        PagemapEntry {
            vaddr,
            compat_nr_pages: 0,
            in_parent: None,
            flags: Some(flags),
            nr_pages: Some(nr_pages),
        }
        .encode_to_vec()
    }

    /// Builds a pagemap image from raw entries, since the head and entries differ in type.
    fn pagemap(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut data = encode_image(PAGEMAP, &[PagemapHead { pages_id: 7 }]);
        for bytes in entries {
            data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            data.extend_from_slice(bytes);
        }
        data
    }

    fn parse(data: &[u8]) -> Result<PageMap, ImageError> {
        PageMap::parse(Path::new("/d"), Path::new("/d/pagemap-1.img"), data)
    }

    #[test]
    fn only_present_runs_take_file_space() {
        let map = parse(&pagemap(&[
            entry(0x1000, 2, PE_PRESENT),
            entry(0x5000, 1, PE_PARENT),
            entry(0x8000, 3, PE_PRESENT | PE_LAZY),
        ]))
        .unwrap();
        assert_eq!(map.pages_path, Path::new("/d/pages-7.img"));
        let offsets: Vec<_> = map.runs.iter().map(|r| r.file_offset).collect();
        assert_eq!(offsets, vec![Some(0), None, Some(2 * PAGE_SIZE)]);
    }

    #[test]
    fn adjacent_runs_merge_into_one_segment() {
        let map = parse(&pagemap(&[
            entry(0x1000, 2, PE_PRESENT),
            entry(0x3000, 1, PE_PRESENT),
        ]))
        .unwrap();
        let segments = map.segments_in(0, u64::MAX);
        assert_eq!(
            segments,
            vec![Segment {
                vaddr: 0x1000,
                len: 3 * PAGE_SIZE,
                file_offset: 0
            }]
        );
    }

    #[test]
    fn segments_are_clipped_to_range() {
        let map = parse(&pagemap(&[entry(0x1000, 4, PE_PRESENT)])).unwrap();
        let segments = map.segments_in(0x2000, 0x3000);
        assert_eq!(
            segments,
            vec![Segment {
                vaddr: 0x2000,
                len: PAGE_SIZE,
                file_offset: PAGE_SIZE
            }]
        );
        assert_eq!(map.present_pages_in(0, 0x2000), 1);
    }

    #[test]
    fn old_entries_without_flags_are_present() {
        let old = PagemapEntry {
            vaddr: 0x1000,
            compat_nr_pages: 2,
            in_parent: None,
            flags: None,
            nr_pages: None,
        };
        let map = parse(&pagemap(&[old.encode_to_vec()])).unwrap();
        assert_eq!(map.runs[0].flags, PE_PRESENT);
        assert_eq!(map.runs[0].nr_pages, 2);
    }

    #[test]
    fn overflowing_run_is_rejected() {
        let error = parse(&pagemap(&[entry(0xffff_ffff_ffff_f000, 2, PE_PRESENT)])).unwrap_err();
        assert!(
            error.to_string().contains("overflow the address space"),
            "{error}"
        );
    }

    #[test]
    fn missing_head_is_an_error() {
        let error = parse(&encode_image::<PagemapHead>(PAGEMAP, &[])).unwrap_err();
        assert!(matches!(error, ImageError::Empty { .. }), "{error}");
    }
}
