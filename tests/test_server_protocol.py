"""The realtime protocol core without sockets: events in, events and commands out."""

from __future__ import annotations

import base64
import json
import random

import pytest

from voice.pipeline.turns import PlaybackLedger
from voice.server import events as ev
from voice.server import protocol as p
from voice.server.settings import SessionSettings


def proto(**kw) -> p.RealtimeProtocol:
    return p.RealtimeProtocol(voices=("piper-joe-medium",), max_message_bytes=65536, **kw)


def send(pr: p.RealtimeProtocol, obj) -> list:
    return pr.receive(json.dumps(obj))


def errors(out: list) -> list[dict]:
    return [o.error for o in out if isinstance(o, ev.ErrorEvent)]


def pcm(ms: int, rate: int = 24000) -> bytes:
    return b"\x01\x00" * (rate * ms // 1000)


def test_session_created_is_ga_shape() -> None:
    (created,) = proto().start()
    d = created.to_dict()
    assert d["type"] == "session.created" and d["event_id"]
    assert d["session"]["type"] == "realtime"
    assert d["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert d["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert d["session"]["audio"]["output"]["voice"] == "piper-joe-medium"


def test_session_update_ga_shape() -> None:
    pr = proto()
    out = send(pr, {"type": "session.update", "event_id": "e1", "session": {
        "type": "realtime", "instructions": "Be brief.",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400, "threshold": 0.6}},
                  "output": {"voice": "alloy", "speed": 1.2}}}})
    assert not errors(out)
    updated = [o for o in out if isinstance(o, ev.SessionUpdated)][0].to_dict()["session"]
    assert updated["instructions"] == "Be brief."
    assert updated["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 400
    assert updated["audio"]["output"]["voice"] == "piper-joe-medium"  # OpenAI name maps to the default
    cmd = [o for o in out if isinstance(o, p.UpdateSettings)][0]
    assert cmd.settings.speed == 1.2 and cmd.settings.turn_detection.threshold == 0.6


def test_session_update_beta_shape_and_null_turn_detection() -> None:
    pr = proto()
    out = send(pr, {"type": "session.update", "session": {"voice": "piper-joe-medium", "turn_detection": None,
                                                         "input_audio_format": "pcm16", "modalities": ["audio", "text"]}})
    assert not errors(out)
    assert pr.settings.turn_detection is None


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"voice": "../../etc/passwd"}, "session.voice"),
        ({"audio": {"output": {"voice": {"id": "voice_1"}}}}, "session.audio.output.voice"),
        ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "session.audio.input.format.type"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}}, "session.audio.input.format.rate"),
        ({"turn_detection": {"type": "server_vad", "threshold": "high"}}, "session.turn_detection.threshold"),
        ({"turn_detection": {"type": "server_vad", "threshold": 3}}, "session.turn_detection.threshold"),
        ({"turn_detection": {"type": "magic"}}, "session.turn_detection.type"),
        ({"instructions": 5}, "session.instructions"),
        ({"type": "transcription"}, "session.type"),
        ({"engine_path": "/tmp/x.py"}, "session.engine_path"),
        ({"tools": [{"type": "function"}]}, "session.tools"),
        ({"output_modalities": ["text"]}, "session.output_modalities"),
    ],
)
def test_session_update_rejects_bad_values(session, param) -> None:
    pr = proto()
    before = pr.settings
    out = send(pr, {"type": "session.update", "event_id": "bad1", "session": session})
    (err,) = errors(out)
    assert err["event_id"] == "bad1" and err["param"] == param
    assert pr.settings == before
    assert not any(isinstance(o, p.Command) for o in out)


def test_audio_append_commit_and_clear() -> None:
    pr = proto()
    send(pr, {"type": "session.update", "session": {"turn_detection": None}})
    out = send(pr, {"type": "input_audio_buffer.commit", "event_id": "c0"})
    assert errors(out)[0]["code"] == "input_audio_buffer_commit_empty"
    out = send(pr, {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm(200)).decode()})
    (cmd,) = out
    assert isinstance(cmd, p.AppendAudio) and len(cmd.pcm) == 9600 and cmd.sample_rate == 24000
    out = send(pr, {"type": "input_audio_buffer.commit"})
    committed, commit = out
    assert isinstance(committed, ev.InputAudioBufferCommitted) and isinstance(commit, p.CommitAudio)
    assert commit.respond is False  # turn detection off: the client asks with response.create
    (create,) = send(pr, {"type": "response.create"})
    assert isinstance(create, p.CreateResponse) and create.item_id == committed.item_id
    send(pr, {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm(200)).decode()})
    out = send(pr, {"type": "input_audio_buffer.clear"})
    assert isinstance(out[0], ev.InputAudioBufferCleared) and isinstance(out[1], p.ClearAudio)
    assert errors(send(pr, {"type": "input_audio_buffer.commit"}))


def test_bad_audio_payloads() -> None:
    pr = proto()
    assert errors(send(pr, {"type": "input_audio_buffer.append", "audio": "not base64!!"}))[0]["code"] == "invalid_value"
    odd = base64.b64encode(b"\x00\x01\x02").decode()
    assert errors(send(pr, {"type": "input_audio_buffer.append", "audio": odd}))[0]["code"] == "invalid_audio"
    assert errors(send(pr, {"type": "input_audio_buffer.append", "audio": 12}))[0]["code"] == "invalid_type"
    assert errors(send(pr, {"type": "input_audio_buffer.append"}))[0]["code"] == "missing_required_parameter"
    assert errors(pr.receive(b"\x00\x00"))[0]["code"] == "binary_not_negotiated"


def test_binary_audio_extension_both_ways() -> None:
    pr = proto(settings=SessionSettings(voice="piper-joe-medium", binary_audio=True))
    (cmd,) = pr.receive(pcm(20))
    assert isinstance(cmd, p.AppendAudio)
    pr.on_response_started()
    (frame,) = pr.on_audio(b"\x00\x01" * 10)
    assert frame == b"\x00\x01" * 10


def test_malformed_messages_answer_error_with_event_id() -> None:
    pr = proto()
    cases = ["{", "[]", "null", "42", '"x"', json.dumps({"no": "type"}), json.dumps({"type": 5}),
             json.dumps({"type": "nope.nope", "event_id": "x1"}), json.dumps({"type": "response.cancel", "event_id": 7}),
             json.dumps({"type": "response.create", "event_id": "x2", "extra": 1}),
             "[" * 100000, json.dumps({"type": "input_audio_buffer.commit", "event_id": "y" * 600})]
    for c in cases:
        out = pr.receive(c)
        assert len(errors(out)) == 1, c[:40]
        assert not any(isinstance(o, p.Command) for o in out)
    assert errors(pr.receive(json.dumps({"type": "nope.nope", "event_id": "x1"})))[0]["event_id"] == "x1"


def test_oversized_text_message() -> None:
    pr = proto()
    big = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 70000})
    assert errors(pr.receive(big))[0]["code"] == "message_too_large"


def test_out_of_order_events() -> None:
    pr = proto()
    assert errors(send(pr, {"type": "response.cancel"}))[0]["code"] == "response_cancel_not_active"
    assert errors(send(pr, {"type": "response.create"}))[0]["code"] == "no_user_input"
    trunc = {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 10}
    assert errors(send(pr, trunc))[0]["code"] == "item_truncate_invalid_item_id"
    out = send(pr, {"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    assert isinstance(out[1], p.UserText) and out[1].text == "hi"
    (create,) = send(pr, {"type": "response.create"})
    pr.on_response_started(create.response_id)
    assert errors(send(pr, {"type": "response.create"}))[0]["code"] == "conversation_already_has_active_response"
    (cancel,) = send(pr, {"type": "response.cancel"})
    assert isinstance(cancel, p.CancelResponse) and cancel.response_id == create.response_id


def test_conversation_item_create_validation() -> None:
    pr = proto()
    bad_items = [
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "x"}]},
        {"type": "function_call", "role": "user"},
        {"type": "message", "role": "user", "content": []},
        {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "   "}]},
        {"type": "message", "role": "user", "content": "hello"},
    ]
    for item in bad_items:
        assert errors(send(pr, {"type": "conversation.item.create", "item": item})), item


def test_full_turn_events_and_truncate() -> None:
    pr = proto()
    (started,) = pr.on_speech_started(120)
    stopped, committed = pr.on_speech_stopped(1500)
    assert started.item_id == stopped.item_id == committed.item_id
    (done_tr,) = pr.on_transcript("what time is it", duration_s=1.4)
    assert done_tr.item_id == committed.item_id and done_tr.transcript == "what time is it"
    (created,) = pr.on_response_started()
    rid = created.response["id"]
    assert created.response["status"] == "in_progress"
    deltas = pr.on_text("It is ") + pr.on_text("noon.")
    assert [d.delta for d in deltas] == ["It is ", "noon."]
    one_s = b"\x00\x00" * 24000
    # what the Answer books as it writes each chunk; a previous answer's 3 s came before in the sink
    played = PlaybackLedger(start=3 * 24000)
    played.add(24000, "It is noon.")
    a1 = pr.on_audio(one_s)
    played.add(24000, "Have a nice day.")
    a2 = pr.on_audio(one_s)
    assert base64.b64decode(a1[0].delta) == one_s and a2[0].response_id == rid
    done = pr.on_response_done("cancelled", "turn_detected", played=played, rate=24000)
    assert [type(d) for d in done] == [ev.ResponseOutputAudioDone, ev.ResponseTranscriptDone, ev.ResponseDone]
    resp = done[-1].response
    assert resp["status"] == "cancelled" and resp["status_details"]["reason"] == "turn_detected"
    assert done[1].transcript == "It is noon."
    item_id = done[0].item_id
    out = send(pr, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 500})
    truncated, cmd = out
    assert isinstance(cmd, p.TruncateAssistant) and cmd.spoken_text == "It is noon."
    out = send(pr, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1500})
    assert out[1].spoken_text == "It is noon. Have a nice day."
    assert errors(send(pr, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                            "audio_end_ms": 9000}))
    # the item's audio is the 2 s the answer wrote (a millisecond of rounding allowed)
    out = send(pr, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 2001})
    assert out[1].spoken_text == "It is noon. Have a nice day."
    assert errors(send(pr, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                            "audio_end_ms": 2002}))
    (m,) = pr.on_metrics(rid, {"voice_to_voice_ms": 800})
    assert m.to_dict()["type"] == "voice.metrics" and "sources" not in m.to_dict()


def test_truncate_an_item_without_audio() -> None:
    """A response that wrote nothing (text only, or an empty answer): its item has no audio."""
    pr = proto()
    pr.on_response_started()
    pr.on_text("Hello.")
    (audio_done, *_) = pr.on_response_done()
    trunc = {"type": "conversation.item.truncate", "item_id": audio_done.item_id, "content_index": 0}
    assert send(pr, {**trunc, "audio_end_ms": 0})[1].spoken_text == ""
    assert errors(send(pr, {**trunc, "audio_end_ms": 2}))[0]["param"] == "audio_end_ms"


def test_metrics_carry_the_answers_sources_bounded() -> None:
    from voice.rag.kb import Passage

    pr = p.RealtimeProtocol()
    # two passages of one file (the better one is kept), and more files than the limit
    passages = [Passage("low " * 10, "/kb/a.txt", 0.40, 0), Passage("best\n  line " * 200, "/kb/a.txt", 0.90, 1)]
    passages += [Passage(f"text {i}", f"/kb/f{i}.txt", 0.5 - i / 100, 0) for i in range(p.MAX_SOURCES + 3)]
    (m,) = pr.on_metrics("resp_1", {"voice_to_voice_ms": 800}, passages)
    wire = m.to_dict()["sources"]
    assert len(wire) == p.MAX_SOURCES
    assert wire[0]["source"] == "/kb/a.txt" and wire[0]["score"] == 0.9
    assert wire[0]["text"].startswith("best line best") and len(wire[0]["text"]) == p.MAX_SOURCE_TEXT
    assert [w["score"] for w in wire] == sorted((w["score"] for w in wire), reverse=True)
    assert len({w["source"] for w in wire}) == len(wire)
    assert ev.VoiceMetrics.from_dict(m.to_dict()) == m


def test_voice_cannot_change_after_audio() -> None:
    pr = p.RealtimeProtocol(voices=("a", "b"))
    pr.on_response_started()
    pr.on_audio(b"\x00\x00" * 10)
    pr.on_response_done()
    err = errors(send(pr, {"type": "session.update", "session": {"voice": "b"}}))
    assert err[0]["code"] == "cannot_update_voice"


def test_events_round_trip() -> None:
    for cls in ev.SERVER_EVENTS.values():
        kwargs = {}
        import dataclasses
        import typing
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                tp = hints[f.name]
                kwargs[f.name] = {"x": 1} if "dict" in str(tp) else 3 if tp is int else "s"
        obj = cls(**kwargs)
        assert cls.from_dict(obj.to_dict()) == obj


def test_fuzz_never_raises_and_always_answers() -> None:
    rng = random.Random(7)
    pr = proto()
    templates = [
        {"type": "session.update", "session": {"voice": "alloy"}},
        {"type": "input_audio_buffer.append", "audio": "AAAA"},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "response.create"},
        {"type": "response.cancel"},
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 1},
        {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "x"}]}},
    ]
    junk = [None, 1, -1, 1.5, "x", [], {}, True, "A" * 100, {"type": "audio/pcm"}]
    for _ in range(3000):
        msg = dict(rng.choice(templates))
        for _ in range(rng.randint(0, 2)):
            key = rng.choice([*msg.keys(), "event_id", "extra", "session", "audio", "item"])
            msg[key] = rng.choice(junk)
        raw = json.dumps(msg)
        if rng.random() < 0.2:
            raw = raw[: rng.randint(0, len(raw))]
        out = pr.receive(raw if rng.random() > 0.1 else raw.encode())
        assert isinstance(out, list)
        for o in out:
            assert isinstance(o, ev.ServerEvent | bytes | p.Command)
            if isinstance(o, ev.ServerEvent):
                json.dumps(o.to_dict())
