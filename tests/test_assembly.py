"""itbench.data.assembly: real BrainIO files, files written the way BrainIO writes them, averaging, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers_data import files_in, hvm_like_table, make_trials, trial_values, write_brainio_netcdf

from itbench.data.assembly import (
    add_repetition,
    average_trials,
    load_assembly,
    save_assembly,
    validate_responses,
)
from itbench.errors import DataError

DIMS = ("presentation", "neuroid")


# --------------------------------------------------------------------------- real BrainIO fixtures


def test_testme_fixture_loads_with_exact_values(shared_fixtures):
    da = load_assembly(shared_fixtures / "assy_test_TestMe.nc")
    assert da.dims == DIMS
    assert da.dtype == np.int64
    np.testing.assert_array_equal(da.values, np.arange(1, 19).reshape(6, 3))
    assert list(da["stimulus_id"].values) == ["n0", "n1", "n1", "n0", "n4", "n9"]
    assert list(da["repetition"].values) == [1, 1, 2, 1, 1, 1]
    assert list(da["neuroid_id"].values) == ["alpha", "beta", "gamma"]
    assert da["foo"].dims == ("neuroid",)


def test_package_assembly_renames_image_id_and_squeezes_time_bin(shared_fixtures):
    da = load_assembly(shared_fixtures / "assy_test_package_assembly.nc")
    assert da.dims == DIMS
    assert "image_id" not in da.coords and "time_bin" not in da.dims
    assert list(da["stimulus_id"].values) == [f"n{i}" for i in range(6)]
    np.testing.assert_array_equal(da.values, np.arange(1, 19).reshape(6, 3))
    assert (da.attrs["time_bin_start"], da.attrs["time_bin_end"]) == (0, 10)


def test_event_assembly_is_refused_with_its_dims(shared_fixtures):
    path = shared_fixtures / "assy_test_package_assembly_extras.nc"
    with pytest.raises(DataError) as err:
        load_assembly(path)
    message = str(err.value)
    assert "event: 1000" in message and "('presentation', 'neuroid')" in message and path.name in message


def test_average_trials_on_testme_matches_hand_computed_means(shared_fixtures):
    avg = average_trials(load_assembly(shared_fixtures / "assy_test_TestMe.nc"))
    assert list(avg["stimulus_id"].values) == ["n0", "n1", "n4", "n9"]  # first appearance
    expected = np.array([[5.5, 6.5, 7.5], [5.5, 6.5, 7.5], [13, 14, 15], [16, 17, 18]])
    np.testing.assert_allclose(avg.values, expected)
    assert "repetition" not in avg.coords and list(avg["foo"].values) == [1, 2, 5]


# --------------------------------------------------------------------------- files written like BrainIO


@pytest.fixture
def trials():
    return make_trials(hvm_like_table(3, 4), n_reps=3, n_it=3, n_v4=2, seed=1)


@pytest.mark.parametrize("variable", [None, "data"])
def test_brainio_written_file_loads_transposed_and_flat(tmp_path, trials, variable):
    path = write_brainio_netcdf(trials, tmp_path / "assy.nc", as_dataset_variable=variable)
    da = load_assembly(path)
    ref = trial_values(trials)
    assert da.dims == DIMS and da.sizes == {"presentation": 36, "neuroid": 5}
    np.testing.assert_array_equal(da.values, ref[list(da["neuroid_id"].values)].to_numpy())
    np.testing.assert_array_equal(da["stimulus_id"].values, ref["stimulus_id"])
    assert list(da["region"].values) == ["IT"] * 3 + ["V4"] * 2
    assert set(da.coords) >= {"object_name", "category_name", "variation", "repetition", "animal"}
    assert da.attrs["stimulus_set_identifier"] == "hvm-public-test"


def test_multiple_time_bins_need_a_window(tmp_path):
    da = make_trials(hvm_like_table(2, 2), time_bins=((70, 170), (170, 270)))
    path = write_brainio_netcdf(da, tmp_path / "bins.nc")
    with pytest.raises(DataError, match="has 2 time bins"):
        load_assembly(path)
    first, second = load_assembly(path, time_bin=(70, 170)), load_assembly(path, time_bin=(170, 270))
    np.testing.assert_allclose(second.values - first.values, 100.0, rtol=1e-5)
    assert (first.attrs["time_bin_start"], first.attrs["time_bin_end"]) == (70, 170)
    with pytest.raises(DataError, match=r"no 0-50 ms time bin \(bins: 70-170, 170-270 ms\)"):
        load_assembly(path, time_bin=(0, 50))


def test_average_trials_matches_pandas_groupby(tmp_path, trials):
    da = load_assembly(write_brainio_netcdf(trials, tmp_path / "assy.nc"))
    avg = average_trials(da)
    ref = trial_values(trials)
    neuroids = list(da["neuroid_id"].values)
    expected = ref.groupby("stimulus_id", sort=False)[neuroids].mean()
    assert avg.dims == DIMS
    assert list(avg["stimulus_id"].values) == list(expected.index)
    np.testing.assert_allclose(avg.values, expected.to_numpy(), rtol=1e-5, atol=1e-7)
    assert avg.dtype == np.float32
    assert set(avg.coords) == {
        "stimulus_id",
        "object_name",
        "category_name",
        "variation",
        "neuroid_id",
        "region",
        "animal",
    }
    table = hvm_like_table(3, 4).set_index("stimulus_id")
    assert list(avg["object_name"].values) == list(table.loc[expected.index, "object_name"])


def test_add_repetition_counts_per_stimulus():
    da = xr.DataArray(np.zeros((5, 1)), dims=DIMS, coords={"stimulus_id": ("presentation", list("abacb"))})
    assert list(add_repetition(da)["repetition"].values) == [0, 0, 1, 0, 1]


# --------------------------------------------------------------------------- saving


def test_save_assembly_roundtrip_readable_as_brainio_does(tmp_path, trials):
    stacked = load_assembly(write_brainio_netcdf(trials, tmp_path / "in.nc")).set_index(
        presentation=["stimulus_id", "repetition"]
    )
    out = save_assembly(stacked, tmp_path / "out.nc")
    with xr.open_dataset(out, engine="h5netcdf") as ds:  # what BrainIO's loader opens
        assert list(ds.data_vars) == ["__xarray_dataarray_variable__"]
        assert ds["stimulus_id"].dims == ("presentation",)
    back = load_assembly(out)
    np.testing.assert_array_equal(back.values, stacked.values)
    np.testing.assert_array_equal(back["repetition"].values, stacked["repetition"].values)
    assert files_in(tmp_path) == {"in.nc", "out.nc"}


def test_save_assembly_is_atomic(tmp_path, trials, monkeypatch):
    good = load_assembly(write_brainio_netcdf(trials, tmp_path / "in.nc"))
    target = save_assembly(good, tmp_path / "out.nc")
    before = target.read_bytes()

    def broken(self, path, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError("simulated failure mid-write")

    monkeypatch.setattr(xr.DataArray, "to_netcdf", broken)
    with pytest.raises(OSError, match="mid-write"):
        save_assembly(good * 2, target)
    assert target.read_bytes() == before
    assert files_in(tmp_path) == {"in.nc", "out.nc"}


def test_validate_responses_reports_counts_and_where():
    values = np.zeros((4, 3))
    values[1, 2] = np.nan
    values[3, 2] = np.nan
    values[2, 0] = np.inf
    da = xr.DataArray(
        values,
        dims=DIMS,
        coords={
            "stimulus_id": ("presentation", ["a", "b", "c", "d"]),
            "neuroid_id": ("neuroid", ["x", "y", "z"]),
        },
    )
    with pytest.raises(DataError) as err:
        validate_responses(da)
    message = str(err.value)
    assert "2 NaN and 1 infinite" in message and "3 presentations" in message and "2 neuroids" in message
    assert "stimulus_id b, c, d" in message and "(e.g. x, z)" in message
    validate_responses(da.fillna(0).where(np.isfinite(da), 0))  # clean data passes


def test_average_trials_refuses_other_dims():
    with pytest.raises(DataError, match="needs dims"):
        average_trials(xr.DataArray(np.zeros(3), dims=("event",)))


def test_missing_file_says_fetch(tmp_path):
    with pytest.raises(DataError, match="no assembly file at .*missing.nc"):
        load_assembly(tmp_path / "missing.nc")
