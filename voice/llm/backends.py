"""OpenAI-compatible backends: presets, endpoint resolution, the AsyncOpenAI client, errors.

A backend is just a base URL, a model name and the *name* of an environment variable holding
the API key. Keys are read from the environment when a client is made and never stored in
config, logged, or put into error messages (:func:`scrub` removes them defensively).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voice.errors import ConfigError, VoiceError


@dataclass(frozen=True)
class Preset:
    """Defaults for one kind of server; ``base_url`` None means "started by voice"."""

    name: str
    base_url: str | None
    model: str
    api_key_env: str | None = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("embedded", None, "local"),
        Preset("ollama", "http://127.0.0.1:11434/v1", "qwen2.5:0.5b"),
        Preset("llamacpp", "http://127.0.0.1:8080/v1", "local"),
        Preset("vllm", "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-0.5B-Instruct"),
        Preset("openai", "https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY"),
        Preset(
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "gemini-2.0-flash",
            "GEMINI_API_KEY",
        ),
    )
}


class BackendError(VoiceError):
    """The LLM server cannot be reached or refused a request (one line, no key inside)."""

    exit_code = 5


@dataclass(frozen=True)
class Endpoint:
    """Where requests go. ``api_key`` is held only in memory (repr hides it)."""

    backend: str
    base_url: str
    model: str
    api_key_env: str | None = None
    api_key: str | None = None

    def __repr__(self) -> str:
        return (
            f"Endpoint(backend={self.backend!r}, base_url={self.base_url!r}, model={self.model!r},"
            f" api_key_env={self.api_key_env!r})"
        )

    def describe(self) -> str:
        return f"LLM backend '{self.backend}' at {self.base_url}"


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise ConfigError(f"llm.backend = {name!r} is not one of {known}") from None


def resolve_endpoint(
    llm: Any, *, base_url: str | None = None, environ: Mapping[str, str] | None = None
) -> Endpoint:
    """The endpoint for ``llm`` (an LlmConfig); ``base_url`` is the embedded server's URL.

    Raises ConfigError when a key variable is named but not set.
    """
    p = preset(llm.backend)
    url = llm.base_url or base_url or p.base_url
    if not url:
        raise ConfigError(f"llm.backend = {p.name!r} needs llm.base_url")
    key_env = llm.api_key_env or p.api_key_env
    env = os.environ if environ is None else environ
    key: str | None = None
    if key_env:
        key = env.get(key_env) or None
        if key is None:
            raise ConfigError(
                f"llm backend '{p.name}' needs an API key in the environment variable {key_env}"
                " (set it there; keys are never read from config files)"
            )
    return Endpoint(p.name, url.rstrip("/"), llm.model or p.model, key_env, key)


def make_client(endpoint: Endpoint, llm: Any) -> Any:
    """An ``openai.AsyncOpenAI`` for ``endpoint`` with the configured timeout and retries."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        base_url=endpoint.base_url,
        # Local servers want no key, but the SDK insists on one: a placeholder, never logged.
        api_key=endpoint.api_key or "not-needed",
        timeout=llm.timeout_s,
        max_retries=llm.max_retries,
    )


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def backend_error(err: BaseException, endpoint: Endpoint, *, timeout_s: float | None = None) -> BackendError:
    """A one-line, key-free BackendError for an exception raised by the OpenAI SDK."""
    import openai

    where = endpoint.describe()
    if isinstance(err, TimeoutError | openai.APITimeoutError):
        limit = f" within {timeout_s:g} s (llm.timeout_s)" if timeout_s else ""
        msg = f"{where} did not answer{limit}; is the server running?"
    elif isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        msg = f"{where} is not reachable ({detail}); is the server running?"
    elif isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
        var = f" in ${endpoint.api_key_env}" if endpoint.api_key_env else ""
        msg = f"{where} refused the API key{var} (HTTP {err.status_code})"
    elif isinstance(err, openai.NotFoundError):
        msg = f"{where} does not know model '{endpoint.model}' or the path (HTTP 404); check llm.model and llm.base_url"
    elif isinstance(err, openai.APIStatusError):
        body = str(getattr(err, "message", "") or err).strip().splitlines()
        msg = f"{where} failed (HTTP {err.status_code}): {body[0] if body else type(err).__name__}"
    else:
        first = str(err).strip().splitlines()
        msg = f"{where} failed: {first[0] if first else type(err).__name__}"
    return BackendError(scrub(msg[:400], endpoint.api_key))
