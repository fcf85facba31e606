use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use rand::RngExt;

use super::*;
use crate::model::{CheckpointId, CheckpointMeta, ContainerId};

pub(crate) fn meta(container: &str, created: &str) -> CheckpointMeta {
    let created: DateTime<Utc> = created.parse().unwrap();
    CheckpointMeta {
        id: CheckpointId::generate(created),
        container: container.parse::<ContainerId>().unwrap(),
        created,
        criu_version: "4.2.1".to_string(),
        kernel: "6.18".to_string(),
        options: Default::default(),
        dump_stats: Default::default(),
        runtime: Default::default(),
        health_passing: Some(true),
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill(&mut data[..]);
    data
}

/// Writes a small image directory: a page image, a few other images and a side file.
fn write_images(dir: &Path, pages: &[u8]) {
    fs::create_dir_all(dir.join("checkpoint")).unwrap();
    fs::write(dir.join("checkpoint/pages-1.img"), pages).unwrap();
    fs::write(dir.join("checkpoint/inventory.img"), b"inventory").unwrap();
    fs::write(dir.join("checkpoint/core-1.img"), random_bytes(100_000)).unwrap();
    fs::write(dir.join("checkpoint/empty.img"), b"").unwrap();
    fs::write(dir.join("spec.dump"), br#"{"ociVersion":"1.0.2"}"#).unwrap();
}

fn commit_images(store: &Store, meta: CheckpointMeta, pages: &[u8]) -> Manifest {
    let staging = store.stage(&meta.id).unwrap();
    write_images(staging.dir(), pages);
    store.commit(staging, meta).unwrap()
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn pack_files(store: &Store, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut packs: Vec<_> = fs::read_dir(store.root().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    packs.sort();
    packs
}

#[test]
fn commit_then_materialize_round_trips() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(&temp.path().join("store")).unwrap();
    let pages = random_bytes(300_000);
    let manifest = commit_images(&store, meta("web", "2026-01-01T00:00:00Z"), &pages);
    assert_eq!(manifest.files.len(), 5);
    assert_eq!(manifest.logical_bytes, 300_000 + 9 + 100_000 + 22);
    assert!(
        manifest.added_bytes > 400_000,
        "random data adds about its own size"
    );

    let dest = temp.path().join("restored");
    store.materialize(&manifest.meta.id, &dest).unwrap();
    assert_eq!(
        fs::read(dest.join("checkpoint/pages-1.img")).unwrap(),
        pages
    );
    assert_eq!(
        fs::read(dest.join("spec.dump")).unwrap(),
        br#"{"ociVersion":"1.0.2"}"#
    );
    assert_eq!(fs::read(dest.join("checkpoint/empty.img")).unwrap(), b"");
    assert_eq!(mode_of(&dest.join("checkpoint")), 0o700);
    assert_eq!(mode_of(&dest.join("checkpoint/pages-1.img")), 0o600);
}

#[test]
fn commit_removes_staging_directory() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let meta = meta("web", "2026-01-01T00:00:00Z");
    let staging = store.stage(&meta.id).unwrap();
    let dir = staging.dir().to_path_buf();
    write_images(&dir, b"pages");
    store.commit(staging, meta).unwrap();
    assert!(!dir.exists());
    assert_eq!(
        fs::read_dir(temp.path().join("staging")).unwrap().count(),
        0
    );
}

#[test]
fn staging_outside_store_commits_and_cleans_up() {
    let temp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let meta = meta("web", "2026-01-01T00:00:00Z");
    let staging = store.stage_in(&meta.id, outside.path()).unwrap();
    let dir = staging.dir().to_path_buf();
    assert!(dir.starts_with(outside.path()));
    assert_eq!(mode_of(&dir), 0o700);
    write_images(&dir, b"pages");
    let manifest = store.commit(staging, meta).unwrap();
    assert!(!dir.exists());
    assert_eq!(
        fs::read_dir(temp.path().join("staging")).unwrap().count(),
        0
    );
    store.verify(Some(&manifest.meta.id)).unwrap();
}

#[test]
fn fsck_removes_stale_staging_outside_store() {
    let temp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();

    // What a writer killed with SIGKILL leaves: an unlocked lock naming its directory.
    let name = format!("{}.abcdef", CheckpointId::generate(Utc::now()));
    let stale = outside.path().join(&name);
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join("pages-1.img"), b"secret").unwrap();
    let lock = temp.path().join("staging").join(format!("{name}.lock"));
    fs::write(&lock, stale.as_os_str().as_encoded_bytes()).unwrap();

    // A lock that names a directory of another name is not trusted.
    let unrelated = outside.path().join("unrelated");
    fs::create_dir(&unrelated).unwrap();
    let other = temp
        .path()
        .join("staging")
        .join("20260101T000000Z-000000.123456.lock");
    fs::write(&other, unrelated.as_os_str().as_encoded_bytes()).unwrap();

    let report = store.fsck(true).unwrap();
    assert!(
        report.stale_staging.contains(&stale),
        "{:?}",
        report.stale_staging
    );
    assert!(!stale.exists());
    assert!(!lock.exists());
    assert!(unrelated.exists());
    assert!(!other.exists());
}

#[test]
fn compression_level_reaches_zstd() {
    // Text with some variety, which zstd's higher levels compress better.
    let mut text = Vec::new();
    for i in 0..40_000u32 {
        text.extend_from_slice(
            format!(
                "request {} from 10.0.{}.{} took {} ms\n",
                i * 7919 % 10007,
                i % 13,
                i % 251,
                i % 97
            )
            .as_bytes(),
        );
    }
    let added = |level: i32| {
        let temp = tempfile::tempdir().unwrap();
        let store = Store::open(temp.path()).unwrap();
        let meta = meta("web", "2026-01-01T00:00:00Z");
        let mut staging = store.stage(&meta.id).unwrap();
        staging.set_compression_level(level);
        write_images(staging.dir(), &text);
        store.commit(staging, meta).unwrap().added_bytes
    };
    let (fast, small) = (added(1), added(19));
    assert!(
        small < fast,
        "level 19 added {small} bytes, level 1 added {fast}"
    );
}

#[test]
fn progress_reports_every_byte() {
    let temp = tempfile::tempdir().unwrap();
    let mut store = Store::open(temp.path()).unwrap();
    let recorder = std::sync::Arc::new(super::progress::tests::Recorder::default());
    store.set_progress(super::progress::ProgressHandle(recorder.clone()));

    let meta = meta("web", "2026-01-01T00:00:00Z");
    let pages = random_bytes(300 << 10);
    let manifest = commit_images(&store, meta, &pages);
    assert_eq!(*recorder.advanced.lock().unwrap(), manifest.logical_bytes);
    assert_eq!(
        recorder.phases.lock().unwrap()[0],
        ("storing".to_string(), manifest.logical_bytes)
    );

    *recorder.advanced.lock().unwrap() = 0;
    let out = tempfile::tempdir().unwrap();
    store.materialize(&manifest.meta.id, out.path()).unwrap();
    assert_eq!(*recorder.advanced.lock().unwrap(), manifest.logical_bytes);
    assert_eq!(
        recorder.phases.lock().unwrap()[1],
        ("unpacking".to_string(), manifest.logical_bytes)
    );
    assert_eq!(*recorder.finished.lock().unwrap(), 2);
}

#[test]
fn listing_omits_file_lists() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let manifest = commit_images(
        &store,
        meta("web", "2026-01-01T00:00:00Z"),
        &random_bytes(64 << 10),
    );
    let listed = store.list(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].files.is_empty());
    assert_eq!(listed[0].logical_bytes, manifest.logical_bytes);
    assert!(
        !store
            .resolve(manifest.meta.id.as_str())
            .unwrap()
            .files
            .is_empty()
    );
}

#[test]
fn dropped_staging_is_removed() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let staging = store.stage(&CheckpointId::generate(Utc::now())).unwrap();
    let dir = staging.dir().to_path_buf();
    assert_eq!(mode_of(&dir), 0o700);
    fs::write(dir.join("x"), b"1").unwrap();
    drop(staging);
    assert!(!dir.exists());
    assert_eq!(
        fs::read_dir(temp.path().join("staging")).unwrap().count(),
        0
    );
}

#[test]
fn store_files_are_private() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("store");
    let store = Store::open(&root).unwrap();
    commit_images(
        &store,
        meta("web", "2026-01-01T00:00:00Z"),
        &random_bytes(50_000),
    );
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.unwrap();
        let mode = mode_of(entry.path());
        let expected = if entry.file_type().is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, expected, "{}", entry.path().display());
    }
}

#[test]
fn second_checkpoint_stores_only_changed_pages() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let mut pages = random_bytes(4 << 20);
    let first = commit_images(&store, meta("web", "2026-01-01T00:00:00Z"), &pages);

    // Change one byte in 5% of the 4 KiB pages.
    let page_count = pages.len() / 4096;
    for page in (0..page_count).step_by(20) {
        pages[page * 4096 + 7] ^= 0xff;
    }
    let second = commit_images(&store, meta("web", "2026-01-01T00:01:00Z"), &pages);

    let changed_chunks = page_count.div_ceil(20) as u64;
    let budget = changed_chunks * (ingest::PAGE_CHUNK_BYTES as u64 + 64) + 200_000;
    assert!(first.added_bytes > 4 << 20);
    assert!(
        second.added_bytes <= budget,
        "second added {} bytes, budget {budget}",
        second.added_bytes
    );

    let dest = temp.path().join("restored");
    store.materialize(&second.meta.id, &dest).unwrap();
    assert_eq!(
        fs::read(dest.join("checkpoint/pages-1.img")).unwrap(),
        pages
    );
}

#[test]
fn restore_refuses_corrupt_checkpoint() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(&temp.path().join("store")).unwrap();
    let manifest = commit_images(
        &store,
        meta("web", "2026-01-01T00:00:00Z"),
        &random_bytes(100_000),
    );

    // Flip one byte in the middle of the only pack, inside some chunk's stored bytes.
    let pack = &pack_files(&store, ".pack")[0];
    let mut bytes = fs::read(pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(pack, bytes).unwrap();

    let dest = temp.path().join("restored");
    let error = store
        .materialize(&manifest.meta.id, &dest)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "checkpoint {} is corrupt: chunk ",
            manifest.meta.id
        )),
        "{error}"
    );
    assert!(error.contains("of file checkpoint/"), "{error}");
    let leftovers: Vec<_> = walkdir::WalkDir::new(&dest)
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial files left behind: {leftovers:?}"
    );

    let report = store.verify(None).unwrap();
    assert!(!report.all_ok());
    assert_eq!(report.checkpoints.len(), 1);
    assert!(
        report.checkpoints[0]
            .error
            .as_ref()
            .unwrap()
            .contains("is corrupt: chunk")
    );
}

#[test]
fn verify_accepts_intact_store() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let a = commit_images(
        &store,
        meta("web", "2026-01-01T00:00:00Z"),
        &random_bytes(20_000),
    );
    commit_images(
        &store,
        meta("db", "2026-01-01T00:00:00Z"),
        &random_bytes(20_000),
    );
    let report = store.verify(None).unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.checkpoints.len(), 2);
    let one = store.verify(Some(&a.meta.id)).unwrap();
    assert_eq!(one.checkpoints.len(), 1);
    assert_eq!(one.checkpoints[0].bytes, a.logical_bytes);
}

#[test]
fn list_is_newest_first_and_filters_container() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let old = commit_images(&store, meta("web", "2026-01-01T00:00:00Z"), b"1");
    let new = commit_images(&store, meta("web", "2026-01-02T00:00:00Z"), b"2");
    let other = commit_images(&store, meta("db", "2026-01-03T00:00:00Z"), b"3");

    let all: Vec<_> = store
        .list(None)
        .unwrap()
        .into_iter()
        .map(|m| m.meta.id)
        .collect();
    assert_eq!(
        all,
        vec![other.meta.id, new.meta.id.clone(), old.meta.id.clone()]
    );
    let web: ContainerId = "web".parse().unwrap();
    let web_ids: Vec<_> = store
        .list(Some(&web))
        .unwrap()
        .into_iter()
        .map(|m| m.meta.id)
        .collect();
    assert_eq!(web_ids, vec![new.meta.id, old.meta.id]);
}

#[test]
fn resolve_accepts_unique_prefix_only() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let a = commit_images(&store, meta("web", "2026-01-01T00:00:00Z"), b"1");
    let b = commit_images(&store, meta("web", "2026-01-01T00:00:00Z"), b"2");

    assert_eq!(
        store.resolve(a.meta.id.as_str()).unwrap().meta.id,
        a.meta.id
    );
    assert_eq!(
        store.resolve(&b.meta.id.as_str()[..20]).unwrap().meta.id,
        b.meta.id
    );

    let error = store.resolve("20260101T").unwrap_err();
    assert!(matches!(error, StoreError::Ambiguous { .. }), "{error}");
    assert!(error.to_string().contains(a.meta.id.as_str()));
    let error = store.resolve("19990101").unwrap_err();
    assert_eq!(
        error.to_string(),
        "no checkpoint matches \"19990101\"; list checkpoints with `ckpt list`"
    );
}

#[test]
fn delete_then_gc_keeps_shared_chunks() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let shared = random_bytes(1 << 20);
    let first = commit_images(&store, meta("web", "2026-01-01T00:00:00Z"), &shared);
    let second = commit_images(&store, meta("web", "2026-01-01T00:01:00Z"), &shared);

    store.delete(&first.meta.id).unwrap();
    assert!(matches!(
        store.delete(&first.meta.id),
        Err(StoreError::NotFound { .. })
    ));
    store.gc().unwrap();
    let report = store.verify(None).unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.checkpoints.len(), 1);

    store.delete(&second.meta.id).unwrap();
    let gc = store.gc().unwrap();
    assert!(gc.packs_deleted >= 1);
    assert!(gc.bytes_freed > 1 << 20);
    assert!(pack_files(&store, ".pack").is_empty());
    assert!(pack_files(&store, ".idx").is_empty());
}

#[test]
fn gc_rewrites_mostly_dead_pack() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    // One checkpoint with a large unique page image and a small side file in one pack.
    let big = commit_images(
        &store,
        meta("web", "2026-01-01T00:00:00Z"),
        &random_bytes(2 << 20),
    );
    // A second checkpoint that shares only the small files' chunks would share nothing
    // random, so reuse the exact same images but a tiny page image.
    let staging = store.stage(&CheckpointId::generate(Utc::now())).unwrap();
    let keep_meta = CheckpointMeta {
        id: staging.id().clone(),
        ..meta("web", "2026-01-01T00:02:00Z")
    };
    let dest = staging.dir().join("checkpoint");
    store.materialize(&big.meta.id, staging.dir()).unwrap();
    fs::write(dest.join("pages-1.img"), b"small").unwrap();
    let keep = store.commit(staging, keep_meta).unwrap();

    store.delete(&big.meta.id).unwrap();
    let gc = store.gc().unwrap();
    assert_eq!(gc.packs_rewritten, 1, "{gc:?}");
    assert!(gc.bytes_freed > 1 << 20, "{gc:?}");
    let report = store.verify(Some(&keep.meta.id)).unwrap();
    assert!(report.all_ok(), "{report:?}");
}

#[test]
fn fsck_repairs_leftovers_and_keeps_checkpoints() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("store");
    let store = Store::open(&root).unwrap();
    let kept = commit_images(
        &store,
        meta("web", "2026-01-01T00:00:00Z"),
        &random_bytes(50_000),
    );

    // Leftovers of a killed process: a staging directory without its lock holder,
    // a temporary file, and a pack that never got its index.
    let staging = root.join("staging/20260101T000000Z-aaaaaa.123456");
    fs::create_dir_all(&staging).unwrap();
    fs::write(staging.join("pages-1.img"), b"x").unwrap();
    fs::write(root.join("tmp/.pack-xyz.tmp"), b"partial").unwrap();
    fs::write(root.join("packs/abcd.pack"), b"CKPTPACK").unwrap();
    // A live staging directory must survive.
    let live = store.stage(&CheckpointId::generate(Utc::now())).unwrap();

    let report = store.fsck(false).unwrap();
    assert_eq!(report.stale_staging, vec![staging.clone()]);
    assert_eq!(report.temp_files.len(), 1);
    assert_eq!(report.orphan_packs, vec!["abcd".to_string()]);
    assert!(report.unreferenced_packs.is_empty());
    assert!(!report.is_clean());
    assert!(staging.exists(), "fsck without repair changed the store");

    let repaired = store.fsck(true).unwrap();
    assert_eq!(repaired.stale_staging, vec![staging.clone()]);
    assert!(!staging.exists());
    assert!(live.dir().exists());
    assert!(!root.join("packs/abcd.pack").exists());
    assert!(fs::read_dir(root.join("tmp")).unwrap().next().is_none());
    assert!(store.fsck(false).unwrap().is_clean());
    assert!(store.verify(Some(&kept.meta.id)).unwrap().all_ok());
}

#[test]
fn fsck_rebuilds_damaged_index() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let kept = commit_images(
        &store,
        meta("web", "2026-01-01T00:00:00Z"),
        &random_bytes(50_000),
    );
    let index = &pack_files(&store, ".idx")[0];
    let mut bytes = fs::read(index).unwrap();
    bytes[20] ^= 0xff;
    fs::write(index, bytes).unwrap();
    assert!(!store.verify(None).unwrap().all_ok());

    let report = store.fsck(true).unwrap();
    assert_eq!(report.damaged_indexes.len(), 1);
    assert_eq!(report.damaged_indexes[0].1, "checksum mismatch");
    assert!(store.verify(Some(&kept.meta.id)).unwrap().all_ok());
}

#[test]
fn fsck_sets_corrupt_manifest_aside() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let bad = commit_images(&store, meta("web", "2026-01-01T00:00:00Z"), b"1");
    let good = commit_images(&store, meta("web", "2026-01-02T00:00:00Z"), b"2");
    let path = temp
        .path()
        .join(format!("manifests/{}.manifest", bad.meta.id));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x01;
    fs::write(&path, bytes).unwrap();

    let listed: Vec<_> = store
        .list(None)
        .unwrap()
        .into_iter()
        .map(|m| m.meta.id)
        .collect();
    assert_eq!(listed, vec![good.meta.id.clone()]);
    assert!(matches!(
        store.gc(),
        Err(StoreError::CorruptManifest { .. })
    ));

    let report = store.fsck(true).unwrap();
    assert_eq!(report.corrupt_manifests.len(), 1);
    assert!(path.with_extension("manifest.corrupt").exists());
    store.gc().unwrap();
    assert!(store.verify(None).unwrap().all_ok());
}

#[test]
fn export_import_round_trips() {
    let temp = tempfile::tempdir().unwrap();
    let source = Store::open(&temp.path().join("a")).unwrap();
    let pages = random_bytes(200_000);
    let original = commit_images(&source, meta("web", "2026-01-01T00:00:00Z"), &pages);
    let archive = temp.path().join("web.tar.zst");
    source.export(&original.meta.id, &archive).unwrap();
    assert_eq!(mode_of(&archive), 0o600);

    let target = Store::open(&temp.path().join("b")).unwrap();
    let imported = target.import(&archive).unwrap();
    assert_eq!(imported.meta, original.meta);
    let dest = temp.path().join("restored");
    target.materialize(&imported.meta.id, &dest).unwrap();
    assert_eq!(
        fs::read(dest.join("checkpoint/pages-1.img")).unwrap(),
        pages
    );
    let config = fs::read_to_string(dest.join("config.dump")).unwrap();
    assert!(config.contains("\"name\": \"web\""), "{config}");
    assert!(!dest.join(META_FILE).exists());

    let again = target.import(&archive).unwrap_err();
    assert!(matches!(again, StoreError::AlreadyExists { .. }), "{again}");
}

#[test]
fn open_existing_names_missing_store() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("nope");
    let error = Store::open_existing(&missing).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "store {} is not readable: no such file or directory",
            missing.display()
        )),
        "{error}"
    );
}

#[test]
fn open_rejects_other_format_version() {
    let temp = tempfile::tempdir().unwrap();
    Store::open(temp.path()).unwrap();
    fs::write(temp.path().join("FORMAT"), "ckpt-store 9\n").unwrap();
    let error = Store::open(temp.path()).unwrap_err().to_string();
    assert!(error.contains("has format version 9"), "{error}");
}

#[test]
fn commit_rejects_symlink_in_staging() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let meta = meta("web", "2026-01-01T00:00:00Z");
    let staging = store.stage(&meta.id).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", staging.dir().join("leak")).unwrap();
    let error = store.commit(staging, meta).unwrap_err().to_string();
    assert!(
        error.ends_with("cannot be stored: leak is not a regular file"),
        "{error}"
    );
    assert!(store.list(None).unwrap().is_empty());
}

#[test]
fn stats_report_dedup_ratio() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let pages = random_bytes(1 << 20);
    for minute in 0..4 {
        commit_images(
            &store,
            meta("web", &format!("2026-01-01T00:0{minute}:00Z")),
            &pages,
        );
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.checkpoints, 4);
    assert_eq!(stats.containers, 1);
    // The page image is stored once; each checkpoint's random core image is new.
    let expected_max = (1 << 20) + 4 * 101_000 + 20_000;
    assert!(stats.stored_bytes < expected_max, "{stats:?}");
    let ratio = stats.logical_bytes as f64 / stats.stored_bytes as f64;
    assert!((stats.dedup_ratio - ratio).abs() < 1e-9);
    assert!(stats.dedup_ratio > 3.0, "{stats:?}");
}
