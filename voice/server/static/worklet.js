// Microphone capture: converts each 128-sample render quantum to PCM16 and posts
// ~40 ms batches to the page, which sends them as binary WebSocket frames.
class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    // The size is kept apart from the array: posting transfers (detaches) the batch's buffer,
    // after which its .length reads 0.
    this.size = Math.round(sampleRate * 0.04);
    this.batch = new Int16Array(this.size);
    this.fill = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (input && input[0]) {
      const ch = input[0];
      for (let i = 0; i < ch.length; i++) {
        const s = Math.max(-1, Math.min(1, ch[i]));
        this.batch[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.fill === this.size) {
          this.port.postMessage(this.batch.buffer, [this.batch.buffer]);
          this.batch = new Int16Array(this.size);
          this.fill = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("pcm-capture", PcmCapture);
