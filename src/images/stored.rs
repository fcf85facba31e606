//! Opening a checkpoint from the store for inspect, diff and memgrep.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::checkpoint::{Checkpoint, LoadError};
use crate::ops::checkpoint::IMAGES_DIR;
use crate::store::{Manifest, Store, StoreError};

/// Error for [`StoredCheckpoint::open`].
#[derive(Debug, thiserror::Error)]
pub enum OpenStoredError {
    #[error("failed to create a temporary directory in {parent}")]
    TempDir {
        parent: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read checkpoint {input:?} from the store")]
    Store {
        input: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("failed to decode the images of checkpoint {id}")]
    Load {
        id: String,
        #[source]
        source: LoadError,
    },
}

/// A checkpoint materialized from the store into a private temporary directory,
/// which is removed when this value is dropped.
#[derive(Debug)]
pub struct StoredCheckpoint {
    pub manifest: Manifest,
    pub images: Checkpoint,
    _dir: TempDir,
}

impl StoredCheckpoint {
    /// Resolves `id_or_prefix`, materializes the checkpoint under `temp_parent`
    /// (a 0700 directory of its own) and decodes its images.
    ///
    /// The whole checkpoint is written out, pages included, because memgrep and
    /// diff read page contents. `temp_parent` needs room for its logical size.
    pub fn open(
        store: &Store,
        id_or_prefix: &str,
        temp_parent: &Path,
    ) -> Result<Self, OpenStoredError> {
        let store_error = |source| OpenStoredError::Store {
            input: id_or_prefix.to_string(),
            source: Box::new(source),
        };
        let manifest = store.resolve(id_or_prefix).map_err(store_error)?;
        let id = manifest.meta.id.clone();

        let dir = tempfile::Builder::new()
            .prefix("ckpt-inspect-")
            .tempdir_in(temp_parent)
            .map_err(|source| OpenStoredError::TempDir {
                parent: temp_parent.to_path_buf(),
                source,
            })?;
        let dest = dir.path().join(id.as_str());
        store.materialize(&id, &dest).map_err(store_error)?;

        let mut images =
            Checkpoint::load(&dest.join(IMAGES_DIR)).map_err(|source| OpenStoredError::Load {
                id: id.to_string(),
                source,
            })?;
        // ckpt keeps CRIU's stats-dump out of the image directory and stores
        // its figures in the manifest, so take them from there.
        if images.dump_stats.is_none() {
            images.dump_stats = Some(manifest.meta.dump_stats.clone());
        }
        Ok(Self {
            manifest,
            images,
            _dir: dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::tests::{Fixture, Memory};
    use crate::model::{CheckpointId, CheckpointMeta};

    fn meta() -> CheckpointMeta {
        let created = "2026-01-01T00:00:00Z".parse().unwrap();
        CheckpointMeta {
            id: CheckpointId::generate(created),
            container: "web".parse().unwrap(),
            created,
            criu_version: "4.2.1".into(),
            kernel: "6.18".into(),
            options: Default::default(),
            dump_stats: Default::default(),
            runtime: Default::default(),
            health_passing: None,
        }
    }

    /// Copies the fixture's images into a staging directory and commits them.
    fn commit_fixture(store: &Store, fixture: &Fixture) -> Manifest {
        commit_fixture_with(store, fixture, meta())
    }

    fn commit_fixture_with(store: &Store, fixture: &Fixture, meta: CheckpointMeta) -> Manifest {
        let staging = store.stage(&meta.id).unwrap();
        let images = staging.dir().join(IMAGES_DIR);
        std::fs::create_dir_all(&images).unwrap();
        for entry in std::fs::read_dir(fixture.dir.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), images.join(entry.file_name())).unwrap();
        }
        store.commit(staging, meta).unwrap()
    }

    #[test]
    fn open_by_prefix_decodes_images() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store::open(&temp.path().join("store")).unwrap();
        let manifest = commit_fixture(&store, &Fixture::new(&Memory::new()));

        let prefix = &manifest.meta.id.as_str()[..12];
        let stored = StoredCheckpoint::open(&store, prefix, temp.path()).unwrap();
        assert_eq!(stored.manifest.meta.id, manifest.meta.id);
        assert_eq!(stored.images.processes.len(), 2);
        assert_eq!(stored.images.processes[0].argv, vec!["sh", "-c", "echo hi"]);

        let materialized = stored.images.dir.clone();
        assert!(materialized.join("pages-1.img").is_file());
        drop(stored);
        assert!(!materialized.exists(), "temporary copy removed on drop");
    }

    #[test]
    fn dump_stats_fall_back_to_manifest() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store::open(&temp.path().join("store")).unwrap();
        let fixture = Fixture::new(&Memory::new());
        std::fs::remove_file(fixture.dir.path().join("stats-dump")).unwrap();
        let mut meta = meta();
        meta.dump_stats.frozen_time_us = 777;
        let manifest = commit_fixture_with(&store, &fixture, meta);

        let stored =
            StoredCheckpoint::open(&store, manifest.meta.id.as_str(), temp.path()).unwrap();
        let stats = stored.images.dump_stats.expect("stats from the manifest");
        assert_eq!(stats.frozen_time_us, 777);
    }

    #[test]
    fn open_unknown_id_names_input() {
        let temp = tempfile::tempdir().unwrap();
        let store = Store::open(&temp.path().join("store")).unwrap();
        let error = StoredCheckpoint::open(&store, "2099", temp.path()).unwrap_err();
        assert!(matches!(error, OpenStoredError::Store { .. }));
        assert_eq!(
            error.to_string(),
            "failed to read checkpoint \"2099\" from the store"
        );
    }
}
