//! Page maps (`pagemap-PID.img`) and the raw page data they index (`pages-N.img`).
//!
//! A pagemap image contains a `PagemapHead`, naming the pages file, then runs of
//! pages. Runs flagged `PE_PRESENT` have their data in the pages file, stored
//! back to back in pagemap order, so a run's file offset is the sum of the
//! sizes of the present runs before it.
//!
//! Shared memory (`MAP_SHARED|MAP_ANONYMOUS` and memfd mappings) has its own
//! `pagemap-shmem-SHMID.img`, whose addresses are offsets into the shared
//! object. [`PageMap::add_shared`] places those pages at the addresses where a
//! process maps them, so one process's page map may read from several files.

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
    /// Offset of the run's data in its pages file, for runs flagged `PE_PRESENT`.
    pub file_offset: Option<u64>,
    /// Index of the pages file in [`PageMap::pages_files`].
    pub source: usize,
}

impl PageRun {
    pub fn end(&self) -> u64 {
        self.vaddr + self.nr_pages * PAGE_SIZE
    }
}

/// Address range whose bytes lie contiguously in one pages file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub len: u64,
    pub file_offset: u64,
    /// Index of the pages file in [`PageMap::pages_files`].
    pub source: usize,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.vaddr + self.len
    }
}

/// A pages file, opened on first read.
#[derive(Debug)]
struct PagesFile {
    path: PathBuf,
    file: OnceLock<File>,
}

impl PagesFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: OnceLock::new(),
        }
    }
}

/// Page map of one process, with lazy access to its pages files.
#[derive(Debug)]
pub struct PageMap {
    /// Runs sorted by address.
    pub runs: Vec<PageRun>,
    /// Pages files the runs read from: the process's own `pages-N.img` first,
    /// then those of shared memory added with [`PageMap::add_shared`].
    files: Vec<PagesFile>,
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
            runs,
            files: vec![PagesFile::new(
                dir.join(format!("pages-{}.img", head.pages_id)),
            )],
        })
    }

    /// Paths of the pages files, indexed by [`PageRun::source`].
    pub fn pages_files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Adds the stored pages of a shared memory object mapped at `[start, end)`
    /// from byte `offset` of the object. `shared` is the object's own page map,
    /// whose addresses are offsets into the object.
    pub fn add_shared(&mut self, shared: &PageMap, start: u64, end: u64, offset: u64) {
        let Some(object_end) = offset.checked_add(end.saturating_sub(start)) else {
            return;
        };
        let mut added = false;
        for run in &shared.runs {
            let Some(run_offset) = run.file_offset else {
                continue;
            };
            let from = run.vaddr.max(offset);
            let to = run.end().min(object_end);
            if from >= to {
                continue;
            }
            let path = &shared.files[run.source].path;
            let source = match self.files.iter().position(|f| &f.path == path) {
                Some(index) => index,
                None => {
                    self.files.push(PagesFile::new(path.clone()));
                    self.files.len() - 1
                }
            };
            self.runs.push(PageRun {
                vaddr: start + (from - offset),
                nr_pages: (to - from) / PAGE_SIZE,
                flags: run.flags,
                file_offset: Some(run_offset + (from - run.vaddr)),
                source,
            });
            added = true;
        }
        if added {
            self.runs.sort_by_key(|run| run.vaddr);
        }
    }

    /// Number of stored pages that fall inside `[start, end)`.
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
                && last.source == run.source
                && last.file_offset + last.len == file_offset
            {
                last.len += to - from;
                continue;
            }
            segments.push(Segment {
                vaddr: from,
                len: to - from,
                file_offset,
                source: run.source,
            });
        }
        segments
    }

    /// Fills `buf` with the segment's bytes starting `from` bytes into it.
    pub fn read_segment(
        &self,
        segment: &Segment,
        from: u64,
        buf: &mut [u8],
    ) -> Result<(), ImageError> {
        let pages = &self.files[segment.source];
        let offset = segment.file_offset + from;
        let file = match pages.file.get() {
            Some(file) => file,
            None => {
                let opened = File::open(&pages.path).map_err(|source| ImageError::Read {
                    path: pages.path.clone(),
                    source,
                })?;
                pages.file.get_or_init(|| opened)
            }
        };
        file.read_exact_at(buf, offset).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                ImageError::Truncated {
                    path: pages.path.clone(),
                    offset,
                    detail: format!("{} bytes of page data expected", buf.len()),
                }
            } else {
                ImageError::Read {
                    path: pages.path.clone(),
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
            self.read_segment(&segment, 0, &mut out[at..at + segment.len as usize])?;
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
        source: 0,
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
        assert_eq!(map.pages_files(), vec![Path::new("/d/pages-7.img")]);
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
                file_offset: 0,
                source: 0
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
                file_offset: PAGE_SIZE,
                source: 0
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
    fn shared_pages_land_at_mapping_address() {
        let own = parse(&pagemap(&[entry(0x1000, 1, PE_PRESENT)])).unwrap();
        let shared_path = Path::new("/d/pagemap-shmem-9.img");
        let mut shared_data = encode_image(PAGEMAP, &[PagemapHead { pages_id: 8 }]);
        for bytes in [entry(0, 1, PE_PRESENT), entry(0x3000, 2, PE_PRESENT)] {
            shared_data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            shared_data.extend_from_slice(&bytes);
        }
        let shared = PageMap::parse(Path::new("/d"), shared_path, &shared_data).unwrap();

        // Map object bytes [0x2000, 0x5000) at 0x10000: the run at offset 0 is outside.
        let mut map = own;
        map.add_shared(&shared, 0x10000, 0x13000, 0x2000);
        assert_eq!(
            map.pages_files(),
            vec![Path::new("/d/pages-7.img"), Path::new("/d/pages-8.img")]
        );
        let segments = map.segments_in(0x10000, 0x13000);
        assert_eq!(
            segments,
            vec![Segment {
                vaddr: 0x11000,
                len: 2 * PAGE_SIZE,
                file_offset: PAGE_SIZE,
                source: 1,
            }]
        );
        assert_eq!(map.present_pages_in(0, u64::MAX), 3);
    }

    #[test]
    fn missing_head_is_an_error() {
        let error = parse(&encode_image::<PagemapHead>(PAGEMAP, &[])).unwrap_err();
        assert!(matches!(error, ImageError::Empty { .. }), "{error}");
    }
}
