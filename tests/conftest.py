"""Shared test fixtures. Room-specific fixtures live in tests/helpers/ and are listed here."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins: list[str] = ["tests.helpers.asr", "tests.helpers.rag", "tests.helpers.server", "tests.helpers.llm", "tests.helpers.pulse", "tests.helpers.tiny_tts"]


def speech_dir() -> Path:
    env = os.environ.get("VOICE_TEST_SPEECH_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "speech"


@pytest.fixture(scope="session")
def speech_clips() -> dict[str, str]:
    """Clip path -> reference transcript, from ../shared/data/speech/transcripts.tsv."""
    d = speech_dir()
    tsv = d / "transcripts.tsv"
    assert tsv.exists(), f"real speech clips are expected in {d}"
    out: dict[str, str] = {}
    with tsv.open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            out[str(d / row["file"])] = row["transcript"]
    return out


@pytest.fixture
def cfg(tmp_path: Path):
    """A default config whose data and cache folders are private to the test."""
    from voice.config import load_config

    c = load_config(environ={})
    c.general.data_dir = str(tmp_path / "data")
    c.general.cache_dir = str(tmp_path / "cache")
    return c


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``qdrant_server`` need a Qdrant server, which no package here installs:
    they run only when VOICE_TEST_QDRANT_URL is set, and are reported as deselected otherwise."""
    if os.environ.get("VOICE_TEST_QDRANT_URL"):
        return
    keep = [i for i in items if i.get_closest_marker("qdrant_server") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
