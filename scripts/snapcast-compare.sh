#!/usr/bin/env bash
# Tutti and Snapcast side by side, in one run, on this machine: a 440 Hz tone served to N
# players/clients that discard the audio; CPU (% of one core) and RSS of the server and of one
# player. Both use uncompressed PCM (Snapcast: codec=pcm, its default 20 ms chunks; Tutti:
# encrypted PCM, 5 ms packets). Everything runs in a private network namespace (loopback
# only), so nothing leaves the machine and Snapcast's mDNS has nowhere to go.
# Usage (root; Debian packages snapserver snapclient sox): bash scripts/snapcast-compare.sh [SECONDS] [N...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
shift || true
COUNTS=("${@:-1 10}")
read -r -a COUNTS <<< "${COUNTS[*]}"
for c in snapserver snapclient sox ip bc; do
    command -v "$c" >/dev/null || { echo "needs $c: apt-get install -y snapserver snapclient sox iproute2 bc" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (a network namespace keeps the traffic on its own loopback)" >&2; exit 1; }
cargo build --release --locked -q -p tutti
BIN=$(realpath "${CARGO_TARGET_DIR:-target}")/release/tutti
export TUTTI_PASSPHRASE="compare-$$-passphrase"
NS="tutti-cmp-$$"
DIR=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
cleanup() { stop_all; ip netns del "$NS" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

TICK=$(getconf CLK_TCK)
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# measure NAME N SERVER_PID PLAYER_PID: CPU over SECS seconds, RSS at the end.
measure() {
    local s0 p0 s1 p1
    sleep 3
    s0=$(cpu_ticks "$3"); p0=$(cpu_ticks "$4")
    sleep "$SECS"
    s1=$(cpu_ticks "$3"); p1=$(cpu_ticks "$4")
    printf '%-9s %7d %12.2f %10d %12.2f %10d\n' "$1" "$2" \
        "$(echo "($s1 - $s0) * 100 / $TICK / $SECS" | bc -l)" "$(rss_kb "$3")" \
        "$(echo "($p1 - $p0) * 100 / $TICK / $SECS" | bc -l)" "$(rss_kb "$4")"
}
snapserver_conf "$DIR" "$DIR/fifo" tone error
echo "== CPU (% of one core) and RSS (kB), ${SECS} s each, tone to N players discarding it"
printf '%-9s %7s %12s %10s %12s %10s\n' system players server_cpu server_kB player_cpu player_kB
for n in "${COUNTS[@]}"; do
    ip netns exec "$NS" "$BIN" stream --tone 440 --bind 127.0.0.1 --port 7400 --max-receivers 1000 --quiet >/dev/null 2>&1 &
    srv=$!; pids+=("$srv")
    sleep 0.5
    first=""
    for i in $(seq "$n"); do
        ip netns exec "$NS" "$BIN" play 127.0.0.1:7400 --port $((7400 + i)) --null --quiet >/dev/null 2>&1 &
        pids+=($!); first=${first:-$!}
    done
    measure tutti "$n" "$srv" "$first"
    stop_all
    rm -f "$DIR/fifo"; mkfifo "$DIR/fifo"
    ip netns exec "$NS" snapserver -c "$DIR/snapserver.conf" >/dev/null 2>&1 &
    srv=$!; pids+=("$srv")
    sox -q -n -t raw -r 48000 -e signed -b 16 -c 2 - synth $((SECS + 30)) sine 440 > "$DIR/fifo" 2>/dev/null &
    pids+=($!)
    sleep 0.5
    first=""
    for i in $(seq "$n"); do
        ip netns exec "$NS" snapclient -h 127.0.0.1 -p 1704 -i "$i" --hostID "cmp$i" --player file:filename=null >/dev/null 2>&1 &
        pids+=($!); first=${first:-$!}
    done
    measure snapcast "$n" "$srv" "$first"
    stop_all
done
