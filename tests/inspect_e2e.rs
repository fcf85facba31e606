//! `ckpt inspect`, `ckpt memgrep` and `ckpt diff` on real checkpoints of a
//! busybox container run by runc (the workload of tests/common).

mod common;

use std::time::Duration;

use common::{TestEnv, can_run_containers, last_line};
use serde_json::Value;

const PAGE_SIZE: u64 = 4096;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"))
}

#[test]
fn inspect_memgrep_and_diff_container_checkpoints() {
    if !can_run_containers() {
        return;
    }
    let env = TestEnv::new();
    let container = env.start_workload();
    container.wait_for_output("counter=4", Duration::from_secs(10));
    let (token, counter) = container.last_state().expect("workload output");

    // Two checkpoints about a second apart, so the counter has moved on.
    let first = last_line(&env.ckpt_ok(&["checkpoint", &container.id])).to_string();
    container.wait_for_output(&format!("counter={}", counter + 5), Duration::from_secs(10));
    let second = last_line(&env.ckpt_ok(&["checkpoint", &container.id])).to_string();

    // inspect: the process tree, open files, the listening socket and mounts.
    let inspected = json(&env.ckpt_ok(&["inspect", &first, "--format", "json"]));
    assert_eq!(inspected["meta"]["id"], first.as_str());
    let processes = inspected["images"]["processes"]
        .as_array()
        .expect("processes");
    let root = &processes[0];
    assert_eq!(root["argv"][0], "/bin/sh", "{root}");
    assert_eq!(root["argv"][1], "/app/run.sh", "{root}");
    let root_pid = root["pid"].as_u64().unwrap();
    let fds: Vec<u64> = root["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fd"].as_u64().unwrap())
        .collect();
    for fd in [0, 1, 2] {
        assert!(fds.contains(&fd), "fd {fd} missing from {fds:?}");
    }
    let script = root["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/app/run.sh")
        .unwrap_or_else(|| panic!("the shell keeps its script open: {}", root["files"]));
    assert!(script["position"].as_u64().unwrap() > 0);

    let nc = processes
        .iter()
        .find(|p| p["argv"][0] == "nc")
        .unwrap_or_else(|| panic!("no nc process in {processes:?}"));
    assert_eq!(nc["ppid"].as_u64(), Some(root_pid));
    let socket = nc["files"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f["socket"].as_object())
        .expect("nc holds a socket");
    assert_eq!(socket["protocol"], "tcp");
    assert_eq!(socket["state"], "LISTEN");
    assert!(
        socket["local"].as_str().unwrap().ends_with(":7777"),
        "{socket:?}"
    );

    let frozen = inspected["images"]["dump_stats"]["frozen_time_us"].as_u64();
    assert!(
        frozen.is_some_and(|us| us > 0),
        "{}",
        inspected["images"]["dump_stats"]
    );

    let mounts = inspected["images"]["mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["mountpoint"] == "/proc"),
        "no /proc in {mounts:?}"
    );

    let tree = env.ckpt_ok(&["inspect", &first]);
    assert!(
        tree.contains(&format!("{root_pid} /bin/sh /app/run.sh (alive")),
        "{tree}"
    );
    // busybox nc binds the IPv6 wildcard address, which also accepts IPv4.
    assert!(tree.contains("inet6 stream tcp LISTEN [::]:7777"), "{tree}");

    // memgrep: the marker the shell keeps in a variable.
    let marker = format!("ckpt-marker-{token}");
    let found = env.ckpt_ok(&["memgrep", &first, &marker]);
    // The kernel names a script's process after the script, so comm is `run.sh`.
    assert!(
        found.starts_with(&format!("pid {root_pid} (run.sh) 0x")),
        "{found}"
    );
    assert!(found.contains("[heap]"), "{found}");

    // diff: the page that contains the newest counter value changed.
    let counters = json(&env.ckpt_ok(&[
        "memgrep",
        &second,
        "--regex",
        "counter=[0-9]+",
        "--json",
        "--pid",
        &root_pid.to_string(),
    ]));
    let newest = counters
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let bytes = hex_decode(m["matched"].as_str()?);
            let value: u64 = std::str::from_utf8(&bytes)
                .ok()?
                .strip_prefix("counter=")?
                .parse()
                .ok()?;
            Some((value, m["address"].as_u64()?))
        })
        .max()
        .expect("a counter= string in the shell's memory");
    assert!(
        newest.0 > counter,
        "counter {} not past {counter}",
        newest.0
    );
    let page = newest.1 & !(PAGE_SIZE - 1);

    let changes = json(&env.ckpt_ok(&["diff", &first, &second, "--json"]));
    let memory = changes["memory"].as_array().unwrap();
    let mapping = memory
        .iter()
        .find(|m| {
            m["pid"].as_u64() == Some(root_pid)
                && (m["start"].as_u64().unwrap()..m["end"].as_u64().unwrap()).contains(&page)
        })
        .unwrap_or_else(|| panic!("no change reported for counter page {page:#x}: {memory:?}"));
    let changed =
        mapping["pages_changed"].as_u64().unwrap() + mapping["pages_added"].as_u64().unwrap();
    assert!(changed > 0, "{mapping}");

    let text = env.ckpt_ok(&["diff", &first, &second]);
    assert!(
        text.starts_with(&format!("--- {first}\n+++ {second}\n")),
        "{text}"
    );
    assert!(text.contains("memory:"), "{text}");
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
