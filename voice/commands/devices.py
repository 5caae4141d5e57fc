"""``voice devices``: which device each engine would use, and why."""

from __future__ import annotations

import argparse
import json

from voice.commands import Subparsers
from voice.config import Config
from voice.devices import DeviceChoice, choose, probe_for


def register(sub: Subparsers) -> None:
    p = sub.add_parser("devices", help="show the compute device each engine would use and why")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run)


TTS_RUNTIME = {"piper": "onnxruntime", "chattts": "torch", "chatterbox": "torch"}


def engine_devices(cfg: Config) -> dict[str, tuple[str, DeviceChoice]]:
    """Engine label -> (runtime, choice). Probes run here: real CUDA work where CUDA exists."""
    tts_runtime = TTS_RUNTIME.get(cfg.tts.engine, "onnxruntime")
    plan = {
        f"asr ({cfg.asr.model})": ("ctranslate2", cfg.asr.device, "int8", "float16", cfg.asr.compute_type),
        f"tts ({cfg.tts.engine})": (tts_runtime, cfg.tts.device, "float32", "float32", None),
        f"llm ({cfg.llm.backend})": ("llama.cpp", cfg.llm.embedded.device, "q4", "q4", None),
    }
    out = {}
    for label, (runtime, requested, cpu_ct, cuda_ct, ct) in plan.items():
        out[label] = (
            runtime,
            choose(requested, probe_for(runtime), runtime=runtime,
                   cpu_compute=cpu_ct, cuda_compute=cuda_ct, compute_type=ct),
        )
    return out


def run(args: argparse.Namespace, cfg: Config) -> int:
    rows = engine_devices(cfg)
    if args.json:
        print(json.dumps({k: {"runtime": r, "device": c.device, "compute_type": c.compute_type,
                              "reason": c.reason} for k, (r, c) in rows.items()}, indent=2))
        return 0
    for label, (runtime, c) in rows.items():
        print(f"{label:32} {c.device:5} {c.compute_type:8} [{runtime}] {c.reason}")
    return 0
