"""Run limits: the operator sets the maxima, a submission may ask for less.

A submission is hostile code, so its ``[limits]`` in ``submission.toml`` is a
request, never a grant. The maxima of memory, disk, wall time, processes and
threads come from the operator, first found wins:

1. the ``itbench score`` flags (``--timeout``, ``--memory-gb``, ``--disk-gb``,
   ``--max-processes``, ``--max-threads``: the ``RunOptions`` fields);
2. environment variables ``ITBENCH_MAX_TIMEOUT_S``, ``ITBENCH_MAX_MEMORY_GB``,
   ``ITBENCH_MAX_DISK_GB``, ``ITBENCH_MAX_PROCESSES``, ``ITBENCH_MAX_THREADS``;
3. the ``[limits]`` table of the config file ``$ITBENCH_CONFIG``, else
   ``itbench.toml`` in the project root, when it exists (same keys as a
   submission's ``[limits]``: ``timeout_s``, ``memory_gb``, ``disk_gb``,
   ``processes``, ``threads``);
4. the defaults: 4 h, 85 % of the machine's memory, 20 GiB, 1024 processes,
   threads not capped.

A run gets what its submission asks for, where that is at most the maximum,
else the maximum; a request above a maximum is refused before the run starts
(a failed record naming the maximum). :func:`effective_limits` is the one
place this is decided; the effective limits go into the record's provenance.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from itbench.errors import ItbenchError, SubmissionError
from itbench.harness import sandbox
from itbench.harness.record import RunLimits
from itbench.paths import project_root

if TYPE_CHECKING:
    from itbench.harness.options import RunOptions
    from itbench.harness.submission import Submission

DEFAULT_TIMEOUT_S: Final = 4 * 3600.0
DEFAULT_MEMORY_FRACTION: Final = 0.85
DEFAULT_DISK_GB: Final = 20.0
DEFAULT_PROCESSES: Final = 1024
CONFIG_ENV: Final = "ITBENCH_CONFIG"
CONFIG_FILE: Final = "itbench.toml"
KEYS: Final = ("timeout_s", "memory_gb", "disk_gb", "processes", "threads")
ENV: Final = {
    "timeout_s": "ITBENCH_MAX_TIMEOUT_S",
    "memory_gb": "ITBENCH_MAX_MEMORY_GB",
    "disk_gb": "ITBENCH_MAX_DISK_GB",
    "processes": "ITBENCH_MAX_PROCESSES",
    "threads": "ITBENCH_MAX_THREADS",
}
UNITS: Final = {"timeout_s": " s", "memory_gb": " GiB", "disk_gb": " GiB", "processes": "", "threads": ""}
FLAGS: Final = {
    "timeout_s": "--timeout",
    "memory_gb": "--memory-gb",
    "disk_gb": "--disk-gb",
    "processes": "--max-processes",
    "threads": "--max-threads",
}


def default_memory_gb() -> float:
    """85 % of this machine's memory: room for the parent and the system."""
    import psutil

    return round(psutil.virtual_memory().total / 2**30 * DEFAULT_MEMORY_FRACTION, 1)


def _config_path() -> Path | None:
    named = os.environ.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser()
    path = project_root() / CONFIG_FILE
    return path if path.is_file() else None


def _from_config() -> dict[str, Any]:
    """The ``[limits]`` table of the operator's config file, checked ({} without one)."""
    path = _config_path()
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ItbenchError(
            f"cannot read the limits config {path.name}: {err}", f"fix or remove {path}"
        ) from None
    table = data.get("limits", {})
    try:
        return RunLimits.model_validate(table).model_dump(exclude_none=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "limits"
        raise ItbenchError(
            f"{path.name}: [limits] {where}: {first['msg']}",
            f"keys: {', '.join(KEYS)}; positive numbers (processes, threads: whole numbers)",
        ) from None


def _from_env() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in ENV.items():
        text = os.environ.get(name, "").strip()
        if not text:
            continue
        try:
            out[key] = int(text) if key in ("processes", "threads") else float(text)
            RunLimits.model_validate({key: out[key]})
        except (ValueError, ValidationError):
            raise ItbenchError(
                f"{name}={text!r} is not a valid maximum", f"a positive number, or unset {name}"
            ) from None
    return out


def _set_maxima(opts: RunOptions) -> dict[str, Any]:
    """The maxima the operator set (flags over environment over config file), no defaults."""
    flags = {
        "timeout_s": opts.timeout_s,
        "memory_gb": opts.memory_gb,
        "disk_gb": opts.disk_gb,
        "processes": opts.max_processes,
        "threads": opts.max_threads,
    }
    return {**_from_config(), **_from_env(), **{k: v for k, v in flags.items() if v}}


def pinned(opts: RunOptions) -> RunOptions:
    """``opts`` with the operator's set maxima written in: what a Ray driver sends its nodes, so
    a run is limited by the driver's settings; the defaults stay each node's own (its memory)."""
    got = _set_maxima(opts)
    return dataclasses.replace(
        opts,
        timeout_s=got.get("timeout_s"),
        memory_gb=got.get("memory_gb"),
        disk_gb=got.get("disk_gb"),
        max_processes=got.get("processes"),
        max_threads=got.get("threads"),
    )


def operator_maxima(opts: RunOptions) -> RunLimits:
    """The operator's maxima: flags, then environment, then config file, then defaults."""
    merged = _set_maxima(opts)
    merged.setdefault("timeout_s", DEFAULT_TIMEOUT_S)
    merged.setdefault("disk_gb", DEFAULT_DISK_GB)
    merged.setdefault("processes", DEFAULT_PROCESSES)
    if "memory_gb" not in merged:
        merged["memory_gb"] = default_memory_gb()
    return RunLimits.model_validate(merged)


def _show(key: str, value: float) -> str:
    return f"{value:g}{UNITS[key]}"


def granted(request: RunLimits, maxima: RunLimits, sub_id: str) -> RunLimits:
    """Each limit: the request when it is at most the maximum, the maximum when none; a request
    above a maximum refuses the run, every such request named with its maximum."""
    out: dict[str, Any] = {}
    over: list[str] = []
    for key in KEYS:
        asked, most = getattr(request, key), getattr(maxima, key)
        if asked is not None and most is not None and asked > most:
            over.append(f"{key} = {asked:g} is above the operator's maximum of {_show(key, most)}")
        out[key] = asked if asked is not None else most
    if over:
        flags = ", ".join(FLAGS[k] for k in KEYS if any(o.startswith(f"{k} =") for o in over))
        raise SubmissionError(
            f"submission '{sub_id}': its [limits] " + "; ".join(over),
            f"ask for at most the maximum in submission.toml, or the operator raises it "
            f"({flags}, ITBENCH_MAX_* or [limits] in {CONFIG_FILE})",
        )
    return RunLimits.model_validate(out)


def effective_limits(sub: Submission, opts: RunOptions) -> sandbox.Limits:
    """The sandbox limits of one run of ``sub``: the operator's maxima and the submission's request."""
    request = RunLimits(
        timeout_s=sub.timeout_s,
        memory_gb=sub.memory_gb,
        disk_gb=sub.disk_gb,
        processes=sub.processes,
        threads=sub.threads,
    )
    got = granted(request, operator_maxima(opts), sub.id)
    return sandbox.Limits(
        timeout_s=got.timeout_s,
        memory_gb=got.memory_gb,
        cpu_threads=got.threads,
        disk_gb=got.disk_gb,
        max_pids=got.processes,
    )


def describe(limits: sandbox.Limits) -> dict[str, Any]:
    """The effective limits as the record's provenance keeps them."""
    return RunLimits(
        timeout_s=limits.timeout_s,
        memory_gb=limits.memory_gb,
        disk_gb=limits.disk_gb,
        processes=limits.max_pids,
        threads=limits.cpu_threads,
    ).model_dump()
