#!/usr/bin/env bash
# Live mode, capture → playout through PulseAudio: a participant sends clicks (2.5 ms PCM
# frames) to a party host playing into a null sink (128-frame device buffers); the sink's
# monitor is recorded and each click's arrival compared with its capture instant.
# Then the same through a guest's browser (below).
# Usage: bash scripts/live-latency.sh   (needs pulseaudio; everything stays on 127.0.0.1)
#        ONLY=browser bash scripts/live-latency.sh   (the browser's part alone)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p tutti
BIN=${CARGO_TARGET_DIR:-target}/release/tutti
export TUTTI_PASSPHRASE="live-$$-passphrase"
PORT=$((30000 + $$ % 1000 * 20))
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
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
if [ "${ONLY:-}" != browser ]; then
"$BIN" party --port "$HP" --device out --buffer 128 --seconds 14 >/dev/null 2>"${HOSTLOG:-/dev/null}" &
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
    tee "${LIVE_SERIES:-/dev/null}" | sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "no clicks heard"; exit }
        p = int(NR * 0.95) + 1; if (p > NR) p = NR
        printf "%d clicks: latency median %.2f ms, p95 %.2f ms, min %.2f ms, max %.2f ms\n", NR, v[int(NR/2)+1], v[p], v[1], v[NR]
        print "(heard on the sink monitor through cpal; its timestamps read ~0.6 ms early: see docs/audio.md)" }'
fi

# The same through a guest's browser: Chromium's fake microphone plays the clicks into the
# guest page, which sends them to the hub over its WebSocket (each block stamped with the hub
# instant it reached the page), and the hub sends them on to a party host on the same sink.
# The page notes the hub instant each click reached it; heard minus that is the pipeline
# (Chromium's own capture path before the page — the phone's audio hardware — not included).
echo "== a guest's browser: page → hub → party host → PulseAudio (Chromium, clicks as its microphone)"
analyse() { # PAGE.json REC.json HOST_MS
    PAGE="$1" REC="$2" HOST_MS="$3" node --input-type=module -e '
import { readFileSync } from "node:fs";
const page = JSON.parse(readFileSync(process.env.PAGE, "utf8"));
const heard = JSON.parse(readFileSync(process.env.REC, "utf8")).clicks_ns;
const q = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };
const lat = [];
for (const c of page.clicks_us) {
  const h = heard.find((h) => h >= c * 1000 && h - c * 1000 < 200e6);
  if (h !== undefined) lat.push((h - c * 1000) / 1e6);
}
if (!lat.length) { console.log("no clicks heard"); process.exit(1); }
const f = (x) => x.toFixed(2);
const t = page.transit_ms.filter((x) => x != null);
const host = Number(process.env.HOST_MS);
console.log(`${lat.length} of ${page.clicks_us.length} clicks the page sent were heard: latency median ${f(q(lat, 0.5))} ms, p95 ${f(q(lat, 0.95))} ms, min ${f(Math.min(...lat))} ms, max ${f(Math.max(...lat))} ms`);
console.log(`  page → hub (the WebSocket, median of each second): median ${f(q(t, 0.5))} ms, worst ${f(Math.max(...page.transit_max_ms.filter((x) => x != null)))} ms; malformed ${page.malformed}`);
const pg = page.page_ms.filter((x) => x != null);
console.log(`  of which the browser (quanta reaching the page after their frames: capture bursts): median ${f(q(pg, 0.5))} ms, worst ${f(Math.max(...page.page_max_ms.filter((x) => x != null)))} ms (its context: base latency ${f(page.base_latency_ms)} ms)`);
if (host) console.log(`  the host plays the guest voice ${f(host)} ms after the page had it (its adaptive latency); heard − that: the device ${f(q(lat, 0.5) - host)} ms (median)`);
console.log("(heard on the sink monitor through cpal; its timestamps read ~0.6 ms early: see docs/audio.md)");
'
}
BROWSER_DIR=$(realpath crates/tutti/tests/browser)
if ! command -v chromium >/dev/null || ! command -v node >/dev/null; then
    echo "skipped: needs chromium, node and npm (apt-get install chromium nodejs npm)"
    exit 0
fi
[ -d "$BROWSER_DIR/node_modules/playwright-core" ] || (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund >/dev/null)
export TUTTI_ADMIN_TOKEN="live-$$-admin-token" TUTTI_MDNS=off
H=$((PORT + 12)); L=$((PORT + 13)); HP2=$((PORT + 14))
"$BIN" serve --http "127.0.0.1:$H" --https 127.0.0.1:0 --link "127.0.0.1:$L" --no-mqtt --no-state \
    > "$PD/hub.log" 2>&1 &
pids+=($!)
"$BIN" party --port "$HP2" --device out --buffer 128 --hub "127.0.0.1:$L" --seconds 22 \
    > /dev/null 2> "$PD/host2.log" &
pids+=($!)
host2=$!
export HUB="http://127.0.0.1:$H"
invite=$(node -e '
const api = (p, m = "GET") => fetch(process.env.HUB + p, { method: m,
  headers: { Authorization: `Bearer ${process.env.TUTTI_ADMIN_TOKEN}`, "Content-Type": "application/json" },
  body: m === "POST" ? "{}" : undefined }).then((r) => r.json());
for (let i = 0; ; i++) {
  const nodes = await api("/api/nodes").catch(() => []);
  if (nodes.some((n) => n.info.role === "mixer" && n.online)) break;
  if (i > 100) throw new Error("the party host did not join the hub");
  await new Promise((r) => setTimeout(r, 100));
}
const g = await api("/api/guests", "POST");
console.log(g.link.slice(g.link.indexOf("/guest")));
' --input-type=module)
"$BIN" record --in out.monitor --seconds 16 > "$PD/rec2.json" &
rec=$!
node "$BROWSER_DIR/sing-clicks.mjs" "$HUB$invite" "$PD/clicks.wav" 12 > "$PD/page.json"
wait "$rec"
wait "$host2" 2>/dev/null || true
LATENCY=$(sed -n 's/.*mic `Guest[^`]*`:.*playing at \([0-9.]*\) *ms.*/\1/p' "$PD/host2.log" | tail -1)
analyse "$PD/page.json" "$PD/rec2.json" "$LATENCY"

# Everyone on headphones: no party host; a second guest (muted) hears the first one's clicks
# from the hub's choir, played by its page into the sink (Chromium's sound goes to PulseAudio's
# default sink, `out`). Mouth (the first page) to ear (the second page's sound on the sink).
echo "== everyone on headphones: page → hub (the choir's mix) → another page → PulseAudio"
invite() { node --input-type=module -e '
const g = await fetch(process.env.HUB + "/api/guests", { method: "POST", body: "{}",
  headers: { Authorization: `Bearer ${process.env.TUTTI_ADMIN_TOKEN}`, "Content-Type": "application/json" } }).then((r) => r.json());
console.log(g.link.slice(g.link.indexOf("/guest")));'; }
singer=$(invite); ear=$(invite)
"$BIN" record --in out.monitor --seconds 16 > "$PD/rec3.json" &
rec=$!
EAR="$HUB$ear" node "$BROWSER_DIR/sing-clicks.mjs" "$HUB$singer" "$PD/clicks.wav" 12 > "$PD/page3.json"
wait "$rec"
analyse "$PD/page3.json" "$PD/rec3.json" ""
node --input-type=module -e '
import { readFileSync } from "node:fs";
const e = JSON.parse(readFileSync(process.argv[1], "utf8")).ear;
console.log(`  the choir mixes ${e.mix_delay_ms.toFixed(1)} ms after the voices sang; the ear keeps ${e.buffered_ms.toFixed(1)} ms ahead (its cushion grew to ${e.cushion_ms.toFixed(1)} ms; ${e.underruns} gaps); its context: output latency ${e.output_latency_ms.toFixed(1)} ms, base ${e.base_latency_ms.toFixed(1)} ms`);
' "$PD/page3.json"
