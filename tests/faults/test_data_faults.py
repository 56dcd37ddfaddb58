"""Fault injection on the data path: damaged files, bad contents, broken downloads, a full disk.

Each test asserts the specific itbench error, that its message says what is
wrong (and where), and that no stray file is left behind.
"""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pooch
import pytest
import xarray as xr
from helpers_data import (
    LocalServer,
    build_majajhong_source,
    files_in,
    hvm_like_table,
    isolate,
    make_trials,
    refused_url,
    sha1_of,
    write_brainio_netcdf,
    write_it_data_h5,
    write_stimulus_csv,
)

from itbench.data.assembly import load_assembly
from itbench.data.download import fetch_file
from itbench.data.sources import installed, majajhong2015, nx414
from itbench.data.stimuli import load_stimulus_set
from itbench.errors import DataError, DownloadError

SMALL = nx414.Shapes(n_train=6, n_val=3, n_test=4, n_neuroids=5, image_size=16)


@pytest.fixture
def project(tmp_path, monkeypatch):
    return isolate(tmp_path, monkeypatch)


def truncate(path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# --------------------------------------------------------------------------- damaged files


def test_truncated_hdf5_is_refused_and_not_installed(project, tmp_path):
    home, _ = project
    course = write_it_data_h5(tmp_path / "IT_data.h5")
    truncate(course.path, 0.6)
    with pytest.raises(DataError, match="IT_data.h5 is not a readable HDF5 file") as err:
        nx414.import_file(course.path, SMALL)
    assert "download it again" in str(err.value)
    assert not installed("nx414") and files_in(home) == set()


def test_truncated_netcdf_names_file_and_suggests_refetch(tmp_path):
    path = write_brainio_netcdf(make_trials(hvm_like_table(2, 3)), tmp_path / "assy.nc")
    truncate(path, 0.6)
    with pytest.raises(DataError, match=r"could not read the assembly .*assy\.nc") as err:
        load_assembly(path)
    assert "fetch it again" in str(err.value)
    assert files_in(tmp_path) == {"assy.nc"}


def test_random_bytes_as_netcdf(tmp_path):
    path = tmp_path / "random.nc"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        DataError, match=r"random\.nc is not a NetCDF file .*not the HDF5 or NetCDF-3 signature"
    ):
        load_assembly(path)


def test_corrupt_image_in_zip(tmp_path):
    table = hvm_like_table(1, 1)
    csv = write_stimulus_csv(table, tmp_path / "s.csv")
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as z:
        z.writestr(table["filename"][0], b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # PNG signature, garbage body
    with pytest.raises(DataError, match=f"image for stimulus '{table['stimulus_id'][0]}' .* cannot be read"):
        load_stimulus_set(csv, tmp_path / "s.zip").load_images()


# --------------------------------------------------------------------------- wrong contents


def test_wrong_shapes_dtypes_and_keys_are_all_listed(project, tmp_path):
    course = write_it_data_h5(tmp_path / "IT_data.h5")
    with h5py.File(course.path, "a") as handle:
        del handle["spikes_train"]
        handle["spikes_train"] = np.zeros((6, 7), np.float32)  # 7 neuroids, not 5
        del handle["spikes_val"]
        handle["spikes_val"] = np.zeros((3, 5), np.int64)  # integers
        del handle["object_test"]
    with pytest.raises(DataError) as err:
        nx414.import_file(course.path, SMALL)
    message = str(err.value)
    assert "'spikes_train' has shape (6, 7), expected (6, 5)" in message
    assert "'spikes_val' has dtype int64, expected float" in message
    assert "missing dataset 'object_test'" in message
    assert not installed("nx414") and files_in(project[0]) == set()


@pytest.mark.parametrize("key", ["spikes_val", "stimulus_test"])
def test_nans_in_course_file(project, tmp_path, key):
    course = write_it_data_h5(tmp_path / "IT_data.h5")
    with h5py.File(course.path, "a") as handle:
        values = handle[key][...]
        values.flat[3] = np.nan
        handle[key][...] = values
    with pytest.raises(DataError, match=f"'{key}' contains NaN or infinite values"):
        nx414.import_file(course.path, SMALL)
    assert files_in(project[0]) == set()


def test_nans_in_assembly_refused_at_fetch(project, tmp_path):
    home, _ = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=3)
    trials = src.trials.copy()
    trials.values[0, 5, 0] = np.nan  # an IT site
    write_brainio_netcdf(trials, src.file("assembly"))
    manifest = _rehash(src)
    with pytest.raises(DataError, match=r"contain 1 NaN and 0 infinite values, in 1 presentations") as err:
        majajhong2015.fetch(mirror=str(src.folder), progress=False, manifest=manifest)
    assert "Tito_L_M_0" in str(err.value)
    assert not installed("majajhong2015")
    assert not (home / "majajhong2015" / majajhong2015.PROCESSED).exists()
    assert not any(name.startswith(".") for name in files_in(home / "majajhong2015"))


def test_mismatched_stimulus_ids_are_listed(project, tmp_path):
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=3)
    table = src.table.copy()
    dropped = table["stimulus_id"][2]
    table.loc[2, "stimulus_id"] = "extra-image"
    write_stimulus_csv(table, src.file("stimulus_csv"), old_naming=True)
    manifest = _rehash(src)
    with pytest.raises(DataError) as err:
        majajhong2015.fetch(mirror=str(src.folder), progress=False, manifest=manifest)
    message = str(err.value)
    assert "do not match: 1 assembly stimulus ids are not in the stimulus set" in message
    assert dropped in message and "extra-image" in message
    assert not installed("majajhong2015")


def _rehash(src) -> dict:
    """The manifest of a source whose files a test has just altered."""
    manifest = {**src.manifest, "files": {r: dict(f) for r, f in src.manifest["files"].items()}}
    for entry in manifest["files"].values():
        entry["sha1"] = sha1_of(src.folder / entry["filename"])
    return manifest


# --------------------------------------------------------------------------- broken downloads


def test_sha1_mismatch_during_fetch_leaves_nothing(project, tmp_path):
    home, _ = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=3)
    manifest = {**src.manifest, "files": {r: dict(f) for r, f in src.manifest["files"].items()}}
    manifest["files"]["assembly"]["sha1"] = "f" * 40
    actual = src.manifest["files"]["assembly"]["sha1"]
    with LocalServer(src.folder) as server, pytest.raises(DownloadError) as err:
        majajhong2015.fetch(mirror=server.url, progress=False, manifest=manifest)
    message = str(err.value)
    assert "checksum mismatch for assy_dicarlo_MajajHong2015_public.nc" in message
    assert f"expected sha1 {'f' * 40}, got {actual}" in message
    assert files_in(home / "majajhong2015") == set()
    assert not installed("majajhong2015")


def test_interrupted_download_during_fetch_then_clean_rerun(project, tmp_path):
    home, _ = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=3)
    with LocalServer(src.folder) as server:
        server.truncate["stimulus_hvm-public.zip"] = 500
        with pytest.raises(DownloadError, match="stimulus_hvm-public.zip .* was interrupted"):
            majajhong2015.fetch(mirror=server.url, progress=False, manifest=src.manifest)
        assert files_in(home / "majajhong2015") == {
            "assy_dicarlo_MajajHong2015_public.nc",
            "stimulus_hvm-public.csv",
        }
        server.truncate.clear()
        with pytest.warns(UserWarning):
            majajhong2015.fetch(mirror=server.url, progress=False, manifest=src.manifest)
        assert server.requests["assy_dicarlo_MajajHong2015_public.nc"] == 1  # not downloaded again
        assert server.requests["stimulus_hvm-public.zip"] == 2
    assert installed("majajhong2015")


def test_offline_fetch_explains_mirror_and_manual_placement(project, tmp_path):
    home, _ = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=3)
    with pytest.raises(DownloadError) as err:
        majajhong2015.fetch(mirror=refused_url(), progress=False, manifest=src.manifest)
    message = str(err.value)
    assert "could not reach 127.0.0.1" in message and "--mirror" in message
    assert str(home / "majajhong2015" / "assy_dicarlo_MajajHong2015_public.nc") in message
    assert files_in(home / "majajhong2015") == set()


def test_disk_full_during_download(project, tmp_path, monkeypatch):
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "big.bin").write_bytes(b"x" * 100_000)

    def fill_disk(self, url, output_file, pooch_obj, check_only=False):
        with open(output_file, "wb") as handle:
            handle.write(b"x" * 4096)  # part of the file lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fill_disk)
    dest = tmp_path / "dest"
    with LocalServer(folder) as server, pytest.raises(DownloadError) as err:
        fetch_file("big.bin", "0" * 40, dest, mirror=server.url, progress=False)
    message = str(err.value)
    assert f"disk full while downloading big.bin into {dest}" in message and "ITBENCH_HOME" in message
    assert files_in(dest) == set()


def test_disk_full_while_installing_course_file(project, tmp_path, monkeypatch):
    home, _ = project
    course = write_it_data_h5(tmp_path / "IT_data.h5")

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "cross-device link")

    def full_copy(src, dst, **kwargs):
        Path(dst).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nx414.os, "link", no_link)
    monkeypatch.setattr(nx414.shutil, "copyfile", full_copy)
    with pytest.raises(DataError, match="could not copy .*No space left on device") as err:
        nx414.import_file(course.path, SMALL)
    assert "free space" in str(err.value)
    assert files_in(home / "nx414") == set()


def test_disk_full_while_writing_processed_assembly(project, tmp_path, monkeypatch):
    home, _ = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=3)

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"\x89HDF partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.DataArray, "to_netcdf", full)
    with pytest.raises(DataError, match="disk full while writing .*processed_IT_trials.nc") as err:
        majajhong2015.fetch(mirror=str(src.folder), progress=False, manifest=src.manifest)
    assert "ITBENCH_HOME" in str(err.value)
    assert not installed("majajhong2015")
    assert files_in(home / "majajhong2015") == {
        "assy_dicarlo_MajajHong2015_public.nc",
        "stimulus_hvm-public.csv",
        "stimulus_hvm-public.zip",
    }
