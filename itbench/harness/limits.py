"""A cgroup per isolated run, so memory and process limits count everything.

The RSS of a process tree misses memory a submission can hold elsewhere:
pages of a ``memfd``, files in ``/dev/shm`` or a tmpfs, the page cache. A
memory cgroup charges all of them to the run, and a pids cgroup caps how many
processes it can fork. This module makes one cgroup per run:

- cgroup v2 (``memory.max``, ``memory.swap.max``, ``pids.max``) where a v2
  hierarchy with those controllers is writable;
- else the v1 ``memory`` and ``pids`` controllers (``memory.limit_in_bytes``,
  ``memory.memsw.limit_in_bytes``, ``pids.max``): the machine kind this project
  runs on mounts v1 with an empty v2 ``unified`` tree;
- else nothing, and the sandbox falls back to polling RSS (plus the sizes of
  the run's tmpfs mounts).

The child joins the cgroups between fork and exec (:meth:`RunCgroup.enter`,
as root before it drops its uid), so no process of the run starts outside.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_path(controller: str) -> str | None:
    """This process's cgroup path for a v1 controller, or for v2 with ``""``."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if controller == "" and names == "":
            return path
        if controller and controller in names.split(","):
            return path
    return None


def _write(path: Path, value: str) -> None:
    path.write_text(value)


@dataclass
class RunCgroup:
    """The cgroup folders of one run and how to read them back."""

    version: int
    folders: list[Path]
    memory: Path | None
    pids: Path | None
    memory_limit: int | None
    procs_files: list[str] = field(default_factory=list)

    def enter(self) -> None:
        """Move the calling process into the run's cgroups (pre-exec in the child)."""
        for procs in self.procs_files:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def memory_bytes(self) -> int:
        """Current memory charged to the run (all kinds), 0 when unknown."""
        if self.memory is None:
            return 0
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return _read_int(self.memory / name)

    def peak_bytes(self) -> int:
        """Peak memory charged to the run, 0 when unknown."""
        if self.memory is None:
            return 0
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        return _read_int(self.memory / name)

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for memory."""
        if self.memory is None:
            return False
        if self.version == 2:
            events = _read_kv(self.memory / "memory.events")
            return events.get("oom_kill", 0) > 0 or events.get("max", 0) > 0
        oom = _read_kv(self.memory / "memory.oom_control")
        if "oom_kill" in oom:  # failcnt also counts reclaimed page cache: only a fallback
            return oom["oom_kill"] > 0
        return _read_int(self.memory / "memory.failcnt") > 0

    def pids_limited(self) -> bool:
        """Whether a fork of the run was refused by the process limit."""
        if self.pids is None:
            return False
        return _read_kv(self.pids / "pids.events").get("max", 0) > 0

    def remove(self) -> None:
        """Kill anything left in the cgroups, then delete them (best effort)."""
        for folder in self.folders:
            for _ in range(50):
                pids = _read_pids(folder)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, 9)
                time.sleep(0.02)
            with contextlib.suppress(OSError):
                folder.rmdir()

    def describe(self) -> str:
        kinds = [k for k, v in (("memory", self.memory), ("pids", self.pids)) if v is not None]
        return f"cgroup v{self.version} ({', '.join(kinds)})"


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    except OSError:
        pass
    return out


def _read_pids(folder: Path) -> list[int]:
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _v2(name: str, memory_bytes: int | None, max_pids: int | None) -> RunCgroup | None:
    """A v2 cgroup beside ours, when the controllers can be delegated to it."""
    root = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else CGROUP_ROOT / "unified"
    own = _own_path("")
    if own is None or not (root / "cgroup.controllers").exists():
        return None
    for base in (root / own.lstrip("/"), root):
        try:
            available = (base / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        wanted = [c for c in ("memory", "pids") if c in available]
        if "memory" not in wanted:
            continue
        with contextlib.suppress(OSError):
            _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        folder = base / name
        try:
            folder.mkdir()
        except OSError:
            continue
        try:
            if memory_bytes:
                _write(folder / "memory.max", str(memory_bytes))
                with contextlib.suppress(OSError):
                    _write(folder / "memory.swap.max", "0")
            if max_pids and "pids" in wanted:
                _write(folder / "pids.max", str(max_pids))
            # a probe: a folder whose controllers are not enabled has no memory.max
            if not (folder / "memory.max").exists():
                raise OSError("memory controller not delegated")
        except OSError:
            with contextlib.suppress(OSError):
                folder.rmdir()
            continue
        return RunCgroup(
            2,
            [folder],
            folder,
            folder if "pids" in wanted else None,
            memory_bytes,
            [str(folder / "cgroup.procs")],
        )
    return None


def _v1(name: str, memory_bytes: int | None, max_pids: int | None) -> RunCgroup | None:
    """v1 ``memory`` (required) and ``pids`` (when present) cgroups under ours."""
    made: list[Path] = []
    memory = pids = None
    try:
        own = _own_path("memory")
        if own is None or not (CGROUP_ROOT / "memory").is_dir():
            return None
        memory = CGROUP_ROOT / "memory" / own.lstrip("/") / name
        memory.mkdir()
        made.append(memory)
        if memory_bytes:
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        own_pids = _own_path("pids")
        if max_pids and own_pids is not None and (CGROUP_ROOT / "pids").is_dir():
            try:
                pids = CGROUP_ROOT / "pids" / own_pids.lstrip("/") / name
                pids.mkdir()
                made.append(pids)
                _write(pids / "pids.max", str(max_pids))
            except OSError:
                pids = None
    except OSError:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        return None
    procs = [str(f / "cgroup.procs") for f in made if f is not None]
    return RunCgroup(1, made, memory, pids, memory_bytes, procs)


def make_cgroup(memory_bytes: int | None, max_pids: int | None) -> RunCgroup | None:
    """A fresh cgroup for one run with these limits, or None where none can be made.

    ``ITBENCH_NO_CGROUP=1`` skips it (the tests use it to exercise the fallback).
    """
    if os.environ.get("ITBENCH_NO_CGROUP", "") not in ("", "0") or os.geteuid() != 0:
        return None
    name = f"itbench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return _v2(name, memory_bytes, max_pids) or _v1(name, memory_bytes, max_pids)
