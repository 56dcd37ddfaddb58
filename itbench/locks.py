"""Advisory file locks: one writer at a time for a record, a cache entry or an environment build.

Why a module of its own: records (harness), environments (harness) and
Brain-Score's reference environment (scoring) all build or write one thing
that a second itbench process may want at the same moment; the lock sits in
the foundation so that every layer can take it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from itbench.errors import ItbenchError


@contextlib.contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """An exclusive advisory lock on ``.<name>.lock`` beside ``path``; without ``wait``, busy is an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.parent / f".{path.name}.lock"
    with open(lock_file, "w") as handle:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            raise ItbenchError(
                f"another itbench run is writing {path.name}", "wait for it to finish, then run again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
