#!/usr/bin/env bash
# Installs what ckpt needs on a Debian 12 host, as root. Safe to run again:
# each step checks first and only installs what is missing.
#
# - runc, iptables (CRIU locks a container's network with iptables-restore),
#   gdb and strace (to debug restored processes), busybox-static (the demo's
#   and the tests' container), podman and zstd (the benchmark's peers);
# - CRIU 4.1 or later as /usr/local/sbin/criu, built from the upstream
#   tarball in Debian's archive, because Debian 12's criu 3.17 fails on
#   kernels 6.13 and later ("vdso: Unexpected rt vDSO area bounds");
# - crit, CRIU's image tool, which the tests use to cross-check ckpt's decoder.
#
# With --install it also builds ckpt in release mode and installs it as
# /usr/local/bin/ckpt, with bash, zsh and fish completions and man pages.
set -euo pipefail

install_ckpt=false
for arg in "$@"; do
    case "$arg" in
        --install) install_ckpt=true ;;
        *) echo "setup: unknown option $arg; usage: $0 [--install]" >&2; exit 2 ;;
    esac
done

CRIU_VERSION=4.2.1
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRIU_SRC=/usr/local/src/criu-$CRIU_VERSION
CRIU_BIN=/usr/local/sbin/criu

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: must run as root (CRIU, runc and cgroups need it); try: sudo $0" >&2
    exit 2
fi

# Packages: what each is for.
RUNTIME_PACKAGES=(
    runc            # the container runtime ckpt drives
    iptables        # CRIU locks container networks with iptables-restore
    gdb strace      # attach to restored processes
    busybox-static  # the demo's and the tests' container
    podman zstd jq time  # the benchmark: its peers and its tools
    iproute2 curl ca-certificates xz-utils
)
BUILD_PACKAGES=(
    build-essential pkg-config                           # compile CRIU
    libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    libnl-3-dev libnet1-dev libcap-dev libaio-dev libbsd-dev libgnutls28-dev
    libnftables-dev uuid-dev
    python3-protobuf python3-yaml                        # crit
)

missing=()
for package in "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "Debian packages already installed"
fi

# Returns 0 when the given criu binary is at least 4.1 and `criu check` passes.
criu_works() {
    local binary=$1 version major minor
    [ -x "$binary" ] || return 1
    version=$("$binary" --version 2>/dev/null | sed -n 's/^Version: *//p')
    major=${version%%.*}
    minor=$(echo "$version" | cut -d. -f2)
    [ -n "$major" ] && [ -n "$minor" ] || return 1
    if [ "$major" -lt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -lt 1 ]; }; then
        say "$binary is CRIU $version, older than 4.1"
        return 1
    fi
    "$binary" check >/dev/null 2>&1 || { say "$binary check failed on kernel $(uname -r)"; return 1; }
}

# The Debian mirror this host's apt uses, so no host name is hard-coded here.
debian_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1)
    [ -n "$uri" ] || { echo "setup: no Debian mirror found in apt's sources" >&2; exit 1; }
    echo "${uri%/}"
}

# Downloads (if needed), verifies and unpacks the CRIU tarball into $CRIU_SRC.
unpack_criu_source() {
    local tarball=/usr/local/src/criu_$CRIU_VERSION.orig.tar.xz
    mkdir -p /usr/local/src
    if ! echo "$CRIU_SHA256  $tarball" | sha256sum -c --status 2>/dev/null; then
        curl -fsSL -o "$tarball.part" "$(debian_mirror)/pool/main/c/criu/criu_$CRIU_VERSION.orig.tar.xz"
        mv "$tarball.part" "$tarball"
    fi
    echo "$CRIU_SHA256  $tarball" | sha256sum -c --status || {
        echo "setup: $tarball does not match the pinned sha256 $CRIU_SHA256; delete it and retry" >&2
        exit 1
    }
    rm -rf "$CRIU_SRC"
    tar -xJf "$tarball" -C /usr/local/src
}

installed_criu=$(command -v criu || true)
if criu_works "$CRIU_BIN"; then
    say "CRIU $("$CRIU_BIN" --version | sed -n 's/^Version: *//p') at $CRIU_BIN works; keeping it"
elif [ -n "$installed_criu" ] && [ "$installed_criu" != "$CRIU_BIN" ] && criu_works "$installed_criu"; then
    say "CRIU at $installed_criu works; keeping it"
else
    say "building CRIU $CRIU_VERSION from Debian's upstream tarball (needed: 4.1 or later)"
    unpack_criu_source
    make -C "$CRIU_SRC" -j"$(nproc)" criu >/tmp/ckpt-criu-build.log 2>&1 || {
        echo "setup: building CRIU failed; see /tmp/ckpt-criu-build.log" >&2
        exit 1
    }
    install -m 0755 "$CRIU_SRC/criu/criu" "$CRIU_BIN"
    criu_works "$CRIU_BIN" || { echo "setup: the freshly built $CRIU_BIN does not pass criu check" >&2; exit 1; }
    say "installed CRIU $CRIU_VERSION as $CRIU_BIN"
fi

# crit: built from the same source tree. Debian 12's crit (from its criu 3.17
# package) has no --version and cannot read CRIU 4's pagemap images, so a crit
# that fails --version is replaced.
if [ -x "$(dirname "$0")/install-crit.sh" ]; then
    if ! command -v crit >/dev/null 2>&1 || ! crit --version >/dev/null 2>&1; then
        [ -d "$CRIU_SRC" ] || unpack_criu_source
        say "installing crit from $CRIU_SRC"
        "$(dirname "$0")/install-crit.sh" "$CRIU_SRC"
    else
        say "crit already installed"
    fi
fi

# Rust: the machine's toolchain builds ckpt; fail with a clear message when it is missing.
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install a Rust toolchain (1.85 or later) to build ckpt" >&2
    exit 1
fi
say "ready: $(runc --version | head -n1), CRIU $("$(command -v criu || echo $CRIU_BIN)" --version | sed -n 's/^Version: *//p'), $(cargo --version)"

if $install_ckpt; then
    repo=$(cd "$(dirname "$0")/.." && pwd)
    say "building ckpt (release) and installing it as /usr/local/bin/ckpt"
    cargo build --release --locked --manifest-path "$repo/Cargo.toml" >/dev/null 2>&1 || {
        echo "setup: cargo build --release failed; run it in $repo to see why" >&2
        exit 1
    }
    install -m 0755 "$repo/target/release/ckpt" /usr/local/bin/ckpt
    # bash loads completions from this directory only with the bash-completion package.
    dpkg-query -W -f='${Status}' bash-completion 2>/dev/null | grep -q "install ok installed" || {
        say "installing bash-completion, which loads ckpt's bash completions"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bash-completion >/dev/null
    }
    mkdir -p /usr/share/bash-completion/completions /usr/local/share/zsh/site-functions \
        /usr/share/fish/vendor_completions.d /usr/local/share/man/man1
    ckpt completions bash >/usr/share/bash-completion/completions/ckpt
    ckpt completions zsh >/usr/local/share/zsh/site-functions/_ckpt
    ckpt completions fish >/usr/share/fish/vendor_completions.d/ckpt.fish
    ckpt man --dir /usr/local/share/man/man1
    say "installed ckpt, its shell completions (bash, zsh, fish) and man pages (man ckpt)"
fi
