"""The three benchmarks' data, behind one shape: :class:`SourceData`.

Each benchmark id has a module ``itbench.data.sources.<id>`` with ``load() ->
SourceData``. A module may also define ``installed() -> bool``,
``location() -> Path`` and ``files() -> list[dict]`` (name, path, size, sha1),
which ``describe`` uses for ``itbench data list|info``; a module without
``installed`` is taken to be embedded (always installed).
Modules are imported lazily so ``itbench data list`` never pays for torch or
h5py imports of sources it does not touch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from itbench.errors import BenchmarkError, ItbenchError

if TYPE_CHECKING:  # importing stimuli pulls in torch; only loading a source needs it
    import pandas as pd
    import xarray as xr

    from itbench.data.stimuli import StimulusSet

KNOWN = ("majajhong2015", "nx414", "demo")


@dataclass
class SourceData:
    """Everything a benchmark needs from its data source."""

    benchmark_id: str
    synthetic: bool
    responses: xr.DataArray  # trial-averaged, presentation x neuroid, one row per stimulus
    trials: xr.DataArray | None  # trial-level (coord `repetition`), None when the source has none
    stimuli: StimulusSet  # images by stimulus_id
    checksum: str  # sha1 over the data files as installed
    description: str


def _module(benchmark_id: str) -> ModuleType:
    """The source module of a benchmark id (imported on first use)."""
    if benchmark_id not in KNOWN:
        raise BenchmarkError(
            f"unknown benchmark '{benchmark_id}'", hint=f"known benchmarks: {', '.join(KNOWN)}"
        )
    return importlib.import_module(f"itbench.data.sources.{benchmark_id}")


def load_source(benchmark_id: str) -> SourceData:
    """Load one benchmark's data (raises BenchmarkError if it is not installed)."""
    return _module(benchmark_id).load()


def installed(benchmark_id: str) -> bool:
    """Whether a benchmark's data is present (embedded sources always are)."""
    module = _module(benchmark_id)
    check = getattr(module, "installed", None)
    return bool(check()) if callable(check) else True


def _files(module: ModuleType) -> list[dict[str, Any]]:
    lister = getattr(module, "files", None)
    return list(lister()) if callable(lister) else []


def _repetition_stats(trials: xr.DataArray | None, ids: np.ndarray) -> dict[str, float] | None:
    """Repetitions per stimulus within a split: min / median / max."""
    if trials is None:
        return None
    stim = np.asarray(trials.coords["stimulus_id"].values).astype(str)
    keep = np.isin(stim, ids)
    if not keep.any():
        return None
    _, counts = np.unique(stim[keep], return_counts=True)
    return {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}


def split_summary(data: SourceData, split: pd.Series) -> dict[str, dict[str, Any]]:
    """Per split: images, images with responses, neuroids, repetitions per image."""
    have = set(np.asarray(data.responses.coords["stimulus_id"].values).astype(str))
    out = {}
    for label in ("train", "val", "test"):
        ids = split.index[split.to_numpy() == label].to_numpy().astype(str)
        out[label] = {
            "images": len(ids),
            "with_responses": int(sum(i in have for i in ids)),
            "neuroids": int(data.responses.sizes["neuroid"]),
            "repetitions": _repetition_stats(data.trials, ids),
        }
    return out


def describe(benchmark_id: str, splits: bool = True) -> dict[str, Any]:
    """What is installed for a benchmark, where, file sizes/checksums, and split sizes.

    ``splits=False`` skips loading the data (fast: enough for ``itbench data
    list``). Never raises for a benchmark that is merely not installed or
    broken: the problem is reported under ``error``.
    """
    from itbench.data.split import file_hash, load_split, split_path

    module = _module(benchmark_id)
    location = getattr(module, "location", None)
    assert module.__file__ is not None  # sources are .py modules
    info: dict[str, Any] = {
        "benchmark_id": benchmark_id,
        "installed": installed(benchmark_id),
        "location": str(location()) if callable(location) else str(Path(module.__file__).parent),
        "files": _files(module),
    }
    path = split_path(benchmark_id)
    info["split_file"] = str(path)
    info["split_hash"] = file_hash(path) if path.is_file() else None
    if not info["installed"] or not splits:
        return info
    try:
        data = load_source(benchmark_id)
        info.update(
            synthetic=data.synthetic,
            checksum=data.checksum,
            description=data.description,
            n_stimuli=len(data.stimuli),
            n_neuroids=int(data.responses.sizes["neuroid"]),
            trial_level=data.trials is not None,
        )
        info["splits"] = split_summary(data, load_split(benchmark_id)) if path.is_file() else None
    except ItbenchError as err:
        info["error"] = str(err)
    return info
