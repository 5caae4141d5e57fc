"""Speech recognition: the Transcriber interface and the faster-whisper engine.

Importing this package is cheap; faster-whisper loads when a model is first used.
"""

from voice.asr.base import Segment, Transcriber, Transcript
from voice.asr.whisper import (
    ModelCache,
    WhisperTranscriber,
    file_options,
    get_transcriber,
    live_options,
    transcribe_sync,
)

__all__ = [
    "ModelCache",
    "Segment",
    "Transcriber",
    "Transcript",
    "WhisperTranscriber",
    "file_options",
    "get_transcriber",
    "live_options",
    "transcribe_sync",
]
