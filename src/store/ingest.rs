//! The commit pipeline: chunking, hashing and compressing staged files in parallel.
//!
//! One reader (the calling thread) cuts files into chunks, a worker per core hashes and
//! compresses them, and one writer appends new chunks to packs. Bounded channels join the
//! stages, so memory stays near `4 × workers × MAX_CHUNK_BYTES` whatever the image size.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::backend::Backend;
use super::error::StoreError;
use super::format::{ChunkHash, ChunkRef, Codec, FileEntry};
use super::pack::{ChunkIndex, PACK_TARGET_BYTES, PackWriter, PublishedPack};

/// Chunk size for CRIU page images (`pages-*.img`), which hold whole 4 KiB pages.
/// Two pages per chunk was chosen by measurement; see docs/store-format.md.
pub const PAGE_CHUNK_BYTES: usize = 8 << 10;
/// FastCDC bounds for all other files.
pub const CDC_MIN_BYTES: usize = 16 << 10;
pub const CDC_AVG_BYTES: usize = 64 << 10;
pub const CDC_MAX_BYTES: usize = 256 << 10;
/// Default zstd level for chunks: level 3 is zstd's default balance of speed and ratio.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// A regular file found in a staging directory.
pub struct StagedFile {
    /// Path relative to the staging directory, with `/` separators.
    pub path: String,
    pub absolute: PathBuf,
    pub mode: u32,
}

pub struct IngestOutput {
    pub files: Vec<FileEntry>,
    pub added_bytes: u64,
    pub packs: Vec<PublishedPack>,
}

struct Job {
    file: usize,
    index: usize,
    data: Vec<u8>,
}

struct Done {
    file: usize,
    index: usize,
    hash: ChunkHash,
    size: u32,
    /// The stored form of a chunk that the store lacks; `None` for a known chunk.
    stored: Option<(Codec, Vec<u8>)>,
}

/// Whether a file holds CRIU memory pages and is chunked on page boundaries.
pub fn is_page_image(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("pages-") && name.ends_with(".img")
}

/// Stores the chunks of `files` that `known` lacks into new packs, and returns each
/// file's entry for the manifest.
pub fn ingest(
    root: &Path,
    tmp_dir: &Path,
    backend: &dyn Backend,
    known: &ChunkIndex,
    files: &[StagedFile],
    level: i32,
    progress: &dyn super::progress::Progress,
) -> Result<IngestOutput, StoreError> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers * 2);
    let (done_tx, done_rx) = mpsc::sync_channel::<Done>(workers * 2);
    // Each worker owns a handle, so the receiver closes once every worker has stopped
    // and the reader's next send fails instead of blocking forever.
    let job_rx = Arc::new(Mutex::new(job_rx));
    let aborted = AtomicBool::new(false);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let job_rx = Arc::clone(&job_rx);
            scope.spawn(move || encode_chunks(&job_rx, done_tx, known, level));
        }
        drop(done_tx);
        drop(job_rx);

        let aborted = &aborted;
        let writer = scope
            .spawn(move || write_chunks(root, tmp_dir, backend, done_rx, files.len(), aborted));

        let read_result = read_files(files, job_tx, progress);
        if read_result.is_err() {
            aborted.store(true, Ordering::SeqCst);
        }
        let write_result = writer.join().unwrap_or_else(|_| {
            Err(StoreError::io(
                "write packs in",
                root,
                io::Error::other("writer thread panicked"),
            ))
        });

        // A writer failure stops the readers too, so it is the root cause when both fail.
        let (chunk_lists, added_bytes, packs) = write_result?;
        let file_sums = read_result?;
        let entries = files
            .iter()
            .zip(file_sums)
            .zip(chunk_lists)
            .map(|((file, (size, blake3)), chunks)| FileEntry {
                path: file.path.clone(),
                size,
                mode: file.mode,
                blake3,
                chunks,
            })
            .collect();
        Ok(IngestOutput {
            files: entries,
            added_bytes,
            packs,
        })
    })
}

/// Cuts every file into chunks and queues them. Returns each file's size and hash.
fn read_files(
    files: &[StagedFile],
    jobs: mpsc::SyncSender<Job>,
    progress: &dyn super::progress::Progress,
) -> Result<Vec<(u64, ChunkHash)>, StoreError> {
    let mut sums = Vec::with_capacity(files.len());
    for (file_index, file) in files.iter().enumerate() {
        let source = File::open(&file.absolute)
            .map_err(|e| StoreError::io("open staged file", &file.absolute, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut send = |index: usize, data: Vec<u8>| -> Result<(), StoreError> {
            hasher.update(&data);
            size += data.len() as u64;
            progress.advance(data.len() as u64);
            jobs.send(Job {
                file: file_index,
                index,
                data,
            })
            .map_err(|_| {
                StoreError::io(
                    "queue chunk of",
                    &file.absolute,
                    io::Error::other("chunk pipeline stopped"),
                )
            })
        };

        if is_page_image(&file.path) {
            let mut reader = io::BufReader::with_capacity(1 << 20, source);
            for index in 0.. {
                let mut data = Vec::with_capacity(PAGE_CHUNK_BYTES);
                (&mut reader)
                    .take(PAGE_CHUNK_BYTES as u64)
                    .read_to_end(&mut data)
                    .map_err(|e| StoreError::io("read staged file", &file.absolute, e))?;
                if data.is_empty() {
                    break;
                }
                send(index, data)?;
            }
        } else {
            let chunker =
                fastcdc::v2020::StreamCDC::new(source, CDC_MIN_BYTES, CDC_AVG_BYTES, CDC_MAX_BYTES);
            for (index, chunk) in chunker.enumerate() {
                let chunk = chunk.map_err(|e| {
                    StoreError::io(
                        "read staged file",
                        &file.absolute,
                        io::Error::other(e.to_string()),
                    )
                })?;
                send(index, chunk.data)?;
            }
        }
        sums.push((size, ChunkHash(*hasher.finalize().as_bytes())));
    }
    Ok(sums)
}

/// Hashes each queued chunk and compresses the ones the store lacks.
fn encode_chunks(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    done: mpsc::SyncSender<Done>,
    known: &ChunkIndex,
    level: i32,
) {
    let mut compressor = zstd::bulk::Compressor::new(level).ok();
    loop {
        let job = {
            let receiver = jobs.lock().unwrap_or_else(|e| e.into_inner());
            receiver.recv()
        };
        let Ok(job) = job else { return };

        let hash = ChunkHash::of(&job.data);
        let size = job.data.len() as u32;
        let stored = if known.contains(&hash) {
            None
        } else {
            let compressed = compressor.as_mut().and_then(|c| c.compress(&job.data).ok());
            match compressed {
                Some(bytes) if bytes.len() < job.data.len() => Some((Codec::Zstd, bytes)),
                _ => Some((Codec::Raw, job.data)),
            }
        };
        let result = Done {
            file: job.file,
            index: job.index,
            hash,
            size,
            stored,
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

type ChunkLists = Vec<Vec<ChunkRef>>;

/// Appends new chunks to packs, rotating packs at [`PACK_TARGET_BYTES`], and collects
/// each file's chunk list in order.
fn write_chunks(
    root: &Path,
    tmp_dir: &Path,
    backend: &dyn Backend,
    done: mpsc::Receiver<Done>,
    file_count: usize,
    aborted: &AtomicBool,
) -> Result<(ChunkLists, u64, Vec<PublishedPack>), StoreError> {
    let mut lists: Vec<Vec<Option<ChunkRef>>> = vec![Vec::new(); file_count];
    let mut written: HashSet<ChunkHash> = HashSet::new();
    let mut added_bytes = 0u64;
    let mut published = Vec::new();
    let mut pack: Option<PackWriter> = None;

    for chunk in done {
        if let Some((codec, bytes)) = &chunk.stored
            && written.insert(chunk.hash)
        {
            if pack.is_none() {
                pack = Some(PackWriter::create(root, tmp_dir)?);
            }
            if let Some(writer) = pack.as_mut() {
                let location = writer.append(&chunk.hash, *codec, chunk.size, bytes)?;
                added_bytes += location.record_len();
                if writer.len() >= PACK_TARGET_BYTES
                    && let Some(full) = pack.take()
                {
                    published.extend(full.finish(backend)?);
                }
            }
        }

        let list = &mut lists[chunk.file];
        if list.len() <= chunk.index {
            list.resize(chunk.index + 1, None);
        }
        list[chunk.index] = Some(ChunkRef {
            hash: chunk.hash,
            size: chunk.size,
        });
    }

    if aborted.load(Ordering::SeqCst) {
        // Dropping the unfinished pack deletes its temporary file.
        return Ok((Vec::new(), 0, published));
    }
    if let Some(last) = pack.take() {
        published.extend(last.finish(backend)?);
    }

    let mut chunk_lists = Vec::with_capacity(file_count);
    for list in lists {
        let complete: Option<Vec<ChunkRef>> = list.into_iter().collect();
        let complete = complete.ok_or_else(|| {
            StoreError::io(
                "collect chunks for",
                root,
                io::Error::other("a chunk result was lost"),
            )
        })?;
        chunk_lists.push(complete);
    }
    Ok((chunk_lists, added_bytes, published))
}
