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

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

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
echo "== live mode: capture → playout through PulseAudio (2.5 ms PCM frames, 128-frame device buffers)"
if ! command -v pulseaudio >/dev/null; then
    echo "skipped: pulseaudio is not installed"
    exit 0
fi
PD=$(mktemp -d)
mkdir -p "$PD/run"
cat > "$PD/lab.pa" <<PA
.fail
load-module module-native-protocol-unix auth-anonymous=1 socket=$PD/native
load-module module-null-sink sink_name=out rate=48000 channels=2 sink_properties=device.description=out
PA
XDG_RUNTIME_DIR="$PD/run" HOME="$PD" pulseaudio -n -F "$PD/lab.pa" --daemonize=no --exit-idle-time=-1 \
    --use-pid-file=no --log-target=file:"$PD/pulse.log" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$PD/native" ] && break; sleep 0.1; done
export PULSE_SERVER="unix:$PD/native"
"$BIN" clicks-wav --out "$PD/clicks.wav" --seconds 8 >/dev/null
HP=$((PORT + 11))
"$BIN" party --port "$HP" --device out --buffer 128 --seconds 14 >/dev/null 2>&1 &
pids+=($!)
sleep 2
"$BIN" record --in out.monitor --seconds 10 > "$PD/rec.json" &
rec=$!
sleep 0.3
"$BIN" party --to "127.0.0.1:$HP" --file "$PD/clicks.wav" --codec pcm --frame-ms 2.5 --seconds 10 > "$PD/mic.txt" 2>&1
wait "$rec"
T0=$(sed -n 's/^first_sample_local_ns=//p' "$PD/mic.txt")
tr -d '{}[]"' < "$PD/rec.json" | sed 's/.*clicks_ns://' | tr ',' '\n' | awk -v t0="$T0" '
    $1 > t0 { k = int(($1 - t0) / 250000000); l = ($1 - t0 - k * 250000000) / 1e6; if (l < 200) print l }' |
    sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "no clicks heard"; exit }
        p = int(NR * 0.95) + 1; if (p > NR) p = NR
        printf "%d clicks: latency median %.2f ms, p95 %.2f ms, min %.2f ms, max %.2f ms\n", NR, v[int(NR/2)+1], v[p], v[1], v[NR]
        print "(heard on the sink monitor through cpal; its timestamps read ~0.6 ms early: see docs/audio.md)" }'
