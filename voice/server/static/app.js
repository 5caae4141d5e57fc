// voice browser client: microphone -> AudioWorklet -> 24 kHz PCM16 binary frames -> /v1/realtime;
// typed questions go as conversation.item.create + response.create. Assistant audio (binary PCM16)
// is scheduled for playback and stopped at once on barge-in. No dependencies.
"use strict";

const RATE = 24000;
// Characters a WebSocket subprotocol (and so the token) may hold (RFC 7230 tchar).
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const state = {            // read by tests through window.voiceState
  status: "idle", events: [], user: [], assistant: [], audioBytes: 0, metrics: [], sources: [],
  errors: [], firstAudioMs: [], bargeIns: 0, level: 0, levelMax: 0, notice: "", tokenRequired: false,
};
window.voiceState = state;

const $ = (id) => document.getElementById(id);
const log = $("log"), statusEl = $("status"), notice = $("notice"), levelEl = $("level");
let ws = null, ctx = null, micStream = null, node = null, connecting = null;
let playHead = 0, sources = [], currentItem = null, itemStart = 0, itemMs = 0, stopAt = 0;
let workletLoaded = false, micOn = false, muted = false, thinking = false, responding = false, createAfterDone = false;
let token = sessionStorage.getItem("voice.token") || "";
const turns = new Map();      // response_id -> assistant turn element
const userTurns = new Map();  // item_id -> user turn element
let current = null;           // assistant turn element of the response in progress

// ------------------------------------------------------------------ page pieces

function show(text, bad) {
  state.notice = text || "";
  notice.hidden = !text;
  notice.textContent = text || "";
  notice.className = bad ? "bad" : "";
}

function setStatus(s) {
  if (state.status === s) return;
  state.status = s;
  statusEl.textContent = s;
  document.body.dataset.state = s;
}

function refreshStatus() {
  if (ws && ws.readyState === WebSocket.CLOSED) return;  // keeps "closed (code)"
  if (!ws) return setStatus(micOn ? "connecting" : "idle");
  if (ws.readyState === WebSocket.CONNECTING) return setStatus("connecting");
  if (ctx && sources.length && playHead > ctx.currentTime) return setStatus("speaking");
  if (thinking) return setStatus("thinking");
  if (micOn) return setStatus(muted ? "muted" : "listening");
  setStatus("ready");
}
setInterval(() => {
  if (!micOn) state.level = 0;
  levelEl.style.width = Math.round(state.level * 100) + "%";
  refreshStatus();
}, 100);

function atBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 40; }

function addTurn(role, text, label) {
  const stick = atBottom();
  const turn = document.createElement("div");
  turn.className = "turn " + role;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  bubble.textContent = text || "";
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = label || "";
  turn.append(bubble, meta);
  log.appendChild(turn);
  if (stick) log.scrollTop = log.scrollHeight;
  return turn;
}

function setText(turn, text) {
  const stick = atBottom();
  turn.querySelector(".bubble").textContent = text;
  if (stick) log.scrollTop = log.scrollHeight;
}

function errorLine(text) {
  const p = document.createElement("p");
  p.className = "error-line";
  p.textContent = text;
  log.appendChild(p);
  log.scrollTop = log.scrollHeight;
}

function baseName(path) { return String(path).split(/[\\/]/).pop() || String(path); }

function secs(ms) { return (ms / 1000).toFixed(2) + " s"; }

// The figure under the answer: from the user's last word (spoken) or from sending (typed) to the
// first sound of the answer; the stages (from the end of the user's turn) go in its tooltip.
function latencyText(m) {
  if (m.cancelled) return "interrupted";
  if (m.source === "speech" && m.from_silence_ms != null) return "answered " + secs(m.from_silence_ms) + " after your last word";
  if (m.voice_to_voice_ms != null) return "answered " + secs(m.voice_to_voice_ms) + (m.source === "text" ? " after sending" : " after your turn");
  return "no latency figures";
}

function latencyDetail(m) {
  const names = { transcript_ms: "transcript", first_token_ms: "first word", first_audio_ms: "first audio",
                  voice_to_voice_ms: "first sound played", total_ms: "answer finished" };
  return "after the end of your turn: " + Object.keys(names).filter((k) => m[k] != null)
    .map((k) => names[k] + " " + secs(m[k])).join(", ");
}

function showMetrics(ev) {
  const turn = turns.get(ev.response_id);
  if (!turn) return;
  const m = ev.metrics || {};
  const meta = turn.querySelector(".meta");
  meta.textContent = "assistant · " + latencyText(m);
  meta.title = latencyDetail(m);
  meta.classList.add("latency");
  if (m.cancelled) turn.classList.add("cancelled");
  const list = ev.sources || [];
  if (list.length) {
    const ul = document.createElement("ul");
    ul.className = "sources";
    ul.setAttribute("aria-label", "sources");
    for (const s of list) {
      const li = document.createElement("li");
      li.title = s.source + (s.text ? "\n\n" + s.text : "");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = baseName(s.source);
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = " " + Number(s.score).toFixed(2) + " ";
      const q = document.createElement("q");
      q.textContent = s.text || "";
      li.append(name, score, q);
      ul.appendChild(li);
    }
    turn.appendChild(ul);
  }
  log.scrollTop = log.scrollHeight;
}

// ------------------------------------------------------------------ audio out

function stopPlayback() {
  for (const s of sources) { try { s.stop(); } catch (e) { /* already stopped */ } }
  sources = [];
  if (ctx) playHead = ctx.currentTime;
}

function ensureAudio() {
  if (!ctx) {
    ctx = new AudioContext({ sampleRate: RATE });
    state.rate = ctx.sampleRate;
    state.ctxState = () => ctx ? ctx.state + "@" + ctx.currentTime.toFixed(2) : "none";
  }
  return ctx.resume();
}

function playPcm(buf) {
  const pcm = new Int16Array(buf);
  if (!pcm.length || !ctx) return;
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

function onAudio(buf) {
  if (state.audioBytes === 0 || (stopAt && itemMs === 0)) {
    if (stopAt) state.firstAudioMs.push(performance.now() - stopAt);
    stopAt = 0;
  }
  thinking = false;
  state.audioBytes += buf.byteLength;
  playPcm(buf);
}

// ------------------------------------------------------------------ server events

function onEvent(ev) {
  state.events.push(ev.type);
  switch (ev.type) {
    case "input_audio_buffer.speech_started": {
      if (sources.length && currentItem) {
        // Barge-in: stop now and tell the server how much the user actually heard.
        const heard = Math.max(0, Math.min(itemMs, (ctx.currentTime - itemStart) * 1000));
        stopPlayback();
        state.bargeIns++;
        send({ type: "conversation.item.truncate", item_id: currentItem, content_index: 0, audio_end_ms: Math.floor(heard) });
      }
      for (const [id, t] of userTurns) if (!t.dataset.done) { t.remove(); userTurns.delete(id); }
      userTurns.set(ev.item_id, addTurn("user", "", "you · speaking…"));
      break;
    }
    case "input_audio_buffer.speech_stopped":
      stopAt = performance.now();
      thinking = true;
      break;
    case "conversation.item.input_audio_transcription.completed": {
      state.user.push(ev.transcript);
      let t = userTurns.get(ev.item_id);
      if (!ev.transcript.trim()) { if (t) t.remove(); userTurns.delete(ev.item_id); thinking = false; break; }
      if (!t) t = addTurn("user", "", "");
      t.dataset.done = "1";
      setText(t, ev.transcript);
      t.querySelector(".meta").textContent = "you · spoken";
      break;
    }
    case "response.created":
      responding = true;
      currentItem = null; itemMs = 0;
      current = addTurn("assistant", "", "assistant");
      current.dataset.text = "";
      turns.set(ev.response.id, current);
      break;
    case "response.output_audio_transcript.delta":
      currentItem = ev.item_id;
      if (current) { current.dataset.text += ev.delta; setText(current, current.dataset.text); }
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
      if (current && ev.transcript) setText(current, ev.transcript);
      break;
    case "response.done":
      if (current && !current.querySelector(".bubble").textContent) {
        setText(current, ev.response.status === "cancelled" ? "(stopped before it spoke)" : "(no answer)");
      }
      responding = false; thinking = false; current = null;
      if (createAfterDone) { createAfterDone = false; thinking = true; send({ type: "response.create" }); }
      break;
    case "voice.metrics":
      state.metrics.push(ev.metrics);
      state.sources.push(ev.sources || []);
      showMetrics(ev);
      break;
    case "error":
      state.errors.push(ev.error);
      if (ev.error.code !== "response_cancel_not_active") errorLine("error: " + ev.error.message);
      thinking = false;
      break;
  }
}

// ------------------------------------------------------------------ connection

function send(obj) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); }

function connect() {
  if (ws && ws.readyState === WebSocket.OPEN) return Promise.resolve();
  if (connecting) return connecting;
  const protocols = ["voice.pcm16", "realtime"];
  if (token) {
    if (!TOKEN_RE.test(token)) {
      show("This token has characters a browser cannot send (use letters, digits and - . _ ~ only).", true);
      $("tokenbox").hidden = false;
      return Promise.reject(new Error("bad token"));
    }
    protocols.push("openai-insecure-api-key." + token);
  } else if (state.tokenRequired) {
    show("This server needs a token: enter it above.", true);
    return Promise.reject(new Error("no token"));
  }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/realtime?model=voice";
  connecting = new Promise((resolve, reject) => {
    const sock = new WebSocket(url, protocols);
    ws = sock;
    sock.binaryType = "arraybuffer";
    let opened = false;
    sock.onopen = () => { opened = true; connecting = null; show(""); $("tokenbox").hidden = true; resolve(); };
    sock.onmessage = (m) => {
      if (typeof m.data === "string") onEvent(JSON.parse(m.data));
      else onAudio(m.data);
    };
    sock.onclose = (e) => {
      state.closeCode = e.code;
      connecting = null;
      if (ws === sock) { setStatus("closed (" + e.code + ")"); document.body.dataset.state = "closed"; }
      if (!opened) {
        show(state.tokenRequired || token
          ? "The server refused the connection: check the token (or the page's address is not an allowed origin)."
          : "Could not connect to the server (is voice serve still running, and is this address an allowed origin?).", true);
        if (state.tokenRequired || token) $("tokenbox").hidden = false;
        reject(new Error("connection refused (" + e.code + ")"));
      } else if (e.code !== 1000) {
        show("The connection closed (" + e.code + (e.reason ? ": " + e.reason : "") + "). Press Start talking or send a question to reconnect.", true);
      }
      if (ws === sock) { ws = null; stopMic(); }
    };
  });
  setStatus("connecting");
  return connecting;
}

// ------------------------------------------------------------------ microphone

function micHint(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError")
    return "The microphone was refused. Allow it for this page (the icon at the left of the address bar), " +
           "then press Start talking again — or type your question below.";
  if (name === "NotFoundError" || name === "OverconstrainedError") return "No microphone was found. You can type your question below.";
  if (name === "NotReadableError") return "The microphone is in use by another program or could not be opened.";
  return "The microphone could not be started (" + (err && err.message || err) + "). You can type your question below.";
}

async function startMic() {
  $("start").disabled = true;
  try {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw Object.assign(new Error("this page needs https (or localhost) for the microphone"), { name: "SecurityError" });
    }
    await ensureAudio();
    if (!workletLoaded) { await ctx.audioWorklet.addModule("worklet.js"); workletLoaded = true; }
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    await connect();
  } catch (err) {
    state.errors.push(String(err));
    state.micError = err && err.name;
    if (micStream) micStream.getTracks().forEach((t) => t.stop());
    micStream = null;
    if (!/token|connection/.test(String(err && err.message))) show(micHint(err), true);
    $("start").disabled = false;
    return;
  }
  const mic = ctx.createMediaStreamSource(micStream);
  node = new AudioWorkletNode(ctx, "pcm-capture");
  mic.connect(node);
  node.connect(ctx.destination);  // keeps the worklet pulled (it outputs silence)
  node.port.onmessage = (m) => {
    state.sentFrames = (state.sentFrames || 0) + 1;
    const pcm = new Int16Array(m.data);
    let sum = 0;
    for (let i = 0; i < pcm.length; i += 4) sum += pcm[i] * pcm[i];
    const rms = Math.sqrt(sum / Math.max(1, pcm.length / 4)) / 32768;
    const db = 20 * Math.log10(rms + 1e-9);          // -60 dB .. 0 dB -> 0 .. 1
    const lvl = Math.max(0, Math.min(1, (db + 60) / 60));
    state.level = Math.max(lvl, state.level * 0.7);
    state.levelMax = Math.max(state.levelMax, lvl);
    // muted: the track is disabled, so these are zeros and the server's VAD still ends the turn
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(m.data);
  };
  micOn = true;
  muted = false;
  $("start").textContent = "Microphone on";
  $("mute").disabled = false;
  $("stop").disabled = false;
  show("");
}

function stopMic() {
  if (node) { node.port.onmessage = null; node.disconnect(); node = null; }
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  micStream = null;
  micOn = false;
  muted = false;
  $("mute").disabled = true;
  $("mute").textContent = "Mute";
  $("mute").setAttribute("aria-pressed", "false");
  $("start").disabled = false;
  $("start").textContent = "Start talking";
}

function toggleMute() {
  if (!micStream) return;
  muted = !muted;
  micStream.getAudioTracks().forEach((t) => { t.enabled = !muted; });
  $("mute").textContent = muted ? "Unmute" : "Mute";
  $("mute").setAttribute("aria-pressed", String(muted));
}

function stop() {
  stopPlayback();
  stopMic();
  if (ws) ws.close(1000);
  $("stop").disabled = true;
}

// ------------------------------------------------------------------ typing

async function ask(text) {
  text = text.trim();
  if (!text) return;
  await ensureAudio();
  await connect();
  $("stop").disabled = false;
  addTurn("user", text, "you · typed").dataset.done = "1";
  state.user.push(text);
  send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
  stopPlayback();
  thinking = true;
  if (responding) { createAfterDone = true; send({ type: "response.cancel" }); }
  else send({ type: "response.create" });
}

// ------------------------------------------------------------------ token

async function readHealth() {
  const hash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (hash) {
    token = hash;
    sessionStorage.setItem("voice.token", token);
    history.replaceState(null, "", location.pathname + location.search);  // keep it out of the address bar
  }
  try {
    const r = await fetch("/healthz", { cache: "no-store" });
    state.tokenRequired = !!(await r.json()).token_required;
  } catch (e) { /* an older server: no field, no token box until a connection is refused */ }
  if (state.tokenRequired) {
    $("tokenbox").hidden = false;
    $("token").value = token;
    if (!token) show("This server needs a token: enter it above (or open the page as /#token=…).");
  }
  state.ready = true;
}

$("tokenbox").onsubmit = (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("voice.token", token);
  if (ws) ws.close(1000);
  ws = null;
  connect().then(() => { $("tokenbox").hidden = true; }, () => {});
};
$("ask").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value;
  $("text").value = "";
  ask(text).catch((err) => { state.errors.push(String(err)); });
};
$("start").onclick = () => startMic();
$("mute").onclick = toggleMute;
$("stop").onclick = stop;
window.voiceStart = startMic;
readHealth();
