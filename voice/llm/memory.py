"""Conversation memory bounded by a token budget (sans-I/O).

Each turn holds the user's text and the assistant's text; :meth:`commit_assistant` replaces the
assistant's text with what was actually spoken when barge-in cut the answer short. Retrieved
context is not stored: only what was said. Oldest turns are dropped to fit the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: about four characters per token, plus message overhead."""
    return (len(text) + 3) // 4 + 4


@dataclass
class Turn:
    turn_id: int
    user: str
    assistant: str = ""


class ConversationMemory:
    """Turns in order, trimmed to ``budget_tokens`` when read."""

    def __init__(self, budget_tokens: int, count: Callable[[str], int] = estimate_tokens) -> None:
        self.budget_tokens = budget_tokens
        self.count = count
        self.turns: list[Turn] = []

    def _find(self, turn_id: int) -> Turn | None:
        for t in reversed(self.turns):
            if t.turn_id == turn_id:
                return t
        return None

    def add_user(self, turn_id: int, text: str) -> None:
        """Start turn ``turn_id`` (a repeated id replaces that turn)."""
        self.turns = [t for t in self.turns if t.turn_id != turn_id]
        self.turns.append(Turn(turn_id, text))

    def set_assistant(self, turn_id: int, text: str) -> bool:
        """Record the assistant's answer for ``turn_id``; False when the turn is unknown."""
        t = self._find(turn_id)
        if t is None:
            return False
        t.assistant = text
        return True

    commit_assistant = set_assistant

    def messages(self) -> list[dict[str, Any]]:
        """The newest turns that fit the budget, as chat messages (oldest first).

        A turn whose answer was cut before anything was spoken contributes only its user text,
        merged with the next user message so roles keep alternating.
        """
        kept: list[Turn] = []
        used = 0
        for t in reversed(self.turns):
            cost = self.count(t.user) + (self.count(t.assistant) if t.assistant else 0)
            if used + cost > self.budget_tokens:
                break
            kept.append(t)
            used += cost
        out: list[dict[str, Any]] = []
        for t in reversed(kept):
            if out and out[-1]["role"] == "user":
                out[-1]["content"] += "\n" + t.user
            else:
                out.append({"role": "user", "content": t.user})
            if t.assistant:
                out.append({"role": "assistant", "content": t.assistant})
        return out

    def history_before(self, turn_id: int) -> list[dict[str, Any]]:
        """Messages for every turn except ``turn_id`` (the one being answered)."""
        saved = self.turns
        self.turns = [t for t in saved if t.turn_id != turn_id]
        try:
            return self.messages()
        finally:
            self.turns = saved

    def clear(self) -> None:
        self.turns.clear()
