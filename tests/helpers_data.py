"""Builders of small data files in the REAL formats, and a local HTTP server.

Reusable by every test module: a BrainIO NetCDF assembly (trial-level, IT and
V4 sites, a time_bin, written the way BrainIO writes it: MultiIndexes reset,
``DataArray.to_netcdf``), a BrainIO stimulus CSV, a zip of PNGs, a course-style
``IT_data.h5`` with small shapes, a whole MajajHong2015-like source with its
manifest, and ``LocalServer``: ``http.server`` on 127.0.0.1 that can also cut
a response short (to test interrupted downloads).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: A few real HvM object names per category (so category lookups can be checked).
HVM_SAMPLE = {
    "bear": "Animals",
    "ELEPHANT_M": "Animals",
    "face0001": "Faces",
    "alfa155": "Cars",
    "_18": "Tables",
    "_001": "Chairs",
    "f16": "Planes",
    "Apple_Fruit_obj": "Fruits",
    "cruiser": "Boats",
}


def sha1_of(path: str | Path) -> str:
    """sha1 of a file, computed here independently of itbench.data.download."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- stimuli


def hvm_like_table(n_objects: int = 4, per_object: int = 3, ext: str = "png") -> pd.DataFrame:
    """An HvM-like stimulus table: sha1-like ids, object/category names, variation, filename."""
    objects = list(HVM_SAMPLE)[:n_objects]
    rows = []
    for obj in objects:
        for k in range(per_object):
            sid = hashlib.sha1(f"{obj}-{k}".encode()).hexdigest()
            rows.append(
                {
                    "stimulus_id": sid,
                    "object_name": obj,
                    "category_name": HVM_SAMPLE[obj],
                    "variation": 0 if k % 2 == 0 else 3,
                    "filename": f"{sid}.{ext}",
                }
            )
    return pd.DataFrame(rows)


def image_pixels(stimulus_id: str, size: int = 32, grey: bool = False) -> np.ndarray:
    """Deterministic uint8 pixels for an id: HWC RGB, or HW when grey."""
    rng = np.random.default_rng(int(hashlib.sha1(stimulus_id.encode()).hexdigest()[:8], 16))
    shape = (size, size) if grey else (size, size, 3)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_stimulus_csv(table: pd.DataFrame, path: str | Path, old_naming: bool = False) -> Path:
    """A BrainIO stimulus CSV; ``old_naming`` writes ``image_id`` instead of stimulus_id."""
    path = Path(path)
    out = table.rename(columns={"stimulus_id": "image_id"}) if old_naming else table
    out.to_csv(path, index=False)
    return path


def write_png_zip(
    table: pd.DataFrame, path: str | Path, size: int = 32, grey_every: int = 3, prefix: str = ""
) -> dict[str, np.ndarray]:
    """A zip of PNGs named by ``filename`` (every ``grey_every``-th one greyscale); returns the pixels."""
    pixels = {}
    with zipfile.ZipFile(path, "w") as archive:
        for i, (sid, filename) in enumerate(zip(table["stimulus_id"], table["filename"], strict=False)):
            px = image_pixels(sid, size, grey=grey_every > 0 and i % grey_every == 0)
            archive.writestr(prefix + filename, png_bytes(px))
            pixels[sid] = px
    return pixels


# --------------------------------------------------------------------------- assemblies


def make_trials(
    table: pd.DataFrame,
    n_reps: int = 3,
    n_it: int = 4,
    n_v4: int = 2,
    seed: int = 0,
    time_bins: Sequence[tuple[int, int]] = ((70, 170),),
    stimulus_coords: bool = True,
) -> xr.DataArray:
    """A trial-level assembly as BrainIO holds it in memory: (neuroid, presentation, time_bin), MultiIndexes.

    Presentations are interleaved (rep 0 of every image, then rep 1 ...), as in
    a real session; the value of time bin k is the 70-170 bin's value + 100 k.
    """
    rng = np.random.default_rng(seed)
    ids = np.tile(table["stimulus_id"].to_numpy(), n_reps)
    reps = np.repeat(np.arange(n_reps), len(table))
    n_neuroids = n_it + n_v4
    base = rng.normal(size=(n_neuroids, len(ids))).astype(np.float32)
    values = np.stack([base + 100.0 * k for k in range(len(time_bins))], axis=-1)
    presentation = {"stimulus_id": ids, "repetition": reps}
    if stimulus_coords:
        meta = table.set_index("stimulus_id")
        for column in ("object_name", "category_name", "variation"):
            presentation[column] = meta.loc[ids, column].to_numpy()
    coords = {name: ("presentation", vals) for name, vals in presentation.items()}
    coords.update(
        neuroid_id=("neuroid", np.array([f"Tito_L_M_{j}" for j in range(n_neuroids)])),
        region=("neuroid", np.array(["IT"] * n_it + ["V4"] * n_v4)),
        animal=("neuroid", np.array(["Tito"] * n_neuroids)),
        time_bin_start=("time_bin", np.array([b[0] for b in time_bins])),
        time_bin_end=("time_bin", np.array([b[1] for b in time_bins])),
    )
    da = xr.DataArray(values, dims=("neuroid", "presentation", "time_bin"), coords=coords)
    da = da.set_index(
        presentation=list(presentation),
        neuroid=["neuroid_id", "region", "animal"],
        time_bin=["time_bin_start", "time_bin_end"],
    )
    da.attrs["stimulus_set_identifier"] = "hvm-public-test"
    return da


def write_brainio_netcdf(da: xr.DataArray, path: str | Path, as_dataset_variable: str | None = None) -> Path:
    """Write like BrainIO: reset MultiIndexes, then to_netcdf (NetCDF4/HDF5)."""
    path = Path(path)
    flat = da.reset_index([d for d in da.dims if d in da.indexes])
    if as_dataset_variable:
        flat.to_dataset(name=as_dataset_variable).to_netcdf(path, engine="h5netcdf")
    else:
        flat.name = None
        flat.to_netcdf(path, engine="h5netcdf")
    return path


def trial_values(da: xr.DataArray) -> pd.DataFrame:
    """(presentation rows) x (neuroid columns) of the first time bin, with stimulus_id/repetition: a reference."""
    flat = da.reset_index([d for d in da.dims if d in da.indexes]).isel(time_bin=0)
    frame = pd.DataFrame(flat.transpose("presentation", "neuroid").values, columns=flat["neuroid_id"].values)
    frame["stimulus_id"] = flat["stimulus_id"].values
    frame["repetition"] = flat["repetition"].values
    return frame


# --------------------------------------------------------------------------- a whole source


@dataclass
class MajajSource:
    """Files of a small MajajHong2015-like source in a folder, plus the manifest describing them."""

    folder: Path
    table: pd.DataFrame
    trials: xr.DataArray
    pixels: dict[str, np.ndarray]
    manifest: dict = field(default_factory=dict)

    def file(self, role: str) -> Path:
        return self.folder / self.manifest["files"][role]["filename"]


def build_majajhong_source(
    folder: str | Path,
    n_objects: int = 4,
    per_object: int = 5,
    n_reps: int = 3,
    stimulus_coords: bool = True,
    split: tuple[int, int, int] | None = None,
) -> MajajSource:
    """Assembly + stimulus CSV + zip under the real file names, and a manifest with their sha1s."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = hvm_like_table(n_objects, per_object)
    trials = make_trials(table, n_reps=n_reps, stimulus_coords=stimulus_coords)
    names = {
        "assembly": "assy_dicarlo_MajajHong2015_public.nc",
        "stimulus_csv": "stimulus_hvm-public.csv",
        "stimulus_zip": "stimulus_hvm-public.zip",
    }
    write_brainio_netcdf(trials, folder / names["assembly"])
    write_stimulus_csv(table, folder / names["stimulus_csv"], old_naming=True)
    pixels = write_png_zip(table, folder / names["stimulus_zip"])
    n = len(table)
    n_train, n_val, n_test = split or (n - 2 * n_objects, n_objects, n_objects)
    manifest = {
        "benchmark_id": "majajhong2015",
        "region": "IT",
        "time_bin_ms": [70, 170],
        "files": {role: {"filename": name, "sha1": sha1_of(folder / name)} for role, name in names.items()},
        "split": {"n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": 0},
    }
    return MajajSource(folder, table, trials, pixels, manifest)


# --------------------------------------------------------------------------- nx414


@dataclass
class CourseFile:
    path: Path
    images: dict[str, np.ndarray]
    spikes: dict[str, np.ndarray]
    objects: dict[str, list[str]]


def write_it_data_h5(
    path: str | Path,
    n_train: int = 6,
    n_val: int = 3,
    n_test: int = 4,
    n_neuroids: int = 5,
    size: int = 16,
    seed: int = 0,
    objects: Sequence[str] = ("bear", "face0001", "_18", "not_an_hvm_object"),
    vlen_objects: bool = False,
) -> CourseFile:
    """``IT_data.h5`` in the course's layout with small shapes (images normalised, names latin-1 bytes)."""
    import h5py

    rng = np.random.default_rng(seed)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    images, spikes, names = {}, {}, {}
    with h5py.File(path, "w") as handle:
        for split, n in counts.items():
            unit = rng.random((n, size, size, 3), dtype=np.float32)
            normed = ((unit - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).astype(np.float32)
            handle[f"stimulus_{split}"] = normed
            images[split] = normed
            names[split] = [objects[i % len(objects)] for i in range(n)]
            encoded = [name.encode("latin-1") for name in names[split]]
            if vlen_objects:
                handle.create_dataset(
                    f"object_{split}",
                    data=np.array(encoded, dtype=object),
                    dtype=h5py.special_dtype(vlen=bytes),
                )
            else:
                handle[f"object_{split}"] = np.array(encoded, dtype="S")
            if split != "test":
                spikes[split] = rng.normal(size=(n, n_neuroids)).astype(np.float32)
                handle[f"spikes_{split}"] = spikes[split]
    return CourseFile(Path(path), images, spikes, names)


# --------------------------------------------------------------------------- local HTTP server


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; paths in ``server.truncate`` are cut after N bytes of body."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/").split("?")[0]
        self.server.requests[name] += 1  # type: ignore[attr-defined]
        cut = self.server.truncate.get(name)  # type: ignore[attr-defined]
        if cut is None:
            return super().do_GET()
        data = (Path(self.directory) / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class LocalServer:
    """``with LocalServer(folder) as server: server.url`` -> an http://127.0.0.1:<port>/ base URL.

    ``server.truncate[name] = n`` makes the next downloads of ``name`` stop
    after n bytes (the Content-Length still announces the full size);
    ``server.requests`` counts GETs per file name.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        handler = lambda *a, **k: _Handler(*a, directory=str(self.folder), **k)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.requests = Counter()  # type: ignore[attr-defined]
        self.httpd.truncate = {}  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    @property
    def requests(self) -> Counter:
        return self.httpd.requests  # type: ignore[attr-defined]

    @property
    def truncate(self) -> dict[str, int]:
        return self.httpd.truncate  # type: ignore[attr-defined]

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def refused_url() -> str:
    """A 127.0.0.1 URL where nothing listens (connection refused, like being offline)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def files_in(folder: str | Path) -> set[str]:
    """Every file and folder under ``folder`` (relative), hidden ones included: to prove nothing stray is left."""
    folder = Path(folder)
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def isolate(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """Private data home and project root (with benchmark/ and submissions/) for one test.

    Fetching writes a split file under the project root when none is
    committed, so tests must never run it against the real checkout.
    """
    home, root = tmp_path / "home", tmp_path / "root"
    for folder in (home, root / "benchmark", root / "submissions"):
        folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("ITBENCH_HOME", str(home))
    monkeypatch.setenv("ITBENCH_ROOT", str(root))
    monkeypatch.delenv("ITBENCH_MIRROR", raising=False)
    return home, root
