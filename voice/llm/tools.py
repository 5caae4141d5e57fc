"""Built-in tools in the OpenAI tools format, and a parser for tool calls small models write as text.

Tools are enabled by name in ``llm.tools``: ``current_time`` and ``search_knowledge``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voice.errors import ConfigError

ToolFn = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: ToolFn
    #: Sources found by the tool (search_knowledge), for the chain's ``last_sources``.
    found: list[Any] = field(default_factory=list)

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


async def _current_time(args: dict[str, Any]) -> str:
    tz_name = args.get("timezone") if isinstance(args.get("timezone"), str) else None
    now = dt.datetime.now().astimezone()
    if tz_name:
        try:
            from zoneinfo import ZoneInfo

            now = dt.datetime.now(ZoneInfo(tz_name))
        except Exception:  # noqa: BLE001 - an unknown zone falls back to local time
            pass
    return now.strftime("%A %d %B %Y, %H:%M (%Z)")


def current_time_tool() -> Tool:
    return Tool(
        "current_time",
        "Get the current date and time.",
        {
            "type": "object",
            "properties": {"timezone": {"type": "string", "description": "IANA zone, e.g. Europe/Berlin; optional"}},
            "required": [],
        },
        _current_time,
    )


def search_knowledge_tool(kb: Any, top_k: int | None = None) -> Tool:
    tool = Tool(
        "search_knowledge",
        "Search the user's documents for passages about a topic.",
        {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what to look for"}},
            "required": ["query"],
        },
        _noop,
    )

    async def run(args: dict[str, Any]) -> str:
        from voice.llm.prompt import format_context

        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return "No query given."
        passages = await asyncio.to_thread(kb.search, query, top_k)
        tool.found.extend(passages)
        if not passages:
            return "Nothing relevant found in the documents."
        # A bare "[file > heading]" first line read to Qwen 0.5B as the start of another tool
        # call; a sentence first makes it a search result to answer from.
        return f"Found in the user's documents:\n\n{format_context(passages)}"

    tool.run = run
    return tool


async def _noop(args: dict[str, Any]) -> str:
    return ""


BUILTIN_TOOLS = ("current_time", "search_knowledge")


def make_tools(names: list[str], kb: Any = None, top_k: int | None = None) -> dict[str, Tool]:
    out: dict[str, Tool] = {}
    for name in names:
        if name == "current_time":
            out[name] = current_time_tool()
        elif name == "search_knowledge":
            if kb is not None:
                out[name] = search_knowledge_tool(kb, top_k)
        else:
            raise ConfigError(f"llm.tools: unknown tool {name!r} (built-in: {', '.join(BUILTIN_TOOLS)})")
    return out


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as sent by the model

    def args(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    def message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


_FENCE = re.compile(r"^\s*(?:```(?:json)?|<tool_call>)\s*", re.IGNORECASE)


def could_be_text_call(text: str) -> bool:
    """True while ``text`` (the answer so far) may still turn out to be a tool call as text."""
    s = text.lstrip()
    if not s:
        return True
    for opener in ("```json", "```", "<tool_call>", "{"):
        if s.startswith(opener) or opener.startswith(s):
            return True
    return False


def parse_text_calls(text: str, known: set[str]) -> list[ToolCall]:
    """Tool calls a model wrote as JSON text (``{"name": ..., "arguments": {...}}``, possibly
    fenced or in ``<tool_call>`` tags) for one of the ``known`` tools; [] when it is an answer."""
    s = _FENCE.sub("", text, count=1)
    start = s.find("{")
    if start < 0 or s[:start].strip():
        return []
    try:
        obj, _ = json.JSONDecoder().raw_decode(s[start:])
    except json.JSONDecodeError:
        return []
    if isinstance(obj, dict) and isinstance(obj.get("tool_call"), dict):
        obj = obj["tool_call"]
    if not isinstance(obj, dict) or obj.get("name") not in known:
        return []
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(args, dict):
        args = {}
    # Small models sometimes echo the schema as arguments; keep only plain values.
    args = {k: v for k, v in args.items() if k not in {"type", "properties", "required"}}
    return [ToolCall("call_text_0", str(obj["name"]), json.dumps(args))]
