//! Native decoding of CRIU image directories: `inspect`, `diff` and `memgrep`
//! without restoring anything.
//!
//! The schema ckpt reads is `proto/criu-images.proto`, compiled by build.rs.
//! [`mod@format`] checks magics and splits files into entries, [`pages`] maps
//! virtual addresses to the raw page data, and [`Checkpoint::load`] turns a
//! directory into processes, memory, files, sockets and mounts.
//!
//! # Limitations
//!
//! - Only `files.img` is read for open files; images from CRIU versions that
//!   wrote per-type file images (`reg-files.img`, `inetsk.img`...) show
//!   descriptors without paths.
//! - Pages of SysV shared memory (`ipcns-shm-*.img`) are not searched or
//!   compared, and neither are pages kept in a parent checkpoint of an
//!   incremental dump. Shared anonymous and memfd pages are.
//! - Socket addresses are decoded for little-endian hosts.

pub mod checkpoint;
pub mod diff;
pub mod format;
pub mod memgrep;
pub mod names;
pub mod pages;
pub mod proto;
pub mod render;
pub mod stored;

#[cfg(test)]
mod tests;

pub use checkpoint::{Checkpoint, LoadError, read_dump_stats};
pub use diff::{CheckpointDiff, diff};
pub use format::ImageError;
pub use memgrep::{MemMatch, MemgrepOptions, Pattern, PatternError, memgrep};
pub use stored::{OpenStoredError, StoredCheckpoint};
