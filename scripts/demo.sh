#!/usr/bin/env bash
# Runs the main job on a built-in demo container, end to end.
# It sets up the host, builds ckpt, and runs a busybox container whose process
# keeps a token and a counter. It checkpoints the container, kills it, and
# restores the checkpoint paused. It shows a gdb backtrace and the process's
# variables, then straces the process while it resumes from the checkpoint.
# Run as root from the repository: scripts/demo.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=/var/tmp/ckpt-demo
container=ckpt-demo
store=${CKPT_STORE:-/var/lib/ckpt}
export CKPT_STORE=$store

if [ -t 1 ]; then
    step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
    step() { printf '\n==> %s\n' "$*"; }
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: must run as root (CRIU and runc need it); try: sudo $0" >&2
    exit 2
fi

step "Set up: runc, CRIU 4.1+, gdb, strace, busybox"
"$repo/scripts/setup.sh"

step "Build ckpt"
cargo build --release --manifest-path "$repo/Cargo.toml" 2>&1 | tail -n 1
ckpt=$repo/target/release/ckpt

step "Create a busybox OCI bundle in $work with the demo workload"
runc delete --force "$container" >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work/bundle/rootfs"/{bin,proc,sys,dev,tmp,etc,app}
chmod 1777 "$work/bundle/rootfs/tmp"
cp "$(command -v busybox)" "$work/bundle/rootfs/bin/busybox"
for applet in sh ls cat sleep; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
gcc -g -O0 -static -o "$work/bundle/rootfs/app/counter" "$repo/demo/counter.c"
(cd "$work/bundle" && runc spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["terminal"] = False
config["process"]["args"] = ["/app/counter"]
config["root"]["readonly"] = False
json.dump(config, open(path, "w"), indent=2)
PY

step "Run container $container (stdio on pipes, as a container manager provides)"
: | runc run -d --bundle "$work/bundle" "$container" 2>&1 | cat >"$work/container.log" &
sleep 2
tail -n 2 "$work/container.log"

step "Checkpoint it while it keeps running"
"$ckpt" checkpoint "$container"
sleep 1
echo "still running: $(tail -n 1 "$work/container.log")"
"$ckpt" list "$container"

step "The container crashes: SIGUSR1 makes the workload dereference a NULL pointer"
runc kill "$container" USR1
for _ in $(seq 50); do
    [ "$(runc state "$container" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = stopped ] && break
    sleep 0.1
done
echo "its last words: $(tail -n 1 "$work/container.log")"
echo "runc state: $(runc state "$container" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"

step "Restore the last checkpoint into a paused debug container"
"$ckpt" restore "$container" --paused
newest=$("$ckpt" ps --json | python3 -c 'import json,sys; d=json.load(sys.stdin)[-1]; print(d["name"], d["pid"])')
read -r name pid <<<"$newest"
"$ckpt" ps
grep State "/proc/$pid/status"

step "gdb -p $pid: backtrace and variables of the restored, stopped process"
gdb -p "$pid" -batch -ex "set sysroot /proc/$pid/root" -ex bt -ex 'print token' -ex 'print counter' 2>&1 \
    | grep -E '^#|^\$' || true
grep State "/proc/$pid/status"

step "strace -p $pid while the debug container resumes from the checkpoint"
strace -p "$pid" -o "$work/strace.log" &
tracer=$!
sleep 0.5
"$ckpt" resume "$name"
sleep 1.5
kill -INT "$tracer"
wait "$tracer" 2>/dev/null || true
head -n 8 "$work/strace.log"
echo "debug container output (same token, counter continuing from the checkpoint):"
head -n 3 "$store/debug/$name/output.log"

runc delete --force "$container" >/dev/null 2>&1 || true

step "Done"
cat <<TXT
The debug container $name is running (root pid $pid), isolated from the original.
  list it:              $ckpt ps
  resume a paused one:  $ckpt resume $name
  remove it:            $ckpt rm $name
TXT
