"""Benchmark ``nx414``: the NX-414 course file ``IT_data.h5``, imported by the user.

The file holds images already ImageNet-normalised (``stimulus_*``, float32
N x 3 x 224 x 224), trial-averaged IT responses (``spikes_*``, N x 168) for the
train (2592) and val (288) images, object names (``object_*``, bytes in
latin-1), and 320 test images without responses. There are no trials.
``import_file`` validates it, copies (or hard-links) it into the data home
with a manifest; ``load`` serves it with ids ``train-0000``, ``val-0000``,
``test-0000`` ... which is also the committed split ``benchmark/splits/nx414.csv``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from itbench import paths
from itbench.data.assembly import validate_responses
from itbench.data.download import file_sha1
from itbench.data.hvm import hvm_category
from itbench.data.sources import SourceData
from itbench.data.stimuli import HDF5Images, make_stimulus_set
from itbench.errors import BenchmarkError, DataError

BENCHMARK_ID = "nx414"
FILENAME = "IT_data.h5"
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
#: Rows read at a time when scanning images for NaNs (bounded memory).
SCAN_CHUNK = 64


@dataclass(frozen=True)
class Shapes:
    """Expected sizes of the course file; tests pass small ones for small files."""

    n_train: int = 2592
    n_val: int = 288
    n_test: int = 320
    n_neuroids: int = 168
    image_size: int = 224

    def count(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def expected(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """HDF5 key -> (shape, dtype kind) as the course distributes the file."""
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        for split in SPLITS:
            n = self.count(split)
            out[f"stimulus_{split}"] = ((n, 3, self.image_size, self.image_size), "f")
            out[f"object_{split}"] = ((n,), "S")
            if split != "test":
                out[f"spikes_{split}"] = ((n, self.n_neuroids), "f")
        return out


def location() -> Path:
    """Where the imported file lives: ``<data home>/nx414``."""
    return paths.data_home() / BENCHMARK_ID


def installed() -> bool:
    """Whether ``import_file`` has completed here."""
    return (location() / FILENAME).is_file() and (location() / MANIFEST).is_file()


def _dtype_ok(dataset: Any, kind: str) -> bool:  # h5py.Dataset (untyped)
    """Float data must be float; object names may be fixed or variable-length bytes/str."""
    if kind == "f":
        return dataset.dtype.kind == "f"
    return dataset.dtype.kind in ("S", "O", "U")


def _has_nonfinite(dataset: Any) -> bool:
    """Scan a float dataset for NaN/inf in chunks (the image arrays are ~2 GB)."""
    for start in range(0, dataset.shape[0], SCAN_CHUNK):
        if not np.isfinite(dataset[start : start + SCAN_CHUNK]).all():
            return True
    return False


def _problems(handle: Any, shapes: Shapes, scan_values: bool) -> list[str]:  # an open h5py.File
    """Everything wrong with an open course file, one line per key."""
    problems = []
    for key, (shape, kind) in shapes.expected().items():
        if key not in handle:
            problems.append(f"missing dataset '{key}'")
            continue
        ds = handle[key]
        if not hasattr(ds, "shape"):
            problems.append(f"'{key}' is a group, not a dataset")
            continue
        if tuple(ds.shape) != shape:
            problems.append(f"'{key}' has shape {tuple(ds.shape)}, expected {shape}")
        if not _dtype_ok(ds, kind):
            problems.append(
                f"'{key}' has dtype {ds.dtype}, expected {'float' if kind == 'f' else 'bytes (latin-1)'}"
            )
        elif scan_values and kind == "f" and tuple(ds.shape) == shape and _has_nonfinite(ds):
            problems.append(f"'{key}' contains NaN or infinite values")
    return problems


def validate_file(path: str | os.PathLike, shapes: Shapes = Shapes(), scan_values: bool = True) -> None:
    """Raise DataError naming every wrong key, shape, dtype or NaN (or an unreadable file)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no file at {path}", hint="pass the path of the course file IT_data.h5")
    hint = "use the unmodified IT_data.h5 from the NX-414 course (download it again if it was cut short)"
    try:
        with h5py.File(path, "r") as handle:
            problems = _problems(handle, shapes, scan_values)
    except OSError as err:  # truncated, not HDF5, or unreadable chunks
        raise DataError(f"{path} is not a readable HDF5 file: {err}", hint=hint) from err
    if problems:
        raise DataError(f"{path} is not the NX-414 course file: " + "; ".join(problems), hint=hint)


def _place(src: Path, dest: Path) -> None:
    """Hard-link when on the same filesystem (no 2 GB copy), else copy; atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(src, dest):
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(
            f"could not copy {src} to {dest}: {err}", hint="check free space and permissions of ITBENCH_HOME"
        ) from err


def import_file(path: str | os.PathLike, shapes: Shapes = Shapes()) -> Path:
    """Validate the course file and install it as benchmark nx414; returns the installed path."""
    src = Path(path).expanduser()
    validate_file(src, shapes)
    dest = location() / FILENAME
    _place(src, dest)
    manifest = {
        "benchmark_id": BENCHMARK_ID,
        "filename": FILENAME,
        "sha1": file_sha1(dest),
        "size": dest.stat().st_size,
        "source": str(src.resolve()),
        "shapes": asdict(shapes),
        "imported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    tmp = location() / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, location() / MANIFEST)
    return dest


def _read_manifest() -> dict[str, Any]:
    try:
        return json.loads((location() / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"the nx414 manifest is unreadable: {err}", hint="import IT_data.h5 again") from err


def files() -> list[dict[str, Any]]:
    """The installed file with its size and the sha1 recorded at import."""
    if not installed():
        return []
    manifest = _read_manifest()
    dest = location() / FILENAME
    return [{"name": FILENAME, "path": str(dest), "size": dest.stat().st_size, "sha1": manifest["sha1"]}]


def stimulus_ids(split: str, n: int) -> list[str]:
    """The ids nx414 gives its images: ``<split>-0000`` ... in file order."""
    return [f"{split}-{i:04d}" for i in range(n)]


def split_table(shapes: Shapes = Shapes()) -> pd.Series:
    """The file's own split as a Series (what ``benchmark/splits/nx414.csv`` holds)."""
    ids = [sid for split in SPLITS for sid in stimulus_ids(split, shapes.count(split))]
    labels = [split for split in SPLITS for _ in range(shapes.count(split))]
    return pd.Series(labels, index=pd.Index(ids, name="stimulus_id"), name="split")


def _decode_names(raw: np.ndarray) -> np.ndarray:
    return np.array([v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in raw], dtype=object)


def load() -> SourceData:
    """Trial-averaged responses for train+val, all 3200 images (tensor-backed); no trials."""
    import h5py

    if not installed():
        raise BenchmarkError(
            f"benchmark {BENCHMARK_ID} is not installed (nothing at {location()})",
            hint="import the course file: `itbench data import path/to/IT_data.h5`",
        )
    manifest = _read_manifest()
    shapes = Shapes(**manifest.get("shapes", {}))
    path = location() / FILENAME
    validate_file(path, shapes, scan_values=False)
    rows, blocks = [], []
    try:
        with h5py.File(path, "r") as handle:
            for split in SPLITS:
                n = shapes.count(split)
                objects = _decode_names(handle[f"object_{split}"][:])
                for i, (sid, obj) in enumerate(zip(stimulus_ids(split, n), objects, strict=False)):
                    rows.append(
                        (
                            sid,
                            f"{FILENAME}/stimulus_{split}/{i}",
                            obj,
                            hvm_category(obj),
                            split,
                            f"stimulus_{split}",
                            i,
                        )
                    )
                if split != "test":
                    blocks.append(np.asarray(handle[f"spikes_{split}"][:], dtype=np.float32))
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}", hint="import IT_data.h5 again") from err
    table = pd.DataFrame(
        rows,
        columns=[
            "stimulus_id",
            "filename",
            "object_name",
            "category_name",
            "split",
            "h5_dataset",
            "h5_index",
        ],
    ).set_index("stimulus_id")
    stimuli = make_stimulus_set(table, HDF5Images(path), identifier="IT_data.h5")
    with_responses = table[table["split"] != "test"]
    values = np.concatenate(blocks, axis=0)
    responses = xr.DataArray(
        values,
        dims=("presentation", "neuroid"),
        coords={
            "stimulus_id": ("presentation", with_responses.index.to_numpy().astype(str)),
            "object_name": ("presentation", with_responses["object_name"].to_numpy().astype(str)),
            "category_name": ("presentation", with_responses["category_name"].to_numpy().astype(str)),
            "neuroid_id": ("neuroid", np.array([f"IT-{j:03d}" for j in range(values.shape[1])])),
            "region": ("neuroid", np.full(values.shape[1], "IT")),
        },
        attrs={"source": FILENAME, "averaged_over": "repetitions (in the course file)"},
    )
    validate_responses(responses, what=f"spikes in {path}")
    return SourceData(
        benchmark_id=BENCHMARK_ID,
        synthetic=False,
        responses=responses,
        trials=None,
        stimuli=stimuli,
        checksum=manifest["sha1"],
        description=(
            f"NX-414 course file IT_data.h5: {values.shape[1]} IT sites, {shapes.n_train}/{shapes.n_val}/"
            f"{shapes.n_test} train/val/test images (test without responses), trial-averaged only"
        ),
    )
