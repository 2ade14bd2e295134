#!/usr/bin/env bash
# Tutti and Snapcast on real (virtual) speakers, side by side, on one sample clock.
#
# A private headless PulseAudio whose one real sink is a module-pipe-sink drained at exactly
# 48 kHz of CLOCK_MONOTONIC by `tutti-lab record` (SCHED_FIFO): the recording index is time.
# Every sink under test is a module-remap-sink onto one channel of it: `src` (channel 0, the
# source's sink: the test signal is played into it and captured from `src.monitor`) and
# `p1..pN` (one per player). Each phase records all of them at once, then `tutti-lab analyze`
# reads per 250 ms window: latency per player, spread between players, missing, silent and
# glitched windows, delay steps; CPU and RSS of every process come from /proc.
#
# Phases (--phases, in order):
#   floor       one (N+1)-channel sink feeding every channel the same signal: must read 0
#   tutti-L     `tutti stream --device src.monitor --latency-ms L` and N `tutti play --device pI`
#   stdin-L     the same with `parec -d src.monitor | tutti stream --stdin-live` as the source
#               (told the src sink's latency, read with pactl, by --input-latency-ms)
#   web-L       the tutti-L source and a hub relaying the room to a guest's browser: players
#               p1..p(N-1) native, pN headless Chromium on the guest page (its stream moved
#               to pN; WEB_DELAY_MS=D sets the page's "my delay")
#   calib-L     the tutti-L source, N players joined to a hub (zone `lab`) and a microphone (a
#               pipe source) that hears the players' sinks, each after a hidden latency
#               (CALIB_DELAYS_MS, "37,112,5" by default) no part of Tutti can see, plus white
#               noise (CALIB_SNR_DB, 10); CALIB_AT s into the measured part (15), `tutti
#               calibrate --zone lab --mic mic` runs once, then `--watch` on the music; at
#               CALIB_CHANGE_S into the recording p2's hidden latency grows 20 ms. Reported: the
#               arrivals' spread at the microphone (each player's latency plus its hidden one)
#               before, after the calibration, and after the drift watch's correction; when the
#               watch declared the change (use --seconds 170 or more)
#   snapmix-L   the tutti-L source and a hub serving Snapcast's stream (--snapcast-stream):
#               players p1..p(N-1) native, pN Debian's `snapclient --player pulse` playing the
#               room as a player of the hub (buffer_time a fifth of L, as in snap-B)
#   snap-B      snapserver (pipe source fed by `parec -d src.monitor`, buffer B ms, PCM) and N
#               `snapclient --player pulse` on p1..pN
# Options: --seconds S (120; measured after --settle 10), --players N (3), --stop-at T (stop
# player 1 for 200 ms T seconds into the measured part, then measure its recovery), --busy
# (keep one core busy with a normal-priority loop), --pipe-kb K (the sink's queue: 4 KiB,
# ~2.7 ms, by default; 64 is a device with ~43 ms of its own latency), --out DIR (keep
# recordings and logs there). TUTTI_BIN=PATH runs that tutti binary instead of this tree's (to
# compare two builds, alternately, in one hour). See docs/instrument.md.
# Everything runs in a private network namespace (its own loopback): nothing leaves the machine.
#
# Usage (root; installs pulseaudio, pulseaudio-utils, snapserver, snapclient when missing):
#   bash scripts/speakers.sh [--seconds 120] [--phases "floor tutti-100 tutti-20 snap-1000 snap-100"]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=120
SETTLE=10
PLAYERS=3
PHASES="floor tutti-100 tutti-20 snap-1000 snap-100"
STOP_AT=""
BUSY=0
OUT=""
PIPE_KB=4
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) SECS=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --players) PLAYERS=$2; shift 2 ;;
    --phases) PHASES=$2; shift 2 ;;
    --stop-at) STOP_AT=$2; shift 2 ;;
    --busy) BUSY=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --pipe-kb) PIPE_KB=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "speakers.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "speakers.sh needs root: a private network namespace, and SCHED_FIFO for the recorder" >&2; exit 1; }
need=()
web=()
# (chromium, node and npm come with the test packages: .ci/packages.sh, below)
case " $PHASES" in *" web-"*) command -v curl >/dev/null || web=(curl) ;; esac
for p in pulseaudio pulseaudio-utils snapserver snapclient iproute2 util-linux "${web[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The `src` sink's latency in ms, the mean of ten readings 50 ms apart (`pactl list sinks`).
src_latency_ms() {
    for _ in $(seq 10); do
        pactl list sinks | awk '/^[[:space:]]*Name: src$/ {f = 1} f && /^[[:space:]]*Latency:/ {print $2; exit}'
        sleep 0.05
    done | awk '{s += $1} END {if (NR) printf "%.3f", s / NR / 1000; else print 0}'
}
# shellcheck source=/dev/null
source .ci/packages.sh
ensure_packages
cargo build --release --locked -q -p tutti -p tutti-lab
TARGET=$(realpath "${CARGO_TARGET_DIR:-target}")/release
TUTTI=${TUTTI_BIN:-$TARGET/tutti}
LAB=$TARGET/tutti-lab

DIR=$(mktemp -d /tmp/tutti-speakers.XXXXXX)
[ -n "$OUT" ] && mkdir -p "$OUT" && OUT=$(realpath "$OUT")
NS="tutti-spk-$$"
# src, the players, and one channel that takes every right channel; at least 8 channels of
# 32-bit float, so the pipe sink renders 4 KiB blocks of 128 frames (2.7 ms), like a
# low-latency sound card. --pipe-kb sets the pipe (the sink's queue: its latency), 4 KiB
# (~2.7 ms) by default; 64 is a device with ~43 ms of latency.
CH=$((PLAYERS + 2)); [ "$CH" -lt 8 ] && CH=8
KEEP=$((PLAYERS + 1))
export PULSE_SERVER="unix:$DIR/native"
export TUTTI_PASSPHRASE="speakers-$$-passphrase"
export TUTTI_MDNS=off
export TUTTI_ADMIN_TOKEN="speakers-$$-admin-token"
BROWSER_DIR=$(realpath crates/tutti/tests/browser)
if [[ " $PHASES" == *" web-"* ]] && [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund >/dev/null)
fi
pids=()
stop_phase() {
    for p in "${pids[@]:-}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait "${pids[@]:-}" 2>/dev/null || true
    pids=()
}
cleanup() {
    stop_phase
    [ -n "${BUSY_PID:-}" ] && kill "$BUSY_PID" 2>/dev/null
    [ -n "${PA_PID:-}" ] && kill "$PA_PID" 2>/dev/null
    wait 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    if [ -n "$OUT" ]; then cp -r "$DIR"/. "$OUT"/ 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
# Always run in the background (`in_ns CMD... &`): the subshell becomes nsenter, which becomes
# CMD, so $! is the pid of the process measured.
in_ns() { exec nsenter --net="/run/netns/$NS" "$@"; }

# The sound server.
aux() { local s="" i; for i in $(seq 0 $(($1 - 1))); do s="$s${s:+,}aux$i"; done; echo "$s"; }
{
    echo ".fail"
    echo "load-module module-native-protocol-unix auth-anonymous=1 socket=$DIR/native"
    echo "load-module module-pipe-sink sink_name=rec file=$DIR/rec.fifo format=float32le rate=48000 channels=$CH channel_map=$(aux "$CH")"
    echo "load-module module-remap-sink sink_name=src master=rec channels=2 channel_map=front-left,front-right master_channel_map=aux0,aux$((CH - 1)) remix=no"
    for i in $(seq "$PLAYERS"); do
        echo "load-module module-remap-sink sink_name=p$i master=rec channels=2 channel_map=front-left,front-right master_channel_map=aux$i,aux$((CH - 1)) remix=no"
    done
    echo "load-module module-remap-sink sink_name=fan master=rec channels=$KEEP channel_map=$(aux "$KEEP") master_channel_map=$(aux "$KEEP") remix=no"
    # The calibration phase's microphone: the recorder writes what it hears into this FIFO.
    echo "load-module module-pipe-source source_name=mic file=$DIR/mic.fifo format=s16le rate=48000 channels=1"
    echo "set-default-sink src"
    echo "set-default-source src.monitor"
} > "$DIR/lab.pa"
mkdir -p -m700 "$DIR/run"
XDG_RUNTIME_DIR="$DIR/run" pulseaudio -n -F "$DIR/lab.pa" --daemonize=no --exit-idle-time=-1 \
    --use-pid-file=no --log-target=file:"$DIR/pulse.log" >/dev/null 2>&1 &
PA_PID=$!
for _ in $(seq 100); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
pactl info >/dev/null || { echo "PulseAudio did not start: $DIR/pulse.log" >&2; cat "$DIR/pulse.log" >&2; exit 1; }

"$LAB" signal "$DIR/signal.wav" --seconds $((SECS + SETTLE + 10))
"$LAB" signal "$DIR/fan.wav" --seconds $((SECS + SETTLE + 10)) --channels "$KEEP"
if [ "$BUSY" = 1 ]; then
    ( while :; do :; done ) &
    BUSY_PID=$!
    echo "one core kept busy by a normal-priority loop (pid $BUSY_PID)"
fi

TICK=$(getconf CLK_TCK)
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
now() { date +%s.%N; }

# run_phase NAME: starts the phase's processes (into pids and the roles below), records,
# measures CPU, analyzes.
run_phase() {
    local name=$1 kind=${1%%-*} arg=${1#*-}
    local rec_secs=$((SECS + SETTLE + 8))
    local roles=() rpids=()
    echo
    echo "== $name: $PLAYERS players, ${SECS} s measured after ${SETTLE} s"
    local room=()
    if [ "$kind" = calib ]; then
        # The microphone hears p1..pN at gain 0.3 each; the sequence's chirps play at
        # -6 dBFS (RMS 0.354), so at the microphone 0.106: noise for CALIB_SNR_DB below it.
        local chans; chans=$(seq -s, 1 "$PLAYERS")
        local noise; noise=$(echo "0.354 * 0.3 / e(${CALIB_SNR_DB:-10} / 20 * l(10))" | bc -l)
        # Then p2's latency grows by 20 ms (a TV switching modes) CALIB_CHANGE_S into the
        # recording: the drift watch must catch it.
        CHANGE_S=${CALIB_CHANGE_S:-$((SETTLE + ${CALIB_AT:-15} + 50))}
        room=(--mic "$DIR/mic.fifo" --mic-channels "$chans" --mic-delays-ms "${CALIB_DELAYS_MS:-37,112,5}" --mic-gain 0.3 --mic-noise-rms "$noise" --mic-change "$CHANGE_S:1:+20")
    fi
    chrt -f 60 "$LAB" record "$DIR/rec.fifo" "$DIR/$name.raw" --channels "$CH" --keep "$KEEP" \
        --format float32le --pipe-bytes $((PIPE_KB * 1024)) --seconds "$rec_secs" --log "$DIR/$name.pipe.tsv" --summary "$DIR/$name.rec.json" "${room[@]}" &
    local recorder=$!
    local t_rec; t_rec=$(now)
    sleep 0.5
    case $kind in
    floor)
        paplay -d fan --channel-map="$(aux "$KEEP")" "$DIR/fan.wav" & pids+=($!)
        ;;
    tutti|stdin)
        if [ "$kind" = tutti ]; then
            in_ns "$TUTTI" stream --device src.monitor --latency-ms "$arg" --bind 127.0.0.1 --port 7400 \
                > "$DIR/$name.source.log" 2>&1 &
        else
            # A monitor's data leaves its sink the sink's latency before it is heard: the
            # pipe's reader is told it, as a user would read it from `pactl list sinks`.
            local src_latency; src_latency=$(src_latency_ms)
            echo "src sink latency (pactl, mean of 10): $src_latency ms"
            in_ns bash -c "exec parec -d src.monitor --raw --format=s16le --rate=48000 --channels=2 --latency-msec=5 \
                | exec '$TUTTI' stream --stdin-live --input-latency-ms '$src_latency' --latency-ms '$arg' --bind 127.0.0.1 --port 7400" \
                > "$DIR/$name.source.log" 2>&1 &
        fi
        pids+=($!); sleep 0.3
        local src_pid=$!
        [ "$kind" = stdin ] && src_pid=$(pgrep -n -f "$TUTTI stream" || true)
        roles+=("source"); rpids+=("$src_pid")
        for i in $(seq "$PLAYERS"); do
            in_ns "$TUTTI" play 127.0.0.1:7400 --device "p$i" --name "p$i" --port $((7400 + i)) \
                > "$DIR/$name.p$i.log" 2>&1 &
            pids+=($!); roles+=("p$i"); rpids+=($!)
        done
        sleep 2
        paplay -d src "$DIR/signal.wav" & pids+=($!)
        ;;
    web|calib|snapmix)
        in_ns "$TUTTI" serve --http 127.0.0.1:7480 --https 127.0.0.1:0 --link 127.0.0.1:7481 --no-mqtt \
            --snapcast-stream 127.0.0.1:1704 --no-state > "$DIR/$name.hub.log" 2>&1 &
        pids+=($!); local hub_pid=$!
        in_ns "$TUTTI" stream --device src.monitor --latency-ms "$arg" --bind 127.0.0.1 --port 7400 \
            > "$DIR/$name.source.log" 2>&1 &
        pids+=($!); roles+=("source"); rpids+=($!)
        # web: the last sink is the browser's, snapmix: a snapclient's; calib: every player
        # joins the hub.
        local native=$PLAYERS joins=()
        [ "$kind" = web ] || [ "$kind" = snapmix ] && native=$((PLAYERS - 1))
        [ "$kind" = calib ] && joins=(--hub 127.0.0.1:7481)
        for i in $(seq "$native"); do
            in_ns "$TUTTI" play 127.0.0.1:7400 --device "p$i" --name "p$i" --port $((7400 + i)) "${joins[@]}" \
                > "$DIR/$name.p$i.log" 2>&1 &
            pids+=($!); roles+=("p$i"); rpids+=($!)
        done
        roles+=("hub"); rpids+=("$hub_pid")
        local api=(nsenter --net="/run/netns/$NS" curl -sf -H "Authorization: Bearer $TUTTI_ADMIN_TOKEN")
        for _ in $(seq 50); do "${api[@]}" http://127.0.0.1:7480/api/hub >/dev/null && break; sleep 0.1; done
        if [ "$kind" = web ]; then
            "${api[@]}" -X PUT -H 'Content-Type: application/json' -d '{"source":"127.0.0.1:7400"}' \
                http://127.0.0.1:7480/api/zones/lab >/dev/null
            # The guest's link, on the hub's plain HTTP address (127.0.0.1 is a secure context).
            local invite; invite=$("${api[@]}" -X POST http://127.0.0.1:7480/api/guests | grep -o 'invite=[0-9a-f]*')
            DELAY_MS="${WEB_DELAY_MS:-}" PULSE_SINK="p$PLAYERS" in_ns node "$BROWSER_DIR/listen.mjs" "http://127.0.0.1:7480/guest?$invite" lab \
                > "$DIR/$name.p$PLAYERS.log" 2>&1 &
            pids+=($!)
            # Chromium opens its stream on the default sink whatever PULSE_SINK says: moved to pN.
            local si=""
            for _ in $(seq 150); do
                si=$(pactl list sink-inputs | awk '/^Sink Input #/ {id = substr($3, 2)} tolower($0) ~ /application.*chromium/ {print id; exit}')
                [ -n "$si" ] && break
                sleep 0.1
            done
            if [ -n "$si" ]; then pactl move-sink-input "$si" "p$PLAYERS"; else echo "  Chromium's sound was not found"; fi
        elif [ "$kind" = snapmix ]; then
            "${api[@]}" -X PUT -H 'Content-Type: application/json' -d "{\"source\":\"127.0.0.1:7400\",\"latency_ms\":$arg}" \
                http://127.0.0.1:7480/api/zones/lab >/dev/null
            # The snapclient's PulseAudio buffer as in the snap phases: a fifth of the latency.
            local bt=$((arg / 5)); [ "$bt" -lt 10 ] && bt=10; [ "$bt" -gt 100 ] && bt=100
            in_ns snapclient -h 127.0.0.1 -p 1704 --hostID "lab$PLAYERS" --player "pulse:buffer_time=$bt" -s "p$PLAYERS" \
                --logsink stderr --logfilter '*:info' > "$DIR/$name.p$PLAYERS.log" 2>&1 &
            pids+=($!); roles+=("p$PLAYERS"); rpids+=($!)
            for _ in $(seq 100); do
                "${api[@]}" "http://127.0.0.1:7480/api/nodes/snapclient-lab$PLAYERS" >/dev/null 2>&1 && break
                sleep 0.1
            done
            "${api[@]}" -X PATCH -H 'Content-Type: application/json' -d '{"zone":"lab"}' \
                "http://127.0.0.1:7480/api/nodes/snapclient-lab$PLAYERS" >/dev/null
        else
            "${api[@]}" -X PUT -H 'Content-Type: application/json' -d "{\"source\":\"127.0.0.1:7400\",\"latency_ms\":$arg}" \
                http://127.0.0.1:7480/api/zones/lab >/dev/null
            local n=0
            for _ in $(seq 100); do
                n=$("${api[@]}" http://127.0.0.1:7480/api/nodes | grep -o '"role":"player"' | wc -l)
                [ "$n" -ge "$PLAYERS" ] && break
                sleep 0.1
            done
            local id
            for id in $("${api[@]}" http://127.0.0.1:7480/api/nodes | grep -o '"id":"[^"]*"' | cut -d'"' -f4); do
                "${api[@]}" -X PATCH -H 'Content-Type: application/json' -d '{"zone":"lab"}' \
                    "http://127.0.0.1:7480/api/nodes/$id" >/dev/null
            done
        fi
        sleep 2
        paplay -d src "$DIR/signal.wav" & pids+=($!)
        ;;
    snap)
        snapserver_conf "$DIR" "$DIR/snapfifo" lab warning "$arg"
        # The writer first (its open waits for the reader): a pipe source that opens a FIFO
        # with no writer reads end-of-file and gives up.
        rm -f "$DIR/snapfifo"; mkfifo "$DIR/snapfifo"
        parec -d src.monitor --raw --format=s16le --rate=48000 --channels=2 --latency-msec=5 > "$DIR/snapfifo" &
        local feeder=$!; pids+=($!)
        in_ns snapserver -c "$DIR/snapserver.conf" > "$DIR/$name.server.log" 2>&1 &
        pids+=($!); roles+=("snapserver"); rpids+=($!)
        roles+=("parec"); rpids+=("$feeder")
        for i in $(seq "$PLAYERS"); do
            # snapclient's PulseAudio buffer (100 ms by default) must fit in the server's
            # buffer: a fifth of it, 10-100 ms.
            local bt=$((arg / 5)); [ "$bt" -lt 10 ] && bt=10; [ "$bt" -gt 100 ] && bt=100
            in_ns snapclient -h 127.0.0.1 -p 1704 -i "$i" --hostID "lab$i" --player "pulse:buffer_time=$bt" -s "p$i" \
                --logsink stderr --logfilter '*:warning' > "$DIR/$name.p$i.log" 2>&1 &
            pids+=($!); roles+=("p$i"); rpids+=($!)
        done
        sleep 2
        paplay -d src "$DIR/signal.wav" & pids+=($!)
        ;;
    *) echo "unknown phase $name" >&2; exit 2 ;;
    esac
    roles+=("pulseaudio"); rpids+=("$PA_PID")
    # Settle, then measure.
    local t_start; t_start=$(now)
    sleep "$SETTLE"
    local c0=() c1=() p
    for p in "${rpids[@]}"; do c0+=("$(cpu_ticks "$p")"); done
    # Per thread, for the source, the first player and the sound server (where the time and
    # the wake-ups go).
    local watch=("${rpids[1]}" "${rpids[0]}" "$PA_PID") watched=(p1 "${roles[0]}" pulseaudio)
    [ "$kind" = snap ] && watch=("${rpids[2]}" "${rpids[0]}" "$PA_PID")
    [ "$kind" = floor ] && watch=() && watched=()
    for i in "${!watch[@]}"; do thread_ticks "${watch[$i]}" > "$DIR/$name.threads0.$i"; done
    local mark=""
    if [ -n "$STOP_AT" ] && [ "$kind" != floor ]; then
        sleep "$STOP_AT"
        local victim=${rpids[1]}
        [ "$kind" = snap ] && victim=${rpids[2]}
        mark=$(echo "$(now) - $t_rec" | bc -l)
        kill -STOP "$victim"; sleep 0.2; kill -CONT "$victim"
        sleep $((SECS - STOP_AT))
    elif [ "$kind" = calib ]; then
        local at=${CALIB_AT:-15}
        sleep "$at"
        local t0 t1; t0=$(now)
        CAL_START=$(echo "$t0 - $t_rec" | bc -l)
        (in_ns "$TUTTI" calibrate --zone lab --mic mic --hub http://127.0.0.1:7480) > "$DIR/$name.calibrate.txt" 2>&1 \
            || echo "  tutti calibrate failed (its output follows)"
        t1=$(now)
        CAL_END=$(echo "$t1 - $t_rec" | bc -l)
        printf '  calibration took %.1f s:\n' "$(echo "$t1 - $t0" | bc -l)"
        sed -e 's/^/    /' "$DIR/$name.calibrate.txt"
        # The drift watch on the music from now on, and what the hub says every second.
        in_ns "$TUTTI" calibrate --zone lab --mic mic --hub http://127.0.0.1:7480 --watch --no-calibrate --every 5 \
            > "$DIR/$name.watch.txt" 2>&1 &
        pids+=($!)
        (
            while :; do
                local t w r
                t=$(echo "$(now) - $t_rec" | bc -l)
                w=$("${api[@]}" http://127.0.0.1:7480/api/zones/lab/watch 2>/dev/null | grep -o '"drift_ms":[-0-9.enul]*' | cut -d: -f2 || true)
                r=$("${api[@]}" http://127.0.0.1:7480/api/calibrations 2>/dev/null | sed 's/{"id":"cal-/\n&/g' | grep '"reason":"drift"' | tail -1 | grep -o '"state":"[a-z]*"' | head -1 | cut -d'"' -f4 || true)
                printf '%.1f\t%s\t%s\n' "$t" "${w:-null}" "${r:-none}"
                sleep 1
            done
        ) > "$DIR/$name.drift.tsv" &
        pids+=($!)
        local left; left=$(echo "$SECS - ($t1 - $t_start - $SETTLE)" | bc -l)
        [ "$(echo "$left > 0" | bc)" = 1 ] && sleep "$left"
    else
        sleep "$SECS"
    fi
    for p in "${rpids[@]}"; do c1+=("$(cpu_ticks "$p")"); done
    for i in "${!watch[@]}"; do thread_ticks "${watch[$i]}" > "$DIR/$name.threads1.$i"; done
    {
        printf '  %-11s %8s %9s\n' process "cpu_%" rss_kB
        for i in "${!roles[@]}"; do
            printf '  %-11s %8.2f %9d\n' "${roles[$i]}" \
                "$(echo "(${c1[$i]} - ${c0[$i]}) * 100 / $TICK / $SECS" | bc -l)" "$(rss_kb "${rpids[$i]}")"
        done
        for i in "${!watch[@]}"; do
            echo "  threads of ${watched[$i]}:"
            thread_rates "$DIR/$name.threads0.$i" "$DIR/$name.threads1.$i" "$SECS" "$TICK"
        done
    } > "$DIR/$name.cpu.txt"
    stop_phase
    wait "$recorder" || { echo "the recorder failed" >&2; exit 1; }
    local names="" i
    for i in $(seq "$PLAYERS"); do names="$names${names:+,}p$i"; done
    # The signal (its first event) starts as the settling does.
    local args=(--channels "$KEEP" --format float32le --names "$names" --settle "$SETTLE" --label "$name" --json "$DIR/$name.json" --series "$DIR/$name.series.tsv")
    [ -n "$mark" ] && args+=(--mark "$mark:p1")
    "$LAB" analyze "$DIR/$name.raw" "${args[@]}" || echo "  (no analysis: see the logs in ${OUT:-$DIR})"
    if [ "$kind" = calib ] && [ -f "$DIR/$name.series.tsv" ]; then
        # Arrival at the microphone = latency + hidden latency; spread per window, before the
        # calibration and from 2 s after it (the sequence silences the stream meanwhile).
        # (The series counts from the signal's first event, first_s into the recording.)
        local first; first=$(grep -o '"first_s":[0-9.]*' "$DIR/$name.json" | cut -d: -f2)
        # When the watch declared +20 ms (±1), and when the drift calibration it started was
        # applied (recording seconds).
        local declared fixed
        declared=$(awk -v c="$CHANGE_S" '$1 >= c && $2 != "null" && $2 > 19 && $2 < 21 {print $1; exit}' "$DIR/$name.drift.tsv")
        fixed=$(awk -v c="$CHANGE_S" '$1 >= c && $3 == "applied" {print $1; exit}' "$DIR/$name.drift.tsv")
        local after_s=never fixed_s=never
        [ -n "$declared" ] && after_s=$(printf '%.1f s after' "$(echo "$declared - $CHANGE_S" | bc -l)")
        [ -n "$fixed" ] && fixed_s=$(printf '%.1f s after' "$(echo "$fixed - $CHANGE_S" | bc -l)")
        printf '  drift watch: p2 +20 ms at %s s; declared %s; drift calibration applied %s\n' "$CHANGE_S" "$after_s" "$fixed_s"
        grep -E "^watch|^calibration|^  " "$DIR/$name.watch.txt" | tail -12 | sed -e 's/^/    /'
        awk -v hidden="0,${CALIB_DELAYS_MS:-37,112,5}" -v settle="$SETTLE" -v a="$(echo "$CAL_START - ${first:-0}" | bc -l)" -v b="$(echo "$CAL_END - ${first:-0}" | bc -l)" \
            -v c="$(echo "$CHANGE_S - ${first:-0}" | bc -l)" -v d="$(echo "${fixed:-1e9} - ${first:-0}" | bc -l)" '
            BEGIN { n = split(hidden, h, ","); for (i = 1; i <= n; i++) h[i] *= 1000 }
            NR == 1 { next }
            {
                lo = 1e18; hi = -1e18; ok = 1
                for (i = 2; i <= NF; i++) { if ($i == "-") { ok = 0; break } v = $i + h[i] + (i == 3 && $1 >= c ? 20000 : 0); if (v < lo) lo = v; if (v > hi) hi = v }
                if (!ok) next
                if ($1 >= settle && $1 < a) before[++nb] = hi - lo
                else if ($1 > b + 2 && $1 < c) after[++na] = hi - lo
                else if ($1 > d + 2) fixed[++nf] = hi - lo
            }
            function pct(arr, n, p,   i, j, t) {
                for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
                return n ? arr[int((n - 1) * p) + 1] : -1
            }
            END {
                printf "  arrivals at the microphone, spread (ms): before p50 %.3f p99 %.3f (n=%d); after p50 %.3f p99 %.3f max %.3f (n=%d); after the drift correction p50 %.3f p99 %.3f max %.3f (n=%d)\n",
                    pct(before, nb, 0.5) / 1000, pct(before, nb, 0.99) / 1000, nb,
                    pct(after, na, 0.5) / 1000, pct(after, na, 0.99) / 1000, pct(after, na, 1) / 1000, na,
                    pct(fixed, nf, 0.5) / 1000, pct(fixed, nf, 0.99) / 1000, pct(fixed, nf, 1) / 1000, nf
            }' "$DIR/$name.series.tsv"
    fi
    cat "$DIR/$name.cpu.txt"
    sed -e 's/^/  recorder: /' "$DIR/$name.rec.json"
    for f in "$DIR/$name".p*.log "$DIR/$name.source.log"; do
        [ -f "$f" ] || continue
        grep -iE "error|warn|cannot|latency|underrun|resync|waiting" "$f" | tail -3 | sed -e "s|^|  $(basename "$f" .log): |" || true
    done
    [ -n "$OUT" ] || rm -f "$DIR/$name.raw"
}

for ph in $PHASES; do
    run_phase "$ph"
done
