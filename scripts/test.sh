#!/usr/bin/env bash
# The test suite: installs what the tests need, then runs clippy, the unit
# tests and the integration tests with real runc and CRIU. Run as root.
# Under CI=true, a test that cannot run fails instead of being skipped.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
    echo "test: must run as root (the integration tests run real containers); try: sudo $0" >&2
    exit 2
fi

scripts/setup.sh
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
