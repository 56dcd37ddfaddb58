"""Brain-Score's own code as the reference for the ``brainscore`` protocol: its environment and a runner.

Why: ``itbench.scoring.brainscore`` reimplements Brain-Score's
MajajHong2015public protocol; the claim that it gives Brain-Score's numbers
is only as good as a check against Brain-Score's code itself. That code pins
``numpy<2`` and ``xarray<2022.6``, which itbench's environment cannot hold,
so it gets an environment of its own: built with ``uv`` from
:data:`NO_DEPS` (installed without their dependency lists, which pull in
torch, jupyter and a database driver the metric never imports) and
:data:`REQUIREMENTS` (what the metric, the ceiling and the ``pixels`` plugin
import, found by importing them), cached under itbench's cache directory by a
hash of those lines. It is the project's own reference environment, not a
submission's, so it runs unsandboxed.

Data crosses as files in BrainIO's layout (NetCDF, ``presentation`` x
``neuroid``, flat coordinates): the trial-level assembly as the benchmark
holds it, and the features as a source assembly. The script
``brainscore_reference_run.py`` (beside this module; it imports nothing from
itbench) composes Brain-Score's pieces the way its benchmark does and
writes the numbers back as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from itbench.data.assembly import save_assembly
from itbench.errors import ItbenchError
from itbench.locks import locked
from itbench.paths import cache_dir

#: Brain-Score's packages, installed with ``--no-deps``.
NO_DEPS: tuple[str, ...] = ("brainscore-vision==2.4.2", "brainscore-core==2.5.0")
#: Their pins and what the metric, ceiling and ``pixels`` plugin import (found by trying; no torch).
REQUIREMENTS: tuple[str, ...] = (
    "numpy<2",
    "xarray<2022.6",
    "scikit-learn<1.6",
    "pandas<2.2",
    "scipy<2",
    "netcdf4",
    "h5py",
    "tqdm",
    "result-caching",
    "boto3",
    "pillow",
    "psutil",
    "opencv-python-headless",
)
SCRIPT = Path(__file__).with_name("brainscore_reference_run.py")
#: Words in uv's error output that mean the registry could not be reached (not a resolution error).
_NETWORK_SIGNS = (
    "failed to fetch",
    "error sending request",
    "dns error",
    "connection refused",
    "network is unreachable",
    "timed out",
    "could not connect",
    "temporary failure in name resolution",
    "offline",
)


class ReferenceUnavailable(ItbenchError):
    """Brain-Score's reference environment cannot be built here (no registry, no uv)."""


def requirements_text() -> str:
    """The lines the environment is built from (its cache key is their hash)."""
    return "\n".join([f"--no-deps {p}" for p in NO_DEPS] + list(REQUIREMENTS)) + "\n"


def env_path() -> Path:
    """Where the environment lives: ``<cache>/brainscore-reference/<hash of the requirements>``."""
    digest = hashlib.sha1(requirements_text().encode()).hexdigest()[:16]
    return cache_dir("brainscore-reference") / digest


def uv_binary() -> str:
    """The ``uv`` executable: the one the ``uv`` package ships, else one on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise ReferenceUnavailable("uv is not installed", hint="pip install uv") from None
        return found


def _uv(args: Sequence[str]) -> None:
    """Run uv; a failure that looks like no network becomes :class:`ReferenceUnavailable`."""
    done = subprocess.run([uv_binary(), *args], capture_output=True, text=True)
    if done.returncode == 0:
        return
    text = (done.stderr or done.stdout).strip()
    last = text.splitlines()[-1] if text else f"exit status {done.returncode}"
    if any(sign in text.lower() for sign in _NETWORK_SIGNS):
        raise ReferenceUnavailable(f"the package registry cannot be reached ({last.strip()})")
    raise ItbenchError(f"building Brain-Score's reference environment failed: {last.strip()}")


def ensure_env(log: Callable[[str], None] = lambda m: None) -> Path:
    """The reference environment's python, built on first use (a marker says the build completed).

    Built under a lock: a second process (a perf run beside the tests) waits
    and then finds it built, instead of deleting the folder the first is filling.
    """
    root = env_path()
    python = root / "bin" / "python"
    marker = root / ".complete"
    with locked(root):
        if marker.exists() and python.exists():
            return python
        shutil.rmtree(root, ignore_errors=True)
        log(f"building Brain-Score's reference environment ({', '.join(NO_DEPS)}) with uv ...")
        _uv(["venv", "--quiet", "--python", sys.executable, str(root)])
        target = ["--python", str(python), "--quiet"]
        _uv(["pip", "install", *target, "--no-deps", *NO_DEPS])
        _uv(["pip", "install", *target, *REQUIREMENTS])
        marker.write_text(requirements_text())
        return python


def features_assembly(
    features: np.ndarray, stimulus_id: Sequence[str], object_name: Sequence[str], layer: str = "features"
) -> xr.DataArray:
    """Features (N x D) as a BrainIO source assembly, the shape a Brain-Score model's ``look_at`` returns."""
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] != len(stimulus_id):
        raise ItbenchError(f"features {x.shape} do not have one row per stimulus ({len(stimulus_id)})")
    return xr.DataArray(
        x,
        dims=("presentation", "neuroid"),
        coords={
            "stimulus_id": ("presentation", np.asarray(stimulus_id, dtype=str)),
            "object_name": ("presentation", np.asarray(object_name, dtype=str)),
            "neuroid_id": ("neuroid", [f"{layer}.{i}" for i in range(x.shape[1])]),
            "layer": ("neuroid", [layer] * x.shape[1]),
        },
    )


def run_job(
    job: dict[str, Any], workdir: Path, log: Callable[[str], None] = lambda m: None
) -> dict[str, Any]:
    """Run the reference script on one job in the reference environment; its JSON result."""
    python = ensure_env(log)
    workdir.mkdir(parents=True, exist_ok=True)
    job = {**job, "out": str(workdir / "reference.json")}
    (workdir / "job.json").write_text(json.dumps(job))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        "BS_INSTALL_DEPENDENCIES": "no",  # never pip-install at import time: the env is built beforehand
        "RESULTCACHING_DISABLE": "1",
        "RESULTCACHING_HOME": str(workdir / "result_caching"),
        "BRAINIO_HOME": str(workdir / "brainio"),
        "PYTHONNOUSERSITE": "1",
    }
    log("running Brain-Score's metric and ceiling in the reference environment ...")
    done = subprocess.run(
        [str(python), str(SCRIPT), str(workdir / "job.json")], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ItbenchError(f"Brain-Score's reference run failed:\n{tail}")
    result: dict[str, Any] = json.loads((workdir / "reference.json").read_text())
    return result


@dataclass(frozen=True)
class PixelsPlugin:
    """Brain-Score's ``pixels`` plugin as a source: it looks at the stimulus files (one per stimulus).

    Every ``stride``-th of its 196,608 features is scored (1 = all); ``save_full``
    names a ``.npy`` file for its full activations (uint8), to compare features.
    """

    files: Sequence[str | os.PathLike[str]]
    stride: int = 1
    save_full: Path | None = None


def _pixels_spec(
    plugin: PixelsPlugin, stimulus_id: Sequence[str], object_name: Sequence[str]
) -> dict[str, Any]:
    if len(plugin.files) != len(stimulus_id):
        raise ItbenchError(f"{len(plugin.files)} stimulus files for {len(stimulus_id)} stimuli")
    return {
        "files": [str(Path(f).resolve()) for f in plugin.files],
        "stimulus_id": [str(s) for s in stimulus_id],
        "object_name": [str(o) for o in object_name],
        "identifier": "itbench-" + hashlib.sha1("\n".join(map(str, stimulus_id)).encode()).hexdigest()[:12],
        "stride": int(plugin.stride),
        "save_features": str(plugin.save_full) if plugin.save_full else None,
    }


def score_sources(
    trials: xr.DataArray,
    stimulus_id: Sequence[str],
    object_name: Sequence[str],
    workdir: Path,
    features: Mapping[str, np.ndarray] | None = None,
    pixels: PixelsPlugin | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, dict[str, Any]]:
    """Brain-Score's metric, ceiling and ceiled score for each source, by its own code, in one run.

    ``features``: name -> (N x D) rows in the order of ``stimulus_id``, exported as
    BrainIO source assemblies; ``pixels``: the plugin itself (result name
    ``pixels``). The target is ``average_repetition`` of ``trials`` (exported as
    they are), the ceiling ``internal_consistency`` of ``trials``. Each result
    has ``raw_r``, ``raw_r_error``, ``split_median_r``, ``per_neuroid_r`` (mean
    over splits) with ``neuroid_id``, ``ceiling``, ``ceiling_error``,
    ``split_ceiling``, ``brainscore_pr2169``, ``brainscore_pre2026``,
    ``metric_seconds`` (Brain-Score's metric alone), ``source_shape`` and ``versions``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    save_assembly(trials, workdir / "trials.nc")
    sources: dict[str, Any] = {}
    for name, x in (features or {}).items():
        path = save_assembly(features_assembly(x, stimulus_id, object_name), workdir / f"features-{name}.nc")
        sources[name] = {"features": str(path)}
    if pixels is not None:
        sources["pixels"] = {"pixels": _pixels_spec(pixels, stimulus_id, object_name)}
    out = run_job({"trials": str(workdir / "trials.nc"), "sources": sources}, workdir, log)
    return {name: {**res, "versions": out["versions"]} for name, res in out["sources"].items()}
