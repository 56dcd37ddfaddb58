"""Loader ``brainio``: benchmarks registered with ``itbench data add`` (any BrainIO assembly + stimulus set).

The manifest (written by :mod:`itbench.data.add`) names the processed files in
``<data home>/<id>/``: the trial-level assembly (region and time bin already
chosen), the stimulus CSV and the images (zip or folder). ``load`` verifies
the processed assembly's sha1 first, so a changed file fails loudly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from itbench import paths
from itbench.data.assembly import average_trials, load_assembly, validate_responses
from itbench.data.download import file_sha1
from itbench.data.sources import SourceData
from itbench.errors import BenchmarkError, DataError


def _processed(spec: Any) -> dict[str, Any]:
    extra = spec.model_extra or {}
    processed = extra.get("processed")
    if not isinstance(processed, dict) or "assembly" not in processed:
        raise DataError(
            f"the manifest of {spec.benchmark_id} lacks its `processed` files",
            hint=f"register it again with `itbench data add {spec.benchmark_id} ...`",
        )
    return processed


def location(spec: Any) -> Path:
    """``<data home>/<id>``."""
    return paths.data_home() / spec.benchmark_id


def installed(spec: Any) -> bool:
    return (location(spec) / _processed(spec)["assembly"]["filename"]).is_file()


def files(spec: Any) -> list[dict[str, Any]]:
    """The processed files with their sizes and the sha1 the manifest records for the assembly."""
    processed = _processed(spec)
    out = []
    for name, sha1 in (
        (processed["assembly"]["filename"], processed["assembly"]["sha1"]),
        (processed["stimulus_csv"], None),
        (processed["images"], None),
    ):
        path = location(spec) / name
        size = path.stat().st_size if path.is_file() else None
        out.append({"name": name, "path": str(path), "size": size, "sha1": sha1})
    return out


def _checksum(spec: Any) -> str:
    """One sha1 for the benchmark's data: over the sorted role/sha1 lines of the original files."""
    text = "".join(f"{role} {entry.sha1}\n" for role, entry in sorted(spec.files.items()))
    return hashlib.sha1(text.encode()).hexdigest()


def load(spec: Any) -> SourceData:
    """Trial-level and trial-averaged responses plus the stimulus set of an added benchmark."""
    from itbench.data.stimuli import load_stimulus_set

    if not installed(spec):
        raise BenchmarkError(
            f"benchmark {spec.benchmark_id} is not installed here (nothing at {location(spec)})",
            hint=f"its data lives in the data home of the machine that added it: run `itbench data add "
            f"{spec.benchmark_id} ...` here with the files or URLs listed in its manifest "
            "(remove benchmark/{spec.benchmark_id}/ and its split file first)",
        )
    processed = _processed(spec)
    path = location(spec) / processed["assembly"]["filename"]
    if file_sha1(path) != processed["assembly"]["sha1"]:
        raise DataError(
            f"{path} does not match the sha1 in the manifest of {spec.benchmark_id}",
            hint="the file was changed: register the benchmark again",
        )
    trials = load_assembly(path)
    validate_responses(trials, what=f"responses of {spec.benchmark_id}")
    stimuli = load_stimulus_set(
        location(spec) / processed["stimulus_csv"],
        location(spec) / processed["images"],
        identifier=spec.benchmark_id,
    )
    repeated = trials.sizes["presentation"] > len(set(trials.coords["stimulus_id"].values.tolist()))
    return SourceData(
        benchmark_id=spec.benchmark_id,
        synthetic=spec.synthetic,
        responses=average_trials(trials),
        trials=trials if repeated else None,
        stimuli=stimuli,
        checksum=_checksum(spec),
        description=spec.description,
    )
