// Tutti: the audio thread of a page listening to a room (see crates/hub/src/listen.rs).
//
// Blocks arrive with the hub instant their first frame must be heard (µs). The main thread
// sends the map from this context's time to the hub's clock at the speaker
// (hub_us = h0 + slope × (t − c0) × 1e6); each render quantum asks which stream frame must be
// heard at its first frame's instant and steers a fractional read position toward it: small
// errors by a rate change of at most MAX_TRIM (no jump, no click), large ones (a start, a
// stall) by a jump. "apart" plays as early as the buffer allows instead (headphones, no room
// to match), keeping a cushion of APART_CUSHION_S (or the one the page asks for: a singer's
// headphones, see sing.js).
const RING_SECONDS = 4;
const MAX_TRIM = 0.002; // ±0.2 % of rate (3.5 cents): inaudible, 2 ms corrected per second
const SETTLE_S = 0.5; // an error is corrected over about this long
const JUMP_S = 0.025; // errors beyond this are jumped, not slewed
const APART_CUSHION_S = 0.04;
const ADAPT_UP = 0.005;
const ADAPT_DOWN = 0.002;
const ADAPT_MAX = 0.1;
const ADAPT_CALM_S = 5;

class TuttiListen extends AudioWorkletProcessor {
  constructor() {
    super();
    this.map = null; // {c0, h0, slope}
    this.mode = "sync";
    this.rate = 0; // the stream's
    this.channels = 2;
    this.ring = null; // per channel Float32Array
    this.size = 0;
    this.base = null; // hub µs of stream frame index 0
    this.lo = 0; // the oldest frame index held
    this.hi = 0; // one past the newest
    this.pos = null; // fractional read position (frame index)
    this.stats = { underruns: 0, jumps: 0, err_us: 0, played: 0, buffered_ms: 0, gaps: 0 };
    this.errs = [];
    this.lastReport = 0;
    this.port.onmessage = (e) => this.message(e.data);
  }

  message(m) {
    if (m.type === "map") {
      this.map = m;
    } else if (m.type === "mode") {
      this.mode = m.mode;
      this.cushion = m.cushion_s ?? APART_CUSHION_S;
      // Adaptive (a singer's headphones): the cushion grows by ADAPT_UP at each gap, up to
      // ADAPT_MAX, and shrinks by ADAPT_DOWN after ADAPT_CALM_S without one, to where it was
      // asked to be.
      this.adaptive = !!m.adaptive;
      this.least = this.cushion;
      this.calmSince = currentTime;
      this.pos = null;
    } else if (m.type === "block") {
      this.block(m);
    } else if (m.type === "reset") {
      this.base = null;
      this.pos = null;
    }
  }

  block(m) {
    if (this.rate !== m.rate || this.channels !== m.channels || !this.ring) {
      this.rate = m.rate;
      this.channels = m.channels;
      this.size = Math.round(m.rate * RING_SECONDS);
      this.ring = Array.from({ length: m.channels }, () => new Float32Array(this.size));
      this.base = null;
    }
    // Blocks follow each other on the hub's clock: the index is the time.
    let n = this.base === null ? null : Math.round(((m.hub_us - this.base) * this.rate) / 1e6);
    if (n === null || n < this.hi - this.size / 2 || n > this.hi + this.size / 2) {
      this.base = m.hub_us;
      this.lo = 0;
      this.hi = 0;
      this.pos = null;
      n = 0;
    }
    if (n > this.hi) {
      this.stats.gaps += 1;
      for (let i = this.hi; i < n; i++) for (const r of this.ring) r[i % this.size] = 0;
    }
    const d = m.data;
    const ch = this.channels;
    for (let i = 0; i < m.frames; i++) {
      const k = (n + i) % this.size;
      for (let c = 0; c < ch; c++) this.ring[c][k] = d[i * ch + c];
    }
    this.hi = Math.max(this.hi, n + m.frames);
    this.lo = Math.max(this.lo, this.hi - this.size + 1);
  }

  // The stream frame index to be heard at context time t, in sync mode.
  target(t) {
    const h = this.map.h0 + this.map.slope * (t - this.map.c0) * 1e6;
    return ((h - this.base) * this.rate) / 1e6;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const frames = out[0].length;
    const silent = () => {
      for (const o of out) o.fill(0);
    };
    if (!this.ring || this.base === null || this.hi <= this.lo) {
      silent();
      return true;
    }
    // Stream frames per output frame, before the trim.
    let step = this.rate / sampleRate;
    let want;
    if (this.mode === "apart") {
      want = this.hi - (this.cushion ?? APART_CUSHION_S) * this.rate;
    } else {
      if (!this.map) {
        silent();
        return true;
      }
      want = this.target(currentTime);
      step *= this.map.slope;
    }
    if (this.pos === null || Math.abs(want - this.pos) > JUMP_S * this.rate) {
      if (this.pos !== null) this.stats.jumps += 1;
      this.pos = want;
    }
    const err = want - this.pos; // frames behind
    const trim = Math.max(-MAX_TRIM, Math.min(MAX_TRIM, err / (SETTLE_S * this.rate)));
    step *= 1 + trim;
    let short = false;
    for (let i = 0; i < frames; i++) {
      const p = this.pos;
      const k = Math.floor(p);
      if (k < this.lo || k + 1 >= this.hi) {
        for (const o of out) o[i] = 0;
        if (k + 1 >= this.hi) this.late = Math.max(this.late || 0, k + 2 - this.hi);
        short = true;
      } else {
        const f = p - k;
        const a = k % this.size;
        const b = (k + 1) % this.size;
        for (let c = 0; c < out.length; c++) {
          const r = this.ring[Math.min(c, this.channels - 1)];
          out[c][i] = r[a] + (r[b] - r[a]) * f;
        }
      }
      this.pos += step;
    }
    if (short) this.stats.underruns += 1;
    else this.stats.played += frames;
    if (this.adaptive && this.mode === "apart") {
      if (short) {
        this.cushion = Math.min(ADAPT_MAX, this.cushion + ADAPT_UP);
        this.calmSince = currentTime;
      } else if (currentTime - this.calmSince > ADAPT_CALM_S && this.cushion > this.least) {
        this.cushion = Math.max(this.least, this.cushion - ADAPT_DOWN);
        this.calmSince = currentTime;
      }
      this.stats.cushion_ms = this.cushion * 1e3;
    }
    this.errs.push((err / this.rate) * 1e6);
    if (currentTime - this.lastReport >= 0.25) {
      this.lastReport = currentTime;
      const sorted = this.errs.slice().sort((a, b) => a - b);
      this.stats.err_us = sorted[sorted.length >> 1] || 0;
      this.stats.err_max_us = Math.max(...sorted.map(Math.abs), 0);
      this.stats.buffered_ms = ((this.hi - this.pos) / this.rate) * 1e3;
      // How late the blocks that came too late were (0: none in this report).
      this.stats.late_ms = ((this.late || 0) / this.rate) * 1e3;
      this.late = 0;
      this.errs = [];
      this.port.postMessage({ type: "stats", ...this.stats });
    }
    return true;
  }
}

registerProcessor("tutti-listen", TuttiListen);
