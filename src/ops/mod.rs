//! The operations ckpt performs on containers and debug containers.
//!
//! Each operation is a blocking function over a [`Context`]; the CLI calls
//! them directly and the daemon calls them from blocking worker threads.

pub mod cgroup;
pub mod checkpoint;
pub mod debug;
pub mod restore;
pub mod scratch;
pub mod shim;

use std::path::PathBuf;

use crate::runtime::Runtime;
use crate::store::{Store, StoreError};

pub use checkpoint::{CheckpointError, checkpoint};
pub use debug::{
    DebugContainer, DebugError, DebugState, list as list_debug, remove as remove_debug,
    resume as resume_debug,
};
pub use restore::{RestoreError, RestoreRequest, restore_paused};

/// Default store location.
pub const DEFAULT_STORE: &str = "/var/lib/ckpt";

/// Store, runtime and options that every operation works with.
#[derive(Clone, Debug)]
pub struct Context {
    pub store_root: PathBuf,
    /// The runtime's state root; runc's default when `None`.
    pub runtime_root: Option<PathBuf>,
    /// The runtime binary; `CKPT_RUNTIME` or `runc` when `None`.
    pub runtime_binary: Option<String>,
    /// zstd level (1 to 19) for new chunks; the store's default, 3, when `None`.
    pub compression_level: Option<i32>,
    /// Receives progress reports of long steps; none when `None`.
    pub progress: Option<crate::store::progress::ProgressHandle>,
}

impl Context {
    pub fn runtime(&self) -> Runtime {
        let mut runtime = Runtime::new(self.runtime_root.as_deref());
        if let Some(binary) = &self.runtime_binary {
            runtime.binary = binary.clone();
        }
        runtime
    }

    /// Opens the store, creating it if needed (for operations that write).
    pub fn open_store(&self) -> Result<Store, StoreError> {
        let mut store = Store::open(&self.store_root)?;
        if let Some(progress) = &self.progress {
            store.set_progress(progress.clone());
        }
        Ok(store)
    }

    /// Opens an existing store (for operations that only read checkpoints).
    pub fn open_existing_store(&self) -> Result<Store, StoreError> {
        let mut store = Store::open_existing(&self.store_root)?;
        if let Some(progress) = &self.progress {
            store.set_progress(progress.clone());
        }
        Ok(store)
    }

    /// Reports the start of a step without a byte count, such as CRIU's dump.
    pub(crate) fn start_step(&self, step: &str) {
        if let Some(progress) = &self.progress {
            progress.start(step, 0);
        }
    }

    /// Reports the end of the step started last.
    pub(crate) fn finish_step(&self) {
        if let Some(progress) = &self.progress {
            progress.finish();
        }
    }
}
