"""What every executor shares: the interface and the types of its callbacks.

Its own module so that the local executor (``executors``) and the Ray one
(``ray_executor``) both import it and never each other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from itbench.harness.options import RunOptions
    from itbench.harness.record import SubmissionRecord

Log = Callable[[str], None]
OnRecord = Callable[["SubmissionRecord"], None]


def stderr_log(message: str) -> None:
    """The default log: one line on standard error."""
    print(message, file=sys.stderr)


class Executor(Protocol):
    """Scores submission folders on one benchmark split and writes their records."""

    name: str

    def score(
        self,
        folders: Sequence[str | Path],
        benchmark_id: str,
        opts: RunOptions,
        log: Log = stderr_log,
        on_record: OnRecord | None = None,
    ) -> list[SubmissionRecord]:
        """One record per folder, in the folders' order; ``on_record`` sees each as it is written."""
        ...
