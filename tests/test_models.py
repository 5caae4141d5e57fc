"""Model registry: names, sources in order, assembly once into the cache, clear errors, races."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers.asr import run_voice
from voice.errors import ConfigError, ModelNotAvailable
from voice.models import Registry

PART = 8 << 20  # 8 MB per part: big enough that racing processes overlap


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """An installed-looking package ``voicetest_parts`` holding a model split into two parts."""
    site = tmp_path / "site"
    pkg = site / "voicetest_parts"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    a = os.urandom(PART)
    b = os.urandom(PART // 2)
    (pkg / "data" / "model.bin.part1").write_bytes(a)
    (pkg / "data" / "model.bin.part2").write_bytes(b)
    (pkg / "data" / "config.json").write_text('{"ok": true}')
    sha = hashlib.sha256(a + b).hexdigest()
    reg_dir = tmp_path / "registry"
    reg_dir.mkdir()
    (reg_dir / "test.toml").write_text(textwrap.dedent(f"""
        [models.split]
        kind = "asr"
        description = "a split model"
        packages = ["voicetest-parts"]
        [[models.split.sources]]
        type = "assemble"
        files = [
          {{ name = "model.bin", sha256 = "{sha}", parts = [
            {{ module = "voicetest_parts", path = "data/model.bin.part1" }},
            {{ module = "voicetest_parts", path = "data/model.bin.part2" }} ] }},
          {{ name = "config.json", parts = [{{ module = "voicetest_parts", path = "data/config.json" }}] }},
        ]

        [models.packaged]
        kind = "tts-piper"
        layout = "file"
        sources = [
          {{ type = "path", path = "{tmp_path}/nowhere.onnx" }},
          {{ type = "package", module = "voicetest_parts", path = "data/config.json" }},
        ]

        [models.absent]
        kind = "llm"
        packages = ["voicetest-not-installed"]
        sources = [{{ type = "package", module = "voicetest_not_installed", path = "x.gguf" }}]

        [models.hubonly]
        kind = "llm"
        sources = [{{ type = "hub", repo = "voicetest/not-a-repo", file = "x.gguf" }}]
    """))
    monkeypatch.syspath_prepend(str(site))
    return {"site": site, "pkg": pkg, "registry": reg_dir, "cache": tmp_path / "cache",
            "content": a + b, "sha": sha}


def _registry(fp: dict[str, object]) -> Registry:
    return Registry(cache_dir=Path(str(fp["cache"])), registry_dir=Path(str(fp["registry"])))


def test_real_registry_lists_the_asr_models() -> None:
    from voice.config import load_config
    from voice.models import registry_for

    reg = registry_for(load_config(environ={}))
    assert {"whisper-tiny.en", "whisper-base"} <= set(reg.names("asr"))
    tiny = reg.availability("whisper-tiny.en")
    assert tiny.available and (tiny.path is not None and (tiny.path / "model.bin").exists())
    assert tiny.size_bytes and tiny.size_bytes > 50e6


def test_faster_whisper_names_and_short_names_resolve_to_registry_entries() -> None:
    """Every name faster-whisper accepts (WhisperModel("tiny.en")) means one registry entry."""
    from faster_whisper.utils import available_models

    from voice.config import load_config
    from voice.models import registry_for

    reg = registry_for(load_config(environ={}))
    for name in available_models():
        canonical = reg.canonical(name)
        assert canonical is not None and reg.entry(name).kind == "asr", name
    assert reg.canonical("tiny.en") == reg.canonical("TINY.EN") == "whisper-tiny.en"
    assert reg.canonical("base") == "whisper-base" and reg.canonical("turbo") == "whisper-large-v3-turbo"
    assert reg.resolve("tiny.en", kind="asr").name == "whisper-tiny.en"
    assert reg.resolve("en_US-joe-medium", kind="tts-piper").name == "piper-joe-medium"
    assert reg.canonical("smollm2") == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("tiny.eng", "did you mean tiny.en or tiny?"), ("whisper-bse", "did you mean whisper-base"),
     ("en_US-joe-meduim", "did you mean en_US-joe-medium?")],
)
def test_a_misspelt_name_suggests_the_close_ones(typed: str, suggested: str) -> None:
    from voice.config import load_config
    from voice.models import registry_for

    with pytest.raises(ConfigError, match=f"unknown model '{typed}': {suggested}") as err:
        registry_for(load_config(environ={})).resolve(typed)
    assert "\n" not in str(err.value)


def test_an_alias_may_name_only_one_model(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        '[models.one]\nkind = "asr"\naliases = ["x"]\n[models.two]\nkind = "asr"\naliases = ["X"]\n'
    )
    with pytest.raises(ConfigError, match="'X' names both one and two"):
        Registry(cache_dir=tmp_path / "cache", registry_dir=tmp_path).entries()
    (tmp_path / "a.toml").write_text('[models.one]\nkind = "asr"\naliases = "x"\n')
    with pytest.raises(ConfigError, match="aliases must be a list"):
        Registry(cache_dir=tmp_path / "cache", registry_dir=tmp_path).entries()


def test_assembles_once_into_the_cache_with_a_checksum(fake_parts: dict[str, object]) -> None:
    reg = _registry(fake_parts)
    before = reg.availability("split")
    assert before.available and before.note == "assembled into the cache on first use"
    assert before.size_bytes == len(fake_parts["content"]) + len('{"ok": true}')  # type: ignore[arg-type]
    res = reg.resolve("split", progress=False)
    assert res.path == Path(str(fake_parts["cache"])) / "models" / "split"
    model = res.path / "model.bin"
    assert model.read_bytes() == fake_parts["content"]
    assert (res.path / "model.bin.sha256").read_text().split()[0] == fake_parts["sha"]
    assert (res.path / "config.json").read_text() == '{"ok": true}'
    assert (res.path / ".complete").exists()
    assert not list(res.path.glob("*.partial"))
    stat = model.stat()
    again = _registry(fake_parts).resolve("split", progress=False)
    assert again.path == res.path
    assert (model.stat().st_ino, model.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not redone


def test_corrupted_part_is_a_clear_error(fake_parts: dict[str, object]) -> None:
    part = Path(str(fake_parts["pkg"])) / "data" / "model.bin.part2"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(ModelNotAvailable) as err:
        _registry(fake_parts).resolve("split", progress=False)
    msg = str(err.value)
    assert "sha256" in msg and "reinstall" in msg and "\n" not in msg
    target = Path(str(fake_parts["cache"])) / "models" / "split"
    assert not (target / ".complete").exists() and not (target / "model.bin").exists()
    assert not list(target.glob("*.partial"))
    data[100] ^= 0xFF  # repaired: the next try assembles it
    part.write_bytes(bytes(data))
    assert (_registry(fake_parts).resolve("split", progress=False).path / "model.bin").exists()


def test_sources_are_tried_in_order_and_paths_work(fake_parts: dict[str, object], tmp_path: Path) -> None:
    reg = _registry(fake_parts)
    res = reg.resolve("packaged")
    assert res.path.name == "config.json" and "package module voicetest_parts" in res.source
    own = tmp_path / "my_model"
    own.mkdir()
    assert reg.resolve(str(own)).path == own.resolve()


def test_unknown_missing_and_wrong_kind_are_clear_errors(fake_parts: dict[str, object]) -> None:
    reg = _registry(fake_parts)
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*known: absent, hubonly, packaged, split"):
        reg.resolve("nope")
    with pytest.raises(ModelNotAvailable, match="pip install voicetest-not-installed"):
        reg.resolve("absent")
    assert not reg.availability("absent").available
    t0 = time.monotonic()
    with pytest.raises(ModelNotAvailable, match="allow_download"):
        reg.resolve("hubonly")  # downloads are off: no network try, no hang
    assert time.monotonic() - t0 < 10
    with pytest.raises(ConfigError, match="is a asr model, not a llm model"):
        reg.resolve("split", kind="llm")


RACER = """
import json, os, sys, time
from pathlib import Path
from voice.models import Registry
start, cache, registry = float(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
res = Registry(cache_dir=cache, registry_dir=registry).resolve("split", progress=False)
st = (res.path / "model.bin").stat()
print(json.dumps({"path": str(res.path), "ino": st.st_ino, "mtime": st.st_mtime_ns}))
"""


def test_processes_racing_to_assemble_get_one_good_copy(fake_parts: dict[str, object]) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake_parts["site"]), str(Path.cwd())]))
    start = time.time() + 2.0
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(start), str(fake_parts["cache"]),
                          str(fake_parts["registry"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for _ in range(3)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    assert len({(o["path"], o["ino"], o["mtime"]) for o in outs}) == 1, outs  # assembled exactly once
    target = Path(outs[0]["path"])
    assert (target / "model.bin").read_bytes() == fake_parts["content"]
    assert not list(target.glob("*.partial"))


def test_voice_models_lists_every_model() -> None:
    from voice.config import load_config
    from voice.models import registry_for

    names = registry_for(load_config(environ={})).names()
    proc = run_voice("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["name"] for r in rows] == names
    assert next(r for r in rows if r["name"] == "whisper-tiny.en")["aliases"] == ["tiny.en"]
    tiny = next(r for r in rows if r["name"] == "whisper-tiny.en")
    assert tiny["available"] and tiny["kind"] == "asr" and tiny["size_bytes"] > 50e6
    table = run_voice("models", "--kind", "asr")
    assert table.returncode == 0 and "whisper-tiny.en" in table.stdout and "whisper-base" in table.stdout
    assert "qwen" not in table.stdout
    bad = run_voice("models", "--fetch", "nope")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "unknown model 'nope'" in lines[0]


def test_voice_models_with_an_unknown_kind_exits_2_listing_the_kinds() -> None:
    proc = run_voice("models", "--kind", "bogus")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == "", proc.stderr
    assert lines[0].startswith("voice: error: --kind 'bogus' is not a kind of model (kinds: ")
    assert "asr" in lines[0] and "llm" in lines[0] and "tts-piper" in lines[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.x\nkind = 'asr'\n", "model registry .*bad.toml: "),
        ("models = 3\n", r"\[models\] must be a table"),
        ("[models]\nx = 'asr'\n", "models.x: must be a table"),
        ("[models.x]\nsources = [{type = 'assemble', files = [{name = 'a'}]}]\n", "needs name and parts"),
        ("[models.x]\nsources = [{type = 'ftp'}]\n", "source type 'ftp'"),
    ],
)
def test_a_broken_registry_file_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        Registry(cache_dir=tmp_path / "cache", registry_dir=tmp_path).entries()
