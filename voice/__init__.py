"""voice: a local speech assistant (microphone -> VAD -> Whisper -> LLM -> TTS -> speaker)."""

__version__ = "0.1.0"
