//! Memory-backed scratch space for CRIU's images.
//!
//! CRIU writes a checkpoint's pages while the container is frozen, and reads
//! them while a restore waits. On a disk file system both compete with
//! writeback of dirty pages, which lengthens the freeze. When the images fit,
//! ckpt keeps them in a private directory on tmpfs (`/dev/shm/ckpt`) instead,
//! and the store compresses them to disk after the container runs again.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// Parent of the scratch directories, on the tmpfs that glibc uses for POSIX shared memory.
const SHM_DIR: &str = "/dev/shm";
/// Environment variable that turns memory-backed scratch space off when set to `0`.
pub const SCRATCH_ENV: &str = "CKPT_TMPFS_STAGING";
/// Share of available memory that scratch space may take, in percent.
const MAX_SHARE_OF_AVAILABLE: u64 = 50;

/// Returns a private directory on tmpfs that can hold `bytes`, or `None` when
/// none is available, safe, or large enough. Callers then use the disk.
pub fn memory_dir_for(bytes: u64) -> Option<PathBuf> {
    if std::env::var(SCRATCH_ENV).as_deref() == Ok("0") {
        return None;
    }
    let dir = private_shm_dir().ok()?;
    // Leave room: images carry some metadata besides the pages counted here.
    let needed = bytes.saturating_add(bytes / 8).saturating_add(16 << 20);
    let free_tmpfs = free_bytes(&dir).ok()?;
    let available = available_memory().ok()?;
    let fits = needed <= free_tmpfs && needed <= available / 100 * MAX_SHARE_OF_AVAILABLE;
    if !fits {
        tracing::debug!(
            bytes,
            free_tmpfs,
            available,
            "images do not fit in memory; using the disk"
        );
    }
    fits.then_some(dir)
}

/// Creates or checks `/dev/shm/ckpt`. Because `/dev/shm` is writable by every
/// user, the directory is used only when it is a real directory (not a
/// symbolic link) owned by this user with mode 0700.
fn private_shm_dir() -> io::Result<PathBuf> {
    let shm = Path::new(SHM_DIR);
    if !is_tmpfs(shm)? {
        return Err(io::Error::other("/dev/shm is not a tmpfs"));
    }
    let dir = shm.join("ckpt");
    fsutil::create_private_dir_all(&dir)?;
    let metadata = fs::symlink_metadata(&dir)?;
    let uid = nix::unistd::Uid::effective().as_raw();
    if !metadata.is_dir() || metadata.uid() != uid || metadata.mode() & 0o777 != 0o700 {
        tracing::warn!(path = %dir.display(), "not using scratch directory: it is not a 0700 directory owned by this user");
        return Err(io::Error::other("unsafe scratch directory"));
    }
    Ok(dir)
}

fn is_tmpfs(path: &Path) -> io::Result<bool> {
    let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Reads `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> io::Result<u64> {
    let text = fs::read_to_string("/proc/meminfo")?;
    parse_mem_available(&text).ok_or_else(|| io::Error::other("no MemAvailable in /proc/meminfo"))
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sums the resident memory of `pids` (`VmRSS` in /proc/PID/status), in bytes:
/// an estimate of the size of their memory pages in a checkpoint.
pub fn resident_bytes(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_parses_kib() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(22_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn resident_bytes_of_self_is_positive() {
        let me = std::process::id() as i32;
        assert!(resident_bytes(&[me]) > 0);
        assert_eq!(resident_bytes(&[i32::MAX]), 0);
    }

    #[test]
    fn huge_images_do_not_fit() {
        assert_eq!(memory_dir_for(u64::MAX / 2), None);
    }
}
