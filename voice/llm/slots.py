"""``SlotPool``: which llama.cpp slot each conversation's requests go to (sans-I/O, thread-safe).

A slot keeps the KV cache of the last prompt it evaluated, so a conversation that always uses
the same slot has its system prompt and history prefilled once: each turn evaluates only its
new tokens. Without a slot id llama.cpp picks the idle slot whose cache is most similar, and
conversations that share a system prompt end up on one slot, evicting each other's history.

Bounded: at most ``n_slots`` conversations have a slot of their own. Beyond that a new one
shares the least recently used slot (the two then evict each other's history, as without a
pool). A request whose slot is busy with another conversation's answer goes to whichever slot
is idle (``-1``) instead of waiting for it.
"""

from __future__ import annotations

import threading

#: llama.cpp's "any idle slot".
ANY_SLOT = -1


class SlotPool:
    """Slot ids ``0 .. n_slots-1`` handed to conversations; see the module docstring."""

    def __init__(self, n_slots: int) -> None:
        if n_slots < 1:
            raise ValueError("n_slots must be at least 1")
        self.n_slots = n_slots
        self._owners = [0] * n_slots  # conversations holding each slot
        self._busy = [0] * n_slots  # requests in flight on each slot
        self._used = [0] * n_slots  # logical clock of the last acquire or request
        self._warm: list[object | None] = [None] * n_slots  # prefix each slot holds (warm-up)
        self._clock = 0
        self._lock = threading.Lock()

    def _tick(self, slot: int) -> None:
        self._clock += 1
        self._used[slot] = self._clock

    def acquire(self, prefix: object = None) -> int:
        """A slot for a new conversation: a free one (one already holding ``prefix`` first, then
        the lowest id), else the least recently used."""
        with self._lock:
            free = [s for s in range(self.n_slots) if self._owners[s] == 0]
            warm = [s for s in free if prefix is not None and self._warm[s] == prefix]
            if warm or free:
                slot = (warm or free)[0]
            else:
                slot = min(range(self.n_slots), key=lambda s: self._used[s])
            self._owners[slot] += 1
            self._tick(slot)
            return slot

    def release(self, slot: int) -> None:
        """The conversation holding ``slot`` ended (its cache stays for the next one)."""
        with self._lock:
            if self._owners[slot] > 0:
                self._owners[slot] -= 1

    def begin(self, slot: int) -> int:
        """A request of ``slot``'s conversation starts: the id to send (``slot``, or
        :data:`ANY_SLOT` while another conversation sharing it has a request in flight)."""
        with self._lock:
            self._tick(slot)
            if self._busy[slot] and self._owners[slot] > 1:
                return ANY_SLOT
            self._busy[slot] += 1
            return slot

    def end(self, sent: int) -> None:
        """The request that :meth:`begin` answered with ``sent`` is over."""
        if sent == ANY_SLOT:
            return
        with self._lock:
            self._busy[sent] = max(0, self._busy[sent] - 1)

    def owners(self, slot: int) -> int:
        with self._lock:
            return self._owners[slot]

    def holds(self, slot: int, prefix: object) -> bool:
        """Whether ``slot`` was warmed with ``prefix`` (see :meth:`mark_warm`)."""
        with self._lock:
            return self._warm[slot] == prefix

    def mark_warm(self, slot: int, prefix: object) -> None:
        """``slot``'s cache starts with ``prefix`` (a key such as the system prompt's hash)."""
        with self._lock:
            self._warm[slot] = prefix
