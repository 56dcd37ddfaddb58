"""``itbench data add``: register any BrainIO assembly + stimulus set as a new benchmark.

Why: users of the Brain-Score ecosystem have assemblies of their own; adding
one should be one command that leaves a manifest like the built-in ones, not
a new source module. The command reads the assembly (NetCDF, BrainIO layout:
presentation x neuroid [x time_bin], MultiIndex coords stored flat), picks a
region and a time bin, keeps trials (repetitions) for ceilings, matches the
stimulus set by ``stimulus_id``, makes a deterministic split (stratified by
``object_name`` where the data has one, seeded, written and hashed like the
committed ones) and writes ``benchmark/<id>/manifest.json``.

Nothing is half-registered: everything is written to temporary places and
renamed into place at the end, the manifest last (a benchmark exists once its
manifest does); any failure removes what was staged.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from itbench import paths
from itbench.data import registry
from itbench.data.assembly import add_repetition, average_trials, load_assembly, save_assembly
from itbench.data.download import file_sha1
from itbench.data.split import make_split, split_counts, write_split
from itbench.errors import BenchmarkError, DataError, ItbenchError

PROCESSED = "assembly.nc"
STIMULI_CSV = "stimuli.csv"


@dataclass
class AddRequest:
    """What ``itbench data add`` was asked to register."""

    benchmark_id: str
    assembly: str  # local path or https URL
    stimuli_csv: str
    images: str  # zip or folder (local) or zip URL
    assembly_sha1: str | None = None
    stimuli_csv_sha1: str | None = None
    images_sha1: str | None = None
    region: str | None = None
    time_bin: tuple[int, int] | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    title: str | None = None
    description: str | None = None
    citation: str = ""
    synthetic: bool = False


def _is_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def _obtain(source: str, sha1: str | None, staging: Path, what: str) -> tuple[Path, dict[str, Any]]:
    """A local file as is (sha1 checked if given), or a URL downloaded into ``staging`` (sha1 required)."""
    if _is_url(source):
        from itbench.data.download import fetch_file

        if not sha1:
            raise DataError(
                f"the {what} is a URL but no sha1 was given",
                hint="pass its sha1 (--assembly-sha1 / --stimuli-sha1 / --images-sha1) so the download can be verified",
            )
        base, name = source.rsplit("/", 1)
        path = fetch_file(name, sha1, staging / "downloads", mirror=base + "/", progress=False)
        return path, {"filename": name, "url": source, "sha1": sha1.lower(), "size": path.stat().st_size}
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"no {what} at {path}", hint="pass an existing file (or folder for images) or an https URL"
        )
    if path.is_dir():
        return path, {"filename": path.name, "sha1": _tree_sha1(path), "size": None, "url": None}
    actual = file_sha1(path)
    if sha1 and actual != sha1.lower():
        raise DataError(f"the {what} {path} has sha1 {actual}, not the {sha1} given", hint="check the file")
    return path, {"filename": path.name, "sha1": actual, "size": path.stat().st_size, "url": None}


def _tree_sha1(folder: Path) -> str:
    """sha1 over the sorted (relative path, file sha1) pairs of a folder."""
    lines = [
        f"{p.relative_to(folder).as_posix()} {file_sha1(p)}\n"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha1("".join(lines).encode()).hexdigest()


def _numeric(da: xr.DataArray, where: Path) -> xr.DataArray:
    if da.dtype.kind not in "fiu":
        raise DataError(
            f"{where} holds {da.dtype} values, not numbers: it is not a neural response assembly",
            hint="pass an assembly of firing rates or other numeric responses",
        )
    values = np.asarray(da.values, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise DataError(
            f"{where} has {bad} NaN or infinite responses", hint="clean or drop those neuroids first"
        )
    return da.astype(np.float32)


def _select_region(da: xr.DataArray, region: str | None, where: Path) -> xr.DataArray:
    regions = np.asarray(da.coords["region"].values).astype(str) if "region" in da.coords else None
    if region is None:
        if regions is not None and len(set(regions)) > 1:
            raise DataError(
                f"{where} holds neuroids of several regions ({', '.join(sorted(set(regions)))})",
                hint="choose one with --region",
            )
        return da
    if regions is None:
        raise DataError(
            f"--region {region} was given but {where} has no `region` coordinate on neuroid",
            hint="leave out --region to keep every neuroid",
        )
    keep = regions == region
    if not keep.any():
        raise DataError(
            f"{where} has no {region} neuroids (regions: {', '.join(sorted(set(regions)))})",
            hint="pass one of those to --region",
        )
    return da.isel(neuroid=np.flatnonzero(keep))


def _stimuli_table(csv_path: Path) -> pd.DataFrame:
    from itbench.data.stimuli import read_stimulus_csv

    return read_stimulus_csv(csv_path)


def _sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Train/val/test counts from fractions: val and test get at least one stimulus each."""
    if n < 3:
        raise DataError(f"only {n} stimuli have responses: a benchmark needs at least 3 (train, val, test)")
    total = sum(fractions)
    if total <= 0 or any(f < 0 for f in fractions):
        raise DataError(f"split fractions {fractions} must be non-negative and not all zero")
    n_val = max(1, round(n * fractions[1] / total))
    n_test = max(1, round(n * fractions[2] / total))
    return n - n_val - n_test, n_val, n_test


def _make_split(
    responses: xr.DataArray, fractions: tuple[float, float, float], seed: int
) -> tuple[pd.Series, str | None]:
    """Deterministic split of the stimuli: stratified by object_name when it exists and allows it."""
    ids = np.asarray(responses.coords["stimulus_id"].values).astype(str)
    sizes = _sizes(len(ids), fractions)
    if "object_name" in responses.coords:
        objects = np.asarray(responses.coords["object_name"].values).astype(str)
        try:
            return make_split(list(ids), list(objects), *sizes, seed=seed), "object_name"
        except DataError:
            pass  # too few stimuli per object to stratify: fall through to an unstratified split
    rng = np.random.default_rng(seed)
    order = np.sort(ids)[rng.permutation(len(ids))]
    labels = pd.Series("train", index=pd.Index(np.sort(ids), name="stimulus_id"), name="split")
    labels.loc[order[: sizes[2]]] = "test"
    labels.loc[order[sizes[2] : sizes[2] + sizes[1]]] = "val"
    return labels, None


def _attach_metadata(trials: xr.DataArray, table: pd.DataFrame) -> xr.DataArray:
    """object_name / category_name from the stimulus CSV where the assembly lacks them."""
    ids = np.asarray(trials.coords["stimulus_id"].values).astype(str)
    for column in ("object_name", "category_name"):
        if column not in trials.coords and column in table.columns:
            trials = trials.assign_coords(
                {column: ("presentation", table[column].reindex(ids).astype(str).to_numpy())}
            )
    return trials


def _check_match(trials: xr.DataArray, table: pd.DataFrame, where: Path, csv: Path) -> None:
    ids = set(np.asarray(trials.coords["stimulus_id"].values).astype(str))
    known = set(table.index.astype(str))
    missing = sorted(ids - known)
    if len(missing) == len(ids):
        raise DataError(
            f"no stimulus_id of {where} is in the stimulus set {csv} (e.g. {', '.join(sorted(ids)[:3])} vs "
            f"{', '.join(sorted(known)[:3])})",
            hint="pass the stimulus set these responses were recorded to",
        )
    if missing:
        raise DataError(
            f"{len(missing)} stimulus ids of {where} are not in {csv} (e.g. {', '.join(missing[:3])})",
            hint="the stimulus set must list every stimulus the assembly has responses to",
        )


def add_benchmark(req: AddRequest) -> registry.BenchmarkSpec:
    """Validate, process and register one BrainIO benchmark; returns its spec."""
    bid = req.benchmark_id
    if not registry.ID_PATTERN.fullmatch(bid):
        raise BenchmarkError(f"{bid!r} is not a benchmark id", hint="use letters, digits, _ - and inner dots")
    try:
        registry.get(bid)
    except BenchmarkError:
        pass
    else:
        raise BenchmarkError(
            f"benchmark {bid} already exists", hint=f"remove benchmark/{bid}/ first, or pick another id"
        )
    manifest_dir = registry.manifest_path(bid).parent
    split_file = paths.benchmark_dir() / "splits" / f"{bid}.csv"
    data_dir = paths.data_home() / bid
    for existing in (manifest_dir, split_file, data_dir):
        if existing.exists():
            raise BenchmarkError(f"{existing} already exists", hint="remove it, or pick another benchmark id")
    # staged beside their final places (same filesystem: the renames are atomic); hidden names,
    # so the registry never reads a staged manifest
    staging = Path(tempfile.mkdtemp(prefix=f".add-{bid}-", dir=paths.data_home()))
    paths.benchmark_dir().mkdir(parents=True, exist_ok=True)
    project_staging = Path(tempfile.mkdtemp(prefix=f".add-{bid}-", dir=paths.benchmark_dir()))
    placed: list[Path] = []
    try:
        spec, files = _stage(req, staging, project_staging)
        # commit: data, split, manifest (last: it is what registers the benchmark)
        for src, dest in files:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
            placed.append(dest)
        return spec
    except BaseException:
        for dest in reversed(placed):
            shutil.rmtree(dest, ignore_errors=True) if dest.is_dir() else dest.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(project_staging, ignore_errors=True)


@dataclass
class _Read:
    """What ``data add`` read and checked, before anything is written."""

    assembly_entry: dict[str, Any]
    csv_entry: dict[str, Any]
    images_entry: dict[str, Any]
    csv_path: Path
    images_path: Path
    trials: xr.DataArray
    responses: xr.DataArray
    n_reps: int
    ids: list[str]


def _stage(
    req: AddRequest, staging: Path, project_staging: Path
) -> tuple[registry.BenchmarkSpec, list[tuple[Path, Path]]]:
    """Data written under ``staging``, split and manifest under ``project_staging``.

    Returns the spec and (staged, final) pairs in commit order.
    """
    bid = req.benchmark_id
    read = _read_and_check(req, staging)
    out, processed, images_name = _write_data(read, staging)
    split, stratify = _make_split(read.responses, req.fractions, req.seed)
    split_tmp = _write_split_file(split, stratify, project_staging, req)
    manifest = _manifest(req, read, processed, images_name, split_tmp, split_counts(split), stratify)
    spec = registry.parse_spec(manifest, f"the manifest for {bid}")
    manifest_tmp = project_staging / "manifest"
    manifest_tmp.mkdir()
    (manifest_tmp / registry.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    files = [
        (out, paths.data_home() / bid),
        (split_tmp, paths.benchmark_dir() / "splits" / f"{bid}.csv"),
        (manifest_tmp, registry.manifest_path(bid).parent),
    ]
    return spec, files


def _read_and_check(req: AddRequest, staging: Path) -> _Read:
    """The three inputs obtained (checksummed when asked), the assembly loaded and matched to the stimuli."""
    assembly_path, assembly_entry = _obtain(req.assembly, req.assembly_sha1, staging, "assembly")
    csv_path, csv_entry = _obtain(req.stimuli_csv, req.stimuli_csv_sha1, staging, "stimulus CSV")
    images_path, images_entry = _obtain(req.images, req.images_sha1, staging, "stimulus images")
    try:
        da = load_assembly(assembly_path, time_bin=req.time_bin)
    except ItbenchError as err:
        raise DataError(f"cannot register {assembly_path}: {err.args[0]}", hint=err.hint) from err
    da = _numeric(_select_region(da, req.region, assembly_path), assembly_path)
    table = _stimuli_table(csv_path)
    _check_match(da, table, assembly_path, csv_path)
    trials = _attach_metadata(add_repetition(da), table)
    responses = average_trials(trials)
    n_reps = int(np.bincount(pd.factorize(np.asarray(trials.coords["stimulus_id"].values))[0]).max())
    ids = list(np.asarray(responses.coords["stimulus_id"].values).astype(str))
    _check_images(csv_path, images_path, ids, req.benchmark_id)
    return _Read(
        assembly_entry, csv_entry, images_entry, csv_path, images_path, trials, responses, n_reps, ids
    )


def _check_images(csv_path: Path, images_path: Path, ids: list[str], bid: str) -> None:
    """Every stimulus of the assembly has its image."""
    from itbench.data.stimuli import load_stimulus_set

    stimuli = load_stimulus_set(csv_path, images_path, identifier=bid)
    missing = [f for f in stimuli.loc[ids, "filename"].astype(str) if f in set(stimuli.missing_files())]
    if missing:
        raise DataError(
            f"{images_path} lacks {len(missing)} images of the assembly's stimuli (e.g. {missing[0]})"
        )


def _write_data(read: _Read, staging: Path) -> tuple[Path, Path, str]:
    """The processed assembly, the stimulus CSV and the images, under ``staging/data``."""
    out = staging / "data"
    out.mkdir()
    processed = save_assembly(read.trials, out / PROCESSED)
    shutil.copyfile(read.csv_path, out / STIMULI_CSV)
    images_name = "images.zip" if read.images_path.is_file() else "images"
    if read.images_path.is_file():
        shutil.copyfile(read.images_path, out / images_name)
    else:
        shutil.copytree(read.images_path, out / images_name)
    return out, processed, images_name


def _write_split_file(split: pd.Series, stratify: str | None, project_staging: Path, req: AddRequest) -> Path:
    """The committed split file, with a header that says how it was made."""
    counts = split_counts(split)
    (project_staging / "splits").mkdir()
    return write_split(
        split,
        project_staging / "splits" / f"{req.benchmark_id}.csv",
        f"Split of benchmark {req.benchmark_id} (itbench data add): {counts['train']}/{counts['val']}/{counts['test']} "
        f"train/val/test, {'stratified by ' + stratify if stratify else 'not stratified (no usable object_name)'},\n"
        f"seed {req.seed}, made on {_dt.date.today().isoformat()} from the stimulus ids alone: the same files "
        "and seed always give this split. Results are comparable only on the same split (its sha1 is recorded).",
    )


def _manifest(
    req: AddRequest,
    read: _Read,
    processed: Path,
    images_name: str,
    split_tmp: Path,
    counts: dict[str, int],
    stratify: str | None,
) -> dict[str, Any]:
    """The benchmark's manifest (what the registry reads)."""
    responses, n_reps = read.responses, read.n_reps
    trial_level = n_reps > 1
    protocols = ["fixed-split"] + (["brainscore"] if stratify or "object_name" in responses.coords else [])
    description = req.description or (
        f"Added with `itbench data add` from {read.assembly_entry['filename']}: {responses.sizes['neuroid']} "
        f"{req.region or 'all-region'} neuroids, {len(read.ids)} stimuli"
        + (f", up to {n_reps} repetitions" if trial_level else ", no repetitions (no ceilings)")
    )
    return {
        "benchmark_id": req.benchmark_id,
        "title": req.title or req.benchmark_id,
        "description": description,
        "citation": req.citation,
        "loader": "brainio",
        "synthetic": req.synthetic,
        "region": req.region,
        "time_bin_ms": list(req.time_bin) if req.time_bin else None,
        "files": {
            "assembly": read.assembly_entry,
            "stimulus_csv": read.csv_entry,
            "stimulus_images": read.images_entry,
        },
        "processed": {
            "assembly": {"filename": PROCESSED, "sha1": file_sha1(processed)},
            "stimulus_csv": STIMULI_CSV,
            "images": images_name,
        },
        "split": {
            "path": f"benchmark/splits/{req.benchmark_id}.csv",
            "sha1": file_sha1(split_tmp),
            "n_train": counts["train"],
            "n_val": counts["val"],
            "n_test": counts["test"],
            "stratify_by": stratify,
            "seed": req.seed,
        },
        "counts": {
            "stimuli": len(read.ids),
            "neuroids": int(responses.sizes["neuroid"]),
            "max_repetitions": n_reps,
        },
        "protocols": protocols,
        "default_protocol": "fixed-split",
        "added": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "order": 50,
    }
