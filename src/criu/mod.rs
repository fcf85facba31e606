//! Everything ckpt needs from CRIU: finding the binary, checking that it
//! works on this kernel, and driving it over RPC.

mod log;
mod swrk;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use log::log_tail;
pub use swrk::{CriuError, NotifyResult, Swrk};

/// Oldest CRIU release that works on kernels 6.13 and later (older ones fail
/// with "vdso: Unexpected rt vDSO area bounds").
pub const MIN_VERSION: (u32, u32) = (4, 1);

/// Environment variable that names the CRIU binary to use.
pub const CRIU_ENV: &str = "CKPT_CRIU";

/// File that caches a passed `criu check` until the binary or the kernel changes.
const CHECK_CACHE: &str = "/run/ckpt/criu-check";

const FIX_HINT: &str = "run scripts/setup.sh as root to build and install CRIU 4.1 or later \
                        as /usr/local/sbin/criu, or set CKPT_CRIU to a working criu binary";

/// Error from locating or checking CRIU.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("criu not found in $PATH, /usr/local/sbin or /usr/sbin; {FIX_HINT}")]
    NotFound,
    #[error("failed to run {binary} --version: {reason}; {FIX_HINT}")]
    Version { binary: PathBuf, reason: String },
    #[error(
        "{binary} is CRIU {found}, but ckpt needs {}.{} or later on this kernel; {FIX_HINT}",
        MIN_VERSION.0, MIN_VERSION.1
    )]
    TooOld { binary: PathBuf, found: String },
    #[error("`{binary} check` failed on kernel {kernel}: {output}; {FIX_HINT}")]
    CheckFailed {
        binary: PathBuf,
        kernel: String,
        output: String,
    },
}

/// A CRIU binary that passed the version check and `criu check`.
#[derive(Clone, Debug)]
pub struct Criu {
    pub binary: PathBuf,
    /// Version as CRIU prints it, such as `4.2.1`.
    pub version: String,
}

impl Criu {
    /// Finds CRIU and checks it, refusing versions that cannot work on this kernel.
    pub fn locate() -> Result<Self, SetupError> {
        let binary = find_binary().ok_or(SetupError::NotFound)?;
        let version = read_version(&binary)?;
        if parse_version(&version).is_none_or(|v| v < MIN_VERSION) {
            return Err(SetupError::TooOld {
                binary,
                found: version,
            });
        }
        run_check(&binary)?;
        Ok(Self { binary, version })
    }

    /// Starts a `criu swrk` service process.
    pub fn swrk(&self) -> Result<Swrk, CriuError> {
        Swrk::spawn(&self.binary)
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CRIU_ENV) {
        return Some(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = vec!["/usr/local/sbin/criu".into()];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("criu")));
    }
    candidates.push("/usr/sbin/criu".into());
    candidates.into_iter().find(|p| p.is_file())
}

fn read_version(binary: &Path) -> Result<String, SetupError> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| SetupError::Version {
            binary: binary.to_path_buf(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| SetupError::Version {
            binary: binary.to_path_buf(),
            reason: format!("unexpected output {:?}", text.trim()),
        })
}

/// Parses `4.2.1` or `4.1` into (major, minor).
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// Returns the kernel release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Runs `criu check` unless it already passed for this binary and kernel.
fn run_check(binary: &Path) -> Result<(), SetupError> {
    let kernel = kernel_release();
    let key = fs::metadata(binary)
        .map(|m| format!("{} {} {} {kernel}\n", binary.display(), m.size(), m.mtime()))
        .unwrap_or_default();
    if !key.is_empty() && fs::read_to_string(CHECK_CACHE).is_ok_and(|cached| cached == key) {
        return Ok(());
    }

    let output = Command::new(binary).arg("check").output();
    let passed = output.as_ref().is_ok_and(|o| o.status.success());
    if !passed {
        let output = match output {
            Ok(o) => {
                let mut text = String::from_utf8_lossy(&o.stderr).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stdout));
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.contains("RLIMIT_NOFILE"))
                    .collect();
                lines[lines.len().saturating_sub(3)..].join(" | ")
            }
            Err(e) => e.to_string(),
        };
        return Err(SetupError::CheckFailed {
            binary: binary.to_path_buf(),
            kernel,
            output,
        });
    }

    // The cache is an optimisation: failing to write it only costs a re-check.
    if !key.is_empty() && crate::fsutil::create_private_dir_all(Path::new("/run/ckpt")).is_ok() {
        let _ = crate::fsutil::write_private_file(Path::new(CHECK_CACHE), key.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_version_handles_releases() {
        assert_eq!(parse_version("4.2.1"), Some((4, 2)));
        assert_eq!(parse_version("3.17"), Some((3, 17)));
        assert_eq!(parse_version("4"), Some((4, 0)));
        assert_eq!(parse_version("x.1"), None);
        assert!(parse_version("3.17").unwrap() < MIN_VERSION);
        assert!(parse_version("4.1.1").unwrap() >= MIN_VERSION);
    }
}
