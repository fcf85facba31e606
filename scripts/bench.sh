#!/usr/bin/env bash
# Measure ckpt side by side with raw CRIU, Podman and a by-hand runc + tar
# pipeline, on the same workload, in one run. See docs/performance.md for the
# method and the latest results.
#
# Usage: scripts/bench.sh [--quick] [--sizes 64M,256M,1G] [--runs N]
#                         [--checkpoints N] [--change-pct P] [--out DIR] [--no-docs]
#
# CKPT_BIN=PATH measures that ckpt binary instead of a fresh release build.
# Must run as root. Everything it creates (runc and Podman containers, the
# Podman image, tmpfs mounts, stores, debug containers, the daemon) is
# removed on exit, including on Ctrl-C.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/bench.sh [OPTIONS]

Options:
  --quick            sizes 64M,256M and 3 restore runs (finishes in minutes)
  --sizes LIST       workload resident sizes, comma-separated, suffix M or G
                     [default: 64M,256M,1G]
  --runs N           paused restores measured per size and system [default: 5]
  --checkpoints N    checkpoints in each system's series; freeze and durable
                     time are medians over it, stored bytes are its total
                     [default: 10]
  --change-pct P     share of pages the workload rewrites before each
                     checkpoint after the first, in percent [default: 5]
  --out DIR          directory for samples.tsv, results.json and results.txt
                     [default: /var/tmp/ckpt-bench-results]
  --no-docs          do not rewrite the results section of docs/performance.md
  -h, --help         print this help
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=64M,256M,1G
RUNS=5
CHECKPOINTS=10
CHANGE_PCT=5
# Checkpoints the daemon takes before its peak RSS is read.
DAEMON_CHECKPOINTS=3
OUT=/var/tmp/ckpt-bench-results
WRITE_DOCS=1
QUICK=0

while (($#)); do
	case $1 in
	--quick) QUICK=1 SIZES=64M,256M RUNS=3 ;;
	--sizes) SIZES=${2:?--sizes needs a value}; shift ;;
	--runs) RUNS=${2:?--runs needs a value}; shift ;;
	--checkpoints) CHECKPOINTS=${2:?--checkpoints needs a value}; shift ;;
	--change-pct) CHANGE_PCT=${2:?--change-pct needs a value}; shift ;;
	--out) OUT=${2:?--out needs a value}; shift ;;
	--no-docs) WRITE_DOCS=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
is_count "$RUNS" || { log "invalid --runs $RUNS (expected an integer >= 1)"; exit 2; }
is_count "$CHECKPOINTS" || { log "invalid --checkpoints $CHECKPOINTS (expected an integer >= 1)"; exit 2; }
[[ $CHANGE_PCT =~ ^[0-9]+$ ]] && ((CHANGE_PCT <= 100)) ||
	{ log "invalid --change-pct $CHANGE_PCT (expected 0-100)"; exit 2; }

# Sizes in MiB.
SIZES_MIB=()
IFS=, read -ra size_list <<<"$SIZES"
for size in "${size_list[@]}"; do
	case $size in
	*[0-9]M) SIZES_MIB+=("${size%M}") ;;
	*[0-9]G) SIZES_MIB+=("$((${size%G} * 1024))") ;;
	*) log "invalid size $size in --sizes (expected a number with suffix M or G, e.g. 256M)"; exit 2 ;;
	esac
	[[ ${SIZES_MIB[-1]} =~ ^[1-9][0-9]*$ ]] || { log "invalid size $size in --sizes"; exit 2; }
done

[[ $(id -u) == 0 ]] || die "must run as root (runc, CRIU and Podman need it)"
for tool in gcc runc criu podman busybox jq tar zstd unshare ip /usr/bin/time /usr/bin/python3; do
	command -v "$tool" >/dev/null || die "$tool not found; install it first"
done

# --- Build ------------------------------------------------------------------

# Speed is what is measured, so ckpt is a release build unless CKPT_BIN names
# another binary.
if [[ -n ${CKPT_BIN:-} ]]; then
	CKPT=$CKPT_BIN
else
	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
	log "building ckpt (release)"
	(cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
	CKPT=$CARGO_TARGET_DIR/release/ckpt
fi
[[ -x $CKPT ]] || die "ckpt binary $CKPT not found or not executable"

# --- Scratch space and cleanup ----------------------------------------------

WORK=$(mktemp -d /var/tmp/ckpt-bench.XXXXXX)
chmod 0700 "$WORK"
TMPFS=$WORK/tmpfs
RUNC_ROOT=$WORK/runc
STORE=$WORK/store
IMAGE=localhost/ckpt-bench-$$
# A private control socket: `ckpt list` and `ckpt checkpoint` would otherwise
# talk to a daemon already running on the host, with another store.
SOCKET=$WORK/ckpt.sock
CKPT_ARGS=(--store "$STORE" --runtime-root "$RUNC_ROOT" --socket "$SOCKET")
PREFIX=ckpt-bench-$$
mkdir -p "$TMPFS" "$RUNC_ROOT" "$OUT"

RUNC_CONTAINERS=()
PODMAN_CONTAINERS=()
RAW_PIDS=()
IMAGE_CREATED=0
TMPFS_MOUNTED=0
DAEMON_PID=0

# Removes every debug container in the store. An interrupted `ckpt restore`
# can leave one unrecorded, and a raw restore puts tasks in its cgroups, which
# `ckpt rm` does not know about. So its shim and every member of its cgroups
# are also killed by PID before the cgroups are removed.
remove_debug_containers() {
	local dir name procs pid attempt
	for dir in "$STORE"/debug/*/; do
		[[ -d $dir ]] || continue
		name=$(basename "$dir")
		"$CKPT" "${CKPT_ARGS[@]}" rm "$name" >/dev/null 2>&1
		for pid in $(pgrep -f -x "$CKPT __shim ${dir%/}"); do
			kill -KILL "$pid"
		done
		for attempt in 1 2 3 4 5 6 7 8 9 10; do
			for procs in /sys/fs/cgroup/*/ckpt/"$name"/cgroup.procs; do
				[[ -f $procs ]] || continue
				while read -r pid; do
					kill -KILL "$pid"
				done <"$procs"
			done
			rmdir /sys/fs/cgroup/*/ckpt/"$name" 2>/dev/null
			compgen -G "/sys/fs/cgroup/*/ckpt/$name" >/dev/null || break
			sleep 0.5
		done
	done
}

cleanup() {
	set +e
	trap - EXIT INT TERM
	((DAEMON_PID)) && kill -KILL "$DAEMON_PID" 2>/dev/null
	for pid in "${RAW_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null
	done
	remove_debug_containers
	for name in "${RUNC_CONTAINERS[@]}"; do
		runc --root "$RUNC_ROOT" delete --force "$name" >/dev/null 2>&1
	done
	for name in "${PODMAN_CONTAINERS[@]}"; do
		podman rm --force --time 0 "$name" >/dev/null 2>&1
	done
	((IMAGE_CREATED)) && podman rmi --force "$IMAGE" >/dev/null 2>&1
	((TMPFS_MOUNTED)) && umount "$TMPFS"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# The tmpfs holds one image directory at a time: a checkpoint being written,
# or the raw restore's images. Three times the largest size leaves headroom.
max_mib=0
for mib in "${SIZES_MIB[@]}"; do ((mib > max_mib)) && max_mib=$mib; done
mount -t tmpfs -o "size=$((max_mib * 3 + 512))M,mode=0700" tmpfs "$TMPFS"
TMPFS_MOUNTED=1

# --- Workload ---------------------------------------------------------------

log "building the workload and its root file system"
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,proc,sys,dev,tmp,etc,app}
chmod 1777 "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
ln -s busybox "$ROOTFS/bin/sh"
gcc -static -O2 -Wall -o "$ROOTFS/app/workload" "$REPO/bench/workload.c"

tar -C "$ROOTFS" -c . | podman import --quiet - "$IMAGE" >/dev/null
IMAGE_CREATED=1

# Writes an OCI bundle at $1 whose process is the workload with $2 MiB resident.
make_bundle() {
	local bundle=$1 mib=$2
	mkdir -p "$bundle"
	runc spec --bundle "$bundle"
	jq --argjson mib "$mib" --argjson pct "$CHANGE_PCT" --arg rootfs "$ROOTFS" '
		.root.path = $rootfs
		| .process.terminal = false
		| .process.args = ["/app/workload", ($mib | tostring), ($pct | tostring), "/tmp/workload.status"]
		| .root.readonly = false' "$bundle/config.json" >"$bundle/config.json.new"
	mv "$bundle/config.json.new" "$bundle/config.json"
}

now_ns() { date +%s%N; }

# Prints the numeric field $2 of the workload status of process $1.
status_field() {
	local line
	line=$(cat "/proc/$1/root/tmp/workload.status" 2>/dev/null) || return 1
	[[ $line =~ (^| )$2=([0-9]+) ]] || return 1
	echo "${BASH_REMATCH[2]}"
}

# Waits until status field $2 of process $1 reaches $3. Fails after 120 s.
wait_for_status() {
	local pid=$1 field=$2 expected=$3 value deadline=$((SECONDS + 120))
	while ((SECONDS < deadline)); do
		value=$(status_field "$pid" "$field") || value=-1
		((value >= expected)) && return 0
		sleep 0.01
	done
	die "timed out after 120 s waiting for workload $pid to report $field=$expected"
}

# Counters of the workload that is being measured.
WORKLOAD_PID=0
REPORTS=0
REWRITES=0

# Asks the workload for its maximum gap since the last report and stores it in GAP_US.
request_report() {
	REPORTS=$((REPORTS + 1))
	kill -USR1 "$WORKLOAD_PID"
	wait_for_status "$WORKLOAD_PID" reports "$REPORTS"
	GAP_US=$(status_field "$WORKLOAD_PID" max_gap_us)
}

request_rewrite() {
	REWRITES=$((REWRITES + 1))
	kill -USR2 "$WORKLOAD_PID"
	wait_for_status "$WORKLOAD_PID" rewrites "$REWRITES"
}

# Starts a runc container $1 from bundle $2, stdio on pipes so that CRIU can dump it.
start_runc() {
	local name=$1 bundle=$2
	RUNC_CONTAINERS+=("$name")
	: | runc --root "$RUNC_ROOT" run -d --bundle "$bundle" "$name" 2>&1 | cat >"$WORK/$name.log" &
	local deadline=$((SECONDS + 30))
	until [[ $(runc --root "$RUNC_ROOT" state "$name" 2>/dev/null | jq -r .status) == running ]]; do
		((SECONDS < deadline)) || die "runc container $name did not start; see $WORK/$name.log"
		sleep 0.05
	done
	WORKLOAD_PID=$(runc --root "$RUNC_ROOT" state "$name" | jq -r .pid)
}

start_podman() {
	local name=$1 mib=$2
	PODMAN_CONTAINERS+=("$name")
	podman run --detach --name "$name" --runtime runc \
		--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network none \
		"$IMAGE" /app/workload "$mib" "$CHANGE_PCT" /tmp/workload.status >/dev/null
	WORKLOAD_PID=$(podman inspect --format '{{.State.Pid}}' "$name")
}

stop_container() {
	local system=$1 name=$2
	if [[ $system == podman ]]; then
		podman rm --force --time 0 "$name" >/dev/null
	else
		runc --root "$RUNC_ROOT" delete --force "$name" >/dev/null
	fi
}

SAMPLES=$OUT/samples.tsv
printf 'size_mib\tsystem\tmetric\tindex\tvalue\n' >"$SAMPLES"

# Appends one sample: size, system, metric, index, value.
record() {
	printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SAMPLES"
}

# --- One checkpoint per system ----------------------------------------------
# Each function takes the container name and the checkpoint index. It sets
# DURABLE_US to the wall time from the start of the command until the
# checkpoint's files are on disk. For raw CRIU they are on tmpfs, which is not durable.

# raw CRIU through `runc checkpoint`, which passes CRIU the options this
# container needs (external mounts, cgroups, namespaces). Images stay
# uncompressed on tmpfs and are deleted once measured.
checkpoint_raw() {
	local name=$1 index=$2 images=$TMPFS/raw-$2 started
	started=$(now_ns)
	runc --root "$RUNC_ROOT" checkpoint --leave-running --image-path "$images" "$name"
	DURABLE_US=$((($(now_ns) - started) / 1000))
	RAW_BYTES=$((RAW_BYTES + $(du -sb "$images" | cut -f1)))
	rm -rf "$images"
}

# By hand: `runc checkpoint` to tmpfs, then tar --zstd onto disk and fsync.
checkpoint_hand() {
	local name=$1 index=$2 images=$TMPFS/hand-images archive=$WORK/hand/$2.tar.zst started
	mkdir -p "$WORK/hand"
	started=$(now_ns)
	runc --root "$RUNC_ROOT" checkpoint --leave-running --image-path "$images" "$name"
	tar --zstd -cf "$archive" -C "$images" .
	sync "$archive" "$WORK/hand"
	DURABLE_US=$((($(now_ns) - started) / 1000))
	rm -rf "$images"
}

checkpoint_podman() {
	local name=$1 index=$2 archive=$WORK/podman/$2.tar.zst started
	mkdir -p "$WORK/podman"
	started=$(now_ns)
	podman container checkpoint --leave-running --export "$archive" --compress zstd "$name" >/dev/null
	sync "$archive" "$WORK/podman"
	DURABLE_US=$((($(now_ns) - started) / 1000))
}

# ckpt fsyncs its store before `ckpt checkpoint` returns. /usr/bin/time's
# maximum RSS is the larger of ckpt's own and that of its CRIU child.
checkpoint_ckpt() {
	local name=$1 index=$2 started rss_file=$WORK/ckpt-rss
	started=$(now_ns)
	/usr/bin/time -f '%M' -o "$rss_file" \
		"$CKPT" "${CKPT_ARGS[@]}" checkpoint "$name" >/dev/null
	DURABLE_US=$((($(now_ns) - started) / 1000))
	CKPT_RSS_KIB=$(tail -n1 "$rss_file")
}

# --- Paused restore: ckpt against raw CRIU ----------------------------------

# Prints the one-letter state of process $1 (T when stopped).
process_state() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo missing; return; }
	stat=${stat##*) }
	echo "${stat%% *}"
}

# Restores the newest checkpoint of container $2 with `ckpt restore --paused`,
# then the same images with `criu restore --leave-stopped` from tmpfs.
# The raw restore repeats what ckpt's shim does: new mount and network
# namespaces, an overlay root, and the cgroup root, external mounts and stdio
# pipes that the debug container's shim-request.json lists.
measure_restore() {
	local size=$1 name=$2 run=$3 started output debug pid request
	started=$(now_ns)
	output=$("$CKPT" "${CKPT_ARGS[@]}" restore "$name" --paused --json)
	record "$size" ckpt restore_us "$run" $((($(now_ns) - started) / 1000))
	debug=$(jq -r .name <<<"$output")
	pid=$(jq -r .pid <<<"$output")
	[[ $(process_state "$pid") == T ]] || log "ckpt restore: process $pid is not stopped"

	request=$STORE/debug/$debug/shim-request.json
	local images=$TMPFS/restore-images dir=$WORK/raw-restore-$size-$run checkpoint
	# ckpt deletes a debug container's images once CRIU has restored from them,
	# so take the same images from an export of the checkpoint.
	checkpoint=$(jq -r .checkpoint <<<"$output")
	rm -rf "$images" "$TMPFS/restore-export"
	mkdir -p "$TMPFS/restore-export"
	"$CKPT" "${CKPT_ARGS[@]}" export "$checkpoint" -o "$TMPFS/restore-export/export.tar.zst" >/dev/null
	tar --zstd -xf "$TMPFS/restore-export/export.tar.zst" -C "$TMPFS/restore-export" checkpoint
	mv "$TMPFS/restore-export/checkpoint" "$images"
	rm -rf "$TMPFS/restore-export"
	mkdir -p "$dir"/{upper,work,root,criu}
	local lower
	lower=$(jq -r .lower "$request")
	chmod --reference="$lower" "$dir/upper"
	chown --reference="$lower" "$dir/upper"

	local criu_args=(
		restore -D "$images" -W "$dir/criu" -o restore.log -v4
		--root "$dir/root" --restore-detached --leave-stopped
		--manage-cgroups=soft --cgroup-root "$(jq -r .cgroup_root "$request")"
		--pidfile "$dir/pid"
	)
	local key value
	while IFS=$'\t' read -r key value; do
		criu_args+=(--ext-mount-map "$key:$value")
	done < <(jq -r '.external_mounts[] | "\(.[0])\t\(.[1])"' "$request")
	local stdio=() fd
	mapfile -t stdio < <(jq -r '.stdio[]' "$request")
	for fd in 0 1 2; do
		[[ ${stdio[fd]:-} == pipe:* ]] || continue
		# A pipe shared by stdout and stderr is inherited once.
		((fd == 2)) && [[ ${stdio[2]} == "${stdio[1]:-}" ]] && continue
		criu_args+=(--inherit-fd "fd[$fd]:${stdio[fd]}")
	done

	local overlay="lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work"
	started=$(now_ns)
	unshare --mount --net --propagation private -- /bin/sh -c \
		'ip link set lo up && mount -t overlay overlay -o "$1" "$2" && shift 2 && exec "$@"' \
		raw-restore "$overlay" "$dir/root" criu "${criu_args[@]}" \
		< <(:) > >(cat >/dev/null) 2> >(cat >"$OUT/raw-restore.err") || {
		cp "$dir/criu/restore.log" "$OUT/raw-restore.log" 2>/dev/null
		die "raw criu restore failed; see $OUT/raw-restore.log and $OUT/raw-restore.err"
	}
	record "$size" raw restore_us "$run" $((($(now_ns) - started) / 1000))
	local raw_pid
	raw_pid=$(cat "$dir/pid")
	RAW_PIDS+=("$raw_pid")
	[[ $(process_state "$raw_pid") == T ]] || log "raw restore: process $raw_pid is not stopped"

	# Killing the PID namespace's init ends the whole raw tree.
	kill -KILL "$raw_pid"
	"$CKPT" "${CKPT_ARGS[@]}" rm "$debug" >/dev/null
	rm -rf "$images"
}

# --- Daemon peak RSS ----------------------------------------------------------

# Runs `ckpt daemon` with a policy that checkpoints container $2 every 2 s,
# lets it take DAEMON_CHECKPOINTS checkpoints with pages rewritten in between,
# and records the daemon's VmHWM (its own peak RSS, without CRIU's).
measure_daemon() {
	local size=$1 name=$2 policies=$WORK/policies before count deadline
	mkdir -p "$policies"
	# A large keep, so that retention deletes none of the series' checkpoints.
	printf 'container: %s\nruntime_root: %s\ninterval: 2s\nretention:\n  keep: 1000\n' \
		"$name" "$RUNC_ROOT" >"$policies/$name.yaml"
	before=$("$CKPT" "${CKPT_ARGS[@]}" list --json | jq length)
	"$CKPT" "${CKPT_ARGS[@]}" daemon --policies "$policies" 2>"$WORK/daemon.log" &
	DAEMON_PID=$!

	deadline=$((SECONDS + 120))
	count=0
	while ((count < DAEMON_CHECKPOINTS)); do
		((SECONDS < deadline)) || die "ckpt daemon took no $DAEMON_CHECKPOINTS checkpoints within 120 s; see $WORK/daemon.log"
		kill -0 "$DAEMON_PID" 2>/dev/null || die "ckpt daemon exited; see $WORK/daemon.log"
		request_rewrite
		sleep 1
		count=$(($("$CKPT" "${CKPT_ARGS[@]}" list --json | jq length) - before))
	done

	local hwm
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
	record "$size" ckpt daemon_peak_rss_kib 0 "$hwm"
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID" || true
	DAEMON_PID=0
	rm -rf "$policies"
}

# --- The run ----------------------------------------------------------------

# Runs one system's series of checkpoints on a fresh workload of $2 MiB.
run_series() {
	local system=$1 mib=$2 name=$PREFIX-$1-$2 index
	log "$system: $mib MiB, $CHECKPOINTS checkpoints"
	REPORTS=0 REWRITES=0 RAW_BYTES=0
	if [[ $system == podman ]]; then
		start_podman "$name" "$mib"
	else
		[[ -d $WORK/bundle-$mib ]] || make_bundle "$WORK/bundle-$mib" "$mib"
		# The runc containers share one root file system, so the previous
		# workload's status must not be mistaken for this one's.
		rm -f "$ROOTFS/tmp/workload.status"
		start_runc "$name" "$WORK/bundle-$mib"
	fi
	wait_for_status "$WORKLOAD_PID" reports 0

	for ((index = 1; index <= CHECKPOINTS; index++)); do
		((index > 1)) && request_rewrite
		request_report
		"checkpoint_$system" "$name" "$index"
		# Let the workload tick again after the thaw before it reports.
		sleep 0.05
		request_report
		record "$mib" "$system" freeze_us "$index" "$GAP_US"
		record "$mib" "$system" durable_us "$index" "$DURABLE_US"
		[[ $system == ckpt ]] && record "$mib" ckpt peak_rss_kib "$index" "$CKPT_RSS_KIB"
	done

	case $system in
	raw) record "$mib" raw stored_bytes 0 "$RAW_BYTES" ;;
	hand) record "$mib" hand stored_bytes 0 "$(du -cb "$WORK"/hand/*.tar.zst | tail -n1 | cut -f1)" ;;
	podman) record "$mib" podman stored_bytes 0 "$(du -cb "$WORK"/podman/*.tar.zst | tail -n1 | cut -f1)" ;;
	ckpt)
		record "$mib" ckpt stored_bytes 0 "$(du -sb "$STORE" | cut -f1)"
		"$CKPT" "${CKPT_ARGS[@]}" list --json |
			jq -r --arg size "$mib" '.[]
				| [$size, "ckpt", "criu_frozen_us", .id, (.frozen_ms * 1000 | floor)],
				  [$size, "ckpt", "added_bytes", .id, .added_bytes]
				| @tsv' >>"$SAMPLES"
		log "ckpt: $mib MiB, $RUNS paused restores against raw CRIU"
		for ((index = 1; index <= RUNS; index++)); do
			measure_restore "$mib" "$name" "$index"
		done
		log "ckpt: $mib MiB, daemon taking $DAEMON_CHECKPOINTS checkpoints"
		measure_daemon "$mib" "$name"
		;;
	esac

	stop_container "$system" "$name"
	rm -rf "$WORK/hand" "$WORK/podman" "$STORE"
}

started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
QUICK_FLAG=
((QUICK)) && QUICK_FLAG=" --quick"
for mib in "${SIZES_MIB[@]}"; do
	for system in raw podman hand ckpt; do
		run_series "$system" "$mib"
	done
done

# --- Report -----------------------------------------------------------------

jq -n \
	--arg started "$started_at" \
	--arg finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	--arg command "scripts/bench.sh${QUICK_FLAG} --sizes $SIZES --runs $RUNS --checkpoints $CHECKPOINTS --change-pct $CHANGE_PCT" \
	--arg nproc "$(nproc)" \
	--arg memory "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)" \
	--arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
	--arg kernel "$(uname -r)" \
	--arg criu "$(criu --version | awk '/^Version/ {print $2}')" \
	--arg runc "$(runc --version | awk 'NR == 1 {print $3}')" \
	--arg podman "$(podman --version | awk '{print $3}')" \
	--arg commit "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	--argjson checkpoints "$CHECKPOINTS" --argjson change_pct "$CHANGE_PCT" --argjson runs "$RUNS" \
	'{started: $started, finished: $finished, command: $command, commit: $commit,
	  checkpoints: $checkpoints, change_pct: $change_pct, restore_runs: $runs,
	  machine: {nproc: ($nproc | tonumber), memory: $memory, cpu: $cpu, kernel: $kernel,
	            criu: $criu, runc: $runc, podman: $podman}}' >"$OUT/run.json"

docs_args=()
((WRITE_DOCS)) && docs_args=(--docs "$REPO/docs/performance.md")
/usr/bin/python3 "$REPO/bench/report.py" --samples "$SAMPLES" --run "$OUT/run.json" \
	--json "$OUT/results.json" --text "$OUT/results.txt" "${docs_args[@]}"
log "results in $OUT (samples.tsv, results.json, results.txt)"
