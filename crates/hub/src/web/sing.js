// Tutti: a page singing into the party (see crates/hub/src/sing.rs). The microphone is taken
// as it is unless the singer ticks echo cancellation, noise suppression or automatic gain (the
// party's mixer wants the voice), captured by an AudioWorklet and sent at once, 2.5 ms at a
// time, as 16-bit mono PCM at 48 kHz. Mute sends silence (the host's mixer keeps its place).
"use strict";

const BLOCK = 120; // frames: 2.5 ms

class Singer {
  constructor(onState) {
    this.onState = onState;
    this.state = { singing: false, sent: 0, peak: 0, host: null, closed: null, error: null };
  }

  async start(processing) {
    this.stop();
    this.stopped = false;
    this.state = { singing: false, sent: 0, peak: 0, host: null, closed: null, error: null, muted: !!this.muted };
    const p = processing || {};
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: !!p.ec, noiseSuppression: !!p.ns, autoGainControl: !!p.agc, channelCount: 1 },
    });
    this.ctx = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule("/guest/sing-worklet.js");
    const mic = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "tutti-mic", { numberOfInputs: 1, numberOfOutputs: 0 });
    mic.connect(this.node);
    this.pending = new Int16Array(BLOCK * 8);
    this.filled = 0;
    this.node.port.onmessage = (e) => this.captured(e.data);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/guest/sing`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "hello") this.state.host = m.host;
      if (m.type === "error") this.state.error = m.message;
      if (m.type === "stats") this.state.delivered = m.sent_frames;
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

  captured({ data, peak }) {
    this.state.peak = Math.max(peak, this.state.peak * 0.9);
    for (let i = 0; i < data.length; i++) {
      const v = this.muted ? 0 : Math.max(-1, Math.min(1, data[i]));
      this.pending[this.filled++] = Math.round(v * 32767);
      if (this.filled === BLOCK) {
        if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state.host) {
          this.ws.send(this.pending.slice(0, BLOCK).buffer);
          this.state.sent += BLOCK;
        }
        this.filled = 0;
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
    else if (s.singing && s.host && s.muted) text = `Muted (still in the party: ${s.host})`;
    else if (s.singing && s.host) text = `Singing into the party (${s.host})`;
    else if (s.singing) text = "Connecting to the party…";
    else text = "Not singing.";
    status.textContent = text;
    status.dataset.singing = s.singing && s.host ? "yes" : "no";
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
  const ticked = (id) => document.getElementById(id).checked;
  button.addEventListener("click", () => {
    singer.start({ ec: ticked("sing-ec"), ns: ticked("sing-ns"), agc: ticked("sing-agc") }).catch((e) => {
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
