// Tutti: the audio thread of a page singing into the party (see crates/hub/src/sing.rs).
// Hands every captured quantum (the first channel) to the main thread, with its level and the
// context frame it starts at.
class TuttiMic extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0] && input[0].length) {
      const data = new Float32Array(input[0]);
      let peak = 0;
      for (let i = 0; i < data.length; i++) peak = Math.max(peak, Math.abs(data[i]));
      this.port.postMessage({ data, peak, frame: currentFrame }, [data.buffer]);
    }
    return true;
  }
}

registerProcessor("tutti-mic", TuttiMic);
