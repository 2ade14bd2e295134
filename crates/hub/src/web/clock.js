// Tutti: a guest page's copy of the hub's clock (see crates/hub/src/listen.rs), shared by the
// listening and the singing halves of the page (loaded before both).
//
// Each socket to the hub sends pings ({"type":"ping","id":N}); the hub answers with its clock
// ({"type":"pong","id":N,"hub_us":T}). The round trips near the fastest of the last minute have
// their midpoint where the hub answered; a line through those midpoints (once they span 5 s)
// gives the hub's offset and rate against performance.now().
"use strict";

class HubClock {
  constructor() {
    this.samples = []; // {at: perf ms (midpoint), hub: hub ms, rtt: ms}
    this.fit = null; // hub_ms = a + b × (perf − p0)
  }
  add(sent, received, hubUs) {
    this.samples.push({ at: (sent + received) / 2, hub: hubUs / 1e3, rtt: received - sent });
    const now = received;
    this.samples = this.samples.filter((s) => now - s.at < 60_000);
    const best = Math.min(...this.samples.map((s) => s.rtt));
    // Round trips near the fastest: their midpoints are where the hub answered.
    const good = this.samples.filter((s) => s.rtt <= best + Math.max(0.5, best * 0.5));
    const p0 = good[good.length - 1].at;
    const offsets = good.map((s) => s.hub - s.at);
    let b = 1;
    const span = good[good.length - 1].at - good[0].at;
    if (good.length >= 8 && span > 5_000) {
      const mx = good.reduce((x, s) => x + s.at, 0) / good.length;
      const my = good.reduce((x, s) => x + s.hub, 0) / good.length;
      let sxy = 0;
      let sxx = 0;
      for (const s of good) {
        sxy += (s.at - mx) * (s.hub - my);
        sxx += (s.at - mx) * (s.at - mx);
      }
      b = Math.max(1 - 5e-4, Math.min(1 + 5e-4, sxy / sxx));
      this.fit = { p0, a: my + b * (p0 - mx), b, rtt: best, n: good.length };
    } else {
      const sorted = offsets.slice().sort((x, y) => x - y);
      this.fit = { p0, a: p0 + sorted[sorted.length >> 1], b, rtt: best, n: good.length };
    }
  }
  hubMs(perf) {
    return this.fit.a + this.fit.b * (perf - this.fit.p0);
  }
}

/** Pings the hub over `ws` into `clock`: a burst while it locks, then twice a second. Returns
 * the handler for the socket's pongs (call it with each parsed text message). */
function pingHub(ws, clock) {
  const pending = new Map();
  let pings = 0;
  const ping = () => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const id = ++pings;
    pending.set(id, performance.now());
    ws.send(JSON.stringify({ type: "ping", id }));
    setTimeout(ping, pings < 40 ? 50 : 500);
  };
  if (ws.readyState === WebSocket.OPEN) ping();
  else ws.addEventListener("open", ping);
  return (m) => {
    if (m.type !== "pong") return false;
    const sent = pending.get(m.id);
    pending.delete(m.id);
    if (sent !== undefined) clock.add(sent, performance.now(), m.hub_us);
    return true;
  };
}
