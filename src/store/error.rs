//! Errors of the store operations.

use std::io;
use std::path::{Path, PathBuf};

use crate::model::{CheckpointId, InvalidId};

/// Error of a store operation. Each variant names the resource and the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("no space left on device while writing {object} in store {root}")]
    NoSpace { object: String, root: PathBuf },

    #[error(
        "store {path} is not readable: {reason}; check the path and its permissions \
         (ckpt usually runs as root), or pass --store DIR"
    )]
    NotReadable { path: PathBuf, reason: String },

    #[error("{path} is not a ckpt store: {reason}")]
    NotAStore { path: PathBuf, reason: String },

    #[error("store {path} has format version {found}, but this ckpt reads only version {expected}")]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },

    #[error("no checkpoint matches {input:?}; list checkpoints with `ckpt list`")]
    NotFound { input: String },

    #[error("checkpoint prefix {input:?} is ambiguous: it matches {}", candidates.join(", "))]
    Ambiguous {
        input: String,
        candidates: Vec<String>,
    },

    #[error("checkpoint {id} already exists in the store")]
    AlreadyExists { id: CheckpointId },

    #[error("manifest {path} is corrupt: {reason}")]
    CorruptManifest { path: PathBuf, reason: String },

    #[error("pack index {path} is corrupt: {reason}")]
    CorruptIndex { path: PathBuf, reason: String },

    #[error("checkpoint {checkpoint} is corrupt: chunk {index} ({hash}) of file {file}: {reason}")]
    CorruptChunk {
        checkpoint: CheckpointId,
        file: String,
        index: usize,
        hash: String,
        reason: String,
    },

    #[error("checkpoint {checkpoint} is corrupt: file {file}: {reason}")]
    CorruptFile {
        checkpoint: CheckpointId,
        file: String,
        reason: String,
    },

    #[error("staging directory {path} cannot be stored: {reason}")]
    InvalidStaging { path: PathBuf, reason: String },

    #[error("archive {archive} rejected: {reason}")]
    ArchiveRejected { archive: PathBuf, reason: String },

    #[error("archive {archive} lacks checkpoint metadata: {reason}")]
    ArchiveMetadata { archive: PathBuf, reason: String },

    #[error("invalid identifier in store")]
    InvalidId(#[from] InvalidId),
}

impl StoreError {
    /// Returns true when the error comes from what the user named or supplied (an unknown
    /// or ambiguous checkpoint, a rejected archive) rather than from the store failing.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound { .. }
                | StoreError::Ambiguous { .. }
                | StoreError::NotReadable { .. }
                | StoreError::NotAStore { .. }
                | StoreError::AlreadyExists { .. }
                | StoreError::ArchiveRejected { .. }
                | StoreError::ArchiveMetadata { .. }
        )
    }

    /// Wraps an I/O error of `step` on `path`.
    pub(crate) fn io(step: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        StoreError::Io {
            step,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Wraps an I/O error met while writing `object` into the store at `root`, turning ENOSPC
    /// and EDQUOT into [`StoreError::NoSpace`] so that a full disk reads as such.
    pub(crate) fn write(
        object: impl FnOnce() -> String,
        root: &Path,
        step: &'static str,
        path: impl AsRef<Path>,
        source: io::Error,
    ) -> Self {
        if is_no_space(&source) {
            StoreError::NoSpace {
                object: object(),
                root: root.to_path_buf(),
            }
        } else {
            StoreError::io(step, path, source)
        }
    }
}

/// Returns true when `error` means the file system is full or the quota is exhausted.
pub(crate) fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    ) || error.kind() == io::ErrorKind::StorageFull
}
