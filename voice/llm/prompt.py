"""The system prompt written for speech, and how retrieved passages enter the messages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPEECH_SYSTEM_PROMPT = """\
You are a helpful voice assistant. Your answers are spoken aloud by a speech synthesizer.
Answer in one to three short sentences unless the user asks for more.
Write plain spoken sentences only: no markdown, no lists, no headings, no tables, no code, \
no emojis, no URLs.
Say numbers plainly, the way a person reads them aloud, and avoid symbols and abbreviations.
When context from the user's documents is given, answer from it and name the document you \
used; if the context does not contain the answer, say you do not know rather than guessing."""


def source_name(source: str) -> str:
    """A short, speakable name for a document path (its file name)."""
    return Path(source).name or source


def format_context(passages: Sequence[Any]) -> str:
    """Passages as a numbered context block, each with its source's name."""
    lines = []
    for i, p in enumerate(passages, 1):
        title = getattr(p, "title", "")
        where = f" ({title})" if title else ""
        lines.append(f"[{i}] From the document \"{source_name(p.source)}\"{where}:\n{p.text.strip()}")
    return "\n\n".join(lines)


def user_message(question: str, passages: Sequence[Any]) -> str:
    """The last user message: the question, preceded by retrieved context when there is some.

    Context goes into the last message (not the system prompt) so the system prompt and the
    earlier turns stay a stable prefix that the server can reuse from its prompt cache.
    """
    if not passages:
        return question
    return (
        "Context from my documents:\n\n"
        f"{format_context(passages)}\n\n"
        f"Using the context above, answer briefly and name the document: {question}"
    )


def build_messages(
    system: str, history: Sequence[dict[str, Any]], question: str, passages: Sequence[Any]
) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system},
        *history,
        {"role": "user", "content": user_message(question, passages)},
    ]
