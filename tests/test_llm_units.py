"""LLM room without a server: presets, keys, memory, prompt, text tool calls, user chains."""

from __future__ import annotations

import json

import pytest

from voice.config import to_toml
from voice.errors import ConfigError
from voice.llm.backends import PRESETS, resolve_endpoint, scrub
from voice.llm.memory import ConversationMemory
from voice.llm.prompt import CONTEXT_HEADER, SPEECH_SYSTEM_PROMPT, build_messages
from voice.llm.tools import could_be_text_call, make_tools, parse_text_calls


def test_presets_cover_every_backend(cfg):
    assert set(PRESETS) == {"embedded", "ollama", "llamacpp", "vllm", "openai", "gemini"}
    cfg.llm.backend = "ollama"
    ep = resolve_endpoint(cfg.llm, environ={})
    assert ep.base_url == "http://127.0.0.1:11434/v1" and ep.api_key is None
    cfg.llm.backend = "gemini"
    ep = resolve_endpoint(cfg.llm, environ={"GEMINI_API_KEY": "g-123456"})
    assert "generativelanguage" in ep.base_url and ep.api_key == "g-123456"


def test_overrides_win_over_preset(cfg):
    cfg.llm.backend = "vllm"
    cfg.llm.base_url = "http://10.0.0.5:9000/v1/"
    cfg.llm.model = "my-model"
    cfg.llm.api_key_env = "MY_KEY"
    ep = resolve_endpoint(cfg.llm, environ={"MY_KEY": "k-abcdef"})
    assert (ep.base_url, ep.model, ep.api_key) == ("http://10.0.0.5:9000/v1", "my-model", "k-abcdef")


def test_missing_key_names_the_variable_not_a_value(cfg):
    cfg.llm.backend = "openai"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_endpoint(cfg.llm, environ={})


def test_unknown_backend_is_a_config_error(cfg):
    cfg.llm.backend = "nope"
    with pytest.raises(ConfigError, match="not one of"):
        resolve_endpoint(cfg.llm, environ={})


def test_key_never_in_repr_config_or_scrubbed_text(cfg):
    secret = "sk-unit-test-secret-0042"
    cfg.llm.backend = "openai"
    ep = resolve_endpoint(cfg.llm, environ={"OPENAI_API_KEY": secret})
    assert secret not in repr(ep) and secret not in str(ep)
    assert secret not in to_toml(cfg)
    assert scrub(f"bad key {secret}!", secret) == "bad key ***!"


def test_memory_keeps_turns_within_budget():
    mem = ConversationMemory(budget_tokens=60)
    for i in range(10):
        mem.add_user(i, f"question number {i} " * 3)
        mem.set_assistant(i, f"answer number {i} " * 3)
    msgs = mem.messages()
    assert msgs and msgs[-1]["content"].startswith("answer number 9")
    assert sum(mem.count(m["content"]) for m in msgs) <= 60
    assert len(msgs) < 20


def test_commit_assistant_keeps_only_what_was_spoken():
    mem = ConversationMemory(1000)
    mem.add_user(1, "tell me a story")
    mem.set_assistant(1, "Once upon a time there was a dragon who loved tea.")
    mem.commit_assistant(1, "Once upon a time")
    assert mem.messages()[-1] == {"role": "assistant", "content": "Once upon a time"}
    # Nothing spoken: the user's text stays, merged with the next question.
    mem.add_user(2, "stop")
    mem.commit_assistant(2, "")
    mem.add_user(3, "what now?")
    mem.set_assistant(3, "Okay.")
    roles = [m["role"] for m in mem.messages()]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert "stop\nwhat now?" in mem.messages()[2]["content"]
    assert mem.history_before(3)[-1]["content"] == "stop"


class _P:
    def __init__(self, text: str, source: str, score: float = 0.9) -> None:
        self.text, self.source, self.score = text, source, score


def test_prompt_is_for_speech_and_carries_sources():
    assert "markdown" in SPEECH_SYSTEM_PROMPT and "numbers" in SPEECH_SYSTEM_PROMPT.lower()
    msgs = build_messages("sys", [{"role": "user", "content": "hi"}], "Who is Bo?",
                          [_P("Bo is a goat.", "/docs/farm/animals.md")])
    assert msgs[0] == {"role": "system", "content": "sys"}
    assert "animals.md" in msgs[-1]["content"] and "Bo is a goat." in msgs[-1]["content"]
    assert msgs[-1]["content"].endswith("Who is Bo?")
    assert build_messages("s", [], "plain", [])[-1]["content"] == "plain"


class _T(_P):
    def __init__(self, text: str, source: str, title: str = "") -> None:
        super().__init__(text, source)
        self.title = title


def test_context_is_best_last_one_field_per_line_and_the_question_last():
    best = _T("topic: Printer; where: Room 2.14; details: A3 and A4; toner in the cupboard", "/d/office.csv")
    other = _T("Open 8 to 4.\nClosed on Sundays.", "/d/shop.md", "Shop > Hours")
    msg = build_messages("sys", [], "Where is the printer?", [best, other])[-1]["content"]
    assert msg.index("[shop.md > Shop > Hours]") < msg.index("[office.csv]")  # best nearest the question
    assert "\nwhere: Room 2.14\ndetails: A3 and A4; toner in the cupboard\n" in msg  # ";" inside a field stays
    assert "Open 8 to 4.\nClosed on Sundays." in msg
    assert msg.endswith("\nQuestion: Where is the printer?")


def test_the_prompt_prefix_before_the_passages_is_the_same_for_every_question():
    import os

    a = build_messages(SPEECH_SYSTEM_PROMPT, [], "Q one?", [_T("Alpha.", "/a.md", "A")])
    b = build_messages(SPEECH_SYSTEM_PROMPT, [], "Q two?", [_T("Beta.", "/b.txt")])
    assert a[0] == b[0]
    common = os.path.commonprefix([a[-1]["content"], b[-1]["content"]])
    assert common == CONTEXT_HEADER + "[" and CONTEXT_HEADER.endswith("Context from my documents:\n\n")


def test_text_tool_calls_are_recognised():
    known = {"current_time"}
    fenced = '```json\n{"name": "current_time", "arguments": {"type": "object"}}\n```'
    [call] = parse_text_calls(fenced, known)
    assert call.name == "current_time" and json.loads(call.arguments) == {}
    tagged = '<tool_call>\n{"name": "current_time", "arguments": {"timezone": "UTC"}}\n</tool_call>'
    assert parse_text_calls(tagged, known)[0].args() == {"timezone": "UTC"}
    assert parse_text_calls('{"name": "rm_rf", "arguments": {}}', known) == []
    assert parse_text_calls("It is {probably} late.", known) == []
    assert could_be_text_call("  ```js") and could_be_text_call("{") and not could_be_text_call("It is")


def test_unknown_tool_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown tool"):
        make_tools(["launch_rockets"])


async def test_current_time_tool_answers():
    tool = make_tools(["current_time"])["current_time"]
    text = await tool.run({})
    assert any(str(y) in text for y in range(2024, 2100))


async def test_user_chain_from_config(cfg):
    from voice.llm import create_chain

    cfg.llm.chain = "tests.helpers.llm:echo_chain"
    chain = create_chain(cfg)
    out = "".join([d async for d in chain.astream("hello there", turn_id=1)])
    assert out.strip() == "you said hello there after 0 messages"
    out2 = "".join([d async for d in chain.astream("again", turn_id=2)])
    assert "after 2 messages" in out2  # memory passed on to the user's chain
    await chain.aclose()


def test_bad_user_chain_spec_is_a_config_error(cfg):
    from voice.llm import create_chain

    for spec in ("nocolon", "no_such_module_xyz:thing", "json:no_such_attr", "json:dumps"):
        cfg.llm.chain = spec
        with pytest.raises(ConfigError):
            create_chain(cfg)
