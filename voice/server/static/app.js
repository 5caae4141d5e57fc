// voice browser client: microphone -> AudioWorklet -> 24 kHz PCM16 binary frames -> /v1/realtime;
// assistant audio (binary PCM16) is scheduled for playback and stopped at once on barge-in.
"use strict";

const RATE = 24000;
const state = {            // read by tests through window.voiceState
  status: "idle", events: [], user: [], assistant: [], assistantDelta: "",
  audioBytes: 0, metrics: [], errors: [], firstAudioMs: [], bargeIns: 0,
};
window.voiceState = state;

let ws = null, ctx = null, micStream = null, node = null;
let playHead = 0, sources = [], currentItem = null, itemStart = 0, itemMs = 0, stopAt = 0;
const log = document.getElementById("log");
const statusEl = document.getElementById("status");

function setStatus(s) { state.status = s; statusEl.textContent = s; }

function line(cls, text) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  log.appendChild(p);
  return p;
}

function stopPlayback() {
  for (const s of sources) { try { s.stop(); } catch (e) { /* already stopped */ } }
  sources = [];
  if (ctx) playHead = ctx.currentTime;
}

function playPcm(buf) {
  const pcm = new Int16Array(buf);
  if (!pcm.length) return;
  const audio = ctx.createBuffer(1, pcm.length, RATE);
  const ch = audio.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = audio;
  src.connect(ctx.destination);
  playHead = Math.max(playHead, ctx.currentTime + 0.02);
  if (itemMs === 0) itemStart = playHead;
  src.start(playHead);
  playHead += audio.duration;
  itemMs += audio.duration * 1000;
  sources.push(src);
  src.onended = () => { sources = sources.filter((x) => x !== src); };
}

function onEvent(ev) {
  state.events.push(ev.type);
  switch (ev.type) {
    case "input_audio_buffer.speech_started":
      if (sources.length && currentItem) {
        // Barge-in: stop now and tell the server how much the user actually heard.
        const heard = Math.max(0, Math.min(itemMs, (ctx.currentTime - itemStart) * 1000));
        stopPlayback();
        state.bargeIns++;
        ws.send(JSON.stringify({ type: "conversation.item.truncate", item_id: currentItem,
                                 content_index: 0, audio_end_ms: Math.floor(heard) }));
      }
      setStatus("listening");
      break;
    case "input_audio_buffer.speech_stopped":
      stopAt = performance.now();
      setStatus("thinking");
      break;
    case "conversation.item.input_audio_transcription.completed":
      state.user.push(ev.transcript);
      line("user", "You: " + ev.transcript);
      break;
    case "response.created":
      state.assistantDelta = "";
      currentItem = null; itemMs = 0;
      state.assistantLine = line("assistant", "Assistant: ");
      break;
    case "response.output_audio_transcript.delta":
      currentItem = ev.item_id;
      state.assistantDelta += ev.delta;
      if (state.assistantLine) state.assistantLine.textContent = "Assistant: " + state.assistantDelta;
      setStatus("speaking");
      break;
    case "response.output_audio.delta": {   // base64 audio (when binary frames are not used)
      currentItem = ev.item_id;
      const bin = atob(ev.delta);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      onAudio(bytes.buffer);
      break;
    }
    case "response.output_audio_transcript.done":
      currentItem = ev.item_id;
      state.assistant.push(ev.transcript);
      break;
    case "response.done":
      setStatus("listening");
      break;
    case "voice.metrics": {
      state.metrics.push(ev.metrics);
      const v2v = ev.metrics.voice_to_voice_ms;
      line("latency", "latency: " + (v2v == null ? "n/a" : Math.round(v2v) + " ms voice-to-voice") +
           (ev.metrics.transcript_ms != null ? ", transcript " + Math.round(ev.metrics.transcript_ms) + " ms" : ""));
      break;
    }
    case "error":
      state.errors.push(ev.error);
      line("latency", "error: " + ev.error.message);
      break;
  }
}

function onAudio(buf) {
  if (state.audioBytes === 0 || (stopAt && itemMs === 0)) {
    if (stopAt) state.firstAudioMs.push(performance.now() - stopAt);
    stopAt = 0;
  }
  state.audioBytes += buf.byteLength;
  playPcm(buf);
}

async function start() {
  document.getElementById("start").disabled = true;
  ctx = new AudioContext({ sampleRate: RATE });
  state.rate = ctx.sampleRate;
  state.ctxState = () => ctx ? ctx.state + "@" + ctx.currentTime.toFixed(2) : "none";
  await ctx.audioWorklet.addModule("worklet.js");
  micStream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  const mic = ctx.createMediaStreamSource(micStream);
  node = new AudioWorkletNode(ctx, "pcm-capture");
  mic.connect(node);
  node.connect(ctx.destination);  // keeps the worklet pulled (it outputs silence)
  await ctx.resume();
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/realtime?model=voice";
  const protocols = ["voice.pcm16", "realtime"];
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) protocols.push("openai-insecure-api-key." + token);
  ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    setStatus("listening");
    node.port.onmessage = (m) => {
      state.sentFrames = (state.sentFrames || 0) + 1;
      const pcm = new Int16Array(m.data);
      for (let i = 0; i < pcm.length; i += 16) state.micPeak = Math.max(state.micPeak || 0, Math.abs(pcm[i]));
      if (ws.readyState === WebSocket.OPEN) ws.send(m.data);
    };
  };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") onEvent(JSON.parse(m.data));
    else onAudio(m.data);
  };
  ws.onclose = (e) => { setStatus("closed (" + e.code + ")"); state.closeCode = e.code; };
  document.getElementById("stop").disabled = false;
}

function stop() {
  stopPlayback();
  if (ws) ws.close(1000);
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  document.getElementById("start").disabled = false;
  document.getElementById("stop").disabled = true;
}

document.getElementById("start").onclick = () => start().catch((e) => { state.errors.push(String(e)); setStatus("error: " + e); });
document.getElementById("stop").onclick = stop;
window.voiceStart = start;
