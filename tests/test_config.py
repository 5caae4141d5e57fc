"""Config: defaults < TOML file < VOICE_* environment < flags, and clear errors naming key and file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers.asr import run_voice
from voice.config import Config, load_config, parse_set, to_dict, to_toml
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
    with pytest.raises(ConfigError, match=r"environment \(VOICE_\*\): asr.file_beam_size must be an integer"):
        load_config(environ={"VOICE_ASR__FILE_BEAM_SIZE": "many"})
    with pytest.raises(ConfigError, match=r"environment \(VOICE_\*\): unknown key 'asr.nope'"):
        load_config(environ={"VOICE_ASR__NOPE": "1"})
    with pytest.raises(ConfigError, match="command line: asr.live_beam_size must be an integer"):
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
