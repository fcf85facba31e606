//! Progress reporting for long store operations.
//!
//! The store reports bytes as it stores, unpacks, verifies and exports them.
//! The CLI draws a progress bar from these reports when stderr is a terminal.

use std::fmt;
use std::sync::Arc;

/// Receives progress reports. Calls come from the thread running the operation.
pub trait Progress: Send + Sync {
    /// Starts a phase with `total_bytes` to process, or 0 when the total is unknown.
    fn start(&self, phase: &str, total_bytes: u64);
    /// `bytes` more were processed in the current phase.
    fn advance(&self, bytes: u64);
    /// Ends the current phase.
    fn finish(&self);
}

/// A shared progress observer.
#[derive(Clone)]
pub struct ProgressHandle(pub Arc<dyn Progress>);

impl ProgressHandle {
    /// Returns an observer that ignores every report.
    pub fn silent() -> Self {
        Self(Arc::new(Silent))
    }
}

impl fmt::Debug for ProgressHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressHandle")
    }
}

impl std::ops::Deref for ProgressHandle {
    type Target = dyn Progress;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

struct Silent;

impl Progress for Silent {
    fn start(&self, _phase: &str, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records reports for assertions.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) phases: Mutex<Vec<(String, u64)>>,
        pub(crate) advanced: Mutex<u64>,
        pub(crate) finished: Mutex<usize>,
    }

    impl Progress for Recorder {
        fn start(&self, phase: &str, total_bytes: u64) {
            self.phases
                .lock()
                .unwrap()
                .push((phase.to_string(), total_bytes));
        }
        fn advance(&self, bytes: u64) {
            *self.advanced.lock().unwrap() += bytes;
        }
        fn finish(&self) {
            *self.finished.lock().unwrap() += 1;
        }
    }
}
