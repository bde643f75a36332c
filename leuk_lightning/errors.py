"""Exceptions with messages a researcher can act on.

Every error raised for bad user input names the file, folder or config key at fault and
says what was expected, so the run stops with one clear line instead of a deep traceback
(the entry point prints ``LeukError`` messages without the traceback).
"""

from __future__ import annotations


class LeukError(Exception):
    """Base class of the errors that the entry point reports as one clear message."""


class DataError(LeukError, ValueError):
    """A dataset on disk does not match the expected layout or content."""


class ConfigError(LeukError, ValueError):
    """A configuration value is missing, unknown or inconsistent."""
