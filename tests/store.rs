//! Integration tests of the checkpoint store: kill -9 at random instants, disk full on a
//! small tmpfs, malicious import archives, gc racing commits, and real CRIU images.
//!
//! Tests that need root (mount, CRIU) print why they skip, and fail instead when CI=true.

use std::fs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ckpt::model::{CheckpointId, CheckpointMeta, ContainerId};
use ckpt::store::{ImportLimits, Manifest, Store, StoreError};
use rand::RngExt;

/// Environment variable that turns the ignored `crash_worker_process` test into the
/// child process of the kill -9 tests; its value is the store path.
const WORKER_STORE_ENV: &str = "CKPT_TEST_CRASH_WORKER_STORE";

fn meta_at(container: &str, created: DateTime<Utc>) -> CheckpointMeta {
    CheckpointMeta {
        id: CheckpointId::generate(created),
        container: container.parse::<ContainerId>().unwrap(),
        created,
        criu_version: "4.2.1".to_string(),
        kernel: "test".to_string(),
        options: Default::default(),
        dump_stats: Default::default(),
        runtime: Default::default(),
        health_passing: None,
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill(&mut data[..]);
    data
}

/// Commits a checkpoint whose page image is `pages` with a few pages rewritten.
fn commit_variant(store: &Store, container: &str, pages: &[u8]) -> Result<Manifest, StoreError> {
    let meta = meta_at(container, Utc::now());
    let staging = store.stage(&meta.id)?;
    let dir = staging.dir().join("checkpoint");
    fs::create_dir_all(&dir).unwrap();
    let mut changed = pages.to_vec();
    for _ in 0..8 {
        let page = rand::rng().random_range(0..changed.len() / 4096);
        changed[page * 4096..page * 4096 + 64].copy_from_slice(&random_bytes(64));
    }
    fs::write(dir.join("pages-1.img"), &changed).unwrap();
    fs::write(dir.join("inventory.img"), b"inventory").unwrap();
    fs::write(dir.join("core-1.img"), random_bytes(30_000)).unwrap();
    fs::write(staging.dir().join("spec.dump"), b"{}").unwrap();
    store.commit(staging, meta)
}

/// Checks that every listed checkpoint verifies and that one of them materializes.
fn assert_all_listed_restore(store: &Store, context: &str) -> usize {
    let listed = store.list(None).unwrap();
    for manifest in &listed {
        let report = store.verify(Some(&manifest.meta.id)).unwrap();
        assert!(
            report.all_ok(),
            "{context}: listed checkpoint fails verification: {report:?}"
        );
    }
    if let Some(newest) = listed.first() {
        let dest = tempfile::tempdir().unwrap();
        store
            .materialize(&newest.meta.id, &dest.path().join("images"))
            .unwrap();
    }
    listed.len()
}

/// Prints why a test cannot run here; with CI=true the test fails instead.
fn skip(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run with CI=true: {reason}");
    }
    eprintln!("skipped: {reason}");
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
#[ignore = "child process of the kill -9 tests, started by them with its store path"]
fn crash_worker_process() {
    let root = std::env::var(WORKER_STORE_ENV).expect("run only by the kill -9 tests");
    let store = Store::open(Path::new(&root)).unwrap();
    let pages = fs::read(Path::new(&root).join("../base-pages")).unwrap();
    let archive = Path::new(&root).join("../export.tar.zst");
    loop {
        match rand::rng().random_range(0..10) {
            0..=4 => {
                commit_variant(&store, "web", &pages).unwrap();
            }
            5..=6 => {
                let listed = store.list(None).unwrap();
                if listed.len() > 3 {
                    store.delete(&listed[listed.len() - 1].meta.id).unwrap();
                }
                store.gc().unwrap();
            }
            _ => {
                // Export the newest checkpoint under a fresh id, then import it.
                let listed = store.list(None).unwrap();
                if let Some(newest) = listed.first() {
                    let dest = Path::new(&root).join("../materialized");
                    let _ = fs::remove_dir_all(&dest);
                    store.materialize(&newest.meta.id, &dest).unwrap();
                    let meta = meta_at("imported", Utc::now());
                    fs::write(
                        dest.join("ckpt-meta.json"),
                        serde_json::to_vec(&meta).unwrap(),
                    )
                    .unwrap();
                    write_tar_zst(&dest, &archive);
                    store.import(&archive).unwrap();
                }
            }
        }
    }
}

/// Packs `dir` into a tar+zstd archive, as another tool would.
fn write_tar_zst(dir: &Path, archive: &Path) {
    let encoder = zstd::Encoder::new(fs::File::create(archive).unwrap(), 3).unwrap();
    let mut builder = tar::Builder::new(encoder);
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn kill_during_commit_gc_import_keeps_listed_checkpoints() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("store");
    fs::write(temp.path().join("base-pages"), random_bytes(6 << 20)).unwrap();
    let store = Store::open(&root).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut kills_with_work = 0;

    for round in 0..30 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_worker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_STORE_ENV, &root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = rand::rng().random_range(20..700);
        std::thread::sleep(Duration::from_millis(delay));
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "round {round}: worker exited early with {exited:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();

        let context = format!("round {round} after {delay} ms");
        if assert_all_listed_restore(&store, &context) > 0 {
            kills_with_work += 1;
        }
    }
    assert!(
        kills_with_work > 10,
        "the worker committed too little to test anything"
    );

    // fsck removes the leftovers and loses nothing.
    let before = store.list(None).unwrap().len();
    let report = store.fsck(true).unwrap();
    eprintln!("fsck after kills: {report:?}");
    assert_eq!(store.list(None).unwrap().len(), before);
    assert!(store.fsck(false).unwrap().is_clean());
    assert_all_listed_restore(&store, "after fsck --repair");
    assert_eq!(fs::read_dir(root.join("staging")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn gc_during_commits_keeps_every_checkpoint() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let pages = random_bytes(4 << 20);
    let seed = commit_variant(&store, "web", &pages).unwrap();

    std::thread::scope(|scope| {
        let committer = scope.spawn(|| {
            for _ in 0..12 {
                commit_variant(&store, "web", &pages).unwrap();
            }
        });
        // Delete old checkpoints and collect while new ones reuse their chunks.
        store.delete(&seed.meta.id).unwrap();
        while !committer.is_finished() {
            let listed = store.list(None).unwrap();
            if listed.len() > 2 {
                store.delete(&listed[listed.len() - 1].meta.id).unwrap();
            }
            store.gc().unwrap();
        }
        committer.join().unwrap();
    });

    let count = assert_all_listed_restore(&store, "after gc raced commits");
    assert!(count >= 1);
}

#[test]
fn gc_waits_for_inflight_commit() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(temp.path()).unwrap();
    let pages = random_bytes(8 << 20);
    let first = commit_variant(&store, "web", &pages).unwrap();

    // The second commit dedups against the first, whose manifest is deleted meanwhile.
    let meta = meta_at("web", Utc::now());
    let staging = store.stage(&meta.id).unwrap();
    fs::create_dir_all(staging.dir().join("checkpoint")).unwrap();
    fs::write(staging.dir().join("checkpoint/pages-1.img"), &pages).unwrap();
    fs::write(
        staging.dir().join("checkpoint/big.img"),
        random_bytes(48 << 20),
    )
    .unwrap();

    let (commit_done, gc_done) = std::thread::scope(|scope| {
        let commit = scope.spawn(|| {
            let manifest = store.commit(staging, meta).unwrap();
            (manifest, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(30));
        store.delete(&first.meta.id).unwrap();
        store.gc().unwrap();
        let gc_done = Instant::now();
        (commit.join().unwrap(), gc_done)
    });
    let (second, committed_at) = commit_done;
    assert!(
        second.added_bytes < (49 << 20),
        "the second commit shared no chunks"
    );
    assert!(
        committed_at <= gc_done,
        "gc finished before the in-flight commit"
    );
    assert!(store.verify(Some(&second.meta.id)).unwrap().all_ok());
}

/// A tmpfs mounted for one test and unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("failed to run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed with {status}"));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn disk_full_fails_commit_and_keeps_earlier() {
    if !is_root() {
        return skip("mounting a tmpfs needs root");
    }
    let tmpfs = match Tmpfs::mount("16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => return skip(&reason),
    };
    let root = tmpfs.path().join("store");
    let store = Store::open(&root).unwrap();
    let earlier = commit_variant(&store, "web", &random_bytes(1 << 20)).unwrap();

    // 9 MiB of incompressible images fit in staging but not a second time in packs.
    let meta = meta_at("web", Utc::now());
    let staging = store.stage(&meta.id).unwrap();
    fs::create_dir_all(staging.dir().join("checkpoint")).unwrap();
    fs::write(
        staging.dir().join("checkpoint/pages-1.img"),
        random_bytes(9 << 20),
    )
    .unwrap();
    let error = store.commit(staging, meta).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::NoSpace { .. }), "{message}");
    assert!(
        message.starts_with("no space left on device while writing"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!("in store {}", root.display())),
        "{message}"
    );

    let listed = store.list(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].meta.id, earlier.meta.id);
    assert!(store.verify(None).unwrap().all_ok());
    store.fsck(true).unwrap();
    assert!(store.fsck(false).unwrap().is_clean());

    // With the space back, the store takes new checkpoints again.
    commit_variant(&store, "web", &random_bytes(1 << 20)).unwrap();
    assert_all_listed_restore(&store, "after disk full");
}

/// One raw tar entry; the name is written into the header unchecked, as an attacker would.
struct RawEntry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    /// Size to announce in the header, when it differs from `data.len()`.
    announced_size: Option<u64>,
}

impl<'a> RawEntry<'a> {
    fn file(name: &'a str, data: &'a [u8]) -> Self {
        RawEntry {
            name,
            kind: tar::EntryType::Regular,
            link: "",
            data,
            announced_size: None,
        }
    }
}

fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_old();
        let name = &mut header.as_old_mut().name;
        name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        let link = &mut header.as_old_mut().linkname;
        link[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        header.set_entry_type(entry.kind);
        header.set_mode(0o644);
        header.set_size(entry.announced_size.unwrap_or(entry.data.len() as u64));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(entry.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn valid_entries() -> Vec<RawEntry<'static>> {
    vec![
        // GNU tar starts an archive of `-C DIR .` with this entry.
        RawEntry {
            name: "./",
            kind: tar::EntryType::Directory,
            link: "",
            data: b"",
            announced_size: None,
        },
        RawEntry::file("checkpoint/inventory.img", b"inventory"),
        RawEntry::file("config.dump", br#"{"id":"abc","name":"web"}"#),
    ]
}

#[test]
fn import_rejects_malicious_archives() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(&temp.path().join("store")).unwrap();
    let big = vec![0u8; 4096];
    let cases: Vec<(&str, RawEntry, &str)> = vec![
        (
            "parent",
            RawEntry::file("../evil", b"x"),
            "entry ../evil contains '..'",
        ),
        (
            "nested parent",
            RawEntry::file("checkpoint/../../evil", b"x"),
            "contains '..'",
        ),
        (
            "absolute",
            RawEntry::file("/tmp/ckpt-evil", b"x"),
            "entry /tmp/ckpt-evil is an absolute path",
        ),
        (
            "escaping symlink",
            RawEntry {
                name: "checkpoint/link",
                kind: tar::EntryType::Symlink,
                link: "../../etc/passwd",
                data: b"",
                announced_size: None,
            },
            "symlink checkpoint/link -> ../../etc/passwd escapes the archive",
        ),
        (
            "absolute symlink",
            RawEntry {
                name: "link",
                kind: tar::EntryType::Symlink,
                link: "/etc/shadow",
                data: b"",
                announced_size: None,
            },
            "symlink link -> /etc/shadow escapes the archive",
        ),
        (
            "escaping hard link",
            RawEntry {
                name: "hard",
                kind: tar::EntryType::Link,
                link: "../outside",
                data: b"",
                announced_size: None,
            },
            "hard link hard -> ../outside escapes the archive",
        ),
        (
            "inner symlink",
            RawEntry {
                name: "checkpoint/alias",
                kind: tar::EntryType::Symlink,
                link: "inventory.img",
                data: b"",
                announced_size: None,
            },
            "is not supported: a checkpoint holds only regular files",
        ),
        (
            "character device",
            RawEntry {
                name: "dev/mem",
                kind: tar::EntryType::Char,
                link: "",
                data: b"",
                announced_size: None,
            },
            "device node dev/mem is not allowed",
        ),
        (
            "block device",
            RawEntry {
                name: "sda",
                kind: tar::EntryType::Block,
                link: "",
                data: b"",
                announced_size: None,
            },
            "device node sda is not allowed",
        ),
        (
            "fifo",
            RawEntry {
                name: "pipe",
                kind: tar::EntryType::Fifo,
                link: "",
                data: b"",
                announced_size: None,
            },
            "fifo pipe is not allowed",
        ),
        (
            "file above limit",
            RawEntry::file("checkpoint/pages-1.img", &big),
            "entry checkpoint/pages-1.img is 4096 bytes, above the limit of 1024 bytes",
        ),
        (
            "announced size beyond data",
            RawEntry {
                name: "checkpoint/pages-2.img",
                kind: tar::EntryType::Regular,
                link: "",
                data: b"short",
                announced_size: Some(1000),
            },
            "",
        ),
    ];
    let limits = ImportLimits {
        max_file_bytes: 1024,
        max_total_bytes: 1 << 20,
        max_entries: 100,
    };

    for (label, bad, expected) in cases {
        let mut entries = valid_entries();
        entries.insert(1, bad);
        let archive = temp.path().join(format!("{}.tar", label.replace(' ', "-")));
        fs::write(&archive, raw_tar(&entries)).unwrap();

        let error = store.import_with_limits(&archive, &limits).unwrap_err();
        let message = error.to_string();
        if expected.is_empty() {
            // A truncated body fails as a read error or a rejection, never as success.
            assert!(
                message.contains(archive.to_str().unwrap()),
                "{label}: {message}"
            );
        } else {
            assert!(
                matches!(error, StoreError::ArchiveRejected { .. }),
                "{label}: {message}"
            );
            assert!(message.contains(expected), "{label}: {message}");
        }
    }
    assert!(!Path::new("/tmp/ckpt-evil").exists());
    assert!(!temp.path().join("evil").exists());
    assert!(store.list(None).unwrap().is_empty());
    assert_eq!(
        fs::read_dir(temp.path().join("store/staging"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn import_rejects_oversized_total_and_entry_count() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(&temp.path().join("store")).unwrap();
    let data = vec![7u8; 800];
    let mut entries = valid_entries();
    entries.push(RawEntry::file("checkpoint/a.img", &data));
    entries.push(RawEntry::file("checkpoint/b.img", &data));
    let archive = temp.path().join("total.tar");
    fs::write(&archive, raw_tar(&entries)).unwrap();

    let limits = ImportLimits {
        max_file_bytes: 1024,
        max_total_bytes: 1500,
        max_entries: 100,
    };
    let message = store
        .import_with_limits(&archive, &limits)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("its files add up to more than the limit of 1500 bytes"),
        "{message}"
    );

    let limits = ImportLimits {
        max_file_bytes: 1024,
        max_total_bytes: 1 << 20,
        max_entries: 3,
    };
    let message = store
        .import_with_limits(&archive, &limits)
        .unwrap_err()
        .to_string();
    assert!(message.contains("it has more than 3 entries"), "{message}");
    assert!(store.list(None).unwrap().is_empty());
}

#[test]
fn import_accepts_podman_style_archive() {
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(&temp.path().join("store")).unwrap();
    let plain = raw_tar(&valid_entries());
    let archive = temp.path().join("podman.tar.zst");
    fs::write(&archive, zstd::encode_all(&plain[..], 3).unwrap()).unwrap();

    let manifest = store.import(&archive).unwrap();
    assert_eq!(manifest.meta.container.as_str(), "web");
    let paths: Vec<_> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["checkpoint/inventory.img", "config.dump"]);

    let not_checkpoint = temp.path().join("other.tar");
    fs::write(&not_checkpoint, raw_tar(&[RawEntry::file("README", b"hi")])).unwrap();
    let message = store.import(&not_checkpoint).unwrap_err().to_string();
    assert!(
        message.ends_with("it is not a checkpoint archive: checkpoint/inventory.img is missing"),
        "{message}"
    );
}

/// Starts a detached `sleep`, dumps it with CRIU into `dir` while leaving it running,
/// and kills it.
fn criu_dump_sleeper(dir: &Path) -> Result<(), String> {
    let mut sleeper = Command::new("setsid")
        .args(["sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to start sleep: {e}"))?;
    std::thread::sleep(Duration::from_millis(200));
    let output = Command::new("criu")
        .args(["dump", "--shell-job", "--leave-running", "-t"])
        .arg(sleeper.id().to_string())
        .arg("-D")
        .arg(dir)
        .output();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let output = output.map_err(|e| format!("failed to run criu: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "criu dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

#[test]
fn real_criu_images_round_trip() {
    if !is_root() {
        return skip("criu dump needs root");
    }
    let temp = tempfile::tempdir().unwrap();
    let store = Store::open(&temp.path().join("store")).unwrap();
    let meta = meta_at("sleeper", Utc::now());
    let staging = store.stage(&meta.id).unwrap();
    let images = staging.dir().join("checkpoint");
    fs::create_dir_all(&images).unwrap();
    if let Err(reason) = criu_dump_sleeper(&images) {
        return skip(&reason);
    }
    let originals: Vec<(PathBuf, Vec<u8>)> = walk_files(staging.dir());
    assert!(
        originals
            .iter()
            .any(|(p, _)| p.to_str().unwrap().starts_with("checkpoint/pages-"))
    );

    let manifest = store.commit(staging, meta).unwrap();
    let dest = temp.path().join("restored");
    store.materialize(&manifest.meta.id, &dest).unwrap();
    assert_eq!(walk_files(&dest), originals);
}

fn walk_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn run_ckpt(store: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("CKPT_SOCKET")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn cli_store_commands_report_and_exit() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("store");
    let store = Store::open(&root).unwrap();
    let manifest = commit_variant(&store, "web", &random_bytes(1 << 20)).unwrap();
    let id = manifest.meta.id.to_string();

    let (code, stdout, _) = run_ckpt(&root, &["verify"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains(&format!("{id}  ok")), "{stdout}");

    let (code, stdout, _) = run_ckpt(&root, &["store", "stats", "--json"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["checkpoints"], 1);

    let archive = temp.path().join("out.tar.zst");
    let (code, _, stderr) = run_ckpt(
        &root,
        &["export", &id[..20], "-o", archive.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_ckpt(&root, &["import", archive.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("ckpt: checkpoint {id} already exists in the store")
    );

    let evil = temp.path().join("evil.tar");
    let mut entries = valid_entries();
    entries.insert(0, RawEntry::file("../evil", b"x"));
    fs::write(&evil, raw_tar(&entries)).unwrap();
    let (code, _, stderr) = run_ckpt(&root, &["import", evil.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "ckpt: archive {} rejected: entry ../evil contains '..'",
            evil.display()
        )
    );

    let (code, _, stderr) = run_ckpt(&root, &["delete", "19990101"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        "ckpt: no checkpoint matches \"19990101\"; list checkpoints with `ckpt list`"
    );

    // Corrupt every pack: verify fails with exit code 1 and names the checkpoint.
    for entry in fs::read_dir(root.join("packs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            let mut bytes = fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            fs::write(&path, bytes).unwrap();
        }
    }
    let (code, stdout, stderr) = run_ckpt(&root, &["verify"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("{id}  corrupt")), "{stdout}");
    assert_eq!(
        stderr.trim(),
        "ckpt: 1 of 1 checkpoints failed verification"
    );

    let (code, stdout, _) = run_ckpt(&root, &["fsck"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout.trim(),
        format!("no problems found in store {}", root.display())
    );
}
