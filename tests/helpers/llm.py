"""Fixtures for the LLM tests: one runtime per session, so each real llama.cpp server starts once.

``smol_cfg`` runs SmolLM2-135M (fast; answer quality does not matter), ``qwen_cfg`` the default
Qwen2.5 0.5B (grounding, memory, tools). Both use the user's model cache so the Qwen GGUF is
assembled only once, and greedy sampling so answers are repeatable.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def llm_config(model: str, tmp_path: Any) -> Any:
    from voice.config import load_config

    c = load_config(environ={})
    c.general.data_dir = str(tmp_path / "data")
    c.llm.embedded.model = model
    c.llm.embedded.n_ctx = 4096
    c.llm.temperature = 0.0
    c.llm.max_tokens = 80
    return c


@pytest.fixture(scope="session")
def llm_runtime() -> Iterator[Any]:
    """The process's LlmRuntime: servers start on first use and stop when the session ends."""
    from voice.llm import LlmRuntime

    rt = LlmRuntime()
    yield rt
    rt.close()


@pytest.fixture
def smol_cfg(tmp_path: Any) -> Any:
    return llm_config("smollm2-135m-instruct", tmp_path)


@pytest.fixture
def qwen_cfg(tmp_path: Any) -> Any:
    return llm_config("qwen2.5-0.5b-instruct", tmp_path)


class EchoChain:
    """A user-supplied chain (no LLM): answers with what it was given, word by word."""

    async def astream(self, payload: dict[str, Any]) -> AsyncIterator[str]:
        words = f"you said {payload['input']} after {len(payload['history'])} messages".split()
        for w in words:
            yield w + " "


echo_chain = EchoChain()
