#!/usr/bin/env bash
# Runs Tutti's tests on a fresh Debian machine: installs the system packages they need (as
# root; otherwise prints the exact apt-get line), then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
source .ci/packages.sh
ensure_packages
exec cargo test --workspace --locked "$@"
