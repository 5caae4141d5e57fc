"""``voice wyoming`` as a real subprocess, driven by the wyoming library's own client.

One server for the module (tiny.en, Piper joe, SmolLM2-135M with a knowledge base holding one
ingested fact), started with small limits so each bound can be crossed: 3 clients, 4 KiB
events, 16 KiB payloads, 30 s of audio, 2,000 characters of text. The third-party
``wyoming-bench`` tool runs against it too.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from tests.conftest import ROOT, speech_dir
from tests.helpers.asr import run_voice
from tests.helpers.rag import FACTS
from voice.config import ChunkerConfig
from voice.textnorm import corpus_wer, normalize

pytestmark = pytest.mark.slow

JFK = speech_dir() / "jfk.wav"
GO = speech_dir() / "ps_goforward.wav"
LIMITS = {"max_clients": 3, "max_event_bytes": 4096, "max_payload_bytes": 16384, "max_audio_s": 30,
          "max_text_chars": 2000}
TIMEOUT = 120.0


class WyomingProcess:
    def __init__(self, proc: subprocess.Popen[str], host: str, port: int, log: list[str]) -> None:
        self.proc, self.host, self.port, self.log = proc, host, port, log

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient(self.host, self.port, connect_timeout=10, read_timeout=TIMEOUT)


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WyomingProcess]:
    base = tmp_path_factory.mktemp("wyoming")
    docs = base / "docs"
    docs.mkdir()
    content, _question = FACTS["reactor.txt"]
    (docs / "reactor.txt").write_text(content, encoding="utf-8")
    common = ["--set", f"general.data_dir={base / 'data'}"]
    ingest = run_voice(*common, "ingest", "--kb", str(base / "kb"), str(docs))
    assert ingest.returncode == 0, ingest.stderr
    args = [*common, "--set", "asr.device=cpu", "--set", "llm.embedded.model=smollm2-135m-instruct",
            "--set", "llm.temperature=0", "--set", "llm.max_tokens=60"]
    for key, value in LIMITS.items():
        args += ["--set", f"wyoming.{key}={value}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voice", *args, "wyoming", "--uri", "tcp://127.0.0.1:0", "--kb", str(base / "kb")],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    assert proc.stderr is not None
    log: list[str] = []
    found: list[tuple[str, int]] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading stderr so the server never blocks on a full pipe
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            m = re.search(r"listening on tcp://([\d.]+):(\d+)", line)
            if m:
                found.append((m.group(1), int(m.group(2))))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(300)
    if not found:
        proc.kill()
        pytest.fail("voice wyoming did not start:\n" + "".join(log))
    yield WyomingProcess(proc, found[0][0], found[0][1], log)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert "Traceback" not in "".join(log), "".join(log)


def read_wav(path: Path) -> tuple[int, int, int, bytes]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getsampwidth(), w.getnchannels(), w.readframes(w.getnframes())


async def transcribe(client: AsyncTcpClient, rate: int, width: int, channels: int, pcm: bytes,
                     chunk_bytes: int = 4096) -> str:
    await client.write_event(Transcribe(language="en").event())
    await client.write_event(AudioStart(rate, width, channels).event())
    for i in range(0, len(pcm), chunk_bytes):
        await client.write_event(AudioChunk(rate, width, channels, pcm[i : i + chunk_bytes]).event())
    await client.write_event(AudioStop().event())
    event = await client.read_event()
    assert event is not None and Transcript.is_type(event.type), event
    return str(Transcript.from_event(event).text)


async def read_until(client: AsyncTcpClient, last: str) -> list[Event]:
    events: list[Event] = []
    while True:
        event = await client.read_event()
        assert event is not None, f"connection closed before {last}: {events}"
        events.append(event)
        assert not Error.is_type(event.type), event
        if event.type == last:
            return events


def audio_of(events: list[Event]) -> tuple[int, np.ndarray]:
    """The int16 mono audio of audio-chunk events, as float32, and its rate."""
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert chunks and {(c.width, c.channels) for c in chunks} == {(2, 1)}
    pcm = b"".join(c.audio for c in chunks)
    return chunks[0].rate, np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def transcribe_audio_back(server: WyomingProcess, rate: int, audio: np.ndarray) -> str:
    async with server.client() as client:
        return await transcribe(client, rate, 2, 1, to_pcm16(audio))


def words_found(said: str, heard: str) -> float:
    want = normalize(said).split()
    got = set(normalize(heard).split())
    return sum(w in got for w in want) / len(want)


# ---------------------------------------------------------------------------- info


async def test_describe_lists_models_voices_and_languages(wyoming_server: WyomingProcess) -> None:
    async with wyoming_server.client() as client:
        await client.write_event(Describe().event())
        event = await client.read_event()
    assert event is not None and Info.is_type(event.type)
    info = Info.from_event(event)
    (asr,) = info.asr
    assert [(m.name, m.languages) for m in asr.models] == [("whisper-tiny.en", ["en"])]
    (tts,) = info.tts
    assert tts.supports_synthesize_streaming
    assert [(v.name, v.languages) for v in tts.voices] == [("piper-joe-medium", ["en_US"])]
    (handle,) = info.handle
    assert handle.supports_handled_streaming and handle.models[0].name == "smollm2-135m-instruct"


# ---------------------------------------------------------------------------- asr


async def test_transcribes_a_real_clip_at_its_own_rate_and_at_44k_stereo(wyoming_server: WyomingProcess,
                                                                         speech_clips: dict[str, str]) -> None:
    rate, width, channels, pcm = read_wav(JFK)
    async with wyoming_server.client() as client:
        text = await transcribe(client, rate, width, channels, pcm)
        # the same connection again, with the clip as a 44.1 kHz stereo stream
        from voice.audio.resample import resample

        mono = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        up = resample(mono, rate, 44100)
        stereo = to_pcm16(np.repeat(up, 2))
        text44 = await transcribe(client, 44100, 2, 2, stereo, chunk_bytes=8192)
    ref = speech_clips[str(JFK)]
    assert corpus_wer([(ref, text)]) < 0.1, text
    assert corpus_wer([(ref, text44)]) < 0.1, text44


async def test_an_english_only_model_refuses_another_language(wyoming_server: WyomingProcess) -> None:
    rate, width, channels, pcm = read_wav(GO)
    async with wyoming_server.client() as client:
        await client.write_event(Transcribe(language="de").event())
        await client.write_event(AudioStart(rate, width, channels).event())
        await client.write_event(AudioChunk(rate, width, channels, pcm[:4096]).event())
        await client.write_event(AudioStop().event())
        event = await client.read_event()
        assert event is not None and Error.is_type(event.type) and "English-only" in event.data["text"]
        assert normalize(await transcribe(client, rate, width, channels, pcm)) == "go forward ten meters"


# ---------------------------------------------------------------------------- tts

SAID = "The quick brown fox jumps over the lazy dog. Then it runs into the forest to find its friends."


async def test_synthesis_transcribes_back(wyoming_server: WyomingProcess) -> None:
    async with wyoming_server.client() as client:
        await client.write_event(Synthesize(SAID, voice=SynthesizeVoice(name="en_US-joe-medium")).event())
        events = await read_until(client, "audio-stop")
    assert events[0].type == "audio-start" and AudioStart.from_event(events[0]).rate == 22050
    rate, audio = audio_of(events)
    assert len(audio) / rate > 3.0
    heard = await transcribe_audio_back(wyoming_server, rate, audio)
    assert words_found(SAID, heard) >= 0.8, heard


async def test_streaming_synthesis_speaks_before_the_text_ends(wyoming_server: WyomingProcess) -> None:
    """Text arrives word by word, as from an LLM; the first sentence is heard before the rest is sent."""
    first, rest = SAID.split(". ", 1)
    async with wyoming_server.client() as client:
        await client.write_event(SynthesizeStart().event())
        for word in (first + ". ").split(" "):
            await client.write_event(SynthesizeChunk(word + " ").event())
        early = await read_until(client, "audio-stop")  # one whole cycle, rest of the text not yet sent
        for word in rest.split(" "):
            await client.write_event(SynthesizeChunk(word + " ").event())
        await client.write_event(Synthesize(SAID).event())  # the copy for old servers: ignored
        await client.write_event(SynthesizeStop().event())
        later = await read_until(client, "synthesize-stopped")
    assert [e.type for e in early][0] == "audio-start"
    assert sum(e.type == "audio-start" for e in later) >= 1 and later[-1].type == "synthesize-stopped"
    rate, first_audio = audio_of(early)
    _, rest_audio = audio_of(later)
    heard_first = await transcribe_audio_back(wyoming_server, rate, first_audio)
    heard_all = await transcribe_audio_back(wyoming_server, rate, np.concatenate([first_audio, rest_audio]))
    # the first cycle is the chunker's first piece: the first tts.chunker.first_words words
    # (or the sentence, if shorter), spoken while the rest of the text was not yet sent
    first_piece = " ".join(first.split()[: ChunkerConfig().first_words])
    assert words_found(first_piece, heard_first) >= 0.8, heard_first
    assert words_found(SAID, heard_all) >= 0.8, heard_all  # spoken once: the ignored copy added nothing
    assert len(first_audio) + len(rest_audio) < 1.6 * rate * 6.5


async def test_an_unknown_voice_is_an_error_event(wyoming_server: WyomingProcess) -> None:
    async with wyoming_server.client() as client:
        await client.write_event(Synthesize("Hello.", voice=SynthesizeVoice(name="en_US-nobody")).event())
        event = await client.read_event()
        assert event is not None and Error.is_type(event.type) and "en_US-nobody" in event.data["text"]
        await client.write_event(Synthesize("Hello.", voice=SynthesizeVoice(language="en_US")).event())
        assert (await read_until(client, "audio-stop"))[0].type == "audio-start"


# ---------------------------------------------------------------------------- handle


async def test_handle_answers_from_the_knowledge_base_streamed(wyoming_server: WyomingProcess) -> None:
    _content, question = FACTS["reactor.txt"]
    async with wyoming_server.client() as client:
        await client.write_event(Transcript(question).event())
        events = await read_until(client, "handled")
    types = [e.type for e in events]
    assert types[0] == "handled-start" and types[-2:] == ["handled-stop", "handled"]
    chunks = [e.data["text"] for e in events if e.type == "handled-chunk"]
    answer = Handled.from_event(events[-1]).text or ""
    assert len(chunks) >= 3 and "".join(chunks).strip() == answer
    assert "42" in answer, answer


# ---------------------------------------------------------------------------- several clients, bounds


async def test_several_clients_at_once(wyoming_server: WyomingProcess, speech_clips: dict[str, str]) -> None:
    clips = [JFK, GO, speech_dir() / "ps_librivox_0930.wav"]

    async def one(path: Path) -> str:
        async with wyoming_server.client() as client:
            return await transcribe(client, *read_wav(path))

    async def speak() -> float:
        async with wyoming_server.client() as client:
            await client.write_event(Synthesize("Several clients are served at once.").event())
            rate, audio = audio_of(await read_until(client, "audio-stop"))
            return len(audio) / rate

    *texts, seconds = await asyncio.gather(*(one(p) for p in clips[:2]), speak())
    assert corpus_wer([(speech_clips[str(p)], t) for p, t in zip(clips, texts, strict=False)]) < 0.15, texts
    assert seconds > 1.0


async def test_one_client_past_max_clients_is_told_and_closed(wyoming_server: WyomingProcess) -> None:
    held = [wyoming_server.client() for _ in range(LIMITS["max_clients"])]
    for c in held:
        await c.connect()
        await c.write_event(Describe().event())
        assert (await c.read_event()) is not None  # served, so it counts
    extra = wyoming_server.client()
    await extra.connect()
    event = await extra.read_event()
    assert event is not None and Error.is_type(event.type) and event.data["code"] == "server-busy"
    assert await extra.read_event() is None  # then closed
    await extra.disconnect()
    await held[0].disconnect()
    for _ in range(50):  # the server notices the close at once; allow it a moment
        again = wyoming_server.client()
        await again.connect()
        await again.write_event(Describe().event())
        event = await again.read_event()
        await again.disconnect()
        if event is not None and Info.is_type(event.type):
            break
        await asyncio.sleep(0.1)
    assert event is not None and Info.is_type(event.type)
    for c in held[1:]:
        await c.disconnect()


async def test_an_event_over_the_size_limits_gets_an_error_and_the_connection_goes_on(
        wyoming_server: WyomingProcess) -> None:
    async with wyoming_server.client() as client:
        await client.write_event(Synthesize("word " * 1000).event())  # ~5 KB of data > 4 KiB
        event = await client.read_event()
        assert event is not None and event.data.get("code") == "event-too-large", event
        await client.write_event(AudioStart(16000, 2, 1).event())
        await client.write_event(AudioChunk(16000, 2, 1, bytes(20000)).event())  # > 16 KiB payload
        event = await client.read_event()
        assert event is not None and event.data.get("code") == "payload-too-large", event
        await client.write_event(Describe().event())
        event = await client.read_event()
        assert event is not None and Info.is_type(event.type)


async def test_too_much_text_or_audio_gets_an_error(wyoming_server: WyomingProcess) -> None:
    async with wyoming_server.client() as client:
        await client.write_event(SynthesizeStart().event())
        for _ in range(3):
            await client.write_event(SynthesizeChunk("x" * 900).event())  # 2,700 > 2,000 characters
        await client.write_event(SynthesizeStop().event())
        events = []
        while not events or events[-1].type != "synthesize-stopped":
            event = await client.read_event()
            assert event is not None
            events.append(event)
        assert [e.data.get("code") for e in events if Error.is_type(e.type)] == ["text-too-long"]
        silence = bytes(16000 * 2)  # one second
        await client.write_event(AudioStart(16000, 2, 1).event())
        for _ in range(31):  # 31 s > 30 s
            for i in range(0, len(silence), 8000):
                await client.write_event(AudioChunk(16000, 2, 1, silence[i : i + 8000]).event())
        await client.write_event(AudioStop().event())
        event = await client.read_event()
        assert event is not None and event.data.get("code") == "audio-too-long", event
        await client.write_event(Describe().event())
        event = await client.read_event()
        assert event is not None and Info.is_type(event.type)  # no transcript came for the long audio


async def raw(server: WyomingProcess, data: bytes, n: int) -> list[Event | None]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        return [await asyncio.wait_for(async_read_event(reader), TIMEOUT) for _ in range(n)]
    finally:
        writer.close()


async def test_unknown_and_malformed_events_get_error_events(wyoming_server: WyomingProcess) -> None:
    describe = b'{"type": "describe"}\n'
    got = await raw(wyoming_server, b"this is not json\n" + b'{"type": "no-such-event"}\n' + b"[1, 2]\n"
                    + b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}}\n'
                    + b'{"type": "synthesize", "data": {"text": 5}}\n'
                    + b'{"type": "synthesize", "data_length": 4}\nnope' + describe, 7)
    codes = [e.data.get("code") if e is not None else None for e in got[:6]]
    assert codes == ["malformed-event", "unknown-event", "malformed-event", "no-audio-start",
                     "malformed-event", "malformed-event"]
    assert got[6] is not None and Info.is_type(got[6].type)  # and the connection still works


@pytest.mark.parametrize(
    "data",
    [b'{"type": "describe", "payload_length": "lots"}\n', b"x" * 5000],
    ids=["unreadable-length", "header-line-too-long"],
)
async def test_input_that_cannot_be_framed_is_answered_then_closed(wyoming_server: WyomingProcess,
                                                                  data: bytes) -> None:
    first, after = await raw(wyoming_server, data, 2)
    assert first is not None and Error.is_type(first.type), first
    assert after is None


# ---------------------------------------------------------------------------- wyoming-bench


def test_wyoming_bench_runs_against_it(wyoming_server: WyomingProcess, tmp_path: Path,
                                       speech_clips: dict[str, str]) -> None:
    exe = Path(sys.executable).parent / "wyoming-bench"
    assert exe.exists(), "wyoming-bench is not installed (it is in the dev extras)"
    bench = [str(exe)]
    server = f"{wyoming_server.host}:{wyoming_server.port}"
    info = subprocess.run([*bench, "info", server], capture_output=True, text=True, timeout=120, check=False)
    assert info.returncode == 0 and "whisper-tiny.en" in info.stdout and "piper-joe-medium" in info.stdout, info
    tts = subprocess.run([*bench, "tts", server, "--rounds", "1", "--warmup", "0", "--texts",
                          "The weather today is sunny and warm. A light breeze comes from the sea."],
                         capture_output=True, text=True, timeout=300, check=False)
    assert tts.returncode == 0, tts.stdout + tts.stderr
    assert "[non_streaming] ok=1 fail=0" in tts.stdout and "[streaming] ok=1 fail=0" in tts.stdout, tts.stdout
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for clip in (JFK, GO):
        (corpus / clip.name).symlink_to(clip)
        (corpus / clip.with_suffix(".txt").name).write_text(speech_clips[str(clip)] + "\n")
    stt = subprocess.run([*bench, "stt", server, "--corpus", str(corpus), "--mode", "non_streaming",
                          "--rounds", "1", "--warmup", "0"], capture_output=True, text=True, timeout=300, check=False)
    assert stt.returncode == 0 and "[non_streaming] ok=2 fail=0" in stt.stdout, stt.stdout + stt.stderr


def test_a_bad_uri_is_one_line() -> None:
    proc = run_voice("wyoming", "--uri", "http://localhost:1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "voice: error: wyoming.uri 'http://localhost:1': expected tcp://HOST:PORT or unix:///path/to.sock"]


def test_a_unix_socket_works_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    from wyoming.client import AsyncUnixClient

    sock = tmp_path / "voice.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    proc = subprocess.Popen([sys.executable, "-m", "voice", "--set", "llm.embedded.model=smollm2-135m-instruct",
                             "--set", f"general.data_dir={tmp_path / 'data'}", "wyoming", "--uri", f"unix://{sock}"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "listening on" in line:
            break
    assert sock.exists(), "".join(lines)

    async def describe() -> Event | None:
        async with AsyncUnixClient(sock) as client:
            await client.write_event(Describe().event())
            return await client.read_event()

    event = asyncio.run(describe())
    assert event is not None and Info.is_type(event.type)
    proc.terminate()  # SIGTERM
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in rest, rest
    assert not sock.exists()
