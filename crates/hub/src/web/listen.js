// Tutti: a page listening to a room in sync with its players (see crates/hub/src/listen.rs).
//
// The hub's clock is followed with pings (clock.js: the fastest round trips of the last minute,
// a line fitted through them: offset and rate); AudioContext.getOutputTimestamp says which context
// instant the speaker plays at which performance instant (the device's latency included).
// Together: the hub instant each context instant is heard, sent to the worklet four times a
// second. A delay of one's own (Bluetooth headphones) is kept in this browser.
"use strict";

class Listener {
  constructor(onState) {
    this.onState = onState;
    this.clock = new HubClock();
    this.stats = {};
    this.delayMs = Number(localStorage.getItem("tutti.delay_ms") || 0);
    this.mode = localStorage.getItem("tutti.mode") || "sync";
  }

  async start(zone) {
    this.stop();
    this.outs = [];
    this.zone = zone;
    this.stopped = false;
    this.stats = {};
    this.hello = null;
    this.error = null;
    this.ctx = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule("/guest/listen-worklet.js");
    this.node = new AudioWorkletNode(this.ctx, "tutti-listen", { outputChannelCount: [2] });
    this.node.connect(this.ctx.destination);
    this.node.port.onmessage = (e) => {
      this.stats = e.data;
      this.say();
    };
    this.node.port.postMessage({ type: "mode", mode: this.mode });
    await this.ctx.resume();
    this.connect();
    this.timer = setInterval(() => this.tick(), 250);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/guest/listen?zone=${encodeURIComponent(this.zone)}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    this.pong = pingHub(ws, this.clock);
    ws.onmessage = (e) => {
      if (typeof e.data === "string") return this.text(JSON.parse(e.data));
      const v = new DataView(e.data);
      const frames = v.getUint32(8, true);
      const rate = v.getUint32(12, true);
      const channels = v.getUint16(16, true);
      const pcm = new Int16Array(e.data, 24, frames * channels);
      const data = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
      const block = { type: "block", hub_us: v.getFloat64(0, true), frames, rate, channels, data };
      this.node.port.postMessage(block, [data.buffer]);
    };
    ws.onclose = (e) => {
      if (this.stopped || this.ws !== ws) return;
      this.closed = e.reason || this.error || "the connection to the hub is lost";
      this.say();
      // 4001: the room is gone; 4003: sent away. Anything else: try again, while a guest.
      if (e.code === 4001 || e.code === 4003) return this.stop(this.closed);
      if (this.node) this.node.port.postMessage({ type: "reset" });
      setTimeout(async () => {
        if (this.stopped || this.ws !== ws) return;
        const me = await fetch("/guest/me").catch(() => null);
        if (me && me.status === 401) return this.stop("you are not a guest any more (the host sent you away, or your time ran out)");
        if (!this.stopped && this.ws === ws) this.connect();
      }, 1000);
    };
  }

  text(m) {
    if (this.pong(m)) return;
    if (m.type === "hello") {
      this.hello = m;
      this.closed = null;
      this.say();
    } else if (m.type === "error") {
      this.error = m.message;
      this.say();
    }
  }

  tick() {
    if (!this.ctx || !this.clock.fit) return;
    const ts = this.ctx.getOutputTimestamp();
    if (!ts.performanceTime) return;
    // The context instant c is heard at performance instant ts.performanceTime +
    // (c − ts.contextTime)·1000. Each reading jitters by milliseconds (it is taken when the
    // device's callback ran): a line through the last 20 s of them is the device's clock.
    const outs = (this.outs = (this.outs || []).filter((o) => ts.contextTime - o.c < 20));
    outs.push({ c: ts.contextTime, p: ts.performanceTime });
    let c0 = ts.contextTime;
    let p0 = ts.performanceTime;
    let rate = 1000; // performance ms per context s
    if (outs.length >= 8 && outs[outs.length - 1].c - outs[0].c > 2) {
      const mc = outs.reduce((x, o) => x + o.c, 0) / outs.length;
      const mp = outs.reduce((x, o) => x + o.p, 0) / outs.length;
      let scp = 0;
      let scc = 0;
      for (const o of outs) {
        scp += (o.c - mc) * (o.p - mp);
        scc += (o.c - mc) * (o.c - mc);
      }
      rate = Math.max(999, Math.min(1001, scp / scc));
      p0 = mp + rate * (c0 - mc);
    } else {
      const offsets = outs.map((o) => o.p - o.c * 1000).sort((a, b) => a - b);
      p0 = c0 * 1000 + offsets[offsets.length >> 1];
    }
    const h0 = (this.clock.hubMs(p0) - this.delayMs) * 1e3;
    const slope = (this.clock.fit.b * rate) / 1000;
    this.node.port.postMessage({ type: "map", c0, h0, slope });
  }

  setDelay(ms) {
    this.delayMs = ms;
    localStorage.setItem("tutti.delay_ms", String(ms));
    this.tick();
  }

  setMode(mode) {
    this.mode = mode;
    localStorage.setItem("tutti.mode", mode);
    if (this.node) this.node.port.postMessage({ type: "mode", mode });
  }

  stop(why) {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.ws) this.ws.close();
    this.ws = null;
    if (this.ctx) this.ctx.close();
    this.ctx = null;
    this.node = null;
    this.closed = why || null;
    this.say();
  }

  // What the page shows (and tests read: window.tuttiListen.state()).
  state() {
    const s = this.stats;
    return {
      zone: this.zone,
      playing: !!this.ctx && !this.stopped && (s.played || 0) > 0,
      closed: this.closed || null,
      error: this.error || null,
      lead_ms: this.hello ? this.hello.lead_ms : null,
      rtt_ms: this.clock.fit ? this.clock.fit.rtt : null,
      output_latency_ms: this.ctx ? (this.ctx.outputLatency || 0) * 1e3 : null,
      delay_ms: this.delayMs,
      mode: this.mode,
      ...s,
    };
  }

  say() {
    this.onState(this.state());
  }
}

function setup() {
  const status = document.getElementById("listen-status");
  const play = document.getElementById("listen-play");
  const stopButton = document.getElementById("listen-stop");
  const room = document.getElementById("listen-zone");
  const delay = document.getElementById("listen-delay");
  const apart = document.getElementById("listen-apart");
  if (!play) return;
  const listener = new Listener((s) => {
    let text;
    if (s.closed) text = `Stopped: ${s.closed}`;
    else if (s.error) text = s.error;
    else if (!s.zone) text = "Not listening.";
    else if (!s.playing) text = `Joining ${s.zone}…`;
    else if (s.mode === "apart")
      text = `Playing ${s.zone} apart (as early as it can), ${s.buffered_ms.toFixed(0)} ms buffered`;
    else text = `Playing ${s.zone} in time with the room (±${(Math.abs(s.err_us) / 1e3).toFixed(1)} ms)`;
    if (s.underruns) text += `, ${s.underruns} gaps`;
    if (s.late_ms > 0 && s.mode !== "apart")
      text += `: sound arrives up to ${Math.ceil(s.late_ms)} ms too late for this device — ask the host for ${Math.ceil(s.late_ms / 10) * 10 + 20} ms more room latency, or listen apart`;
    status.textContent = text;
    status.dataset.playing = s.playing ? "yes" : "no";
    play.disabled = s.playing;
    stopButton.disabled = !s.zone || !!s.closed || s.stopped;
  });
  window.tuttiListen = listener;
  delay.value = listener.delayMs;
  apart.checked = listener.mode === "apart";
  play.addEventListener("click", () => {
    listener.error = null;
    listener.start(room.value).catch((e) => {
      listener.error = `cannot play here: ${e.message || e}`;
      listener.say();
    });
  });
  stopButton.addEventListener("click", () => listener.stop("you stopped it"));
  delay.addEventListener("change", () => listener.setDelay(Number(delay.value) || 0));
  apart.addEventListener("change", () => listener.setMode(apart.checked ? "apart" : "sync"));
}

setup();
