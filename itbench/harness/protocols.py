"""Scoring protocols by id: the runner asks this registry which protocol scores a run.

A protocol is a peer module built on the run core (``itbench.harness.runcore``):
it says which split label its record carries, what it refuses up front, and how
it asks for child runs and scores what they give back. It never imports another
protocol. Adding one: write a module that exposes ``PROTOCOL`` (an object with
the :class:`ScoringProtocol` interface) and add one line to :data:`PROTOCOLS`
(``docs/internals.md`` walks through it).

Modules are imported when a protocol is asked for, so the CLI can offer the
ids without importing the harness.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from itbench.errors import ItbenchError

if TYPE_CHECKING:
    from itbench.harness.runcore import Log, RunOptions, RunState
    from itbench.harness.submission import Submission
    from itbench.scoring.benchmark import Benchmark

PROTOCOLS: dict[str, str] = {
    "fixed-split": "itbench.harness.fixed_split",
    "brainscore": "itbench.harness.brainscore_protocol",
}
"""Protocol id -> the module whose ``PROTOCOL`` implements it."""


@runtime_checkable
class ScoringProtocol(Protocol):
    """What the runner needs of a protocol; the record, its lock and its faults are the runner's."""

    id: str
    title: str

    def record_split(self, opts: RunOptions) -> str:
        """The split label of the record (``val``/``test`` for fixed-split, ``cv`` for brainscore)."""
        ...

    def check(self, bench: Benchmark, opts: RunOptions) -> None:
        """Refuse a run before anything is loaded (raise an ItbenchError)."""
        ...

    def run(self, sub: Submission, bench: Benchmark, opts: RunOptions, state: RunState, log: Log) -> None:
        """Ask the run core for child runs, score what they return, fill ``state.record``."""
        ...


def get(protocol_id: str) -> ScoringProtocol:
    """The protocol registered as ``protocol_id``, or an error naming the known ones."""
    if protocol_id not in PROTOCOLS:
        close = difflib.get_close_matches(protocol_id, list(PROTOCOLS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(PROTOCOLS)}"
        raise ItbenchError(f"unknown protocol {protocol_id!r}", hint)
    protocol = importlib.import_module(PROTOCOLS[protocol_id]).PROTOCOL
    return cast(ScoringProtocol, protocol)
