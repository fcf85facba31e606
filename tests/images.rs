//! Decoding real CRIU images: a busybox process tree is dumped twice with
//! `criu dump --leave-running`, then inspect, memgrep and diff run on the
//! image directories, and the decoding is checked against `crit decode`.
//!
//! Needs root, CRIU (`criu` on PATH or /usr/local/sbin/criu), busybox and, for
//! the cross-check, `crit` on PATH (scripts/install-crit.sh installs it).
//! A test that cannot run prints why, and fails when CI=true.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ckpt::images::pages::PAGE_SIZE;
use ckpt::images::{Checkpoint, MemMatch, MemgrepOptions, Pattern, diff, memgrep, render};
use serde_json::Value;

/// Prints why a test cannot run. Under CI=true the test fails instead.
fn cannot_run(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("test cannot run: {reason}");
    }
    // Written to stderr directly, because the test harness hides eprintln! output of passing tests.
    let _ = writeln!(std::io::stderr(), "skipping: {reason}");
}

/// Two dumps of one running workload, taken about a second apart.
struct Dumps {
    first: PathBuf,
    second: PathBuf,
    root_pid: u32,
    port: u16,
    open_file: PathBuf,
    marker: String,
}

const WORKLOAD: &str = r#"
# The marker is assembled at run time so that it exists only in the shell's
# heap and not in this script's text.
marker="CKPT_MARK""ER_$$"
exec 3>>"$DIR/open-file.txt"
echo hello >&3
# Debian's busybox nc cannot bind an address, but httpd can.
busybox httpd -f -p "127.0.0.1:$PORT" -h "$DIR" </dev/null >/dev/null 2>&1 &
c=0
while :; do
    c=$((c+1))
    counter="CKPT_COUNTER=$c"
    busybox sleep 0.1
done
"#;

fn find_criu() -> Option<PathBuf> {
    let candidates = [PathBuf::from("/usr/local/sbin/criu"), PathBuf::from("criu")];
    candidates.into_iter().find(|path| {
        Command::new(path)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// Kills the workload's process group when dropped.
struct Workload(Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Returns whether a socket listens on 127.0.0.1:`port`, from /proc/net/tcp.
fn listening(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
    })
}

fn criu_dump(criu: &Path, pid: u32, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let output = Command::new(criu)
        .args([
            "dump",
            "--shell-job",
            "--leave-running",
            "-o",
            "dump.log",
            "-t",
        ])
        .arg(pid.to_string())
        .arg("-D")
        .arg(dir)
        .output()
        .map_err(|e| format!("run criu: {e}"))?;
    if !output.status.success() {
        let log = std::fs::read_to_string(dir.join("dump.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        return Err(format!(
            "criu dump failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(())
}

fn make_dumps() -> Result<Dumps, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("criu dump needs root".into());
    }
    let criu = find_criu().ok_or("criu not found")?;
    let busybox_works = Command::new("busybox")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !busybox_works {
        return Err("busybox not found".into());
    }

    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-test");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    let script = base.join("workload.sh");
    std::fs::write(&script, WORKLOAD).map_err(|e| e.to_string())?;

    // Pick a free port by binding to port 0, then let httpd take it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();

    // setsid makes the shell a session leader, so the whole tree is dumpable.
    // The spawned child is not a group leader, so setsid execs without forking
    // and the child's pid is the shell's.
    let log = std::fs::File::create(base.join("workload.log")).map_err(|e| e.to_string())?;
    let child = Command::new("setsid")
        .args(["busybox", "sh"])
        .arg(&script)
        .env("DIR", &base)
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start workload: {e}"))?;
    let workload = Workload(child);
    let root_pid = workload.0.id();

    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(port) {
        if Instant::now() > deadline {
            return Err(format!(
                "workload did not listen on port {port} within 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));

    let first = base.join("first");
    let second = base.join("second");
    criu_dump(&criu, root_pid, &first)?;
    std::thread::sleep(Duration::from_millis(1000));
    criu_dump(&criu, root_pid, &second)?;
    drop(workload);

    Ok(Dumps {
        first,
        second,
        root_pid,
        port,
        open_file: base.join("open-file.txt"),
        marker: format!("CKPT_MARKER_{root_pid}"),
    })
}

fn dumps() -> Option<&'static Dumps> {
    static DUMPS: OnceLock<Result<Dumps, String>> = OnceLock::new();
    match DUMPS.get_or_init(make_dumps) {
        Ok(dumps) => Some(dumps),
        Err(reason) => {
            cannot_run(reason);
            None
        }
    }
}

fn grep(checkpoint: &Checkpoint, pattern: &Pattern) -> Vec<MemMatch> {
    let mut found = Vec::new();
    memgrep(checkpoint, pattern, &MemgrepOptions::default(), |m| {
        found.push(m);
        ControlFlow::Continue(())
    })
    .expect("memgrep reads the pages");
    found
}

#[test]
fn inspect_lists_tree_file_and_socket() {
    let Some(dumps) = dumps() else { return };
    let checkpoint = Checkpoint::load(&dumps.first).unwrap();

    let root = checkpoint
        .process(dumps.root_pid)
        .expect("root process in pstree");
    assert_eq!(root.argv.first().map(String::as_str), Some("busybox"));
    assert_eq!(root.argv.get(1).map(String::as_str), Some("sh"));
    assert_eq!(root.state, "alive");
    assert_eq!(root.threads.len(), 1);

    let open_file = root.files.iter().find(|f| f.fd == 3).expect("fd 3 is open");
    assert_eq!(
        open_file.path.as_deref(),
        Some(dumps.open_file.to_str().unwrap())
    );
    assert_eq!(open_file.position, Some(6), "\"hello\\n\" was written");
    assert!(
        open_file.flags.contains(&"O_APPEND".to_string()),
        "{:?}",
        open_file.flags
    );

    let httpd = checkpoint
        .processes
        .iter()
        .find(|p| p.argv.iter().any(|a| a == "httpd"))
        .expect("httpd child in pstree");
    assert_eq!(httpd.ppid, dumps.root_pid);
    let socket = httpd
        .files
        .iter()
        .find_map(|f| f.socket.clone())
        .expect("httpd holds a socket");
    assert_eq!(socket.family, "inet");
    assert_eq!(socket.protocol, "tcp");
    assert_eq!(socket.state, "LISTEN");
    assert_eq!(socket.local, format!("127.0.0.1:{}", dumps.port));
    assert_eq!(socket.remote, "", "a listening socket has no peer");

    let kinds: Vec<&str> = root
        .memory
        .mappings
        .iter()
        .map(|m| m.kind.as_str())
        .collect();
    for kind in ["heap", "stack", "file", "vdso"] {
        assert!(kinds.contains(&kind), "no {kind} mapping in {kinds:?}");
    }
    let busybox = root
        .memory
        .mappings
        .iter()
        .find(|m| m.kind == "file")
        .unwrap();
    assert!(
        busybox
            .path
            .as_deref()
            .is_some_and(|p| p.ends_with("busybox")),
        "{busybox:?}"
    );

    let stats = checkpoint
        .dump_stats
        .as_ref()
        .expect("criu writes stats-dump");
    assert!(stats.pages_written > 0);

    let text = render::inspect_tree(&checkpoint, false);
    assert!(
        text.contains(&format!("{} busybox sh ", dumps.root_pid)),
        "{text}"
    );
    assert!(
        text.contains(&format!("tcp LISTEN 127.0.0.1:{}", dumps.port)),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} pos 6", dumps.open_file.display())),
        "{text}"
    );
}

#[test]
fn memgrep_finds_marker() {
    let Some(dumps) = dumps() else { return };
    let checkpoint = Checkpoint::load(&dumps.first).unwrap();

    let found = grep(&checkpoint, &Pattern::literal(&dumps.marker).unwrap());
    assert!(!found.is_empty(), "marker {} not found", dumps.marker);
    assert!(found.iter().all(|m| m.matched == dumps.marker.as_bytes()));
    let in_root = found
        .iter()
        .find(|m| m.pid == dumps.root_pid)
        .expect("marker in the shell's memory");
    assert!(
        in_root.perms.starts_with("rw"),
        "marker in a writable mapping: {in_root:?}"
    );
    let text = render::memgrep_text(in_root);
    assert!(text.contains(&dumps.marker[..10]), "{text}");
}

/// Largest counter value found in the shell's memory.
fn counter(checkpoint: &Checkpoint, pid: u32) -> (u64, Vec<MemMatch>) {
    let found: Vec<MemMatch> = grep(checkpoint, &Pattern::regex("CKPT_COUNTER=[0-9]+").unwrap())
        .into_iter()
        .filter(|m| m.pid == pid)
        .collect();
    let max = found
        .iter()
        .filter_map(|m| {
            std::str::from_utf8(&m.matched["CKPT_COUNTER=".len()..])
                .ok()?
                .parse()
                .ok()
        })
        .max()
        .expect("counter in memory");
    (max, found)
}

#[test]
fn diff_shows_counter_page() {
    let Some(dumps) = dumps() else { return };
    let first = Checkpoint::load(&dumps.first).unwrap();
    let second = Checkpoint::load(&dumps.second).unwrap();

    let (before, _) = counter(&first, dumps.root_pid);
    let (after, matches) = counter(&second, dumps.root_pid);
    assert!(after > before, "counter went from {before} to {after}");

    let changes = diff(&first, &second).unwrap();
    let root_changes: Vec<_> = changes
        .memory
        .iter()
        .filter(|m| m.pid == dumps.root_pid)
        .collect();
    assert!(!root_changes.is_empty(), "{}", render::diff_text(&changes));

    // The page that contains the newest counter value must be reported as changed.
    let newest = matches
        .iter()
        .find(|m| m.matched.ends_with(after.to_string().as_bytes()))
        .expect("newest counter value");
    let page = newest.address & !(PAGE_SIZE - 1);
    let mapping = root_changes
        .iter()
        .find(|m| (m.start..m.end).contains(&page))
        .unwrap_or_else(|| {
            panic!(
                "no change reported for counter page {page:#x}: {}",
                render::diff_text(&changes)
            )
        });
    assert!(mapping.pages_changed + mapping.pages_added > 0);
    if mapping.pages_changed as usize <= mapping.changed_addresses.len() {
        assert!(
            mapping.changed_addresses.contains(&page) || mapping.pages_added > 0,
            "page {page:#x} not in {:x?}",
            mapping.changed_addresses
        );
    }
    let text = render::diff_text(&changes);
    assert!(text.contains("memory:"), "{text}");
}

/// Runs `crit decode` on one image and returns its JSON.
fn crit_decode(image: &Path) -> Value {
    let output = Command::new("crit")
        .args(["decode", "-i"])
        .arg(image)
        .output()
        .expect("crit runs");
    assert!(
        output.status.success(),
        "crit decode {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("crit prints JSON")
}

fn entries(value: &Value) -> &Vec<Value> {
    value["entries"]
        .as_array()
        .expect("crit output has entries")
}

/// Returns crit's version, or `None` when crit is missing or too old to print one.
///
/// Debian 12's crit (CRIU 3.17) has no `--version` and no pagemap `nr_pages`
/// field, so it cannot check images written by CRIU 4.
fn crit_version() -> Option<String> {
    let output = Command::new("crit").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn decoding_matches_crit() {
    let Some(dumps) = dumps() else { return };
    if crit_version().is_none() {
        cannot_run(
            "crit on PATH is missing or predates CRIU 4 (run scripts/install-crit.sh CRIU_SOURCE_DIR)",
        );
        return;
    }

    for dir in [&dumps.first, &dumps.second] {
        let checkpoint = Checkpoint::load(dir).unwrap();

        // Process tree.
        let pstree = crit_decode(&dir.join("pstree.img"));
        let crit_tree: Vec<(u64, u64, Vec<u64>)> = entries(&pstree)
            .iter()
            .map(|e| {
                let threads = e["threads"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap())
                    .collect();
                (
                    e["pid"].as_u64().unwrap(),
                    e["ppid"].as_u64().unwrap(),
                    threads,
                )
            })
            .collect();
        let our_tree: Vec<(u64, u64, Vec<u64>)> = checkpoint
            .processes
            .iter()
            .map(|p| {
                (
                    p.pid.into(),
                    p.ppid.into(),
                    p.threads.iter().map(|t| t.tid.into()).collect(),
                )
            })
            .collect();
        assert_eq!(our_tree, crit_tree);

        let files = crit_decode(&dir.join("files.img"));
        let file_by_id: BTreeMap<u64, &Value> = entries(&files)
            .iter()
            .map(|f| (f["id"].as_u64().unwrap(), f))
            .collect();

        for process in &checkpoint.processes {
            let pid = process.pid;

            // Open regular files: fd, path and position.
            let ids = crit_decode(&dir.join(format!("ids-{pid}.img")));
            let files_id = entries(&ids)[0]["files_id"].as_u64().unwrap();
            let fdinfo = crit_decode(&dir.join(format!("fdinfo-{files_id}.img")));
            let mut crit_files: Vec<(u64, String, u64)> = entries(&fdinfo)
                .iter()
                .filter_map(|fd| {
                    let file = file_by_id.get(&fd["id"].as_u64()?)?;
                    let reg = file.get("reg")?;
                    Some((
                        fd["fd"].as_u64()?,
                        reg["name"].as_str()?.to_string(),
                        reg["pos"].as_u64()?,
                    ))
                })
                .collect();
            crit_files.sort();
            let our_files: Vec<(u64, String, u64)> = process
                .files
                .iter()
                .filter(|f| f.kind == "REG")
                .map(|f| (f.fd.into(), f.path.clone().unwrap(), f.position.unwrap()))
                .collect();
            assert_eq!(our_files, crit_files, "pid {pid}");
            assert!(!our_files.is_empty(), "pid {pid} has regular files open");

            // Listening sockets: ports.
            let crit_ports: Vec<u64> = entries(&fdinfo)
                .iter()
                .filter_map(|fd| {
                    file_by_id.get(&fd["id"].as_u64()?)?.get("isk")?["src_port"].as_u64()
                })
                .collect();
            let our_ports: Vec<u64> = process
                .files
                .iter()
                .filter_map(|f| f.socket.as_ref())
                .filter(|s| s.family.starts_with("inet"))
                .map(|s| s.local.rsplit(':').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(our_ports, crit_ports, "pid {pid}");

            // Memory: VMA count and bounds.
            let mm = crit_decode(&dir.join(format!("mm-{pid}.img")));
            let crit_vmas: Vec<(u64, u64)> = entries(&mm)[0]["vmas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (hex_or_number(&v["start"]), hex_or_number(&v["end"])))
                .collect();
            let our_vmas: Vec<(u64, u64)> = process
                .memory
                .mappings
                .iter()
                .map(|m| (m.start, m.end))
                .collect();
            assert_eq!(our_vmas, crit_vmas, "pid {pid}");

            // Pagemap entries: address, page count and flags.
            let pagemap = crit_decode(&dir.join(format!("pagemap-{pid}.img")));
            let crit_runs: Vec<(u64, u64, u64)> = entries(&pagemap)[1..]
                .iter()
                .map(|e| {
                    (
                        hex_or_number(&e["vaddr"]),
                        e["nr_pages"].as_u64().unwrap(),
                        e["flags"].as_u64().unwrap(),
                    )
                })
                .collect();
            let map = checkpoint
                .page_map(pid)
                .expect("live process has a pagemap");
            let our_runs: Vec<(u64, u64, u64)> = map
                .runs
                .iter()
                .map(|r| (r.vaddr, r.nr_pages, r.flags.into()))
                .collect();
            assert_eq!(our_runs, crit_runs, "pid {pid}");
            let pages_id = entries(&pagemap)[0]["pages_id"].as_u64().unwrap();
            assert_eq!(
                map.pages_files()[0],
                dir.join(format!("pages-{pages_id}.img"))
            );
        }
    }
}

/// Reads a number that crit prints either as a JSON number or as a `0x...` string.
fn hex_or_number(value: &Value) -> u64 {
    match value {
        Value::String(text) => {
            u64::from_str_radix(text.trim_start_matches("0x"), 16).expect("hex address")
        }
        other => other.as_u64().expect("numeric field"),
    }
}

/// Commits both dumps into a fresh store as checkpoints of container `busybox`.
fn store_dumps(dumps: &Dumps) -> (PathBuf, String, String) {
    use ckpt::model::{CheckpointId, CheckpointMeta};
    use ckpt::store::Store;

    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-cli-store");
    let _ = std::fs::remove_dir_all(&root);
    let store = Store::open(&root).unwrap();
    let mut ids = Vec::new();
    for (i, dir) in [&dumps.first, &dumps.second].into_iter().enumerate() {
        let created = chrono::Utc::now() + chrono::Duration::seconds(i as i64);
        let meta = CheckpointMeta {
            id: CheckpointId::generate(created),
            container: "busybox".parse().unwrap(),
            created,
            criu_version: "4.2.1".into(),
            kernel: "test".into(),
            options: Default::default(),
            dump_stats: Default::default(),
            runtime: Default::default(),
            health_passing: None,
        };
        let staging = store.stage(&meta.id).unwrap();
        let images = staging.dir().join("checkpoint");
        std::fs::create_dir_all(&images).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), images.join(entry.file_name())).unwrap();
        }
        ids.push(store.commit(staging, meta).unwrap().meta.id.to_string());
    }
    (root, ids.remove(0), ids.remove(0))
}

/// Runs the ckpt binary against `store` and returns (exit code, stdout, stderr).
fn ckpt(store: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("ckpt runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn cli_inspects_stored_checkpoints() {
    let Some(dumps) = dumps() else { return };
    let (store, first, second) = store_dumps(dumps);

    // inspect: tree and JSON.
    let (code, out, err) = ckpt(&store, &["inspect", &first]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("checkpoint:      {first}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("tcp LISTEN 127.0.0.1:{}", dumps.port)),
        "{out}"
    );
    assert!(
        !out.contains("PORT="),
        "environment hidden without --env: {out}"
    );
    let (code, out, err) = ckpt(&store, &["inspect", &first, "--env"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("PORT={}", dumps.port)), "{out}");

    let (code, out, err) = ckpt(&store, &["inspect", &first[..18], "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    assert_eq!(json["meta"]["id"], first.as_str());
    assert_eq!(json["images"]["processes"][0]["pid"], dumps.root_pid);
    assert!(json["images"]["processes"][0].get("env").is_none());
    assert!(
        json["images"].get("dir").is_none(),
        "the temporary copy is not shown"
    );

    // memgrep: a match, no match, JSON, and a bad regex.
    let (code, out, err) = ckpt(&store, &["memgrep", &first, &dumps.marker]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("pid {} (busybox) 0x", dumps.root_pid)),
        "{out}"
    );
    let (code, out, _) = ckpt(&store, &["memgrep", &first, "NO_SUCH_BYTES_IN_MEMORY_42"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("no matches for \"NO_SUCH_BYTES_IN_MEMORY_42\" in checkpoint {first}\n")
    );
    let (code, out, err) = ckpt(
        &store,
        &["memgrep", &first, "--regex", "CKPT_MARKER_[0-9]+", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let matches: Value = serde_json::from_str(&out).expect("memgrep prints JSON");
    assert!(!matches.as_array().unwrap().is_empty(), "{out}");
    let (code, out, err) = ckpt(
        &store,
        &[
            "memgrep",
            &first,
            "--regex",
            "CKPT_COUNTER=[0-9]+",
            "--max-count",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches("\npid ").count() + usize::from(out.starts_with("pid ")),
        1,
        "{out}"
    );
    assert_eq!(
        err,
        "ckpt: reached the --max-count limit of 1 matches, so more may exist\n"
    );
    let (code, _, err) = ckpt(&store, &["memgrep", &first, "x", "--max-count", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ckpt(&store, &["memgrep", &first, "--regex", "("]);
    assert_eq!(code, 2);
    assert!(err.starts_with("ckpt: invalid regex \"(\""), "{err}");

    // diff: the counter page changed.
    let (code, out, err) = ckpt(&store, &["diff", &first, &second]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("--- {first}\n+++ {second}\n")),
        "{out}"
    );
    assert!(out.contains(&format!("~ pid {} ", dumps.root_pid)), "{out}");
    let (code, out, err) = ckpt(&store, &["diff", &first, &second, "--json"]);
    assert_eq!(code, 0, "{err}");
    let changes: Value = serde_json::from_str(&out).expect("diff prints JSON");
    assert!(!changes["memory"].as_array().unwrap().is_empty(), "{out}");

    // An unknown id is bad input.
    let (code, _, err) = ckpt(&store, &["inspect", "1999"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("ckpt: failed to read checkpoint \"1999\" from the store"),
        "{err}"
    );
}

/// Python program that writes a marker across a page boundary of a
/// `MAP_SHARED|MAP_ANONYMOUS` mapping, then waits. The marker includes the
/// pid, so it is built at run time and is absent from the program text.
const SHARED_MEMORY_WORKLOAD: &str = r#"
import mmap, os, socket, sys, threading, time
shared = mmap.mmap(-1, 3 * 4096)
shared.seek(2 * 4096 - 5)
shared.write(b"SHARED_MARK" + b"ER_" + str(os.getpid()).encode())
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind("\0ckpt-images-test-" + str(os.getpid()))
unix.listen(1)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
threading.Thread(target=time.sleep, args=(60,), daemon=True, name="sleeper").start()
sys.stdout.write("ready %d\n" % udp.getsockname()[1])
sys.stdout.flush()
time.sleep(60)
"#;

#[test]
fn shared_memory_threads_and_sockets() {
    if !nix::unistd::geteuid().is_root() {
        cannot_run("criu dump needs root");
        return;
    }
    let Some(criu) = find_criu() else {
        cannot_run("criu not found");
        return;
    };
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        cannot_run("/usr/bin/python3 not found");
        return;
    }

    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-shared-memory");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let child = Command::new("setsid")
        .arg(python)
        .args(["-c", SHARED_MEMORY_WORKLOAD])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let mut workload = Workload(child);
    let pid = workload.0.id();
    let mut ready = String::new();
    let stdout = workload.0.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready).unwrap();
    let udp_port: u16 = ready
        .strip_prefix("ready ")
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {ready:?}"));

    let dir = base.join("dump");
    criu_dump(&criu, pid, &dir).unwrap();
    drop(workload);

    let checkpoint = Checkpoint::load(&dir).unwrap();
    let process = checkpoint.process(pid).unwrap();

    // A second thread, a listening abstract unix socket and a bound UDP socket.
    assert_eq!(process.threads.len(), 2, "{:?}", process.threads);
    assert_eq!(process.threads[0].tid, pid);
    let sockets: Vec<_> = process
        .files
        .iter()
        .filter_map(|f| f.socket.as_ref())
        .collect();
    let unix = sockets
        .iter()
        .find(|s| s.family == "unix")
        .unwrap_or_else(|| panic!("no unix socket in {sockets:?}"));
    assert_eq!(unix.local, format!("@ckpt-images-test-{pid}"));
    assert_eq!(unix.state, "LISTEN");
    assert_eq!(unix.socket_type, "stream");
    let udp = sockets
        .iter()
        .find(|s| s.protocol == "udp")
        .unwrap_or_else(|| panic!("no udp socket in {sockets:?}"));
    assert_eq!(udp.local, format!("127.0.0.1:{udp_port}"));
    assert_eq!(udp.socket_type, "dgram");
    assert_eq!(udp.remote, "", "an unconnected socket has no peer");
    let shared: Vec<_> = process
        .memory
        .mappings
        .iter()
        .filter(|m| m.kind == "anon-shared" && m.size() == 3 * PAGE_SIZE)
        .collect();
    assert_eq!(shared.len(), 1, "{:?}", process.memory.mappings);
    let mapping = shared[0];
    assert_eq!(mapping.perms, "rw-s");
    assert!(mapping.dumped_pages >= 2, "{mapping:?}");

    let marker = format!("SHARED_MARKER_{pid}");
    let found: Vec<MemMatch> = grep(&checkpoint, &Pattern::literal(&marker).unwrap())
        .into_iter()
        .filter(|m| m.mapping == "[anon-shared]")
        .collect();
    assert_eq!(found.len(), 1, "marker {marker} in shared memory");
    assert_eq!(found[0].address, mapping.start + 2 * PAGE_SIZE - 5);
}
