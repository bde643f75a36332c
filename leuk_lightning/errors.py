"""Exceptions with messages a researcher can act on.

Every error raised for bad user input names the file, folder or config key at fault and
says what was expected, so the run stops with one clear line instead of a deep traceback
(the entry point prints ``LeukError`` messages without the traceback).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LeukError(Exception):
    """Base class of the errors that the entry point reports as one clear message."""


class DataError(LeukError, ValueError):
    """A dataset on disk does not match the expected layout or content."""


class ConfigError(LeukError, ValueError):
    """A configuration value is missing, unknown or inconsistent."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def user_error(exc: BaseException) -> LeukError | None:
    """The LeukError behind ``exc`` (Hydra's instantiate wraps the errors of constructors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, LeukError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class CheckpointError(DataError):
    """A checkpoint file cannot be loaded safely: not a checkpoint, or it holds code objects."""


class StorageError(LeukError, OSError):
    """A file or folder cannot be written (read-only folder, full disk, no permission)."""
