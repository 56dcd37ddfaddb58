"""``itbench data add``: any BrainIO assembly + stimulus set becomes a benchmark, or nothing is registered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner
from helpers_data import (
    LocalServer,
    hvm_like_table,
    isolate,
    make_trials,
    sha1_of,
    trial_values,
    write_brainio_netcdf,
    write_png_zip,
    write_stimulus_csv,
)

from itbench.cli import cli
from itbench.data import registry
from itbench.data.add import AddRequest, add_benchmark
from itbench.data.split import read_split
from itbench.errors import DataError, DownloadError
from itbench.scoring.benchmark import load_benchmark


def _shared_fixtures() -> Path:
    """``../shared/fixtures/brainio`` from the project root (or from a folder above a worktree)."""
    for base in Path(__file__).resolve().parents[1].parents:
        if (base / "shared" / "fixtures" / "brainio").is_dir():
            return base / "shared" / "fixtures" / "brainio"
    return Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "brainio"


SHARED = _shared_fixtures()
needs_shared = pytest.mark.skipif(
    not (SHARED / "assy_test_TestMe.nc").is_file(),
    reason="../shared/fixtures/brainio (Brain-Score's own test files) is not present in this checkout",
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    return isolate(tmp_path, monkeypatch)


def _state(home: Path, root: Path) -> set[str]:
    """Every file and folder under the data home and benchmark/, hidden ones included."""
    return {str(p.relative_to(home.parent)) for base in (home, root / "benchmark") for p in base.rglob("*")}


def _brainio_files(folder: Path, n_reps: int = 4, time_bins=((70, 170), (170, 270)), per_object: int = 10):
    folder.mkdir(parents=True, exist_ok=True)
    table = hvm_like_table(n_objects=4, per_object=per_object)
    trials = make_trials(table, n_reps=n_reps, n_it=5, n_v4=3, time_bins=time_bins)
    write_brainio_netcdf(trials, folder / "assy_test.nc")
    write_stimulus_csv(table, folder / "stimulus_test.csv")
    write_png_zip(table, folder / "stimulus_test.zip")
    return table, trials


# --------------------------------------------------------------------------- real Brain-Score fixtures


@needs_shared
def test_real_fixture_with_time_bin_and_image_id_is_one_command(project):
    _home, root = project
    result = CliRunner().invoke(
        cli,
        [
            "data",
            "add",
            "pkg",
            "--assembly",
            str(SHARED / "assy_test_package_assembly.nc"),
            "--stimuli",
            str(SHARED / "images" / "image_test_ten_images.csv"),
            "--images",
            str(SHARED / "images"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pkg" in registry.benchmark_ids()
    ref = xr.open_dataset(SHARED / "assy_test_package_assembly.nc")
    expected = ref["__xarray_dataarray_variable__"].values[:, :, 0].astype(float)
    bench = load_benchmark("pkg")
    ids = [str(i) for i in ref["image_id"].values]
    got = bench.source.responses.sel(presentation=bench.source.responses.stimulus_id.isin(ids))
    order = [list(got.stimulus_id.values).index(i) for i in ids]
    np.testing.assert_array_equal(got.values[order], expected)
    assert bench.source.trials is None  # one presentation per image: no ceilings
    split = read_split(root / "benchmark" / "splits" / "pkg.csv")
    assert sorted(split.index) == sorted(ids) and split.value_counts().to_dict() == {
        "train": 4,
        "val": 1,
        "test": 1,
    }
    manifest = json.loads((root / "benchmark" / "pkg" / "manifest.json").read_text())
    assert manifest["split"]["sha1"] == sha1_of(root / "benchmark" / "splits" / "pkg.csv")
    assert manifest["files"]["assembly"]["sha1"] == sha1_of(SHARED / "assy_test_package_assembly.nc")
    assert bench.images("val").shape == (1, 3, 224, 224)  # the real HvM-style PNGs load


@needs_shared
def test_real_fixture_trials_are_averaged(project):
    add_benchmark(
        AddRequest(
            "testme",
            str(SHARED / "assy_test_TestMe.nc"),
            str(SHARED / "images" / "image_test_ten_images.csv"),
            str(SHARED / "images"),
        )
    )
    data = load_benchmark("testme").source
    values = np.arange(1, 19, dtype=float).reshape(6, 3)  # the file's values, row-major (its README)
    means = pd.DataFrame(values).groupby(["n0", "n1", "n1", "n0", "n4", "n9"]).mean()
    got = pd.DataFrame(data.responses.values, index=data.responses.stimulus_id.values)
    np.testing.assert_allclose(got.loc[means.index].to_numpy(), means.to_numpy())
    assert data.trials is not None and data.trials.sizes["presentation"] == 6


@needs_shared
def test_real_extras_style_assembly_is_refused_and_nothing_is_registered(project):
    home, root = project
    before = _state(home, root)
    with pytest.raises(DataError, match="not a presentation x neuroid assembly"):
        add_benchmark(
            AddRequest(
                "extras",
                str(SHARED / "assy_test_package_assembly_extras.nc"),
                str(SHARED / "images" / "image_test_ten_images.csv"),
                str(SHARED / "images"),
            )
        )
    assert _state(home, root) == before and "extras" not in registry.benchmark_ids()


# --------------------------------------------------------------------------- assemblies in the exact BrainIO layout


def test_region_time_bin_trials_and_stratified_split(project, tmp_path):
    _home, root = project
    table, trials = _brainio_files(tmp_path / "files")
    f = tmp_path / "files"
    spec = add_benchmark(
        AddRequest(
            "mine.V4",
            str(f / "assy_test.nc"),
            str(f / "stimulus_test.csv"),
            str(f / "stimulus_test.zip"),
            region="V4",
            time_bin=(70, 170),
            seed=3,
        )
    )
    assert spec.region == "V4" and spec.split.stratify_by == "object_name" and "brainscore" in spec.protocols
    bench = load_benchmark("mine.V4")
    ref = trial_values(trials)  # first time bin = 70-170
    v4 = [str(n) for n in bench.neuroid_ids]
    assert len(v4) == 3 and all(r == "V4" for r in bench.source.responses["region"].values)
    expected = ref.groupby("stimulus_id")[v4].mean()
    got = pd.DataFrame(
        bench.source.responses.values, index=bench.source.responses.stimulus_id.values, columns=v4
    )
    np.testing.assert_allclose(got.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-6)
    assert bench.trials("val").shape[1] == 4  # repetitions kept for ceilings
    split = bench.split
    objects = table.set_index("stimulus_id").loc[split.index, "object_name"]
    per_object = pd.crosstab(objects.to_numpy(), split.to_numpy())
    assert per_object.sum().to_dict() == {"test": 4, "train": 32, "val": 4}
    assert (per_object["val"] == 1).all() and (per_object["test"] == 1).all()  # every object in every split
    # deterministic: the same files and seed give the same split in another project
    first = (root / "benchmark" / "splits" / "mine.V4.csv").read_text().split("\n", 2)[2]
    other = isolate(tmp_path / "again", pytest.MonkeyPatch())
    try:
        add_benchmark(
            AddRequest(
                "mine.V4",
                str(f / "assy_test.nc"),
                str(f / "stimulus_test.csv"),
                str(f / "stimulus_test.zip"),
                region="V4",
                time_bin=(70, 170),
                seed=3,
            )
        )
        assert (other[1] / "benchmark" / "splits" / "mine.V4.csv").read_text().split("\n", 2)[2] == first
    finally:
        pytest.MonkeyPatch().undo()


def test_later_time_bin_is_the_one_asked_for(project, tmp_path):
    _table, trials = _brainio_files(tmp_path / "files")
    f = tmp_path / "files"
    add_benchmark(
        AddRequest(
            "late",
            str(f / "assy_test.nc"),
            str(f / "stimulus_test.csv"),
            str(f / "stimulus_test.zip"),
            region="IT",
            time_bin=(170, 270),
        )
    )
    early = trial_values(trials).groupby("stimulus_id").mean(numeric_only=True)
    data = load_benchmark("late").source
    ids = list(data.responses.stimulus_id.values)
    it = [str(n) for n in data.responses.neuroid_id.values]
    np.testing.assert_allclose(data.responses.values, early.loc[ids, it].to_numpy() + 100.0, rtol=1e-5)


def _add_expecting(error, match, req: AddRequest, home: Path, root: Path) -> None:
    before = _state(home, root)
    with pytest.raises(error, match=match):
        add_benchmark(req)
    assert _state(home, root) == before, "a failed add must leave nothing behind"
    assert req.benchmark_id not in registry.benchmark_ids()


def test_bad_inputs_are_clear_errors_and_register_nothing(project, tmp_path):
    home, root = project
    table, trials = _brainio_files(tmp_path / "files")
    f = tmp_path / "files"
    files = (str(f / "assy_test.nc"), str(f / "stimulus_test.csv"), str(f / "stimulus_test.zip"))
    # several time bins and none chosen
    _add_expecting(DataError, "2 time bins", AddRequest("x", *files, region="IT"), home, root)
    # a region the assembly lacks
    _add_expecting(
        DataError, "no MT neuroids", AddRequest("x", *files, region="MT", time_bin=(70, 170)), home, root
    )
    # several regions and none chosen
    _add_expecting(DataError, "several regions", AddRequest("x", *files, time_bin=(70, 170)), home, root)
    # no stimulus_id in common with the stimulus set
    other = table.assign(stimulus_id=[f"other{i}" for i in range(len(table))])
    write_stimulus_csv(other, tmp_path / "other.csv")
    _add_expecting(
        DataError,
        "no stimulus_id of",
        AddRequest("x", files[0], str(tmp_path / "other.csv"), files[2], region="IT", time_bin=(70, 170)),
        home,
        root,
    )
    # non-numeric responses
    flat = trials.reset_index(list(trials.indexes))
    text = flat.copy(data=np.full(flat.shape, "spike", dtype=object).astype(str))
    text.name = None
    text.to_netcdf(tmp_path / "text.nc", engine="h5netcdf")
    _add_expecting(
        DataError,
        "not numbers",
        AddRequest("x", str(tmp_path / "text.nc"), files[1], files[2], region="IT", time_bin=(70, 170)),
        home,
        root,
    )
    # a failure late in staging (after files were written) still leaves nothing
    _add_expecting(
        DataError,
        "not all zero",
        AddRequest("x", *files, region="IT", time_bin=(70, 170), fractions=(0.0, 0.0, 0.0)),
        home,
        root,
    )


def test_url_with_sha1_and_a_wrong_sha1(project, tmp_path):
    home, root = project
    _brainio_files(tmp_path / "files")
    f = tmp_path / "files"
    with LocalServer(f) as server:
        url = server.url.rstrip("/")
        _add_expecting(
            DownloadError,
            "sha1",
            AddRequest(
                "web",
                f"{url}/assy_test.nc",
                str(f / "stimulus_test.csv"),
                str(f / "stimulus_test.zip"),
                assembly_sha1="0" * 40,
                region="IT",
                time_bin=(70, 170),
            ),
            home,
            root,
        )
        spec = add_benchmark(
            AddRequest(
                "web",
                f"{url}/assy_test.nc",
                str(f / "stimulus_test.csv"),
                str(f / "stimulus_test.zip"),
                assembly_sha1=sha1_of(f / "assy_test.nc"),
                region="IT",
                time_bin=(70, 170),
            )
        )
    assert spec.files["assembly"].url == f"{url}/assy_test.nc"
    assert load_benchmark("web").source.responses.sizes["neuroid"] == 5


def test_existing_id_is_refused(project, tmp_path):
    _brainio_files(tmp_path / "files")
    f = tmp_path / "files"
    with pytest.raises(Exception, match="already exists"):
        add_benchmark(
            AddRequest(
                "demo", str(f / "assy_test.nc"), str(f / "stimulus_test.csv"), str(f / "stimulus_test.zip")
            )
        )
