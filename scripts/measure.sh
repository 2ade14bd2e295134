#!/usr/bin/env bash
# Figures of real Tutti processes on this machine (loopback, encrypted):
#   - CPU (% of one core) and RSS of a source serving 1, 10 and 100 players, and of one player;
#   - inter-player alignment of three WAV players at 20 ms and 100 ms group latency, with the
#     underruns counted.
# Usage: bash scripts/measure.sh [SECONDS_PER_RUN]   (default 20)
# Players play into nothing (--null): no sound card needed. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
# shellcheck source=/dev/null
source .ci/packages.sh
ensure_packages
cargo build --release --locked -q -p tutti
BIN=${CARGO_TARGET_DIR:-target}/release/tutti
export TUTTI_PASSPHRASE="measure-$$-passphrase"
TICK=$(getconf CLK_TCK)
PORT=$((30000 + $$ % 1000 * 20))
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

measure_source() {
    local players=$1 port=$2
    "$BIN" stream --tone 440 --port "$port" --bind 127.0.0.1 --max-receivers 1000 --quiet >/dev/null 2>&1 &
    local src=$!; pids+=("$src")
    sleep 0.5
    local ppids=()
    for _ in $(seq "$players"); do
        "$BIN" play "127.0.0.1:$port" --null --quiet >/dev/null 2>&1 &
        ppids+=($!); pids+=($!)
    done
    sleep 3
    local s0 p0; s0=$(cpu_ticks "$src"); p0=$(cpu_ticks "${ppids[0]}")
    sleep "$SECS"
    local s1 p1; s1=$(cpu_ticks "$src"); p1=$(cpu_ticks "${ppids[0]}")
    printf '%-10s %7d %14.2f %10d %14.2f %10d\n' "source" "$players" \
        "$(echo "($s1 - $s0) * 100 / $TICK / $SECS" | bc -l)" "$(rss_kb "$src")" \
        "$(echo "($p1 - $p0) * 100 / $TICK / $SECS" | bc -l)" "$(rss_kb "${ppids[0]}")"
    kill "$src" "${ppids[@]}" 2>/dev/null || true
    wait "$src" "${ppids[@]}" 2>/dev/null || true
}

command -v bc >/dev/null || { echo "measure.sh needs bc: apt-get install -y bc" >&2; exit 1; }
echo "== CPU (% of one core) and RSS, ${SECS} s each"
printf '%-10s %7s %14s %10s %14s %10s\n' role players source_cpu_% source_kB player_cpu_% player_kB
for n in 1 10 100; do
    measure_source "$n" $((PORT + n % 7))
done

echo
bash scripts/live-latency.sh
