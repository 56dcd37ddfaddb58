"""BrainIO NetCDF assemblies <-> ``xarray.DataArray`` (dims presentation x neuroid).

BrainIO (Brain-Score's data format) stores a neural assembly as a NetCDF4 file
written by ``DataArray.to_netcdf`` (variable ``__xarray_dataarray_variable__``)
or as a Dataset with a ``data`` variable. MultiIndexes are reset before
writing, so every coordinate is stored flat on its dimension. This module
reads such files into one canonical shape, ``("presentation", "neuroid")``,
so the rest of itbench never has to care which vintage of BrainIO wrote them.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from itbench.errors import DataError

DIMS = ("presentation", "neuroid")
#: Names BrainIO has used for the data variable, newest first.
DATA_VARIABLES = ("__xarray_dataarray_variable__", "data")

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NETCDF3_MAGIC = b"CDF"
_REFETCH_HINT = (
    "the file is truncated or corrupt: delete it and fetch it again "
    "(`itbench data fetch <benchmark>`), or check that you passed the right file"
)


def _engine_for(path: Path) -> str:
    """Pick the xarray engine from the file's magic bytes (NetCDF4 is HDF5)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_HDF5_MAGIC):
        return "h5netcdf"
    if head.startswith(_NETCDF3_MAGIC):
        return "scipy"
    raise DataError(
        f"{path} is not a NetCDF file (it starts with bytes {head[:8]!r}, "
        "not the HDF5 or NetCDF-3 signature)",
        hint=_REFETCH_HINT,
    )


def _read_dataset(path: Path) -> xr.Dataset:
    """Open and fully load a NetCDF file, turning any low-level failure into DataError."""
    if not path.is_file():
        raise DataError(
            f"no assembly file at {path}",
            hint="fetch the benchmark data first (`itbench data fetch <benchmark>`)",
        )
    engine = _engine_for(path)
    try:
        with xr.open_dataset(path, engine=engine) as ds:
            return ds.load()
    except DataError:
        raise
    except Exception as err:  # h5py/h5netcdf/scipy raise many types for bad files
        raise DataError(
            f"could not read the assembly {path}: {type(err).__name__}: {err}",
            hint=_REFETCH_HINT,
        ) from err


def _pick_variable(ds: xr.Dataset, path: Path) -> xr.DataArray:
    """The data variable of a BrainIO file, whichever name its writer used."""
    for name in DATA_VARIABLES:
        if name in ds.data_vars:
            return ds[name]
    if len(ds.data_vars) == 1:
        return ds[next(iter(ds.data_vars))]
    raise DataError(
        f"{path} holds no assembly: expected a variable named "
        f"{' or '.join(DATA_VARIABLES)}, found {sorted(map(str, ds.data_vars)) or 'none'}",
        hint="pass a BrainIO assembly file (written by DataArray.to_netcdf)",
    )


def _dims_text(da: xr.DataArray) -> str:
    return ", ".join(f"{dim}: {size}" for dim, size in da.sizes.items())


def _select_time_bin(da: xr.DataArray, path: Path, time_bin: tuple[int, int] | None) -> xr.DataArray:
    """Drop the ``time_bin`` dim: squeeze one bin, or pick ``time_bin`` out of several.

    The bin's edges survive as attrs ``time_bin_start`` / ``time_bin_end`` (ms),
    so a reader can still tell which response window the numbers are.
    """
    n_bins = da.sizes["time_bin"]
    starts = da.coords["time_bin_start"].values if "time_bin_start" in da.coords else None
    ends = da.coords["time_bin_end"].values if "time_bin_end" in da.coords else None
    if n_bins == 1:
        index = 0
    elif time_bin is not None and starts is not None and ends is not None:
        matches = np.flatnonzero((starts == time_bin[0]) & (ends == time_bin[1]))
        if len(matches) != 1:
            bins = ", ".join(f"{s}-{e}" for s, e in zip(starts, ends, strict=False))
            raise DataError(
                f"{path} has no {time_bin[0]}-{time_bin[1]} ms time bin (bins: {bins} ms)",
                hint="pass the assembly averaged over the response window",
            )
        index = int(matches[0])
    else:
        raise DataError(
            f"{path} has {n_bins} time bins ({_dims_text(da)}); an assembly needs one",
            hint="load it with time_bin=(start_ms, end_ms) to pick the response window",
        )
    picked = da.isel(time_bin=index)
    if starts is not None:
        picked.attrs["time_bin_start"] = starts[index].item()
    if ends is not None:
        picked.attrs["time_bin_end"] = ends[index].item()
    return picked.drop_vars([c for c in ("time_bin_start", "time_bin_end", "time_bin") if c in picked.coords])


def _canonical(da: xr.DataArray, path: Path, time_bin: tuple[int, int] | None) -> xr.DataArray:
    """Reshape a freshly read variable into the (presentation, neuroid) contract."""
    dims = set(map(str, da.dims))
    if "time_bin" in dims and dims - {"time_bin"} == set(DIMS):
        da = _select_time_bin(da, path, time_bin)
    elif dims != set(DIMS):
        raise DataError(
            f"{path} is not a presentation x neuroid assembly: it has dims "
            f"({_dims_text(da)}), an assembly needs exactly {DIMS} "
            "(optionally with a single time_bin)",
            hint="itbench reads neural response assemblies; event or other assemblies are not supported",
        )
    da = da.transpose(*DIMS)
    if "image_id" in da.coords and "stimulus_id" not in da.coords:
        da = da.rename({"image_id": "stimulus_id"})
    if "stimulus_id" not in da.coords:
        raise DataError(
            f"{path} has no stimulus_id (or image_id) coordinate on presentation",
            hint="an assembly must say which stimulus each presentation showed",
        )
    da.name = None
    return da


def load_assembly(path: str | os.PathLike, time_bin: tuple[int, int] | None = None) -> xr.DataArray:
    """Read a BrainIO assembly as a DataArray with dims exactly ("presentation", "neuroid").

    Older files' ``image_id`` becomes ``stimulus_id``; a single ``time_bin`` is
    squeezed (its edges kept as attrs); with several bins, ``time_bin=(70, 170)``
    picks one. Anything else raises :class:`DataError` saying what the file holds.
    """
    path = Path(path)
    ds = _read_dataset(path)
    da = _pick_variable(ds, path)
    da.attrs = {**ds.attrs, **da.attrs}
    return _canonical(da, path, time_bin)


def _first_appearance_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group codes numbered by first appearance, plus the unique values in that order."""
    codes, uniques = pd.factorize(values, sort=False)
    return codes, np.asarray(uniques)


def _constant_within_groups(values: np.ndarray, codes: np.ndarray) -> bool:
    """Whether a coordinate has a single value per stimulus (so it survives averaging)."""
    return bool(pd.Series(values).groupby(codes).nunique(dropna=False).max() <= 1)


def average_trials(da: xr.DataArray) -> xr.DataArray:
    """Mean over repetitions: one row per stimulus_id, in order of first appearance.

    Presentation coords that are constant per stimulus (object_name, variation,
    ...) are kept; per-trial ones (repetition, trial ids) are dropped. Neuroid
    coords and attrs are kept. Integer data is averaged as float64.
    """
    if tuple(da.dims) != DIMS:
        raise DataError(f"average_trials needs dims {DIMS}, got {tuple(da.dims)}")
    ids = np.asarray(da.coords["stimulus_id"].values)
    codes, uniques = _first_appearance_codes(ids)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    values = np.asarray(da.values)
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    sums = np.add.reduceat(values[order].astype(np.float64, copy=False), starts, axis=0)
    means = (sums / counts[:, None]).astype(dtype, copy=False)
    first_rows = order[starts]

    coords: dict[Hashable, tuple[str, np.ndarray]] = {}
    for name, coord in da.coords.items():
        if coord.dims == ("presentation",):
            vals = np.asarray(coord.values)
            if name == "stimulus_id" or _constant_within_groups(vals, codes):
                coords[name] = ("presentation", vals[first_rows])
        elif coord.dims == ("neuroid",):
            coords[name] = ("neuroid", np.asarray(coord.values))
        elif coord.dims == ():
            coords[name] = coord.values
    out = xr.DataArray(means, dims=DIMS, coords=coords, attrs=dict(da.attrs))
    out.attrs["averaged_over"] = "repetitions"
    return out


def add_repetition(da: xr.DataArray) -> xr.DataArray:
    """Give a trial-level assembly a ``repetition`` coord (0, 1, ... per stimulus) if it lacks one."""
    if "repetition" in da.coords:
        return da
    ids = pd.Series(np.asarray(da.coords["stimulus_id"].values))
    return da.assign_coords(repetition=("presentation", ids.groupby(ids, sort=False).cumcount().to_numpy()))


def validate_responses(da: xr.DataArray, what: str = "responses") -> None:
    """Refuse NaN or infinite responses, saying how many and where (rows and neuroids)."""
    values = np.asarray(da.values)
    if not np.issubdtype(values.dtype, np.floating):
        return
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    rows, cols = np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))
    row_ids = np.asarray(da.coords["stimulus_id"].values)[rows] if "stimulus_id" in da.coords else rows
    col_ids = np.asarray(da.coords["neuroid_id"].values)[cols] if "neuroid_id" in da.coords else cols
    raise DataError(
        f"{what} contain {n_nan} NaN and {n_inf} infinite values, in {len(rows)} "
        f"presentations (e.g. stimulus_id {', '.join(map(str, row_ids[:3]))}) and "
        f"{len(cols)} neuroids (e.g. {', '.join(map(str, col_ids[:3]))})",
        hint="the data file is damaged or was preprocessed wrongly: re-fetch or re-import it",
    )


def _netcdf_attrs(attrs: dict) -> dict:
    """Keep only attrs NetCDF can store (str, numbers, flat lists of them)."""
    clean: dict[str, object] = {}
    for key, value in attrs.items():
        if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, bool):
            clean[key] = value
        elif isinstance(value, (list, tuple, np.ndarray)) and all(
            isinstance(v, (str, int, float, np.integer, np.floating))
            for v in np.ravel(np.asarray(value, dtype=object))
        ):
            clean[key] = np.asarray(value)
    return clean


def save_assembly(da: xr.DataArray, path: str | os.PathLike) -> Path:
    """Write ``da`` as a BrainIO-style NetCDF4 file, atomically (temp file then rename).

    MultiIndexes are reset (coords stored flat, as BrainIO does) and the
    variable is ``__xarray_dataarray_variable__``, so both ``load_assembly`` and
    BrainIO read it back. A failed write never leaves a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = da.copy(deep=False)
    multi = [dim for dim in out.dims if isinstance(out.indexes.get(dim), pd.MultiIndex)]
    if multi:
        out = out.reset_index(multi)
    out.name = None
    out.attrs = _netcdf_attrs(dict(out.attrs))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        out.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise DataError(
                f"disk full while writing {path}",
                hint="free some space or point ITBENCH_HOME at a bigger disk",
            ) from err
        raise
    return path
