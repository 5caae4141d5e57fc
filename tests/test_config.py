"""Config: defaults < TOML file < VOICE_* environment < flags, and clear errors naming key and file."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tests.helpers.asr import run_voice
from voice.config import Config, load_config, parse_set, to_dict, to_toml, validate
from voice.errors import ConfigError


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.asr.model == "whisper-tiny.en" and cfg.asr.file_beam_size == 5 and cfg.asr.live_beam_size == 1


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    conf = _write(tmp_path, '[asr]\nmodel = "from-file"\nlive_beam_size = 2\n[vad]\nthreshold = 0.7\n'
                            '[tts.piper]\nlength_scale = 1.5\n')
    env = {"VOICE_ASR__MODEL": "from-env", "VOICE_VAD__THRESHOLD": "0.6", "VOICE_TTS__PIPER__LENGTH_SCALE": "1.1",
           "OTHER": "x", "VOICE_NO_DOUBLE_UNDERSCORE": "ignored"}
    cfg = load_config(conf, environ=env, overrides={"asr.model": "from-flag", "asr.language": None})
    assert cfg.asr.model == "from-flag"  # flag beats env beats file
    assert cfg.vad.threshold == 0.6  # env beats file
    assert cfg.tts.piper.length_scale == 1.1  # nested env
    assert cfg.asr.live_beam_size == 2  # file beats default
    assert cfg.asr.file_beam_size == 5  # default
    assert cfg.asr.language is None  # a flag given as None is "not given"
    assert load_config(conf, environ={}).asr.model == "from-file"
    assert load_config(conf, environ=env).asr.model == "from-env"


def test_int_is_accepted_for_float_and_lists_from_env(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[vad]\nthreshold = 1\n"),
                      environ={"VOICE_LLM__TOOLS": "current_time, search_knowledge"})
    assert cfg.vad.threshold == 1.0 and isinstance(cfg.vad.threshold, float)
    assert cfg.llm.tools == ["current_time", "search_knowledge"]


@pytest.mark.parametrize(
    "text,words",
    [('[asr]\nmodle = "x"\n', "unknown key 'asr.modle'"),
     ('[nosuch]\nx = 1\n', "unknown key 'nosuch'"),
     ('[tts.piper]\nvoise = "x"\n', "unknown key 'tts.piper.voise'"),
     ('[asr]\nfile_beam_size = "five"\n', "asr.file_beam_size must be an integer"),
     ('[asr]\nmodel = 3\n', "asr.model must be a string"),
     ('[pipeline]\nspeak = "yes"\n', "pipeline.speak must be true or false"),
     ('[asr]\ndevice = "gpu"\n', "asr.device = 'gpu' is not one of"),
     ('asr = 1\n', "'asr' must be a table"),
     ('[asr\n', "not valid TOML")],
)
def test_file_errors_name_the_key_and_the_file(tmp_path: Path, text: str, words: str) -> None:
    conf = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(conf, environ={})
    msg = str(err.value)
    assert words in msg and str(conf) in msg and "\n" not in msg


def test_env_and_flag_errors_name_their_source() -> None:
    with pytest.raises(ConfigError, match="environment variable VOICE_ASR__FILE_BEAM_SIZE: asr.file_beam_size must be an integer"):
        load_config(environ={"VOICE_ASR__FILE_BEAM_SIZE": "many"})
    with pytest.raises(ConfigError, match="environment variable VOICE_ASR__MODLE: unknown key 'asr.modle'"):
        load_config(environ={"VOICE_ASR__MODLE": "1"})
    with pytest.raises(ConfigError, match="--set asr.live_beam_size: asr.live_beam_size must be an integer"):
        load_config(environ={}, overrides=parse_set(["asr.live_beam_size=fast"]))
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_set(["asr.model"])


def test_missing_or_directory_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml", environ={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, environ={})


def test_shipped_configs_load() -> None:
    files = sorted((ROOT / "configs").glob("*.toml"))
    assert {p.name for p in files} >= {"default.toml", "gpu.toml"}
    for p in files:
        load_config(p, environ={})
    assert load_config(ROOT / "configs" / "default.toml", environ={}) == Config()


def test_to_toml_round_trips(tmp_path: Path) -> None:
    cfg = load_config(environ={"VOICE_ASR__LANGUAGE": "de", "VOICE_LLM__TOOLS": "current_time"})
    again = load_config(_write(tmp_path, to_toml(cfg)), environ={})
    assert again == cfg


def test_voice_config_show_prints_the_effective_config(tmp_path: Path) -> None:
    conf = _write(tmp_path, '[asr]\nmodel = "from-file"\nlive_beam_size = 2\n[vad]\nmin_silence_ms = 900\n')
    proc = run_voice("--config", str(conf), "--set", "asr.model=from-flag", "config", "show",
                     env={"VOICE_VAD__MIN_SILENCE_MS": "700", "VOICE_ASR__MODEL": "from-env"})
    assert proc.returncode == 0, proc.stderr
    shown = tomllib.loads(proc.stdout)
    assert shown["asr"]["model"] == "from-flag"
    assert shown["asr"]["live_beam_size"] == 2
    assert shown["vad"]["min_silence_ms"] == 700
    assert shown["tts"]["piper"]["voice"] == "piper-joe-medium"
    js = run_voice("config", "show", "--json")
    assert js.returncode == 0 and json.loads(js.stdout) == to_dict(Config())


def test_voice_with_broken_config_exits_2_with_one_line(tmp_path: Path) -> None:
    conf = _write(tmp_path, "[vad]\nthreshold = 'high'\n")
    proc = run_voice("--config", str(conf), "config", "show")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == ""
    assert lines[0].startswith("voice: error: ") and "vad.threshold" in lines[0] and str(conf) in lines[0]
    proc = run_voice("config", "show", env={"VOICE_ASR__DEVICE": "tpu"})
    assert proc.returncode == 2 and "asr.device" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- ranges and choices


def _leaf_fields(obj: object = None, prefix: str = "") -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """(dotted key, field, annotation) of every non-section key of the config."""
    obj = Config() if obj is None else obj
    hints = typing.get_type_hints(type(obj))
    out = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _leaf_fields(value, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f, hints[f.name]))
    return out


def _numeric(tp: Any) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(a in (int, float) for a in args)


def test_every_numeric_key_declares_a_range_and_its_comment_names_it() -> None:
    import inspect

    import voice.config as config_module

    source = inspect.getsource(config_module)
    numeric = [(k, f) for k, f, tp in _leaf_fields() if _numeric(tp)]
    assert len(numeric) > 50
    missing = [k for k, f in numeric if "range" not in f.metadata]
    assert not missing, f"numeric config keys without metadata={{'range': (LO, HI)}}: {missing}"
    for key, f in numeric:
        lo, hi = f.metadata["range"]
        assert lo is None or hi is None or lo <= hi, key
        assert lo is not None or hi is not None, f"{key}: a range with both ends open bounds nothing"
        # the documented limit: the field's `#:` comment says something about it
        line = source.index(f"    {f.name}: ")
        comment = source[source.rindex("\n\n", 0, line):line]
        assert "#:" in comment, f"{key} has no #: comment"


def test_choice_keys_are_literals_that_match_the_registries() -> None:
    from voice.config import LlmBackend, LlmTool, TtsEngine
    from voice.llm.backends import PRESETS
    from voice.llm.tools import BUILTIN_TOOLS
    from voice.tts.base import ENGINES

    assert set(typing.get_args(TtsEngine)) == set(ENGINES)
    assert set(typing.get_args(LlmBackend)) == set(PRESETS)
    assert set(typing.get_args(LlmTool)) == set(BUILTIN_TOOLS)
    keys = {k: tp for k, _, tp in _leaf_fields()}
    for key in ("general.log_level", "tts.engine", "llm.backend", "pipeline.turn_detection",
                "tts.chatterbox.variant", "asr.device", "asr.compute_type"):
        assert "Literal" in str(keys[key]), key


def test_the_built_in_defaults_are_valid() -> None:
    validate(Config(), "built-in default")
    for key, f, _ in _leaf_fields():
        if "range" in f.metadata and f.default is not None and f.default is not dataclasses.MISSING:
            lo, hi = f.metadata["range"]
            assert (lo is None or f.default >= lo) and (hi is None or f.default <= hi), key


@pytest.mark.parametrize("key", [k for k, f, tp in _leaf_fields() if "range" in f.metadata])
def test_each_range_is_enforced_at_both_ends(key: str) -> None:
    field_ = {k: f for k, f, _ in _leaf_fields()}[key]
    tp = {k: t for k, _, t in _leaf_fields()}[key]
    lo, hi = field_.metadata["range"]
    is_int = int in (typing.get_args(tp) or (tp,))
    step = 1 if is_int else 1e-6 * max(1.0, abs(lo or 0), abs(hi or 0))
    for bound, outside in ((lo, lambda b: b - step), (hi, lambda b: b + step)):
        if bound is None:
            continue
        validate(_with(key, bound))  # the limit itself is allowed
        with pytest.raises(ConfigError) as err:
            validate(_with(key, outside(bound)), "here")
        assert f"here: {key} = " in str(err.value) and "out of range (allowed: " in str(err.value)


def _with(dotted: str, value: Any) -> Config:
    """Defaults with one key set (range checks only: validate() leaves out two-key limits)."""
    cfg = Config()
    *sections, name = dotted.split(".")
    node: Any = cfg
    for part in sections:
        node = getattr(node, part)
    setattr(node, name, value)
    return cfg


@pytest.mark.parametrize(
    "environ,overrides,words",
    [({}, {"general.log_level": "loud"},
      "--set general.log_level: general.log_level = 'loud' is not one of 'debug', 'info', 'warning', 'error'"),
     ({"VOICE_VAD__THRESHOLD": "-5"}, {},
      "environment variable VOICE_VAD__THRESHOLD: vad.threshold = -5.0 is out of range (allowed: 0.0 to 1.0)"),
     ({}, {"server.port": 99999}, "--set server.port: server.port = 99999 is out of range (allowed: 0 to 65535)"),
     ({"VOICE_SERVER__MAX_SESSIONS": "-3"}, {}, "server.max_sessions = -3 is out of range (allowed: 1 to 10000)"),
     ({}, {"rag.top_k": 0}, "--set rag.top_k: rag.top_k = 0 is out of range (allowed: 1 to 100)"),
     ({}, {"vad.max_speech_s": float("nan")}, "vad.max_speech_s must be a finite number, got nan"),
     ({}, {"llm.timeout_s": 10**400}, "llm.timeout_s must be a finite number"),
     ({}, {"llm.tools": "current_time, web"}, "llm.tools[1] = 'web' is not one of"),
     ({"VOICE_ASR__COMPUTE_TYPE": "int4"}, {}, "asr.compute_type = 'int4' is not one of"),
     ({}, {"vad.neg_threshold": 0.7},
      "vad.neg_threshold = 0.7 (--set vad.neg_threshold) must not exceed vad.threshold = 0.5 (built-in default)"),
     ({"VOICE_RAG__CHUNK_SIZE": "100"}, {"rag.chunk_overlap": 100},
      "rag.chunk_overlap = 100 (--set rag.chunk_overlap) must be under rag.chunk_size = 100 "
      "(environment variable VOICE_RAG__CHUNK_SIZE)")],
)
def test_range_and_choice_errors_name_key_source_and_what_is_allowed(
        environ: dict[str, str], overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ=environ, overrides=overrides)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_range_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    conf = _write(tmp_path, "[server]\nmax_sessions = -3\n")
    with pytest.raises(ConfigError, match=f"^{conf}: server.max_sessions = -3 is out of range"):
        load_config(conf, environ={})


def test_a_flag_value_with_a_newline_is_a_string_not_two_keys() -> None:
    with pytest.raises(ConfigError, match="server.port must be an integer"):
        load_config(environ={}, overrides=parse_set(["server.port=1\nx = 2"]))
    # a key set as a value and as a table in two flags: a one-line error, not a TypeError
    with pytest.raises(ConfigError, match="'asr' must be a table"):
        load_config(environ={}, overrides=parse_set(["asr=1", "asr.model=x"]))


@pytest.mark.parametrize(
    "argv,words",
    [(["--set", "general.log_level=loud", "config", "show"], "general.log_level = 'loud' is not one of"),
     (["--set", "vad.threshold=-5", "config", "show"], "vad.threshold = -5.0 is out of range (allowed: 0.0 to 1.0)"),
     (["--set", "server.port=99999", "config", "show"], "server.port = 99999 is out of range"),
     (["--set", "server.max_sessions=-3", "config", "show"], "server.max_sessions = -3 is out of range"),
     (["serve", "--port", "70000"], "--port: server.port = 70000 is out of range (allowed: 0 to 65535)")],
)
def test_voice_with_out_of_range_values_exits_2_with_one_line(argv: list[str], words: str) -> None:
    proc = run_voice(*argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("voice: error: ") and words in lines[0], lines[0]


def test_env_variable_errors_from_the_cli_name_the_variable() -> None:
    proc = run_voice("config", "show", env={"VOICE_ASR__MODLE": "x"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "environment variable VOICE_ASR__MODLE: unknown key 'asr.modle'" in lines[0]


# --------------------------------------------------------------------------- property: any input


_KEYS = [k for k, _, _ in _leaf_fields()]
_SECTIONS = sorted({k.rsplit(".", 1)[0] for k in _KEYS if "." in k})
_key = st.one_of(st.sampled_from(_KEYS), st.sampled_from(_SECTIONS),
                 st.text(max_size=12), st.sampled_from(_KEYS).map(lambda k: k + ".x"))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**400, max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["auto", "cpu", "piper", "debug", "current_time", "int8", "vad"]))
_value_st = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
_FAST = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _toml_key(k: str) -> str:
    return json.dumps(k, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml(value: Any) -> str:
    """A TOML value (inline) for what Hypothesis drew; None has no TOML form, so it is a string."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)  # TOML says 64-bit, tomllib reads any size: so may a user
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if abs(value) == float("inf") else repr(value)
    if isinstance(value, str):
        return _toml_key(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _expect_config_error_or_config(call: Any) -> None:
    try:
        cfg = call()
    except ConfigError as err:
        msg = str(err)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    else:
        assert isinstance(cfg, Config)
        validate(cfg)  # what loads is valid


@_FAST
@given(entries=st.lists(st.tuples(_key, _value_st), max_size=4))
def test_property_any_toml_file_loads_or_gives_one_config_error(tmp_path_factory: pytest.TempPathFactory,
                                                                entries: list[tuple[str, Any]]) -> None:
    text = "".join(f"{'.'.join(_toml_key(p) for p in k.split('.'))} = {_toml(v)}\n" for k, v in entries)
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(text, encoding="utf-8")
    _expect_config_error_or_config(lambda: load_config(path, environ={}))


@_FAST
@given(data=st.binary(max_size=200))
def test_property_any_bytes_as_a_config_file_give_one_config_error(tmp_path_factory: pytest.TempPathFactory,
                                                                   data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(data)
    _expect_config_error_or_config(lambda: load_config(path, environ={}))


_env_name = st.one_of(
    st.sampled_from(_KEYS).map(lambda k: "VOICE_" + k.upper().replace(".", "__")),
    st.lists(st.text("ABCZ_az09", max_size=6), min_size=1, max_size=3).map(lambda p: "VOICE_" + "__".join(p)),
)
_raw = st.one_of(st.text(max_size=30), st.integers(min_value=-10**400, max_value=10**400).map(str),
                 st.sampled_from(["0", "-1", "1e999", "nan", "true", "[1, 2]", "{a = 1}",
                                                        "'x'", "\"unterminated", "[[[[[[[[", "1\nx = 2", "auto"]))


@_FAST
@given(environ=st.dictionaries(_env_name, _raw, max_size=4),
       pairs=st.lists(st.tuples(st.one_of(st.sampled_from(_KEYS), st.text(max_size=10)), _raw).map("=".join)
                      | st.text(max_size=20), max_size=4))
def test_property_any_env_and_set_flags_load_or_give_one_config_error(environ: dict[str, str],
                                                                      pairs: list[str]) -> None:
    _expect_config_error_or_config(lambda: load_config(environ=environ, overrides=parse_set(pairs)))
