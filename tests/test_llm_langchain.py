"""``llm.chain`` with a real LangChain LCEL chain (docs/examples/langchain_chain.py): prompt |
ChatOpenAI pointed at the embedded llama.cpp server | StrOutputParser, streamed token by token
into the speech chunker and Piper, and heard back by Whisper. Plus the errors for objects that
are not chains."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.helpers.asr import run_voice
from voice.errors import ConfigError
from voice.llm import create_chain
from voice.llm.chain import ChainFactory, ExternalChain
from voice.textnorm import normalize

EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture
def examples_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return EXAMPLES


@pytest.mark.slow
async def test_an_lcel_chain_speaks_its_answer_as_it_streams(smol_cfg: Any, llm_runtime: Any, examples_path: Path,
                                                            tiny_transcriber: Any) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnableSequence
    from langchain_openai import ChatOpenAI

    from voice.audio.resample import resample
    from voice.tts import create_engine
    from voice.tts.chunker import SpeechChunker

    smol_cfg.llm.chain = "langchain_chain:make_chain"
    smol_cfg.llm.max_tokens = 60
    chain = create_chain(smol_cfg, app=llm_runtime)
    assert isinstance(chain, ExternalChain) and isinstance(chain.obj, ChainFactory)
    endpoint = await chain.start()  # the embedded llama.cpp server, then the LCEL chain on it
    assert isinstance(chain.obj, RunnableSequence)
    steps = chain.obj.steps
    assert isinstance(steps[-2], ChatOpenAI) and isinstance(steps[-1], StrOutputParser)
    assert steps[-2].openai_api_base == endpoint.base_url and endpoint.base_url.startswith("http://127.0.0.1:")

    tts = create_engine(smol_cfg)
    await tts.load()
    chunker = SpeechChunker(smol_cfg.tts.chunker)
    deltas: list[str] = []
    audio: list[np.ndarray] = []
    first_audio_at: float | None = None
    async for delta in chain.astream("Tell me about the sea in two sentences.", turn_id=1):
        deltas.append(delta)
        for piece in chunker.feed(delta):
            async for c in tts.stream(piece):
                audio.append(resample(c.audio, c.sample_rate, 16000))
                first_audio_at = first_audio_at or time.perf_counter()
    stream_end = time.perf_counter()
    for piece in chunker.flush():
        async for c in tts.stream(piece):
            audio.append(resample(c.audio, c.sample_rate, 16000))
    answer = "".join(deltas)
    assert len(deltas) >= 5, deltas  # token by token, not one block
    assert first_audio_at is not None and first_audio_at < stream_end  # spoken while still streaming
    assert chain.memory.messages()[-1]["content"] == answer  # memory holds what the chain said
    heard = tiny_transcriber.transcribe_sync(np.concatenate(audio)).text
    said = normalize(answer).split()
    got = set(normalize(heard).split())
    assert sum(w in got for w in said) / len(said) >= 0.6, (answer, heard)
    # the history reaches LangChain's MessagesPlaceholder on the next turn
    again = "".join([d async for d in chain.astream("What did you just talk about?", turn_id=2)])
    assert again.strip() and len(chain.memory.messages()) == 4
    await chain.aclose()


@pytest.mark.slow
def test_voice_ask_runs_the_example_chain() -> None:
    proc = run_voice("--set", "llm.chain=langchain_chain:make_chain", "--set", "llm.embedded.model=smollm2-135m-instruct",
                     "--set", "llm.max_tokens=30", "ask", "--no-retrieval", "Say hello.",
                     env={"PYTHONPATH": f"{EXAMPLES}:{ROOT}"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), proc.stdout


class NoStream:
    def invoke(self, payload: dict[str, Any]) -> str:
        return "hi"


class ZeroArgStream:
    async def astream(self) -> Any:  # cannot take the payload
        yield "hi"


def needs_three(a: Any, b: Any, c: Any) -> Any:
    return None


def returns_a_string(cfg: Any) -> str:
    return "not a chain"


number = 42
no_stream = NoStream()
zero_arg = ZeroArgStream()


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("number", r"number is a int with no astream method; expected a LangChain Runnable"),
        ("no_stream", r"no_stream is a NoStream with no astream method"),
        ("zero_arg", r"zero_arg has an astream that cannot take one payload dict"),
        ("needs_three", r"needs_three has no astream method and takes neither \(cfg\) nor \(cfg, endpoint\)"),
        ("returns_a_string", r"what returns_a_string\(cfg\) returned is a str with no astream method"),
    ],
)
def test_an_object_that_is_no_chain_is_a_clear_error(cfg: Any, attr: str, message: str) -> None:
    cfg.llm.chain = f"tests.test_llm_langchain:{attr}"
    with pytest.raises(ConfigError, match=message) as err:
        create_chain(cfg)
    assert "\n" not in str(err.value)


def test_a_bad_chain_is_one_line_from_the_command_line() -> None:
    proc = run_voice("--set", "llm.chain=tests.test_llm_langchain:no_stream", "ask", "hi")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "no astream method" in lines[0], proc.stderr
