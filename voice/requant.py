"""Requantize a GGUF file's tensors into types llama.cpp has fast CPU kernels for.

Why: the packaged Qwen2.5 0.5B "Q4_K_M" is mostly Q5_0 (its 896-wide rows are not a multiple of
the 256 that k-quants need, so llama.cpp's quantizer fell back). llama.cpp repacks Q4_0 for AVX2
(8x8 interleaved blocks) but has no such path for Q5_0: on a 2-core AVX2 CPU prompt prefill ran
at about 100 tokens/s with the Q5_0 weights and 160 with the same weights as Q4_0
(``scripts/bench_rag.py`` has the figures and the accuracy of both).

The conversion dequantizes each chosen tensor and quantizes it again (gguf-py's reference
quantizers), copies every other tensor and every metadata field unchanged, and writes the result
atomically. It runs once, into the model cache, when the registry first resolves a model whose
source is ``{type = "requantize", ...}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from voice.errors import ModelNotAvailable


def requantize(src: Path, dst: Path, types: Mapping[str, str], *, keep: frozenset[str] = frozenset({"token_embd.weight"}),
               progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write ``src`` to ``dst`` with tensors of each type in ``types`` (e.g. ``{"Q5_0": "Q4_0"}``)
    requantized; tensors named in ``keep`` stay as they are (the token embedding is only looked
    up, never multiplied, so its type costs nothing). Returns how many tensors became each type.
    ``progress(n)`` is called with each tensor's size in bytes."""
    try:
        import gguf
        from gguf.quants import dequantize, quantize
    except ImportError:
        raise ModelNotAvailable("requantizing a GGUF model needs gguf-py: pip install gguf") from None
    q = gguf.GGMLQuantizationType
    wanted = {q[k]: q[v] for k, v in types.items()}
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = dst.with_name(dst.name + ".partial")
    writer = gguf.GGUFWriter(tmp, arch=arch, use_temp_file=False)
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by the writer itself
        value_type = f.types[0]
        sub_type = f.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, f.contents(), value_type, sub_type=sub_type)
    counts: dict[str, int] = {}
    for t in reader.tensors:
        target = wanted.get(t.tensor_type)
        if target is None or t.name in keep:
            writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
        else:
            shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dimensions innermost first
            data = quantize(dequantize(t.data, t.tensor_type).reshape(shape), target)
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=target)
            counts[target.name] = counts.get(target.name, 0) + 1
        if progress is not None:
            progress(int(t.n_bytes))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return counts
