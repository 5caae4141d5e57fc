"""A LangChain (LCEL) chain as voice's ``llm.chain``: prompt | chat model | output parser.

Use it (from the repository root)::

    pip install langchain-core==1.8.3 langchain-openai==1.7.4
    PYTHONPATH=docs/examples voice chat --set llm.chain=langchain_chain:make_chain

``make_chain(cfg, endpoint)`` is called once the endpoint is known: with the default
``llm.backend = "embedded"`` that is voice's own llama.cpp server (started on a free loopback
port with a random key), otherwise the configured OpenAI-compatible server. voice calls
``chain.astream(payload)`` for every turn and speaks the text as it streams in. The payload:

- ``input`` (and ``question``): what the user said;
- ``history``: earlier turns as ``{"role": ..., "content": ...}`` dicts (voice's memory, trimmed
  to what was actually spoken after a barge-in);
- ``context``: the retrieved passages as numbered text with their documents' names ("" if none);
- ``passages``: the passage objects (``text``, ``source``, ``score``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_openai import ChatOpenAI

from voice.llm.prompt import SPEECH_SYSTEM_PROMPT


def _with_context(payload: dict[str, Any]) -> str:
    """The user's turn, preceded by the retrieved passages when there are any."""
    if not payload.get("context"):
        return str(payload["input"])
    return f"Context from the user's documents:\n{payload['context']}\n\nQuestion: {payload['input']}"


def make_chain(cfg: Any, endpoint: Any) -> Runnable[Any, str]:
    """prompt | ChatOpenAI (at ``endpoint``) | StrOutputParser, streaming text token by token."""
    prompt = ChatPromptTemplate.from_messages([
        ("system", "{system}"),
        MessagesPlaceholder("history"),
        ("human", "{turn}"),
    ]).partial(system=cfg.llm.system_prompt or SPEECH_SYSTEM_PROMPT)
    model = ChatOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or "not-needed",  # local servers want none; the client insists
        model=endpoint.model,
        temperature=cfg.llm.temperature,
        max_completion_tokens=cfg.llm.max_tokens,
        timeout=cfg.llm.timeout_s,
        max_retries=cfg.llm.max_retries,
        streaming=True,
    )
    return RunnablePassthrough.assign(turn=_with_context) | prompt | model | StrOutputParser()
