"""The LLM room: OpenAI-compatible backends, the embedded llama.cpp server, and the chain.

Import from here: ``create_chain``, ``LlmRuntime``, ``BackendError``.
"""

from voice.llm.backends import BackendError
from voice.llm.chain import Chain, create_chain
from voice.llm.runtime import LlmRuntime

__all__ = ["BackendError", "Chain", "LlmRuntime", "create_chain"]
