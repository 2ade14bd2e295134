// Tutti: a page singing into the party (see crates/hub/src/sing.rs). The microphone is taken
// as it is unless the singer ticks echo cancellation, noise suppression or automatic gain (the
// party's mixer wants the voice), captured by an AudioWorklet and sent at once, 2.5 ms at a
// time, as 16-bit mono PCM at 48 kHz, each block with the hub instant (clock.js) its first
// frame reached the page: the mixer plays the voice a fixed time after that, so the way to the
// hub is inside the latency the host shows. Mute sends silence (the mixer keeps its place).
"use strict";

const BLOCK = 120; // frames: 2.5 ms
const RATE = 48000;
/** The page's instant of a context frame: the earliest a quantum's message arrived after its
 * frames (its lower edge), over the last two windows of this many ms. */
const EDGE_WINDOW_MS = 2000;
/** Headphones mode: how much of the others' mix is kept ahead of the ear at least (blocks
 * come every 5 ms, with the way back's jitter: the worklet grows it at each gap). */
const EAR_CUSHION_S = 0.015;

class Singer {
  constructor(onState) {
    this.onState = onState;
    this.state = { singing: false, sent: 0, peak: 0, host: null, closed: null, error: null };
  }

  async start(processing, hear) {
    this.stop();
    this.stopped = false;
    this.state = { singing: false, sent: 0, peak: 0, host: null, closed: null, error: null, muted: !!this.muted,
      hears: !!hear, heard_peak: 0, ear: null };
    const p = processing || {};
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: !!p.ec, noiseSuppression: !!p.ns, autoGainControl: !!p.agc, channelCount: 1 },
    });
    this.ctx = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule("/guest/sing-worklet.js");
    await this.ctx.audioWorklet.addModule("/guest/listen-worklet.js");
    const mic = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "tutti-mic", { numberOfInputs: 1, numberOfOutputs: 0 });
    mic.connect(this.node);
    // A block: the hub instant of its first frame (f64, µs; NaN before the clock is known),
    // then its frames.
    this.block = new ArrayBuffer(8 + BLOCK * 2);
    this.blockStamp = new DataView(this.block, 0, 8);
    this.pending = new Int16Array(this.block, 8, BLOCK);
    this.filled = 0;
    this.edge = { current: Infinity, previous: Infinity, since: performance.now() };
    this.clicks = [];
    this.seconds = [];
    this.held = [];
    this.quiet = 0;
    this.clock = new HubClock();
    this.node.port.onmessage = (e) => this.captured(e.data, performance.now());
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/guest/sing${hear ? "?hear=true" : ""}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    const pong = pingHub(ws, this.clock);
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") return this.heard(e.data);
      const m = JSON.parse(e.data);
      if (pong(m)) return;
      if (m.type === "hello") {
        // Singing (into the party host, or only with the others on headphones).
        this.state.host = m.host || null;
        this.state.joined = true;
      }
      if (m.type === "error") this.state.error = m.message;
      if (m.type === "stats") {
        this.state.delivered = m.sent_frames;
        this.state.transit_ms = m.transit_ms;
        this.state.transit_max_ms = m.transit_max_ms;
        this.state.voices = m.voices;
        this.state.mix_delay_ms = m.mix_delay_ms;
        this.state.late_frames = m.late_frames;
        this.state.heard_peak = this.heardPeak || 0;
        this.heardPeak = 0;
        // How long after its frames' instant each quantum reached the page this second
        // (the browser's capture bursts), and the last ten minutes of both (a test reads them).
        const held = this.held.sort((a, b) => a - b);
        m.page_ms = held.length ? held[held.length >> 1] : null;
        m.page_max_ms = held.length ? held[held.length - 1] : null;
        this.held = [];
        this.seconds.push(m);
        if (this.seconds.length > 600) this.seconds.shift();
      }
      this.say();
    };
    ws.onclose = (e) => {
      if (this.ws !== ws || this.stopped) return;
      this.stop(this.state.error || e.reason || "the connection to the hub is lost");
    };
    await this.ctx.resume();
    this.state.singing = true;
    this.say();
  }

  /** A block of the others' mix (headphones mode): played as early as it can be. */
  heard(buffer) {
    if (!this.ctx || !this.state.hears) return;
    if (!this.ear) {
      this.ear = new AudioWorkletNode(this.ctx, "tutti-listen", { outputChannelCount: [2] });
      this.ear.connect(this.ctx.destination);
      this.ear.port.postMessage({ type: "mode", mode: "apart", cushion_s: EAR_CUSHION_S, adaptive: true });
      this.ear.port.onmessage = (e) => {
        this.state.ear = e.data;
        this.say();
      };
    }
    const v = new DataView(buffer);
    const frames = v.getUint32(8, true);
    const channels = v.getUint16(16, true);
    const pcm = new Int16Array(buffer, 24, frames * channels);
    const data = new Float32Array(pcm.length);
    let peak = this.heardPeak || 0;
    for (let i = 0; i < pcm.length; i++) {
      data[i] = pcm[i] / 32768;
      peak = Math.max(peak, Math.abs(data[i]));
    }
    this.heardPeak = peak;
    const block = { type: "block", hub_us: v.getFloat64(0, true), frames, rate: v.getUint32(12, true), channels, data };
    this.ear.port.postMessage(block, [data.buffer]);
  }

  /** Headphones mode on or off while singing. */
  setHearing(on) {
    this.state.hears = on;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "hear", on }));
    if (!on && this.ear) {
      this.ear.disconnect();
      this.ear = null;
      this.state.ear = null;
    }
    this.say();
  }

  /** The page instant (performance.now(), ms) of context frame 0: a quantum's message
   * arrives at least this long after its frames; the earliest of them (over two windows)
   * bounds it. */
  frameZeroMs(end, arrived) {
    const e = this.edge;
    const at = arrived - (end * 1000) / RATE;
    e.current = Math.min(e.current, at);
    if (arrived - e.since > EDGE_WINDOW_MS) {
      e.previous = e.current;
      e.current = at;
      e.since = arrived;
    }
    return Math.min(e.current, e.previous);
  }

  captured({ data, peak, frame }, arrived) {
    this.state.peak = Math.max(peak, this.state.peak * 0.9);
    const zero = this.frameZeroMs(frame + data.length, arrived);
    if (this.held.length < 1000) this.held.push(arrived - zero - ((frame + data.length) * 1000) / RATE);
    const clock = this.clock.fit ? this.clock : null;
    const hubUs = (f) => clock.hubMs(zero + (f * 1000) / RATE) * 1000;
    for (let i = 0; i < data.length; i++) {
      const v = this.muted ? 0 : Math.max(-1, Math.min(1, data[i]));
      if (this.filled === 0) this.blockStamp.setFloat64(0, clock ? hubUs(frame + i) : NaN, true);
      this.pending[this.filled++] = Math.round(v * 32767);
      if (this.filled === BLOCK) {
        if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state.joined) {
          this.ws.send(this.block.slice(0));
          this.state.sent += BLOCK;
        }
        this.filled = 0;
      }
      // Clicks (a test's fake microphone): the hub instant each began, for latency figures.
      if (Math.abs(data[i]) > 0.25) {
        if (this.quiet > RATE / 20 && clock && this.clicks.length < 4096) this.clicks.push(hubUs(frame + i));
        this.quiet = 0;
      } else {
        this.quiet++;
      }
    }
  }

  setMuted(muted) {
    this.muted = muted;
    this.state.muted = muted;
    this.say();
  }

  stop(why) {
    this.stopped = true;
    if (this.ws) this.ws.close();
    this.ws = null;
    if (this.ctx) this.ctx.close();
    this.ctx = null;
    this.ear = null;
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
    this.state.singing = false;
    this.state.closed = why || null;
    this.say();
  }

  say() {
    this.onState(this.state);
  }
}

function setupSinging() {
  const button = document.getElementById("sing-start");
  const stopButton = document.getElementById("sing-stop");
  const status = document.getElementById("sing-status");
  const meter = document.getElementById("sing-level");
  if (!button) return;
  let shown = 0;
  const singer = new Singer((s) => {
    let text;
    if (s.closed) text = `Stopped: ${s.closed}`;
    else if (s.error) text = s.error;
    else if (s.singing && s.joined) {
      const way = s.transit_ms == null ? "" : `${s.transit_ms.toFixed(1)} ms to the hub`;
      if (s.muted) text = `Muted (still in the party${s.host ? `: ${s.host}` : ""})`;
      else if (s.host) text = `Singing into the party (${s.host}${way && `, ${way}`})`;
      else text = `Singing with the others on headphones (${way || "…"})`;
      if (s.hears && s.voices != null)
        text += `; hearing ${s.voices - 1} other${s.voices === 2 ? "" : "s"}, mixed ${s.mix_delay_ms.toFixed(1)} ms after they sang`;
    }
    else if (s.singing) text = "Connecting to the party…";
    else text = "Not singing.";
    status.textContent = text;
    status.dataset.singing = s.singing && s.joined ? "yes" : "no";
    button.disabled = s.singing;
    stopButton.disabled = !s.singing;
    const now = performance.now();
    if (now - shown > 50) {
      meter.value = s.peak;
      shown = now;
    }
  });
  window.tuttiSing = singer;
  const mute = document.getElementById("sing-mute");
  mute.addEventListener("change", () => singer.setMuted(mute.checked));
  const hear = document.getElementById("sing-hear");
  hear.addEventListener("change", () => {
    if (singer.state.singing) singer.setHearing(hear.checked);
  });
  const ticked = (id) => document.getElementById(id).checked;
  button.addEventListener("click", () => {
    singer.start({ ec: ticked("sing-ec"), ns: ticked("sing-ns"), agc: ticked("sing-agc") }, ticked("sing-hear")).catch((e) => {
      singer.stop(
        window.isSecureContext
          ? `the microphone cannot be used: ${e.message || e}`
          : "a microphone needs the hub's https:// address (open the guest link from the QR code)",
      );
    });
  });
  stopButton.addEventListener("click", () => singer.stop("you stopped"));
}

setupSinging();
