#!/usr/bin/env bash
# Makes CRIU's image tool `crit` usable from a built CRIU source tree.
#
# Usage: scripts/install-crit.sh CRIU_SOURCE_DIR
#    or: source scripts/install-crit.sh && install_crit CRIU_SOURCE_DIR
#
# crit runs from the source tree: the wrapper installed at /usr/local/bin/crit
# runs Debian's /usr/bin/python3 (which has python3-protobuf) with PYTHONPATH
# pointing at the tree's lib/ (pycriu and its generated *_pb2.py modules) and
# crit/ directories. The tree must stay in place after installation.
# Needs root for apt-get and for writing /usr/local/bin.

install_crit() {
    local src=${1:?usage: install_crit CRIU_SOURCE_DIR}
    src=$(cd "$src" && pwd) || return 1
    if [[ ! -f $src/Makefile.versions || ! -d $src/crit/crit ]]; then
        echo "install-crit: $src is not a CRIU source tree (Makefile.versions or crit/crit missing)" >&2
        return 1
    fi

    # protoc generates pycriu's *_pb2.py modules, and crit imports them with python3-protobuf.
    local missing=()
    for package in protobuf-compiler python3-protobuf; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
    done
    if ((${#missing[@]})); then
        apt-get install -y --no-install-recommends "${missing[@]}" || return 1
    fi

    # crit reads its version from crit/crit/version.py, which CRIU's build
    # normally writes from Makefile.versions.
    local version
    version=$(awk -F':=' '
        /^CRIU_VERSION_MAJOR/    { gsub(/[ \t]/, "", $2); major = $2 }
        /^CRIU_VERSION_MINOR/    { gsub(/[ \t]/, "", $2); minor = $2 }
        /^CRIU_VERSION_SUBLEVEL/ { gsub(/[ \t]/, "", $2); sublevel = $2 }
        END {
            v = major
            if (minor != "") v = v "." minor
            if (sublevel != "") v = v "." sublevel
            print v
        }' "$src/Makefile.versions")
    if [[ -z $version ]]; then
        echo "install-crit: no CRIU_VERSION_MAJOR in $src/Makefile.versions" >&2
        return 1
    fi
    printf "__version__ = '%s'\n" "$version" > "$src/crit/crit/version.py" || return 1

    # `make lib` builds pycriu, including the protobuf modules crit decodes with.
    make -C "$src" lib || return 1

    local wrapper=/usr/local/bin/crit
    cat > "$wrapper.tmp" <<WRAPPER || return 1
#!/bin/sh
# crit $version from $src, installed by ckpt's scripts/install-crit.sh.
PYTHONPATH="$src/lib:$src/crit\${PYTHONPATH:+:\$PYTHONPATH}" exec /usr/bin/python3 -m crit "\$@"
WRAPPER
    chmod 0755 "$wrapper.tmp" && mv "$wrapper.tmp" "$wrapper" || return 1

    # Check that the installed wrapper runs.
    "$wrapper" --help > /dev/null || {
        echo "install-crit: $wrapper was installed but 'crit --help' failed" >&2
        return 1
    }
    echo "install-crit: crit $version installed at $wrapper"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    install_crit "$@"
fi
