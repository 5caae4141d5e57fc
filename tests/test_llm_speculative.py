"""llm.embedded.speculative on real llama.cpp servers: n-gram and draft-model speculation draft
tokens that the main model accepts, greedy answers stay the same as without, and a missing
draft model is a clear error."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.helpers.llm import llm_config
from voice.llm import LlmRuntime

pytestmark = pytest.mark.slow

#: A prompt whose answer copies a phrase from itself, so the n-gram side has something to draft.
COPY = ("Repeat this sentence exactly, twice, and nothing else: The seventh lighthouse keeper of "
        "Kestrel Point painted the lantern room green every spring.")


async def complete(runtime: LlmRuntime, cfg: Any, prompt: str) -> tuple[str, dict[str, Any]]:
    info = await runtime.embedded(cfg)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {info.api_key}"}, timeout=120) as http:
        r = await http.post(info.root_url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": prompt}], "max_tokens": 60, "temperature": 0})
    r.raise_for_status()
    body = r.json()
    return body["choices"][0]["message"]["content"], body["timings"]


@pytest.mark.parametrize("mode", ["ngram", "draft"])
async def test_speculation_drafts_and_keeps_the_greedy_answer(tmp_path, mode: str) -> None:
    off = llm_config("smollm2-135m-instruct", tmp_path)
    spec = copy.deepcopy(off)
    spec.llm.embedded.speculative = mode
    spec.llm.embedded.draft_model = "smollm2-135m-instruct"  # same tokenizer; the model drafting for itself
    async with LlmRuntime() as runtime:
        plain, plain_t = await complete(runtime, off, COPY)
        fast, t = await complete(runtime, spec, COPY)
        assert (await runtime.embedded(off)).root_url != (await runtime.embedded(spec)).root_url
    assert "draft_n" not in plain_t or plain_t["draft_n"] == 0
    assert t["draft_n"] > 0 and t["draft_n_accepted"] > 0, t
    assert fast == plain  # speculation only changes how fast the same tokens come


async def test_missing_draft_model_is_a_clear_error(tmp_path) -> None:
    from voice.errors import ConfigError, ModelNotAvailable

    cfg = llm_config("smollm2-135m-instruct", tmp_path)
    cfg.llm.embedded.speculative = "draft"
    cfg.llm.embedded.draft_model = str(tmp_path / "no-draft.gguf")
    async with LlmRuntime() as runtime:
        with pytest.raises((ConfigError, ModelNotAvailable), match="no-draft.gguf"):
            await runtime.embedded(cfg)
