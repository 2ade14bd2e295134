#!/usr/bin/env bash
# Tutti's main job on embedded defaults: builds the `tutti` binary (installing the Debian
# packages it needs when run as root, or printing the exact apt-get line), then runs a source
# and three players on this machine — encrypted, over real UDP on loopback — and prints their
# clocks and their sync every second. On a machine with a sound card, add --speaker to hear
# player 1 (or see the README for streaming to other machines).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
source .ci/packages.sh
ensure_packages
exec cargo run --release --locked -q -p tutti -- demo "$@"
