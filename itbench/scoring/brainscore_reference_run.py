"""Brain-Score's own metric, ceiling and pixels model on exported assemblies: run INSIDE the reference env.

Why a separate script: it runs with the interpreter of the environment that
``itbench.scoring.brainscore_reference`` builds (brainscore-vision 2.4.2,
numpy<2, xarray<2022.6), where itbench itself is not installed. It imports
nothing from itbench; it reads one job (JSON), composes Brain-Score's pieces
the way its ``MajajHong2015public`` benchmark does
(``brainscore_vision/benchmarks/majajhong2015/benchmark.py``: target =
``average_repetition`` of the trial-level assembly, ``load_metric('pls',
crossvalidation_kwargs=dict(stratification_coord='object_name'))``, ceiling =
``load_ceiling('internal_consistency')`` of the trial-level assembly,
``explained_variance`` for the ceiled score) and writes the numbers as JSON.

Usage: ``python brainscore_reference_run.py JOB.json`` (see ``main``).
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from typing import Any

import numpy as np
import xarray as xr

MAJAJHONG_VISUAL_DEGREES = 8  # the benchmark's VISUAL_DEGREES
MAJAJHONG_TRIALS = 50  # the benchmark's NUMBER_OF_TRIALS


def load_assembly(path: str) -> Any:
    """A BrainIO NetCDF file as Brain-Score's NeuroidAssembly (it rebuilds the MultiIndexes)."""
    from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly

    return NeuroidAssembly(xr.open_dataarray(path).load())


def pixels_activations(spec: dict[str, Any]) -> Any:
    """The ``pixels`` plugin's IT activations of the stimulus files, as the benchmark asks for them."""
    import pandas as pd
    from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
    from brainscore_vision import load_model
    from brainscore_vision.benchmark_helpers.screen import place_on_screen

    stimuli = StimulusSet(
        pd.DataFrame({"stimulus_id": spec["stimulus_id"], "object_name": spec["object_name"]})
    )
    stimuli.stimulus_paths = dict(zip(spec["stimulus_id"], spec["files"], strict=True))
    stimuli.identifier = spec["identifier"]
    model = load_model("pixels")
    model.start_recording("IT", time_bins=[(70, 170)])
    stimuli = place_on_screen(
        stimuli, target_visual_degrees=model.visual_degrees(), source_visual_degrees=MAJAJHONG_VISUAL_DEGREES
    )
    source = model.look_at(stimuli, number_of_trials=MAJAJHONG_TRIALS)
    if "time_bin" in source.dims and source.sizes["time_bin"] == 1:
        source = source.squeeze("time_bin")
    return source


def split_medians(raw: Any) -> list[float]:
    """Median over neuroids of each split's values (Brain-Score's per-split aggregate)."""
    return [float(x) for x in raw.median(dim="neuroid").values]


def ceiling_of(trials: Any) -> dict[str, Any]:
    """Brain-Score's internal-consistency ceiling of the trial-level assembly (the object and its numbers)."""
    from brainscore_vision import load_ceiling

    ceiling = load_ceiling("internal_consistency")(trials)
    return {
        "object": ceiling,
        "ceiling": float(ceiling.values),
        "ceiling_error": float(ceiling.attrs["error"].values),
        "split_ceiling": split_medians(ceiling.attrs["raw"]),
    }


def score(source: Any, target: Any, ceiling: dict[str, Any]) -> dict[str, Any]:
    """Brain-Score's ``pls`` metric on (source, target), ceiled with its ``explained_variance``."""
    from brainscore_vision import load_metric
    from brainscore_vision.benchmark_helpers.neural_common import explained_variance

    metric = load_metric("pls", crossvalidation_kwargs={"stratification_coord": "object_name"})
    started = time.perf_counter()
    raw = metric(source, target)
    metric_s = time.perf_counter() - started
    ceiled = explained_variance(raw, ceiling["object"])
    per_split = raw.attrs["raw"]
    r, c = float(raw.values), ceiling["ceiling"]
    return {
        "raw_r": r,
        "raw_r_error": float(raw.attrs["error"].values),
        "split_median_r": split_medians(per_split),
        "per_neuroid_r": [float(x) for x in per_split.mean(dim="split").values],
        "neuroid_id": [str(x) for x in per_split["neuroid_id"].values],
        **{k: v for k, v in ceiling.items() if k != "object"},
        "brainscore_pr2169": float(ceiled.values),  # Brain-Score's own explained_variance: r^2 / ceiling
        "brainscore_pre2026": (r / c) ** 2,  # the pre-PR-#2169 formula, from Brain-Score's r and ceiling
        "metric_seconds": metric_s,
        "source_shape": [int(n) for n in source.shape],
    }


def source_of(spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """One source assembly: exported features, or the pixels plugin's activations (every stride-th)."""
    if "features" in spec:
        return load_assembly(spec["features"]), {}
    full = pixels_activations(spec["pixels"])
    extra = {
        "plugin_shape": [int(n) for n in full.shape],
        "plugin_stimulus_id": [str(x) for x in full["stimulus_id"].values],  # row order of saved features
    }
    if spec["pixels"].get("save_features"):
        np.save(spec["pixels"]["save_features"], np.asarray(full.values))
    stride = int(spec["pixels"].get("stride", 1))
    return (full.isel(neuroid=slice(None, None, stride)) if stride > 1 else full), extra


def main(argv: list[str]) -> int:
    """Read the job (trials, named sources), score every source, write one JSON result per name."""
    from brainscore_vision.benchmark_helpers.neural_common import average_repetition

    with open(argv[1]) as f:
        job = json.load(f)
    trials = load_assembly(job["trials"])
    target = average_repetition(trials)
    ceiling = ceiling_of(trials)
    results: dict[str, Any] = {}
    for name, spec in job["sources"].items():
        source, extra = source_of(spec)
        results[name] = {**score(source, target, ceiling), **extra}
    versions = {
        p: metadata.version(p) for p in ("brainscore-vision", "brainscore-core", "numpy", "scikit-learn")
    }
    with open(job["out"], "w") as f:
        json.dump({"sources": results, "versions": versions}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
