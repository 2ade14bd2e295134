#!/usr/bin/env bash
# Inter-player skew in sync mode over real UDP on loopback: a source streams clicks (every
# 250 ms) to three players writing WAV files; `tutti skew` matches every click across the files
# by their first-sample instants. Runs at 20 ms and 100 ms group latency and prints each
# player's final status (underruns, concealed packets).
# Usage: bash scripts/skew.sh [SECONDS]   (default 60; the issue's figure is 600);
# LATENCIES="20" picks the group latencies (ms).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
cargo build --release --locked -q -p tutti
BIN=${CARGO_TARGET_DIR:-target}/release/tutti
export TUTTI_PASSPHRASE="skew-$$-passphrase"
DIR=$(mktemp -d)
PORT=$((31000 + $$ % 1000 * 8))
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
"$BIN" clicks-wav --out "$DIR/clicks.wav" --seconds "$SECS" >/dev/null
for latency in ${LATENCIES:-20 100}; do
    rm -f "$DIR"/p*.wav*
    pids=()
    for i in 1 2 3; do
        "$BIN" play "127.0.0.1:$PORT" --port $((PORT + i)) --wav "$DIR/p$i.wav" \
            --seconds "$(echo "$SECS + 4" | bc)" --quiet > "$DIR/p$i.log" 2>&1 &
        pids+=($!)
    done
    sleep 0.3
    "$BIN" stream --file "$DIR/clicks.wav" --port "$PORT" --bind 127.0.0.1 \
        --to "127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 3))" \
        --latency-ms "$latency" --quiet
    wait "${pids[@]}" || true
    echo "== sync mode, ${latency} ms group latency, ${SECS} s, three players (WAV)"
    "$BIN" skew "$DIR"/p1.wav "$DIR"/p2.wav "$DIR"/p3.wav
    for i in 1 2 3; do
        printf 'player %d: %s\n' "$i" "$(tr '\r' '\n' < "$DIR/p$i.log" | grep underruns | tail -1 |
            sed "s/.*| recovered/recovered/")"
    done
    PORT=$((PORT + 4))
done
