"""Batch synthesis: many utterances to audio files, in parallel, resumable.

Input rows come from .txt (one utterance a line), .csv or .jsonl (fields ``id``, ``text``,
optional ``engine``, ``voice``, ``speed``), or stdin. Each row becomes ``OUTDIR/<id>.<fmt>``
and one line in ``OUTDIR/manifest.jsonl``. A row's text is cleaned as ``voice say``'s (no
markdown, code or emoji read aloud) and may hold at most ``tts.max_synth_row_chars``.

Crash safety: audio files are written to a temp file and renamed; the main process appends one
manifest line per finished row (flushed at once). A re-run reads the manifest, skips rows that
are done (status ok, file present, same text and settings), removes stale temp files, and at
the end rewrites the manifest atomically with exactly one line per input row.

Workers are processes (one engine load each), so N cores give close to N times the speed.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.errors import InputError, VoiceError
from voice.fsutil import atomic_write

if TYPE_CHECKING:
    import asyncio

    from voice.config import Config
    from voice.tts.base import TTSEngine

MANIFEST = "manifest.jsonl"
FORMATS = ("wav", "flac")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    """One utterance to synthesize. ``error`` is set when the row itself is unusable."""

    id: str
    text: str
    engine: str | None = None
    voice: str | None = None
    speed: float | None = None
    error: str | None = None


def _safe_id(raw: str) -> str:
    cleaned = _SAFE_ID.sub("_", raw.strip()).strip("._")
    return cleaned[:120]


def _row_from_mapping(data: dict[str, Any], default_id: str, where: str) -> Row:
    raw_id = data.get("id")
    rid = _safe_id(str(raw_id)) if raw_id not in (None, "") else default_id
    if not rid:
        return Row(default_id, "", error=f"{where}: id {raw_id!r} has no usable characters")
    text = data.get("text")
    if text is None:
        return Row(rid, "", error=f"{where}: no text field")
    if not isinstance(text, str):
        return Row(rid, "", error=f"{where}: text must be a string")
    speed_raw = data.get("speed")
    speed: float | None = None
    if speed_raw not in (None, ""):
        try:
            speed = float(speed_raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return Row(rid, text, error=f"{where}: speed {speed_raw!r} is not a number")
        if not speed > 0:
            return Row(rid, text, error=f"{where}: speed must be positive, not {speed_raw!r}")
    engine = data.get("engine") or None
    voice = data.get("voice") or None
    return Row(rid, text, str(engine) if engine else None, str(voice) if voice else None, speed)


def _parse_txt(text: str) -> list[Row]:
    return [Row(str(n), line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_jsonl(text: str, name: str) -> list[Row]:
    rows: list[Row] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name} line {n}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            rows.append(Row(str(n), "", error=f"{where}: not valid JSON ({err.msg})"))
            continue
        if not isinstance(data, dict):
            rows.append(Row(str(n), "", error=f"{where}: expected a JSON object"))
            continue
        rows.append(_row_from_mapping(data, str(n), where))
    return rows


def _parse_csv(text: str, name: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "text" not in [f.strip() for f in reader.fieldnames]:
        raise InputError(f"{name}: a CSV needs a header row with a 'text' column (and optional id,"
                         " engine, voice, speed)")
    rows: list[Row] = []
    for n, raw in enumerate(reader, 1):
        data = {(k or "").strip(): v for k, v in raw.items()}
        if not any((v or "").strip() for v in data.values() if isinstance(v, str)):
            continue  # blank line
        rows.append(_row_from_mapping(data, str(n), f"{name} row {n}"))
    return rows


def read_rows(source: str, stdin: Iterable[str] | None = None) -> list[Row]:
    """Rows from a file path or ``-`` (stdin: JSON lines if it starts with ``{``, else text)."""
    if source == "-":
        text = "".join(stdin if stdin is not None else sys.stdin)
        kind = "jsonl" if text.lstrip().startswith("{") else "txt"
        name = "stdin"
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise InputError(f"input {source} does not exist")
        if path.is_dir():
            raise InputError(f"input {source} is a folder, not a .txt, .csv or .jsonl file")
        kind = path.suffix.lower().lstrip(".")
        if kind not in ("txt", "csv", "jsonl"):
            raise InputError(f"input {source}: unknown kind {path.suffix or '(none)'}; use .txt, .csv or .jsonl")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"input {source} is not UTF-8 text") from None
        except OSError as err:
            raise InputError(f"input {source} cannot be read: {err.strerror}") from None
        name = path.name
    if kind == "csv":
        rows = _parse_csv(text, name)
    elif kind == "jsonl":
        rows = _parse_jsonl(text, name)
    else:
        rows = _parse_txt(text)
    seen: set[str] = set()
    out: list[Row] = []
    for r in rows:
        if r.id in seen:
            r = Row(f"{r.id}_dup{len(out) + 1}", r.text, error=f"duplicate id {r.id!r}")
        seen.add(r.id)
        out.append(r)
    return out


# ----------------------------------------------------------------------------- manifest


@dataclass
class Result:
    """One manifest line."""

    id: str
    file: str | None
    engine: str | None
    voice: str | None
    audio_seconds: float
    synthesis_seconds: float
    status: str  # "ok" or "error"
    error: str | None = None
    #: Fingerprint of text and settings: a re-run redoes the row when it changed.
    key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return json.dumps(d, ensure_ascii=False)


def row_key(row: Row, cfg: Config, fmt: str) -> str:
    t = cfg.tts
    parts = [row.text, row.engine or t.engine, row.voice or t.voice or "", str(row.speed or t.speed), fmt,
             json.dumps(asdict(t), sort_keys=True)]
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:16]


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """id -> last manifest entry; a torn last line (killed mid-write) is ignored."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                out[entry["id"]] = entry
    return out


class ManifestWriter:
    """Appends one flushed line per finished row; repairs a torn last line first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists() and path.stat().st_size:
            with path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
            if torn:
                with path.open("ab") as fh:
                    fh.write(b"\n")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, result: Result) -> None:
        os.write(self._fd, (result.to_json() + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def rewrite_manifest(path: Path, order: list[str]) -> None:
    """Exactly one line per row id in ``order`` (the last entry wins), written atomically."""
    entries = read_manifest(path)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        for rid in order:
            if rid in entries:
                fh.write(json.dumps(entries[rid], ensure_ascii=False) + "\n")


def remove_temp_files(outdir: Path) -> int:
    """Temp files left by a killed run (``.<name>.*.tmp``)."""
    n = 0
    for p in outdir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


def _result_from_entry(e: dict[str, Any]) -> Result:
    return Result(
        id=str(e.get("id")), file=e.get("file"), engine=e.get("engine"), voice=e.get("voice"),
        audio_seconds=float(e.get("audio_seconds") or 0.0),
        synthesis_seconds=float(e.get("synthesis_seconds") or 0.0),
        status=str(e.get("status")), error=e.get("error"), key=e.get("key"),
    )


# ----------------------------------------------------------------------------- worker


class _Worker:
    """Per-process state: engines loaded once, one event loop."""

    def __init__(self, cfg: Config) -> None:
        import asyncio

        self.cfg = cfg
        self.engines: dict[str, TTSEngine] = {}
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()

    def engine(self, name: str) -> TTSEngine:
        if name not in self.engines:
            from voice.tts.base import create_engine

            engine = create_engine(self.cfg, name)
            self.loop.run_until_complete(engine.load())
            self.engines[name] = engine
        return self.engines[name]

    def run(self, row: Row, outdir: str, fmt: str, key: str) -> Result:
        t0 = time.perf_counter()
        engine_name = row.engine or self.cfg.tts.engine
        voice = row.voice or self.cfg.tts.voice
        try:
            if row.error:
                raise InputError(row.error)
            if not row.text.strip():
                raise InputError("empty text")
            limit = self.cfg.tts.max_synth_row_chars
            if len(row.text) > limit:
                raise InputError(f"the text is {len(row.text):,} characters, over tts.max_synth_row_chars"
                                 f" = {limit:,}")
            from voice.tts.chunker import clean_for_speech

            text = clean_for_speech(row.text)  # as `voice say`: no markup, code or emoji read aloud
            if not text:
                raise InputError("nothing speakable in the text")
            engine = self.engine(engine_name)
            engine_name = engine.name
            t0 = time.perf_counter()  # synthesis time, without the one-off engine load
            voice = voice or getattr(engine, "default_voice", None)
            from voice.tts.base import synthesize_to_file

            name = f"{row.id}.{fmt}"
            seconds, _ = self.loop.run_until_complete(
                synthesize_to_file(engine, text, Path(outdir) / name, format=fmt, voice=voice, speed=row.speed))
            return Result(row.id, name, engine_name, voice, round(seconds, 3),
                          round(time.perf_counter() - t0, 3), "ok", key=key)
        except Exception as err:  # noqa: BLE001 - a bad row is reported, the others go on
            msg = str(err) if isinstance(err, VoiceError) else f"{type(err).__name__}: {err}"
            return Result(row.id, None, engine_name, voice, 0.0, round(time.perf_counter() - t0, 3),
                          "error", msg.strip().splitlines()[0] if msg.strip() else type(err).__name__, key=key)


_worker: _Worker | None = None  # per worker process (ProcessPoolExecutor needs process state)


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the parent dies (a killed run leaves no orphans)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _init_worker(cfg: Config, threads: int, parent_pid: int) -> None:
    global _worker
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _worker = _Worker(cfg)


def _run_in_worker(row: Row, outdir: str, fmt: str, key: str) -> Result:
    assert _worker is not None, "worker not initialised"
    return _worker.run(row, outdir, fmt, key)


# ----------------------------------------------------------------------------- job


@dataclass
class Summary:
    total: int
    done_before: int
    ok: int
    failed: list[Result]
    audio_seconds: float
    wall_seconds: float
    workers: int

    @property
    def success(self) -> bool:
        return not self.failed


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_job(
    cfg: Config,
    rows: list[Row],
    outdir: Path,
    *,
    fmt: str = "wav",
    workers: int | None = None,
    on_result: Callable[[Result], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> Summary:
    """Synthesize every row not already done; returns the summary (the manifest is final)."""
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output {outdir} exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    remove_temp_files(outdir)
    manifest_path = outdir / MANIFEST
    previous = read_manifest(manifest_path)
    todo: list[tuple[Row, str]] = []
    done_before = 0
    for row in rows:
        key = row_key(row, cfg, fmt)
        prev = previous.get(row.id)
        if (prev and prev.get("status") == "ok" and prev.get("key") == key and prev.get("file")
                and (outdir / prev["file"]).is_file()):
            done_before += 1
            continue
        todo.append((row, key))
    n_workers = max(1, min(workers or default_workers(), len(todo) or 1))
    if on_start:
        on_start(len(rows), done_before)
    t0 = time.perf_counter()
    results: list[Result] = []
    writer = ManifestWriter(manifest_path)
    try:
        if todo:
            wcfg = copy.deepcopy(cfg)
            # A worker is one core: N workers use N cores (a user asking for one leaves the others
            # free); parallelism comes from processes, which scale better than ORT's threads.
            threads = 1
            if wcfg.tts.piper.threads == 0:
                wcfg.tts.piper.threads = threads
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(wcfg, threads, os.getpid())) as pool:
                pending: set[Future[Result]] = set()
                queue = list(todo)
                queue.reverse()
                # Keep a few rows in flight per worker, so a kill loses little and order stays close.
                while queue or pending:
                    while queue and len(pending) < 2 * n_workers:
                        row, key = queue.pop()
                        pending.add(pool.submit(_run_in_worker, row, str(outdir), fmt, key))
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        res = fut.result()
                        writer.append(res)
                        results.append(res)
                        if on_result:
                            on_result(res)
    finally:
        writer.close()
    rewrite_manifest(manifest_path, [r.id for r in rows])
    remove_temp_files(outdir)
    final = read_manifest(manifest_path)
    failed = [_result_from_entry(e) for e in final.values() if e.get("status") != "ok"]
    return Summary(
        total=len(rows),
        done_before=done_before,
        ok=sum(1 for e in final.values() if e.get("status") == "ok"),
        failed=failed,
        audio_seconds=sum(r.audio_seconds for r in results if r.status == "ok"),
        wall_seconds=time.perf_counter() - t0,
        workers=n_workers if todo else 0,
    )
