"""Benchmark ``demo``: the embedded, offline, SYNTHETIC benchmark committed in ``benchmark/demo/``.

640 HvM-like procedurally drawn images (8 categories x 8 objects, variations
0/3/6) and trial-level responses of 168 *surrogate* IT sites computed from
EfficientNet-Lite0 features (see ``benchmark/demo/README.md`` and the
generator ``benchmark/demo/generate.py``). It is not neural data: it exists so
the whole pipeline can be run and tested without downloads.

``load`` verifies every file against the sha1s in ``benchmark/demo/manifest.json``
before reading it, so a damaged checkout fails with a message saying how to
restore the files instead of producing silently different scores.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from itbench import paths
from itbench.data.assembly import average_trials, load_assembly, validate_responses
from itbench.data.download import file_sha1
from itbench.data.sources import SourceData
from itbench.data.stimuli import load_stimulus_set
from itbench.errors import DataError

BENCHMARK_ID = "demo"
FILES = ("stimuli.csv", "stimuli.zip", "assembly.nc")
RESTORE_HINT = (
    "restore the committed files with `git checkout benchmark/demo`, or rebuild them with "
    "`.venv/bin/python benchmark/demo/generate.py` (then the manifest's checksums are rewritten too)"
)


def location() -> Path:
    """The committed demo files: ``benchmark/demo/`` of the project tree."""
    return paths.benchmark_dir() / BENCHMARK_ID


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    """``manifest.json`` of the demo files (names, sha1s, sizes, generator settings)."""
    path = (directory or location()) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"no demo manifest at {path}", hint=RESTORE_HINT) from err
    except json.JSONDecodeError as err:
        raise DataError(f"demo manifest {path} is not valid JSON: {err}", hint=RESTORE_HINT) from err
    missing = [name for name in FILES if "sha1" not in manifest.get("files", {}).get(name, {})]
    if missing:
        raise DataError(f"demo manifest {path} lists no sha1 for {', '.join(missing)}", hint=RESTORE_HINT)
    return manifest


def files(directory: Path | None = None) -> list[dict[str, Any]]:
    """The data files with their path, size on disk and expected sha1 (for ``itbench data info``)."""
    directory = directory or location()
    manifest = read_manifest(directory)
    out = []
    for name in FILES:
        path = directory / name
        size = path.stat().st_size if path.is_file() else None
        out.append({"name": name, "path": str(path), "size": size, "sha1": manifest["files"][name]["sha1"]})
    return out


def verify(directory: Path | None = None, manifest: dict[str, Any] | None = None) -> dict[str, str]:
    """sha1 of every data file, checked against the manifest; the first problem raises DataError."""
    directory = directory or location()
    manifest = manifest or read_manifest(directory)
    found = {}
    for name in FILES:
        path = directory / name
        if not path.is_file():
            raise DataError(f"demo file {path} is missing", hint=RESTORE_HINT)
        expected = manifest["files"][name]["sha1"]
        actual = file_sha1(path)
        if actual != expected:
            raise DataError(
                f"demo file {path} is damaged or was changed: sha1 {actual}, the manifest says {expected}",
                hint=RESTORE_HINT,
            )
        found[name] = actual
    return found


def data_checksum(file_sha1s: dict[str, str]) -> str:
    """One sha1 for the installed data: over the sorted ``name sha1`` lines of its files."""
    text = "".join(f"{name} {sha}\n" for name, sha in sorted(file_sha1s.items()))
    return hashlib.sha1(text.encode()).hexdigest()


def load(directory: Path | None = None) -> SourceData:
    """The demo benchmark, checksums verified first; responses are in the stimulus table's order."""
    directory = directory or location()
    manifest = read_manifest(directory)
    sha1s = verify(directory, manifest)
    trials = load_assembly(directory / "assembly.nc")
    validate_responses(trials, what="demo responses")
    stimuli = load_stimulus_set(directory / "stimuli.csv", directory / "stimuli.zip", identifier="demo")
    responses = average_trials(trials)
    order = pd.Index(np.asarray(responses["stimulus_id"].values).astype(str)).get_indexer(stimuli.index)
    if (order < 0).any() or len(order) != responses.sizes["presentation"]:
        raise DataError(
            f"demo assembly and stimulus table in {directory} describe different images",
            hint=RESTORE_HINT,
        )
    counts = manifest.get("counts", {})
    return SourceData(
        benchmark_id=BENCHMARK_ID,
        synthetic=True,
        responses=responses.isel(presentation=order),
        trials=trials,
        stimuli=stimuli,
        checksum=data_checksum(sha1s),
        description=(
            f"SYNTHETIC demo: {counts.get('sites', trials.sizes['neuroid'])} surrogate IT sites "
            f"(EfficientNet-Lite0 {manifest.get('settings', {}).get('layer', '?')} + sparse readout + noise), "
            f"{len(stimuli)} HvM-like generated images, {counts.get('reps', '?')} repetitions; not neural data"
        ),
    )


def load_generator() -> ModuleType:
    """The committed generator script ``benchmark/demo/generate.py``, imported as a module."""
    script = location() / "generate.py"
    if not script.is_file():
        raise DataError(
            f"the demo generator {script} is missing", hint="restore it with `git checkout benchmark/demo`"
        )
    name = "itbench_demo_generate"
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None  # a .py file always gets a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def regenerate(out_dir: Path | None = None, split_path: Path | None = None) -> dict[str, Any]:
    """Rebuild the demo files with the committed generator (about a minute on one core); returns the manifest."""
    return load_generator().generate(
        out_dir or location(),
        split_path or paths.benchmark_dir() / "splits" / f"{BENCHMARK_ID}.csv",
    )
