"""The chain: question (+ retrieved passages + memory) -> streamed answer text.

``create_chain(cfg, kb=None, app=None)`` returns a :class:`Chain`:

- ``astream(user_text, *, turn_id)`` yields text deltas. Closing the iterator early (``aclose()``,
  or ``break`` in ``async for``) closes the HTTP stream, and llama.cpp stops generating when the
  client goes away. Cancelling the consuming task does the same.
- ``commit_assistant(turn_id, spoken_text)`` replaces the remembered answer with what was
  actually spoken (barge-in); by default memory keeps the full (or partial, if closed) answer.
- ``astream(..., tentative=True)`` answers ahead of a turn not yet confirmed (a preemptive
  answer, started during the VAD's hang-over): memory is read but not changed until
  ``confirm(turn_id)`` records the turn; ``discard(turn_id)`` forgets it.
- ``last_sources``: the passages used for the last answer (retrieval and search_knowledge).
- ``last_timings``: llama.cpp's prompt figures of the last answer (built-in chain on a llama.cpp
  server): ``prompt_n`` tokens evaluated, ``cache_n`` reused from the slot's cache.
- ``aclose()`` releases the client (and the embedded server if the chain owns the runtime).

``app`` is the shared :class:`~voice.llm.runtime.LlmRuntime` (or an object with an ``llm``
attribute holding one): pass the same one to every session so they share one embedded server.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from voice.errors import ConfigError
from voice.llm.backends import BackendError, Endpoint, backend_error
from voice.llm.memory import ConversationMemory, Turn
from voice.llm.prompt import CONTEXT_HEADER, SPEECH_SYSTEM_PROMPT, build_messages, format_context
from voice.llm.runtime import LlmRuntime
from voice.llm.slots import SlotPool
from voice.llm.tools import Tool, ToolCall, could_be_text_call, make_tools, parse_text_calls

log = logging.getLogger(__name__)


class Chain(Protocol):
    last_sources: list[Any]

    def astream(self, user_text: str, *, turn_id: int, tentative: bool = False) -> AsyncIterator[str]: ...

    def commit_assistant(self, turn_id: int, spoken_text: str) -> None: ...

    def confirm(self, turn_id: int) -> None: ...

    def discard(self, turn_id: int) -> None: ...

    async def aclose(self) -> None: ...


def _runtime_from(app: Any) -> LlmRuntime | None:
    if app is None or isinstance(app, LlmRuntime):
        return app
    rt = getattr(app, "llm", None)
    if isinstance(rt, LlmRuntime):
        return rt
    raise TypeError("app must be an LlmRuntime or have an 'llm' attribute holding one")


#: Tentative turns kept at once (the lifecycle holds one; older ones are discarded).
MAX_TENTATIVE = 4


@dataclass
class _Tentative:
    """A turn answered ahead of its confirmation; memory gets it on confirm only."""

    turn: Turn
    state: Literal["held", "confirmed", "discarded"] = "held"


class _Base:
    """Retrieval, memory and ``last_sources``, shared by the built-in and a user's chain."""

    def __init__(self, cfg: Any, kb: Any, runtime: LlmRuntime, owns_runtime: bool) -> None:
        self.cfg = cfg
        self.kb = kb
        self.runtime = runtime
        self._owns_runtime = owns_runtime
        self.memory = ConversationMemory(cfg.llm.memory_tokens)
        self.last_sources: list[Any] = []
        self._tentative: dict[int, _Tentative] = {}

    async def retrieve(self, question: str) -> list[Any]:
        """The compact context for ``question`` (``KnowledgeBase.context``: the best units within
        ``rag.context_tokens``); [] without a knowledge base."""
        if self.kb is None or not self.cfg.rag.enabled:
            return []
        return list(await asyncio.to_thread(self.kb.context, question, rag=self.cfg.rag))

    def commit_assistant(self, turn_id: int, spoken_text: str) -> None:
        self.memory.commit_assistant(turn_id, spoken_text)

    def _open_turn(self, turn_id: int, user_text: str, tentative: bool) -> tuple[list[dict[str, Any]], _Tentative | None]:
        """The history to answer ``turn_id`` with; records the user's text now, or (tentative)
        keeps it aside for :meth:`confirm`."""
        history = self.memory.history_before(turn_id)
        self.discard(turn_id)  # a new answer for the turn replaces one held for it
        if not tentative:
            self.memory.add_user(turn_id, user_text)
            return history, None
        while len(self._tentative) >= MAX_TENTATIVE:
            self.discard(next(iter(self._tentative)))
        held = self._tentative[turn_id] = _Tentative(Turn(turn_id, user_text))
        return history, held

    def _close_turn(self, turn_id: int, held: _Tentative | None, answer: str) -> None:
        """The stream ended: memory keeps ``answer`` (a tentative turn: once confirmed)."""
        if held is None or held.state == "confirmed":
            self.memory.set_assistant(turn_id, answer)
        elif held.state == "held":
            held.turn.assistant = answer

    def confirm(self, turn_id: int) -> None:
        """The tentative turn ``turn_id`` happened: memory records it, with its answer if the
        stream has ended (otherwise the answer follows when it ends, as for any turn). No-op for
        an unknown turn."""
        held = self._tentative.pop(turn_id, None)
        if held is None or held.state != "held":
            return
        held.state = "confirmed"
        self.memory.add_user(turn_id, held.turn.user)
        if held.turn.assistant:
            self.memory.set_assistant(turn_id, held.turn.assistant)

    def discard(self, turn_id: int) -> None:
        """Forget the tentative turn ``turn_id``: memory never sees it, even if its stream is
        still closing. No-op for an unknown turn."""
        held = self._tentative.pop(turn_id, None)
        if held is not None:
            held.state = "discarded"

    async def aclose(self) -> None:
        if self._owns_runtime:
            await self.runtime.aclose()


class LlmChain(_Base):
    """The built-in chain over an OpenAI-compatible server."""

    def __init__(
        self,
        cfg: Any,
        *,
        kb: Any = None,
        runtime: LlmRuntime,
        owns_runtime: bool = False,
        tool_choice: str | dict[str, Any] = "auto",
    ) -> None:
        super().__init__(cfg, kb, runtime, owns_runtime)
        self.system_prompt = cfg.llm.system_prompt or SPEECH_SYSTEM_PROMPT
        self.tools: dict[str, Tool] = make_tools(list(cfg.llm.tools), kb, cfg.rag.top_k)
        #: "auto", "required" or {"type": "function", ...} for the first round.
        self.tool_choice = tool_choice
        self._client: tuple[Any, Any, Endpoint] | None = None  # (loop, client, endpoint)
        #: Tool calls run during the last answer (name, arguments, result).
        self.last_tool_calls: list[tuple[str, dict[str, Any], str]] = []
        #: llama.cpp's timings of the last answer, summed over its requests (tool rounds):
        #: {"prompt_n", "cache_n", "prompt_ms"}; None when the server sent none (another
        #: server, or the stream was closed before its end).
        self.last_timings: dict[str, float] | None = None
        #: This conversation's llama.cpp slot on the embedded server (None: one slot, or
        #: another server); taken on the first request, given back in aclose().
        self._slot: tuple[SlotPool, int] | None = None
        self._warm: asyncio.Task[None] | None = None

    async def start(self) -> Endpoint:
        """Resolve the endpoint now (starting the embedded server) and warm the prefix."""
        client, ep = await self._get_client()
        self.warm_up(client, ep)
        return ep

    async def _get_client(self) -> tuple[Any, Endpoint]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            client, ep = await self.runtime.client(self.cfg)
            self._client = (loop, client, ep)
            if self._slot is None and (pool := self.runtime.slots(self.cfg)) is not None:
                self._slot = (pool, pool.acquire(self.prefix_key()))
        return self._client[1], self._client[2]

    def prefix_key(self) -> tuple[str, ...]:
        """What the fixed start of every prompt depends on (system prompt, tools, context header)."""
        return (self.system_prompt, *sorted(self.tools), self._warm_user())

    def _warm_user(self) -> str:
        return CONTEXT_HEADER if self.kb is not None and self.cfg.rag.enabled else "Hello."

    def warm_up(self, client: Any, ep: Endpoint) -> asyncio.Task[None] | None:
        """Prefill the fixed prefix (system prompt, tools, context header) into this chain's
        slot in the background, so the first turn evaluates only its own tokens. Only on the
        embedded server (``llm.embedded.warm_up``), once per slot and prefix; a first turn that
        comes meanwhile waits for it on the same slot instead of prefilling the prefix itself."""
        llm = self.cfg.llm
        if self._warm is not None or not llm.embedded.warm_up or llm.backend != "embedded" or llm.base_url:
            return self._warm
        key = self.prefix_key()
        if self._slot is not None:
            pool, slot = self._slot
            if pool.holds(slot, key):
                return None
            pool.mark_warm(slot, key)
        messages = build_messages(self.system_prompt, [], self._warm_user(), [])
        kwargs = self._request(ep, messages, bool(self.tools), self.tool_choice)
        kwargs.update(stream=False, max_tokens=1)
        self._warm = asyncio.ensure_future(self._warm_request(client, ep, kwargs))
        return self._warm

    async def _warm_request(self, client: Any, ep: Endpoint, kwargs: dict[str, Any]) -> None:
        sent = self._begin_slot()
        ok = False
        try:
            if sent is not None:
                kwargs["extra_body"] = {"id_slot": sent}
            await self._open(client, ep, kwargs)
            ok = True
        except Exception as err:  # noqa: BLE001 - a failed warm-up only costs the first turn time
            log.info("LLM warm-up failed: %s", err)
        finally:
            self._end_slot(sent, warm=ok)

    def _begin_slot(self) -> int | None:
        if self._slot is None:
            return None
        pool, slot = self._slot
        return pool.begin(slot)

    def _end_slot(self, sent: int | None, *, warm: bool = True) -> None:
        if self._slot is not None and sent is not None:
            pool, slot = self._slot
            pool.end(sent)
            if sent == slot:  # the slot's cache now starts with this chain's prefix (or is unknown)
                pool.mark_warm(slot, self.prefix_key() if warm else None)

    async def astream(self, user_text: str, *, turn_id: int, tentative: bool = False) -> AsyncIterator[str]:
        self.last_tool_calls = []
        for t in self.tools.values():
            t.found.clear()
        passages = await self.retrieve(user_text)
        self.last_sources = list(passages)
        history, held = self._open_turn(turn_id, user_text, tentative)
        messages = build_messages(self.system_prompt, history, user_text, passages)
        client, ep = await self._get_client()
        answer: list[str] = []
        try:
            async for delta in self._generate(client, ep, messages):
                answer.append(delta)
                yield delta
        finally:
            self._close_turn(turn_id, held, "".join(answer))
            for t in self.tools.values():
                self.last_sources.extend(p for p in t.found if p not in self.last_sources)

    async def _open(self, client: Any, ep: Endpoint, kwargs: dict[str, Any]) -> Any:
        """Send the request; the whole wait for the response (retries included) is bounded."""
        timeout = self.cfg.llm.timeout_s
        try:
            return await asyncio.wait_for(client.chat.completions.create(**kwargs), timeout)
        except TimeoutError as err:
            raise backend_error(err, ep, timeout_s=timeout) from None
        except BackendError:
            raise
        except Exception as err:
            if _is_openai_error(err):
                raise backend_error(err, ep, timeout_s=timeout) from None
            raise

    async def _generate(self, client: Any, ep: Endpoint, messages: list[dict[str, Any]]) -> AsyncIterator[str]:
        """Stream the answer, running at most one round of tool calls.

        Round 1 offers the tools. After tools ran, round 2 sends their results in the OpenAI
        format without tools. Small models sometimes answer that with the same call written as
        text; then round 3 gives the results as plain text in the user's message instead.
        """
        names = set(self.tools)
        choice: Any = self.tool_choice
        results: list[tuple[str, str]] = []
        self.last_timings = None
        warm = self._warm
        if warm is not None and not warm.done() and warm.get_loop() is asyncio.get_running_loop():
            # it may still be on its way to the server: after it, this prompt reuses its prefix
            # (before it, the warm-up would cut this turn from the slot's cache)
            await asyncio.wait({warm})
        for round_no in (1, 2, 3):
            offer = bool(self.tools) and round_no == 1
            hold = bool(self.tools) and round_no < 3
            sent = self._begin_slot()
            try:
                stream = await self._open(client, ep, self._request(ep, messages, offer, choice, id_slot=sent))
            except BaseException:
                self._end_slot(sent)
                raise
            calls: dict[int, ToolCall] = {}
            held = ""  # text held back while it may be a tool call written as text
            try:
                async for chunk in stream:
                    self._add_timings(getattr(chunk, "timings", None))
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta
                    for tc in delta.tool_calls or []:
                        call = calls.setdefault(tc.index, ToolCall(tc.id or f"call_{tc.index}", "", ""))
                        if tc.function is not None:
                            call.name += tc.function.name or ""
                            call.arguments += tc.function.arguments or ""
                    text = delta.content or ""
                    if not text:
                        continue
                    if hold:
                        held += text
                        if parse_text_calls(held, names):
                            break  # a complete call: stop generating
                        if could_be_text_call(held):
                            continue
                        hold, text, held = False, held, ""
                    yield text
            except Exception as err:
                if _is_openai_error(err):
                    raise backend_error(err, ep, timeout_s=self.cfg.llm.timeout_s) from None
                raise
            finally:
                try:
                    await stream.close()
                finally:
                    self._end_slot(sent)
            found = [c for c in calls.values() if c.name in names]
            if not found and held:
                found = parse_text_calls(held, names)
                if not found:
                    yield held
            if not found:
                return
            if round_no == 1:
                messages = [*messages, {"role": "assistant", "content": "",
                                        "tool_calls": [c.message() for c in found]}]
                for c in found:
                    args = c.args()
                    result = await self.tools[c.name].run(args)
                    self.last_tool_calls.append((c.name, args, result))
                    results.append((c.name, result))
                    messages.append({"role": "tool", "tool_call_id": c.id, "content": result})
            else:
                base = [m for m in messages if m["role"] != "tool" and not m.get("tool_calls")]
                told = "\n".join(f"- {name}: {result}" for name, result in results)
                last = dict(base[-1])
                last["content"] = f"{last['content']}\n\nTool results:\n{told}\nAnswer in plain words."
                messages = [*base[:-1], last]

    def _add_timings(self, timings: Any) -> None:
        """Add llama.cpp's ``timings`` (sent with a stream's last chunk) to :attr:`last_timings`."""
        if not isinstance(timings, dict):
            return
        keys = ("prompt_n", "cache_n", "prompt_ms")
        got = {k: float(v) for k in keys if isinstance(v := timings.get(k), int | float)}
        if len(got) < len(keys):
            return
        prev = self.last_timings or {}
        self.last_timings = {k: prev.get(k, 0.0) + got[k] for k in keys}

    def _request(self, ep: Endpoint, messages: list[dict[str, Any]], offer_tools: bool, choice: Any,
                 *, id_slot: int | None = None) -> dict[str, Any]:
        llm = self.cfg.llm
        kwargs: dict[str, Any] = {
            "model": ep.model,
            "messages": messages,
            "stream": True,
            "temperature": llm.temperature,
            "max_tokens": llm.max_tokens,
        }
        if offer_tools:
            kwargs["tools"] = [t.spec() for t in self.tools.values()]
            kwargs["tool_choice"] = choice
        if id_slot is not None:  # only on the embedded llama.cpp server (runtime.slots)
            kwargs["extra_body"] = {"id_slot": id_slot}
        return kwargs

    async def aclose(self) -> None:
        warm, self._warm = self._warm, None
        if warm is not None and not warm.done():
            warm.cancel()
            await asyncio.gather(warm, return_exceptions=True)
        if self._slot is not None:
            pool, slot = self._slot
            self._slot = None
            pool.release(slot)
        if self._client is not None:
            loop, client, _ = self._client
            self._client = None
            if loop is asyncio.get_running_loop():
                await client.close()
        await super().aclose()


def _is_openai_error(err: BaseException) -> bool:
    import openai

    return isinstance(err, openai.OpenAIError)


class ExternalChain(_Base):
    """A user's chain (anything with ``astream``, e.g. a LangChain Runnable) from ``llm.chain``.

    It receives a dict: ``input``/``question`` (the user's text), ``history`` (chat messages),
    ``context`` (retrieved passages as text with sources) and ``passages`` (the objects). String
    chunks, or chunks with a ``content``/``text`` attribute, are streamed out.

    ``obj`` may instead be a :class:`ChainFactory` (``llm.chain`` names a function taking
    ``(cfg, endpoint)``): it is built on the first answer, once the endpoint is known (the
    embedded llama.cpp server started), so a LangChain chat model can point at it.
    """

    def __init__(self, obj: Any, cfg: Any, *, kb: Any, runtime: LlmRuntime, owns_runtime: bool) -> None:
        super().__init__(cfg, kb, runtime, owns_runtime)
        self.obj = obj

    async def start(self) -> Endpoint:
        """Resolve the endpoint now (starting the embedded server) and build a deferred chain."""
        ep = await self.runtime.endpoint(self.cfg)
        if isinstance(self.obj, ChainFactory):
            self.obj = self.obj.build(self.cfg, ep)
        return ep

    async def astream(self, user_text: str, *, turn_id: int, tentative: bool = False) -> AsyncIterator[str]:
        if isinstance(self.obj, ChainFactory):
            await self.start()
        passages = await self.retrieve(user_text)
        self.last_sources = list(passages)
        history, held = self._open_turn(turn_id, user_text, tentative)
        payload = {
            "input": user_text,
            "question": user_text,
            "history": history,
            "context": format_context(passages),
            "passages": passages,
        }
        inner = self.obj.astream(payload)
        answer: list[str] = []
        try:
            async for chunk in inner:
                text = _chunk_text(chunk)
                if text:
                    answer.append(text)
                    yield text
        finally:
            close = getattr(inner, "aclose", None)
            if close is not None:
                await close()
            self._close_turn(turn_id, held, "".join(answer))


def _chunk_text(chunk: Any) -> str:
    if isinstance(chunk, str):
        return chunk
    for attr in ("content", "text"):
        value = getattr(chunk, attr, None)
        if isinstance(value, str):
            return value
    if isinstance(chunk, dict):
        for key in ("answer", "output", "text", "content"):
            if isinstance(chunk.get(key), str):
                return str(chunk[key])
    return ""


class ChainFactory:
    """A ``(cfg, endpoint) -> chain`` function from ``llm.chain``, built when the endpoint is known."""

    def __init__(self, spec: str, fn: Any) -> None:
        self.spec = spec
        self.fn = fn

    def build(self, cfg: Any, endpoint: Endpoint) -> Any:
        try:
            obj = self.fn(cfg, endpoint)
        except Exception as err:  # noqa: BLE001 - a factory that fails is a config problem here
            raise ConfigError(f"llm.chain = {self.spec!r}: calling it with (cfg, endpoint) failed ({err})") from None
        return _check_chain(self.spec, obj, what=f"what {self.spec} returned")


_EXPECTED = (
    "expected a LangChain Runnable (or any object whose astream(payload) yields text), or a function"
    " taking (cfg) or (cfg, endpoint) that returns one"
)


def _binds(fn: Any, *args: Any) -> bool:
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): let the call decide
        return True
    return True


def _check_chain(spec: str, obj: Any, *, what: str) -> Any:
    """``obj`` if it can stream a payload: an ``astream`` method that takes one argument."""
    astream = getattr(obj, "astream", None)
    if astream is None:
        raise ConfigError(f"llm.chain = {spec!r}: {what} is a {type(obj).__name__} with no astream method; {_EXPECTED}")
    if not callable(astream) or not _binds(astream, {}):
        raise ConfigError(f"llm.chain = {spec!r}: {what} has an astream that cannot take one payload dict; {_EXPECTED}")
    return obj


def load_chain_object(spec: str, cfg: Any) -> Any:
    """Import ``module:attribute``: a chain (has ``astream``), or a factory.

    A factory taking ``(cfg)`` is called now; one taking ``(cfg, endpoint)`` comes back as a
    :class:`ChainFactory`, called once the endpoint is known. Anything else is a ConfigError
    that says what was found and what is expected.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"llm.chain = {spec!r}: expected 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"llm.chain = {spec!r}: cannot import {module_name} ({err})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"llm.chain = {spec!r}: {module_name} has no attribute {attr}") from None
    if hasattr(obj, "astream"):
        return _check_chain(spec, obj, what=attr)
    if not callable(obj):
        raise ConfigError(f"llm.chain = {spec!r}: {attr} is a {type(obj).__name__} with no astream method; {_EXPECTED}")
    if _binds(obj, cfg, None):
        return ChainFactory(spec, obj)
    if _binds(obj, cfg):
        try:
            made = obj(cfg)
        except Exception as err:  # noqa: BLE001 - a factory that fails is a config problem here
            raise ConfigError(f"llm.chain = {spec!r}: calling it with the config failed ({err})") from None
        return _check_chain(spec, made, what=f"what {attr}(cfg) returned")
    raise ConfigError(f"llm.chain = {spec!r}: {attr} has no astream method and takes neither (cfg) nor"
                      f" (cfg, endpoint); {_EXPECTED}")


def create_chain(cfg: Any, kb: Any = None, app: Any = None, **kwargs: Any) -> LlmChain | ExternalChain:
    """The chain configured by ``cfg`` (``llm.chain`` or the built-in one)."""
    runtime = _runtime_from(app)
    owns = runtime is None
    rt = runtime if runtime is not None else LlmRuntime()
    if cfg.llm.chain:
        return ExternalChain(load_chain_object(cfg.llm.chain, cfg), cfg, kb=kb, runtime=rt, owns_runtime=owns)
    return LlmChain(cfg, kb=kb, runtime=rt, owns_runtime=owns, **kwargs)
