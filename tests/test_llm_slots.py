"""Prefix caching: each conversation on its own llama.cpp slot, its system prompt warmed at start,
checked with llama.cpp's own timings (prompt tokens evaluated vs reused from the cache)."""

from __future__ import annotations

import pytest

from voice.llm import LlmRuntime, create_chain
from voice.llm.slots import ANY_SLOT, SlotPool

SYSTEM = ("You are a helpful assistant for a small bakery. You answer questions about bread, opening "
          "hours and cakes in short spoken sentences, politely and without lists. ") * 3


def test_pool_gives_each_conversation_its_own_slot_then_shares_the_least_recently_used():
    pool = SlotPool(3)
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()
    assert sorted([a, b, c]) == [0, 1, 2]
    for s in (a, c, b):  # a is now the least recently used
        pool.end(pool.begin(s))
    d = pool.acquire()  # a fourth conversation: more than slots, shares a's
    assert d == a and pool.owners(a) == 2
    assert pool.begin(a) == a  # a's request runs on its slot ...
    assert pool.begin(d) == ANY_SLOT  # ... so d's goes to any idle slot instead of waiting
    pool.end(ANY_SLOT)
    pool.end(a)
    assert pool.begin(d) == d  # idle again: back on the shared slot
    pool.end(d)
    pool.release(b)
    assert pool.acquire() == b  # a freed slot is handed out before sharing
    with pytest.raises(ValueError):
        SlotPool(0)


def test_pool_prefers_a_free_slot_that_already_holds_the_prefix():
    pool = SlotPool(3)
    s0, s1 = pool.acquire(), pool.acquire()
    pool.mark_warm(s1, "prefix")
    pool.release(s0)
    pool.release(s1)
    assert pool.acquire("prefix") == s1 and pool.holds(s1, "prefix")
    assert pool.acquire("other") == s0


def test_only_the_embedded_server_gets_slot_ids(smol_cfg):
    rt = LlmRuntime()
    assert rt.slots(smol_cfg) is not None  # embedded, 2 slots by default
    one = smol_cfg.llm.embedded.parallel
    smol_cfg.llm.embedded.parallel = 1
    assert rt.slots(smol_cfg) is None  # one slot: nothing to choose
    smol_cfg.llm.embedded.parallel = one
    smol_cfg.llm.base_url = "http://127.0.0.1:9/v1"  # the user's own server: no llama.cpp fields
    assert rt.slots(smol_cfg) is None
    smol_cfg.llm.base_url = None
    smol_cfg.llm.backend = "ollama"
    assert rt.slots(smol_cfg) is None
    chain = create_chain(smol_cfg, app=rt)
    from voice.llm.backends import Endpoint

    kwargs = chain._request(Endpoint("ollama", "http://x/v1", "m"), [], False, "auto")
    assert "extra_body" not in kwargs


async def _turn(chain, text: str, turn_id: int) -> dict[str, float]:
    _ = "".join([d async for d in chain.astream(text, turn_id=turn_id)])
    assert chain.last_timings is not None, "llama.cpp sent no timings"
    return chain.last_timings


def _cfg(smol_cfg, *, warm: bool, parallel: int = 2):
    smol_cfg.llm.system_prompt = SYSTEM
    smol_cfg.llm.max_tokens = 12
    smol_cfg.llm.embedded.warm_up = warm
    smol_cfg.llm.embedded.parallel = parallel
    return smol_cfg


@pytest.mark.slow
async def test_warm_up_prefills_the_system_prompt_so_the_first_turn_evaluates_only_its_own_tokens(smol_cfg):
    async with LlmRuntime() as rt:
        cold = create_chain(_cfg(smol_cfg, warm=False), app=rt)
        await cold.start()
        whole = await _turn(cold, "When do you open on Sunday?", 1)
        assert whole["cache_n"] == 0  # a fresh slot: the whole prompt is evaluated
        warm = create_chain(_cfg(smol_cfg, warm=True), app=rt)
        await warm.start()
        assert warm._slot is not None and warm._slot[1] != cold._slot[1]
        await warm._warm  # the warm-up request (a first turn would queue behind it on the slot)
        first = await _turn(warm, "When do you open on Sunday?", 1)
        assert first["prompt_n"] + first["cache_n"] == whole["prompt_n"]  # the same prompt
        assert first["cache_n"] >= 0.7 * whole["prompt_n"]  # the system prompt came from the cache
        assert first["prompt_n"] <= 20  # the question and its template tokens
        await cold.aclose()
        await warm.aclose()


@pytest.mark.slow
async def test_each_conversation_keeps_its_prefix_on_its_own_slot(smol_cfg):
    async with LlmRuntime() as rt:
        a = create_chain(_cfg(smol_cfg, warm=True), app=rt)
        b = create_chain(_cfg(smol_cfg, warm=True), app=rt)
        await a.start()
        await b.start()
        prev: dict[str, dict[str, float]] = {}
        for turn in range(1, 4):  # alternating turns, as two users of one server
            for name, chain in (("a", a), ("b", b)):
                t = await _turn(chain, f"Question {turn} from {name}: what bread do you bake today?", turn)
                if name in prev:
                    # everything the previous turn's prompt held is reused; only new tokens run
                    assert t["cache_n"] >= prev[name]["prompt_n"] + prev[name]["cache_n"], (name, turn, t)
                    assert t["prompt_n"] <= 40, (name, turn, t)
                prev[name] = t
        pool = rt.slots(a.cfg)
        assert pool is not None
        slot_a = a._slot[1]
        await a.aclose()
        assert pool.owners(slot_a) == 0  # given back when the conversation ends
        await b.aclose()


@pytest.mark.slow
async def test_with_one_shared_slot_two_conversations_evict_each_others_history(smol_cfg):
    # the counter-test: the same alternating turns on one slot reuse only the system prompt
    async with LlmRuntime() as rt:
        a = create_chain(_cfg(smol_cfg, warm=False, parallel=1), app=rt)
        b = create_chain(_cfg(smol_cfg, warm=False, parallel=1), app=rt)
        totals: dict[str, float] = {}
        for turn in (1, 2):
            for name, chain in (("a", a), ("b", b)):
                t = await _turn(chain, f"Question {turn} from {name}: what bread do you bake today?", turn)
                if turn == 2:
                    assert t["cache_n"] < totals[name], (name, t)  # its first turn was evicted
                    assert t["prompt_n"] > 40, (name, t)
                totals[name] = t["prompt_n"] + t["cache_n"]
        await a.aclose()
        await b.aclose()
