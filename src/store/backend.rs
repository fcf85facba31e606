//! Storage of the store's objects (packs, pack indexes, manifests) behind a small interface.
//!
//! Objects are immutable once published and are addressed by a key such as
//! `packs/<hash>.pack`. Publishing is atomic: a reader sees the whole object or none of it.
//! These are the only guarantees the store relies on, so an object store with atomic PUT
//! (S3 and compatible services) can implement [`Backend`] without a format change.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Storage of immutable objects addressed by `/`-separated keys.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Returns the path (or URL) of `key`, for messages.
    fn location(&self, key: &str) -> PathBuf;

    /// Publishes the finished local file `file` under `key`, consuming the file.
    /// The file must be on the store's file system and already flushed to disk.
    fn put_file(&self, key: &str, file: &Path) -> io::Result<()>;

    /// Publishes `data` under `key`.
    fn put_bytes(&self, key: &str, data: &[u8]) -> io::Result<()>;

    fn get(&self, key: &str) -> io::Result<Vec<u8>>;

    /// Reads exactly `len` bytes of `key` starting at `offset`.
    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;

    /// Names of the objects directly under `prefix` (a key without its last component).
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;

    fn size(&self, key: &str) -> io::Result<u64>;

    /// Removes `key`; removing a missing key succeeds.
    fn delete(&self, key: &str) -> io::Result<()>;
}

/// Largest number of pack files [`LocalDir`] keeps open for range reads.
const MAX_OPEN_FILES: usize = 64;

/// The built-in backend: one file per object under a local directory.
pub struct LocalDir {
    root: PathBuf,
    /// Directory for temporary files, on the same file system as `root`.
    tmp: PathBuf,
    open_files: Mutex<HashMap<String, Arc<File>>>,
}

impl fmt::Debug for LocalDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalDir")
            .field("root", &self.root)
            .finish()
    }
}

impl LocalDir {
    pub fn new(root: &Path, tmp: &Path) -> Self {
        LocalDir {
            root: root.to_path_buf(),
            tmp: tmp.to_path_buf(),
            open_files: Mutex::new(HashMap::new()),
        }
    }

    fn open_cached(&self, key: &str) -> io::Result<Arc<File>> {
        let mut files = self.open_files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = files.get(key) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.location(key))?);
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        files.insert(key.to_string(), file.clone());
        Ok(file)
    }

    fn forget(&self, key: &str) {
        let mut files = self.open_files.lock().unwrap_or_else(|e| e.into_inner());
        files.remove(key);
    }
}

impl Backend for LocalDir {
    fn location(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn put_file(&self, key: &str, file: &Path) -> io::Result<()> {
        let target = self.location(key);
        fs::rename(file, &target)?;
        sync_parent(&target)
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let mut temp = tempfile::Builder::new()
            .prefix(".put-")
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.tmp)?;
        temp.write_all(data)?;
        temp.as_file().sync_all()?;
        let target = self.location(key);
        temp.persist(&target).map_err(|e| e.error)?;
        sync_parent(&target)
    }

    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        fs::read(self.location(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.open_cached(key)?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.location(prefix))? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn size(&self, key: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.location(key))?.len())
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        self.forget(key);
        let target = self.location(key);
        match fs::remove_file(&target) {
            Ok(()) => sync_parent(&target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Flushes the directory entry of `path` to disk, so that a rename or removal survives a crash.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        // A bare file name lives in the current directory.
        Some(parent) if parent.as_os_str().is_empty() => sync_dir(Path::new(".")),
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a new 0600 file for writing; fails if it exists.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

pub(crate) use crate::fsutil::create_private_dir_all as create_private_dir;
