"""Fixtures for the LLM tests: one runtime per session, so each real llama.cpp server starts once.

``smol_cfg`` runs SmolLM2-135M (fast; answer quality does not matter), ``qwen_cfg`` the default
Qwen2.5 0.5B (grounding, memory, tools). Both use the user's model cache so the Qwen GGUF is
assembled only once, and greedy sampling so answers are repeatable.
"""

from __future__ import annotations

import re
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


async def server_stats(runtime: Any, cfg: Any) -> tuple[list[bool], float]:
    """The embedded server's slots (busy or not) and its tokens predicted so far."""
    import httpx

    info = await runtime.embedded(cfg)
    headers = {"Authorization": f"Bearer {info.api_key}"}
    async with httpx.AsyncClient(headers=headers, timeout=5) as http:
        slots = (await http.get(info.root_url + "/slots")).json()
        metrics = (await http.get(info.root_url + "/metrics")).text
    m = re.search(r"^llamacpp:tokens_predicted_total (\S+)", metrics, re.M)
    assert m, metrics
    return [bool(s.get("is_processing")) for s in slots], float(m.group(1))


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
    return llm_config("qwen2.5-0.5b-instruct-q4_0", tmp_path)  # the default model


class EchoChain:
    """A user-supplied chain (no LLM): answers with what it was given, word by word."""

    async def astream(self, payload: dict[str, Any]) -> AsyncIterator[str]:
        words = f"you said {payload['input']} after {len(payload['history'])} messages".split()
        for w in words:
            yield w + " "


echo_chain = EchoChain()
