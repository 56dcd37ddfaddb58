"""Executors: who runs the runs (submission x benchmark x split) that a command asks for.

Every executor shares the runner's driver part (plan, validate, score,
record), so a record does not depend on where its run happened:

* :class:`LocalExecutor` (the default): one run after the other, in this
  process, exactly ``runner.score_submission``; Ray is never imported.
* ``RayExecutor`` (``itbench.harness.ray_executor``): one Ray task per run
  on a cluster; the held-out responses stay in this process.

:func:`make_executor` picks one by name, so the CLI and ``itbench.score_all``
need not import Ray to offer it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from itbench.errors import ItbenchError
from itbench.harness.executor_base import Executor, Log, OnRecord, stderr_log

if TYPE_CHECKING:
    from itbench.harness.options import RunOptions
    from itbench.harness.record import SubmissionRecord

EXECUTORS = ("local", "ray")
__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "make_executor"]


class LocalExecutor:
    """Serial, in-process: today's path, with no dependency beyond itbench itself."""

    name = "local"

    def score(
        self,
        folders: Sequence[str | Path],
        benchmark_id: str,
        opts: RunOptions,
        log: Log = stderr_log,
        on_record: OnRecord | None = None,
    ) -> list[SubmissionRecord]:
        from itbench.harness.runner import score_submission

        records = []
        for folder in folders:
            record = score_submission(folder, benchmark_id, opts, log=log)
            records.append(record)
            if on_record is not None:
                on_record(record)
        return records


def make_executor(name: str = "local", address: str | None = None, max_retries: int = 2) -> Executor:
    """The executor called ``name``; ``address`` and ``max_retries`` apply to Ray only."""
    if name == "local":
        if address is not None:
            raise ItbenchError("--address applies to --executor ray only")
        return LocalExecutor()
    if name == "ray":
        try:
            from itbench.harness.ray_executor import RayExecutor
        except ImportError as err:
            raise ItbenchError(
                f"--executor ray needs Ray, which is not installed ({err})",
                "pip install -e '.[ray]'  (or: pip install 'ray[default]>=2.9,<3')",
            ) from None
        return RayExecutor(address=address, max_retries=max_retries)
    raise ItbenchError(f"unknown executor {name!r}", f"choose one of {', '.join(EXECUTORS)}")
