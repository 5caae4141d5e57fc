"""Errors a user can cause and fix: printed as one line, never as a traceback."""

from __future__ import annotations


class VoiceError(Exception):
    """A user-facing error. ``str(err)`` is one line that says what to do.

    ``exit_code`` is what the CLI exits with: 2 for bad input or config,
    3 for a missing model or dependency, 1 otherwise.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ConfigError(VoiceError):
    """A config file, environment variable or flag is wrong."""

    exit_code = 2


class InputError(VoiceError):
    """An input file or message cannot be used."""

    exit_code = 2


class ModelNotAvailable(VoiceError):
    """A model or optional engine is not installed; the hint says how to get it."""

    exit_code = 3


class DeviceError(VoiceError):
    """No usable audio or compute device."""

    exit_code = 4
