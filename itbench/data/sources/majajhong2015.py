"""Benchmarks ``majajhong2015`` (IT) and ``majajhong2015.V4``: Brain-Score's public MajajHong2015 files.

``fetch`` downloads the assembly ``dicarlo.MajajHong2015.public`` and the
stimulus set ``hvm-public`` once (sha1-verified; names and checksums come from
the committed ``benchmark/majajhong2015/manifest.json``), keeps the 70-170 ms
window, checks that assembly and stimulus set describe the same images, and
writes one processed trial-level assembly per region that a registered
benchmark of this loader asks for (IT: 168 sites, V4: 88 sites) to the data
home so that ``load`` is fast. ``load(spec)`` returns trial-level and
trial-averaged responses of the spec's region.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from itbench import paths
from itbench.data.assembly import (
    add_repetition,
    average_trials,
    load_assembly,
    save_assembly,
    validate_responses,
)
from itbench.data.download import fetch_file, file_sha1
from itbench.data.hvm import hvm_category
from itbench.data.sources import SourceData
from itbench.data.split import check_split_covers, make_split, read_split, split_path, write_split
from itbench.data.stimuli import StimulusSet, load_stimulus_set
from itbench.errors import BenchmarkError, DataError

BENCHMARK_ID = "majajhong2015"
PROCESSED = "processed_IT_trials.nc"
MAIN_REGION = "IT"
INSTALL_RECORD = "installed.json"
ROLES = ("assembly", "stimulus_csv", "stimulus_zip")
STIMULUS_COORDS = ("object_name", "category_name", "variation")


def processed_name(region: str) -> str:
    """The processed trial-level file of one region (IT keeps its historical name)."""
    return f"processed_{region}_trials.nc"


def _region(spec: Any) -> str:
    return str(spec.region) if spec is not None and spec.region else MAIN_REGION


def _registered_regions(main: str) -> list[str]:
    """The main region first, then every other region a registered benchmark of this loader uses."""
    from itbench.data import registry
    from itbench.errors import ItbenchError

    try:
        others = {s.region for s in registry.all_specs() if s.loader == "majajhong2015" and s.region}
    except ItbenchError:
        others = set()
    return [main, *sorted(str(r) for r in others - {main})]


def location() -> Path:
    """Where the downloaded and processed files live: ``<data home>/majajhong2015``."""
    return paths.data_home() / BENCHMARK_ID


def manifest_path() -> Path:
    """The committed manifest (file names, sha1s, region, time bin, split sizes)."""
    return paths.benchmark_dir() / BENCHMARK_ID / "manifest.json"


def read_manifest(manifest: str | os.PathLike | dict | None = None) -> dict[str, Any]:
    """The manifest as a dict (default: the committed one); tests pass their own."""
    if isinstance(manifest, dict):
        data = manifest
        where = "the given manifest"
    else:
        path = Path(manifest) if manifest is not None else manifest_path()
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise DataError(
                f"no manifest at {path}", hint="restore benchmark/majajhong2015/manifest.json from git"
            ) from err
        except json.JSONDecodeError as err:
            raise DataError(f"manifest {path} is not valid JSON: {err}", hint="restore it from git") from err
    files = data.get("files", {})
    missing = [r for r in ROLES if not {"filename", "sha1"} <= set(files.get(r, {}))]
    if missing:
        raise DataError(
            f"{where} lacks filename/sha1 for {', '.join(missing)}",
            hint="a manifest lists assembly, stimulus_csv and stimulus_zip with their sha1",
        )
    return data


def _record_path() -> Path:
    return location() / INSTALL_RECORD


def installed(spec: Any = None) -> bool:
    """Whether ``fetch`` has completed here (its record and the region's processed file exist)."""
    return _record_path().is_file() and (location() / processed_name(_region(spec))).is_file()


def _read_record() -> dict[str, Any]:
    try:
        return json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            f"the install record {_record_path()} is unreadable: {err}",
            hint="run `itbench data fetch majajhong2015` again",
        ) from err


def files(spec: Any = None) -> list[dict[str, Any]]:
    """Installed files (downloads and this region's processed file) with sizes and sha1s."""
    if not _record_path().is_file():
        return []
    out = []
    mine = processed_name(_region(spec))
    for name, sha1 in _read_record()["files"].items():
        if name.startswith("processed_") and name != mine:
            continue
        path = location() / name
        out.append(
            {
                "name": name,
                "path": str(path),
                "size": path.stat().st_size if path.is_file() else None,
                "sha1": sha1,
            }
        )
    return out


def _checksum(file_sha1s: dict[str, str]) -> str:
    """One sha1 for the installed data: over the sorted (name, sha1) pairs of its files."""
    text = "".join(f"{name} {sha}\n" for name, sha in sorted(file_sha1s.items()))
    return hashlib.sha1(text.encode()).hexdigest()


def _it_sites(da: xr.DataArray, region: str, where: Path) -> xr.DataArray:
    """Keep the neuroids of one region (the report uses the 168 IT sites)."""
    if "region" not in da.coords:
        raise DataError(
            f"{where} has no `region` coordinate on neuroid", hint="this is not the MajajHong2015 assembly"
        )
    keep = np.asarray(da.coords["region"].values).astype(str) == region
    if not keep.any():
        found = sorted(set(np.asarray(da.coords["region"].values).astype(str)))
        raise DataError(
            f"{where} has no {region} sites (regions: {', '.join(found)})", hint="re-fetch the assembly"
        )
    return da.isel(neuroid=np.flatnonzero(keep))


def _check_ids(trials: xr.DataArray, stimuli: StimulusSet) -> None:
    """Assembly and stimulus set must describe exactly the same images."""
    assy = set(np.asarray(trials.coords["stimulus_id"].values).astype(str))
    stim = set(stimuli.index.astype(str))
    only_assy, only_stim = sorted(assy - stim), sorted(stim - assy)
    if only_assy or only_stim:
        raise DataError(
            f"the assembly and the stimulus set do not match: {len(only_assy)} assembly stimulus ids are not "
            f"in the stimulus set (e.g. {', '.join(only_assy[:3]) or '-'}), {len(only_stim)} stimulus-set ids "
            f"have no responses (e.g. {', '.join(only_stim[:3]) or '-'})",
            hint="the files come from different releases: delete the data folder and fetch again",
        )


def _add_stimulus_coords(trials: xr.DataArray, stimuli: StimulusSet) -> xr.DataArray:
    """Fill object_name / category_name / variation from the stimulus set where the assembly lacks them."""
    ids = np.asarray(trials.coords["stimulus_id"].values).astype(str)
    table = stimuli.metadata
    for column in STIMULUS_COORDS:
        if column not in trials.coords and column in table.columns:
            trials = trials.assign_coords({column: ("presentation", table[column].reindex(ids).to_numpy())})
    if "category_name" not in trials.coords and "object_name" in trials.coords:
        names = np.asarray(trials.coords["object_name"].values).astype(str)
        trials = trials.assign_coords(
            category_name=("presentation", np.array([hvm_category(n) for n in names]))
        )
    return trials


def _ensure_split(responses: xr.DataArray, spec: dict[str, Any]) -> Path:
    """Check the committed split against the data, or make it once if none is committed."""
    path = split_path(BENCHMARK_ID)
    ids = np.asarray(responses.coords["stimulus_id"].values).astype(str)
    if path.is_file():
        check_split_covers(read_split(path), ids, str(path))
        return path
    if "object_name" not in responses.coords:
        raise DataError("cannot make the split: the data has no object_name", hint="re-fetch the data")
    objects = np.asarray(responses.coords["object_name"].values).astype(str)
    sizes = {k: int(spec[k]) for k in ("n_train", "n_val", "n_test")}
    seed = int(spec.get("seed", 0))
    split = make_split(ids, objects, seed=seed, **sizes)
    comment = (
        f"Split of benchmark {BENCHMARK_ID}: {sizes['n_train']}/{sizes['n_val']}/{sizes['n_test']} train/val/test,\n"
        f"stratified by object_name, made by itbench.data.split.make_split(seed={seed}) from the stimulus ids\n"
        f"of the fetched data on {_dt.date.today().isoformat()}. It depends only on the ids and the seed,\n"
        "so every fetch of the same files makes the same split. COMMIT THIS FILE: results are only\n"
        "comparable on the same split (its sha1 is recorded with every score)."
    )
    write_split(split, path, comment)
    warnings.warn(
        f"NOTE: no committed split for {BENCHMARK_ID} was found, so one was made from the fetched stimulus ids "
        f"and written to {path}. Commit it (git add {path}) so every score uses this split.",
        UserWarning,
        stacklevel=3,
    )
    return path


def fetch(
    mirror: str | None = None, progress: bool = True, manifest: str | os.PathLike | dict | None = None
) -> Path:
    """Download, verify and process the MajajHong2015 public files into the data home.

    Returns the data folder. Safe to re-run: verified files are not downloaded
    again, and the processed assembly is replaced atomically.
    """
    spec = read_manifest(manifest)
    dest = location()
    fetched = {
        role: fetch_file(spec["files"][role]["filename"], spec["files"][role]["sha1"], dest, mirror, progress)
        for role in ROLES
    }
    time_bin = tuple(spec.get("time_bin_ms", (70, 170)))
    everything = load_assembly(fetched["assembly"], time_bin=time_bin)
    stimuli = load_stimulus_set(fetched["stimulus_csv"], fetched["stimulus_zip"], identifier="hvm-public")
    missing = stimuli.missing_files()
    if missing:
        raise DataError(
            f"{fetched['stimulus_zip']} lacks {len(missing)} images listed in the CSV (e.g. {', '.join(missing[:3])})",
            hint="delete it and fetch again",
        )
    main = spec.get("region", MAIN_REGION)
    regions: dict[str, dict[str, Any]] = {}
    processed_sha1s: dict[str, str] = {}
    trials = None
    for region in _registered_regions(main):
        if region != main and region not in set(np.asarray(everything.coords["region"].values).astype(str)):
            continue  # an optional region this release of the file lacks: that benchmark stays uninstalled
        region_trials = add_repetition(_it_sites(everything, region, fetched["assembly"]))
        _check_ids(region_trials, stimuli)
        region_trials = _add_stimulus_coords(region_trials, stimuli)
        if np.issubdtype(region_trials.dtype, np.floating) and region_trials.dtype != np.float32:
            region_trials = region_trials.astype(np.float32)
        validate_responses(region_trials, what=f"{region} responses in {fetched['assembly'].name}")
        processed = save_assembly(region_trials, dest / processed_name(region))
        processed_sha1s[processed.name] = file_sha1(processed)
        regions[region] = {
            "processed": processed.name,
            "n_neuroids": int(region_trials.sizes["neuroid"]),
            "n_presentations": int(region_trials.sizes["presentation"]),
        }
        if region == main:
            trials = region_trials
    assert trials is not None
    file_sha1s = {spec["files"][role]["filename"]: spec["files"][role]["sha1"] for role in ROLES}
    record = {
        "benchmark_id": BENCHMARK_ID,
        "files": {**file_sha1s, **processed_sha1s},
        "checksum": _checksum(file_sha1s),
        "stimulus_csv": fetched["stimulus_csv"].name,
        "stimulus_zip": fetched["stimulus_zip"].name,
        "region": main,
        "regions": regions,
        "time_bin_ms": list(time_bin),
        "n_neuroids": int(trials.sizes["neuroid"]),
        "n_presentations": int(trials.sizes["presentation"]),
        "fetched": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    tmp = _record_path().with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, _record_path())
    _ensure_split(average_trials(trials), spec.get("split", {"n_train": 2592, "n_val": 288, "n_test": 320}))
    return dest


def load(spec: Any = None) -> SourceData:
    """Trial-level and trial-averaged responses of the spec's region (default IT) plus the hvm-public images."""
    region = _region(spec)
    benchmark_id = spec.benchmark_id if spec is not None else BENCHMARK_ID
    if not installed(spec):
        fetched_before = _record_path().is_file()
        raise BenchmarkError(
            f"benchmark {benchmark_id} is not installed (no {region} data at {location()})",
            hint=(
                f"run `itbench data fetch {benchmark_id}` again (this itbench also processes {region})"
                if fetched_before
                else f"run `itbench data fetch {benchmark_id}` (downloads Brain-Score's public files; "
                "use --mirror URL where the bucket is unreachable)"
            ),
        )
    record = _read_record()
    processed = location() / processed_name(region)
    if file_sha1(processed) != record["files"].get(processed.name):
        raise DataError(
            f"{processed} does not match the checksum recorded when it was written",
            hint=f"run `itbench data fetch {benchmark_id}` again to rebuild it",
        )
    trials = load_assembly(processed)
    stimuli = load_stimulus_set(
        location() / record["stimulus_csv"], location() / record["stimulus_zip"], identifier="hvm-public"
    )
    counts = record.get("regions", {}).get(region, record)
    return SourceData(
        benchmark_id=benchmark_id,
        synthetic=False,
        responses=average_trials(trials),
        trials=trials,
        stimuli=stimuli,
        checksum=record["checksum"],
        description=(
            f"MajajHong2015 public (Brain-Score): {counts['n_neuroids']} {region} sites, "
            f"{len(stimuli)} HvM images, {counts['n_presentations']} trials, "
            f"{record['time_bin_ms'][0]}-{record['time_bin_ms'][1]} ms"
        ),
    )
