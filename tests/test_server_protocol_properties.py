"""Property-based tests of the realtime protocol core (Hypothesis, derandomized).

A state machine drives :class:`RealtimeProtocol` the way the session shell does, without
sockets: arbitrary client messages (any JSON, any text or bytes, valid-shaped events with values
of the wrong type or size, events out of order) interleaved with pipeline progress. Invariants
after every step:

- ``receive`` never raises; it returns server events, bytes and commands only, and every server
  event serializes as strict JSON (no NaN or Infinity, which browsers cannot parse);
- a message that is not a valid client event gets exactly one ``error`` event and no command;
  an ``error`` carries the client's ``event_id`` when it was a usable string;
- at most one response is active: ``response.create`` while one runs is an error, the pipeline
  starting a second one is ignored, and ``response.cancel`` names the active one;
- server-made ids are unique: event ids, response ids, and item ids (no client-given item id
  is ever one the server made or will make);
- with turn detection off an accepted append never takes the uncommitted buffer past
  :data:`MAX_BUFFER_S`, and commit, clear and speech_stopped empty it.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from voice.pipeline.turns import PlaybackLedger
from voice.server import events as ev
from voice.server import protocol as p

MAX_MESSAGE = 65536
LIMIT_BYTES = p.MAX_BUFFER_S * 1000 * 24000 * 2 / 1000

_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_json = st.recursive(_json_scalar, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
#: Values of the wrong type or size for any field.
_junk = st.one_of(_json, st.sampled_from([None, -1, 0, 2**63, 10**30, -(10**30), 1.5, "", "x" * 5000, [], {},
                                          True, {"type": "audio/pcm"}, [{"type": "input_text"}]]))
_event_id = st.one_of(st.none(), st.text(max_size=12), st.just("e" * 600), st.integers(), st.just(["x"]))

_USER_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}
_TEMPLATES: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"voice": "piper-joe-medium"}},
    {"type": "session.update", "session": {"turn_detection": None}},
    {"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}},
    {"type": "session.update", "session": {"audio": {"output": {"speed": 1.2}}}},
    {"type": "session.update", "session": {"voice_binary_audio": True}},
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x00" * 2400).decode()},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "item": _USER_ITEM},
    {"type": "response.create"},
    {"type": "response.create", "response": {"instructions": "Be brief."}},
    {"type": "response.cancel"},
    {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 100},
]


def _is_event(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"] in ev.CLIENT_EVENTS


def _strict_json(obj: Any) -> None:
    json.dumps(obj, allow_nan=False)


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.proto = p.RealtimeProtocol(voices=("piper-joe-medium",), max_message_bytes=MAX_MESSAGE, id_prefix="s1_")
        self.event_ids: set[str] = set()
        self.response_ids: set[str] = set()
        self.server_items: set[str] = set()
        self.client_items: set[str] = set()
        self.requested: list[str] = []  # CreateResponse ids the "shell" has not started yet
        self.spoken_items: list[str] = []
        # what the answers wrote to the sink, booked as the Answer does (24 kHz samples)
        self.sink_end = 0
        self.playing: PlaybackLedger | None = None  # the active response's
        self.played: PlaybackLedger | None = None  # the last assistant item's
        self.announced: str | None = None  # the item speech_started named; its commit reuses it
        self._emit(self.proto.start())

    # ------------------------------------------------------------------ bookkeeping

    def _emit(self, out: list[Any]) -> list[Any]:
        """Check what the protocol returned, the same way for every step."""
        assert isinstance(out, list)
        for o in out:
            assert isinstance(o, ev.ServerEvent | bytes | p.Command), type(o)
            if isinstance(o, ev.ServerEvent):
                d = o.to_dict()
                _strict_json(d)
                assert d["event_id"] not in self.event_ids, f"event id {d['event_id']} used twice"
                self.event_ids.add(d["event_id"])
                if isinstance(o, ev.ResponseCreated):
                    rid = o.response["id"]
                    assert rid not in self.response_ids, f"response id {rid} used twice"
                    self.response_ids.add(rid)
                    item = o.response.get("output") or []
                    assert not item  # in_progress carries no output yet
            if isinstance(o, p.CreateResponse):
                assert not self.proto.response_active
                self.requested.append(o.response_id)
        return out

    def _errors(self, out: list[Any]) -> list[dict[str, Any]]:
        return [o.error for o in out if isinstance(o, ev.ErrorEvent)]

    def _receive(self, message: str | bytes) -> list[Any]:
        active_before = self.proto.response_active
        buffered_before = self.proto._buffered_bytes
        out = self._emit(self.proto.receive(message))
        errs = self._errors(out)
        assert len(errs) <= 1, errs
        if errs:
            assert not any(isinstance(o, p.Command) for o in out), out
            assert len(out) == 1
            assert self.proto.response_active == active_before
            assert self.proto._buffered_bytes == buffered_before  # a refused message changes nothing
            _strict_json(errs[0])
            assert isinstance(errs[0]["message"], str) and len(errs[0]["message"]) < 600
        for o in out:
            if isinstance(o, p.AppendAudio) and self.proto.settings.turn_detection is None:
                assert self.proto._buffered_bytes <= LIMIT_BYTES
            if isinstance(o, ev.InputAudioBufferCommitted):
                assert self.proto._buffered_bytes == 0
                self._committed(o.item_id)
            if isinstance(o, ev.ConversationItemCreated):
                self._new_item(o.item["id"], server=o.item["id"] not in self._client_ids(message))
        return out

    @staticmethod
    def _client_ids(message: str | bytes) -> set[str]:
        try:
            item = json.loads(message).get("item", {})
        except (ValueError, AttributeError):
            return set()
        return {item["id"]} if isinstance(item, dict) and isinstance(item.get("id"), str) else set()

    def _committed(self, item_id: str) -> None:
        if item_id == self.announced:
            self.announced = None
        else:
            self._new_item(item_id, server=True)

    def _new_item(self, item_id: str, *, server: bool) -> None:
        assert item_id not in self.server_items, f"item id {item_id} is a server-made id already"
        if server:
            assert item_id not in self.client_items, f"server-made item id {item_id} is a client's"
            self.server_items.add(item_id)
        else:
            self.client_items.add(item_id)

    def _expect_one_error(self, out: list[Any], event_id: Any = None) -> dict[str, Any]:
        errs = self._errors(out)
        assert len(errs) == 1, out
        if isinstance(event_id, str) and len(event_id) <= 512:
            assert errs[0]["event_id"] == event_id
        return errs[0]

    # ------------------------------------------------------------------ client: anything at all

    @rule(value=_json)
    def any_json(self, value: Any) -> None:
        out = self._receive(json.dumps(value))
        if not _is_event(value):
            self._expect_one_error(out)

    @rule(text=st.text(max_size=200))
    def any_text(self, text: str) -> None:
        out = self._receive(text)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not _is_event(data):
            self._expect_one_error(out)

    @rule(data=st.binary(max_size=64))
    def any_bytes(self, data: bytes) -> None:
        out = self._receive(data)
        if not self.proto.settings.binary_audio or len(data) % 2:
            self._expect_one_error(out)

    @rule(text=st.sampled_from(["NaN", "Infinity", "-Infinity", '{"type": "session.update", "session": '
                                '{"audio": {"output": {"speed": NaN}}}}', '{"type": "input_audio_buffer.commit", '
                                '"event_id": "e", "x": Infinity}', "[" * 5000, '{"a":' * 3000]))
    def not_quite_json(self, text: str) -> None:
        self._expect_one_error(self._receive(text))

    # ------------------------------------------------------------------ client: valid shapes, bad values

    @rule(template=st.sampled_from(_TEMPLATES), changes=st.lists(st.tuples(st.sampled_from(
        ["session", "audio", "item", "item_id", "content_index", "audio_end_ms", "response", "response_id",
         "event_id", "extra", "previous_item_id"]), _junk), max_size=2), event_id=_event_id)
    def shaped_event(self, template: dict[str, Any], changes: list[tuple[str, Any]], event_id: Any) -> None:
        msg = dict(template)
        if event_id is not None:
            msg["event_id"] = event_id
        for key, value in changes:
            msg[key] = value
        out = self._receive(json.dumps(msg))
        if self._errors(out):
            self._expect_one_error(out, msg.get("event_id"))
        elif not isinstance(msg.get("event_id"), str | None):
            raise AssertionError(f"a non-string event_id was accepted: {msg}")

    @rule(text=st.one_of(st.text(max_size=50), st.just("w " * 5000)), given_id=st.one_of(
        st.none(), st.text(max_size=70), st.just(""), st.integers(1, 40).map(lambda n: f"item_s1_{n}")),
        data=st.data())
    def create_user_item(self, text: str, given_id: str | None, data: st.DataObject) -> None:
        if given_id is not None and data.draw(st.booleans()):
            # an id the server made already or is about to make
            near = [f"item_s1_{self.proto._counter + k}" for k in (1, 2, 3)]
            given_id = data.draw(st.sampled_from(sorted(self.server_items) + near))
        item: dict[str, Any] = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        if given_id is not None:
            item["id"] = given_id
        out = self._receive(json.dumps({"type": "conversation.item.create", "item": item}))
        if not text.strip() or len(" ".join(text.split())) > 8192:
            self._expect_one_error(out)

    @rule(ms=st.integers(min_value=0, max_value=400), odd=st.booleans())
    def append_audio(self, ms: int, odd: bool) -> None:
        pcm = b"\x01\x00" * (24 * ms) + (b"\x00" if odd else b"")
        out = self._receive(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        if odd:
            assert self._expect_one_error(out)["code"] == "invalid_audio"

    @rule()
    def append_a_full_buffer(self) -> None:
        """Raw bytes well past the 120 s limit, in max-sized messages (binary when negotiated)."""
        if not self.proto.settings.binary_audio:
            return
        chunk = b"\x00\x00" * (MAX_MESSAGE // 2)
        for _ in range(int(LIMIT_BYTES // len(chunk)) + 2):
            out = self._receive(chunk)
            if self._errors(out):
                assert self.proto.settings.turn_detection is None
                assert self._errors(out)[0]["code"] == "input_audio_buffer_full"
                break

    @rule(kind=st.sampled_from(["input_audio_buffer.commit", "input_audio_buffer.clear", "response.create",
                                "response.cancel"]), event_id=_event_id)
    def bare_event(self, kind: str, event_id: Any) -> None:
        msg: dict[str, Any] = {"type": kind}
        if event_id is not None:
            msg["event_id"] = event_id
        active = self.proto.response_active
        out = self._receive(json.dumps(msg))
        usable_id = event_id is None or (isinstance(event_id, str) and len(event_id) <= 512)
        if kind == "response.create" and active:
            err = self._expect_one_error(out, event_id)
            assert err["code"] == "conversation_already_has_active_response" or not usable_id
        if kind == "response.cancel" and not active:
            self._expect_one_error(out, event_id)
        if kind == "input_audio_buffer.clear" and not self._errors(out):
            assert self.proto._buffered_bytes == 0

    @rule(end_ms=st.one_of(st.integers(min_value=-5, max_value=5000), st.just(10**30), st.just(-(10**30))),
          which=st.integers(min_value=0, max_value=3), content_index=st.sampled_from([0, 0, 1, -1]))
    def truncate(self, end_ms: int, which: int, content_index: int) -> None:
        ids = [*self.spoken_items[-2:], "item_nope", ""]
        item_id = ids[min(which, len(ids) - 1)]
        out = self._receive(json.dumps({"type": "conversation.item.truncate", "item_id": item_id,
                                        "content_index": content_index, "audio_end_ms": end_ms}))
        cmds = [o for o in out if isinstance(o, p.TruncateAssistant)]
        if cmds:
            assert self.spoken_items and item_id == self.spoken_items[-1] and content_index == 0 and end_ms >= 0
        if self.spoken_items and item_id == self.spoken_items[-1] and content_index == 0:
            assert self.played is not None
            within = 0 <= end_ms <= self.played.written / 24 + 1  # the item's audio, 1 ms of rounding
            assert bool(cmds) == within, (end_ms, self.played.written)
            if within:
                heard = self.played.start + math.ceil(end_ms * 24)
                assert cmds[0].spoken_text == self.played.spoken_text(heard, whole_started=True)

    @rule(pieces=st.lists(st.tuples(st.sampled_from(["It is noon.", "Have a nice day.", ""]),
                                    st.integers(min_value=0, max_value=300)), max_size=3),
          share=st.floats(min_value=0.0, max_value=1.2), extra_ms=st.integers(min_value=-2, max_value=3),
          answers=st.integers(min_value=1, max_value=2))
    def spoken_answers_truncated(self, pieces: list[tuple[str, int]], share: float, extra_ms: int,
                                 answers: int) -> None:
        """Whole answers (the same pieces each), then a truncate near or inside the last one's audio
        (the rule above rarely lands there)."""
        for _ in range(answers):
            self.response_started(use_request=False)
            for text, ms in pieces:
                self.response_progress(text, ms)
            self.response_done("cancelled")
        assert self.played is not None
        last = len(self.spoken_items[-2:]) - 1
        self.truncate(int(self.played.written / 24 * share) + extra_ms, last, 0)

    # ------------------------------------------------------------------ the pipeline (the shell's side)

    @rule(ms=st.integers(min_value=0, max_value=10**6))
    def speech_started(self, ms: int) -> None:
        for o in self._emit(self.proto.on_speech_started(ms)):
            self._new_item(o.item_id, server=True)
            self.announced = o.item_id

    @rule(ms=st.integers(min_value=0, max_value=10**6))
    def speech_stopped(self, ms: int) -> None:
        out = self._emit(self.proto.on_speech_stopped(ms))
        assert self.proto._buffered_bytes == 0
        committed = [o for o in out if isinstance(o, ev.InputAudioBufferCommitted)]
        assert len(committed) == 1
        self._committed(committed[0].item_id)

    @rule(text=st.text(max_size=30), final=st.booleans())
    def transcript(self, text: str, final: bool) -> None:
        self._emit(self.proto.on_transcript(text, final=final, duration_s=1.0))

    @rule(use_request=st.booleans())
    def response_started(self, use_request: bool) -> None:
        was_active = self.proto.response_active
        rid = self.requested.pop(0) if use_request and self.requested else None
        out = self._emit(self.proto.on_response_started(rid))
        if was_active:
            assert out == []  # never a second active response
        else:
            (created,) = out
            assert self.proto.response_active and self.proto.response_id == created.response["id"]
            self.playing = PlaybackLedger(start=self.sink_end)
            if rid is not None:
                assert created.response["id"] == rid

    @rule(text=st.text(max_size=20), pcm_ms=st.integers(min_value=0, max_value=300))
    def response_progress(self, text: str, pcm_ms: int) -> None:
        self._emit(self.proto.on_text(text))
        if self.playing is not None:  # the Answer books a chunk, then the sink encodes it
            self.playing.add(24 * pcm_ms, text)
        self._emit(self.proto.on_audio(b"\x00\x00" * (24 * pcm_ms)))

    @rule(status=st.sampled_from(["completed", "cancelled", "incomplete", "failed"]))
    def response_done(self, status: str) -> None:
        active = self.proto.response_active
        out = self._emit(self.proto.on_response_done(status, reason="turn_detected" if status == "cancelled" else None,
                                                     error="boom" if status == "failed" else None,
                                                     played=self.playing, rate=24000))
        assert not self.proto.response_active
        if active:
            assert self.playing is not None
            self.played, self.playing, self.sink_end = self.playing, None, self.playing.end
            done = out[-1]
            assert isinstance(done, ev.ResponseDone) and done.response["status"] == status
            self.spoken_items.append(out[0].item_id)
            self._new_item(out[0].item_id, server=True)
        else:
            assert out == []

    @precondition(lambda self: self.proto.response_active)
    @rule()
    def cancel_the_active_response(self) -> None:
        rid = self.proto.response_id
        out = self._receive(json.dumps({"type": "response.cancel", "response_id": rid}))
        assert [o.response_id for o in out if isinstance(o, p.CancelResponse)] == [rid]
        wrong = self._receive(json.dumps({"type": "response.cancel", "response_id": f"{rid}x"}))
        self._expect_one_error(wrong)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def state_is_consistent(self) -> None:
        assert self.proto._buffered_bytes >= 0
        assert self.proto.response_active == (self.proto.response_id is not None)
        assert len(self.proto._spoken) <= 1  # only the last assistant item can be truncated
        assert self.proto.errors >= 0


ProtocolMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_protocol_state_machine = ProtocolMachine.TestCase


def test_a_client_item_id_of_the_servers_form_is_refused() -> None:
    """Found by the state machine: a client naming its message item_<prefix><n> took an id the
    server had made (or made next), so two items shared one id."""
    pr = p.RealtimeProtocol(voices=("piper-joe-medium",), id_prefix="s1_")
    pr.on_speech_started(0)
    (_, committed) = pr.on_speech_stopped(900)
    for given in (committed.item_id, "item_s1_99"):
        item = {**_USER_ITEM, "id": given}
        (err,) = pr.receive(json.dumps({"type": "conversation.item.create", "event_id": "c1", "item": item}))
        assert isinstance(err, ev.ErrorEvent) and err.error["param"] == "item.id" and err.error["event_id"] == "c1"
    item = {**_USER_ITEM, "id": "item_mine_1"}
    created, _ = pr.receive(json.dumps({"type": "conversation.item.create", "item": item}))
    assert created.item["id"] == "item_mine_1"
