"""Result records: JSON files that are written atomically and never lost.

A record is the only thing the leaderboard reads, so writes go to a temporary
file in the same folder and are renamed into place (atomic on POSIX), under a
lock so two concurrent runs of one submission cannot interleave. A failed run
never replaces an earlier good record: its record goes to ``failures/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from itbench.errors import ItbenchError

SCHEMA = "itbench.record/1"
STATUSES = ("ok", "failed", "skipped")
PACKAGES = ("itbench", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "xarray")


def now() -> str:
    """UTC timestamp, second precision (records are diffed and committed)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a score."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def platform_info() -> str:
    return f"{platform.system()} {platform.machine()} python {platform.python_version()}"


def record_path(results_root: Path, benchmark_id: str, submission_id: str, split: str) -> Path:
    """``<root>/<benchmark>/<id>.json`` for val, ``<id>.<split>.json`` otherwise."""
    suffix = "" if split == "val" else f".{split}"
    return results_root / benchmark_id / f"{submission_id}{suffix}.json"


def failure_path(path: Path) -> Path:
    """Where a failed run's record goes when an ok record must be kept."""
    return path.parent / "failures" / path.name


def clean_json(value: Any) -> Any:
    """NaN/inf become null: JSON has no NaN and the leaderboard shows a dash."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return clean_json(value.item())
    return value


def dumps(record: dict[str, Any]) -> str:
    """Canonical text: sorted keys, so identical records are identical bytes."""
    return json.dumps(clean_json(record), indent=1, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + fsync + rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` for one submission x benchmark."""
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


def read_record(path: Path) -> dict[str, Any]:
    """Parse one record; raises ValueError when it is not a valid record."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an {SCHEMA} record")
    if data.get("kind", "submission") == "submission" and data.get("status") not in STATUSES:
        raise ValueError(f"{path}: bad status {data.get('status')!r}")
    return data


def write_record(record: dict[str, Any], path: Path) -> Path:
    """Store a record; a non-ok record never replaces an ok one. Returns where it went."""
    text = dumps(record)
    target = path
    if record.get("status") != "ok" and path.exists():
        with contextlib.suppress(ValueError, OSError):
            if read_record(path).get("status") == "ok":
                target = failure_path(path)
    atomic_write_text(target, text)
    if target == path and record.get("status") == "ok":
        with contextlib.suppress(FileNotFoundError):
            failure_path(path).unlink()
    return target
