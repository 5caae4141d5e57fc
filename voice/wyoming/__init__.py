"""``voice wyoming``: Whisper, the TTS engine and the chain as a Wyoming protocol server.

Home Assistant (its Wyoming integration) and other Wyoming clients use it for speech-to-text
(``asr``), text-to-speech (``tts``, with streaming text in) and conversation (``handle``).
:mod:`voice.wyoming.framing` turns bytes into bounded events (sans-I/O),
:mod:`voice.wyoming.service` answers them, :mod:`voice.wyoming.server` is the socket shell.
"""
