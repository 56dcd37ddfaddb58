"""Exceptions that carry a message meant for the user, not a stack trace.

The CLI prints any ``ItbenchError`` as one clear line (plus a hint) and exits
non-zero; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ItbenchError(Exception):
    """Base class: ``str(err)`` is what the user reads; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:  # message, then the hint on its own line
        base = super().__str__()
        return f"{base}\n  hint: {self.hint}" if self.hint else base


class DataError(ItbenchError):
    """A data file is missing, corrupt, or not in the expected format."""


class DownloadError(ItbenchError):
    """A download failed, was interrupted, or did not match its checksum."""


class WeightsUnavailable(ItbenchError):
    """Pretrained weights are neither cached nor downloadable (e.g. offline)."""


class SubmissionError(ItbenchError):
    """A submission is malformed, crashed, hung, or returned bad predictions."""


class BenchmarkError(ItbenchError):
    """An unknown benchmark, a benchmark not installed, or an impossible request."""
