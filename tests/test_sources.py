"""itbench.data.sources: majajhong2015 fetched end to end from 127.0.0.1, nx414 imported, dispatch and describe."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LocalServer,
    build_majajhong_source,
    files_in,
    isolate,
    sha1_of,
    trial_values,
    write_it_data_h5,
)

from itbench.data.hvm import HVM_OBJECTS, hvm_category
from itbench.data.sources import SourceData, describe, installed, known, load_source, majajhong2015, nx414
from itbench.data.split import file_hash, read_split, split_counts
from itbench.errors import BenchmarkError, DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    return isolate(tmp_path, monkeypatch)


# --------------------------------------------------------------------------- majajhong2015


def test_committed_manifest_has_brainscore_files(monkeypatch):
    monkeypatch.setenv("ITBENCH_ROOT", str(REPO))
    files = majajhong2015.read_manifest()["files"]
    assert files["assembly"]["filename"] == "assy_dicarlo_MajajHong2015_public.nc"
    assert files["assembly"]["sha1"] == "13d28ca0ce88ee550b54db3004374ae19096e9b9"
    assert files["stimulus_csv"]["sha1"] == "5ca7a3da00d8e9c694a9cd725df5ba0ad6d735af"
    assert files["stimulus_zip"]["sha1"] == "8aa44e038d7b551efa8077467622f9d48d72e473"


def test_majajhong2015_fetch_and_load_end_to_end(project, tmp_path):
    home, root = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=4, per_object=5, n_reps=3)
    assert not installed("majajhong2015")
    with LocalServer(src.folder) as server:
        with pytest.warns(UserWarning, match="no committed split for majajhong2015"):
            dest = majajhong2015.fetch(mirror=server.url, progress=False, manifest=src.manifest)
        split_file = root / "benchmark" / "splits" / "majajhong2015.csv"
        first_hash = file_hash(split_file)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # second fetch: nothing new to say, nothing downloaded
            majajhong2015.fetch(mirror=server.url, progress=False, manifest=src.manifest)
        assert set(server.requests.values()) == {1}
    assert dest == home / "majajhong2015" and installed("majajhong2015")
    assert file_hash(split_file) == first_hash
    split = read_split(split_file)
    assert split_counts(split) == {"train": 12, "val": 4, "test": 4}
    assert split_file.read_text().startswith("# Split of benchmark majajhong2015")

    data = load_source("majajhong2015")
    assert isinstance(data, SourceData) and data.benchmark_id == "majajhong2015" and not data.synthetic
    assert data.responses.dims == ("presentation", "neuroid") and data.responses.sizes == {
        "presentation": 20,
        "neuroid": 4,
    }
    assert set(data.responses["region"].values) == {"IT"}  # V4 sites dropped
    ref = trial_values(src.trials)
    it_sites = list(data.responses["neuroid_id"].values)
    expected = ref.groupby("stimulus_id", sort=False)[it_sites].mean()
    np.testing.assert_allclose(
        data.responses.values,
        expected.loc[data.responses["stimulus_id"].values].to_numpy(),
        rtol=1e-5,
        atol=1e-7,
    )
    assert data.trials.sizes == {"presentation": 60, "neuroid": 4}
    assert sorted(set(data.trials["repetition"].values)) == [0, 1, 2]
    assert set(data.responses.coords) >= {"object_name", "category_name", "variation"}

    sid = src.table["stimulus_id"][0]  # a grey image in the zip
    x = data.stimuli.load_images([sid], size=32).numpy()[0]
    grey = src.pixels[sid].astype(np.float64) / 255.0
    np.testing.assert_allclose(
        x, (grey[None] - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None], atol=1e-5
    )
    assert load_source("majajhong2015").checksum == data.checksum

    info = describe("majajhong2015")
    assert info["installed"] and info["splits"]["val"] == {
        "images": 4,
        "with_responses": 4,
        "neuroids": 4,
        "repetitions": {"min": 3, "median": 3.0, "max": 3},
    }
    names = {f["name"]: f for f in info["files"]}
    assert names["stimulus_hvm-public.zip"]["sha1"] == sha1_of(src.file("stimulus_zip"))
    assert names["stimulus_hvm-public.zip"]["size"] == src.file("stimulus_zip").stat().st_size


def test_fetch_fills_stimulus_coords_from_csv(project, tmp_path):
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=4, stimulus_coords=False)
    with pytest.warns(UserWarning):
        majajhong2015.fetch(mirror=str(src.folder), progress=False, manifest=src.manifest)
    responses = majajhong2015.load().responses
    table = src.table.set_index("stimulus_id").loc[responses["stimulus_id"].values]
    assert list(responses["object_name"].values) == list(table["object_name"])
    assert list(responses["category_name"].values) == list(table["category_name"])


def test_fetch_checks_an_existing_split(project, tmp_path):
    _, root = project
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=4)
    (root / "benchmark" / "splits").mkdir(parents=True)
    (root / "benchmark" / "splits" / "majajhong2015.csv").write_text(
        "stimulus_id,split\nsomething-else,train\n"
    )
    with pytest.raises(DataError, match="does not match the data: 8 stimuli have no split"):
        majajhong2015.fetch(mirror=str(src.folder), progress=False, manifest=src.manifest)


def test_load_before_fetch_says_how_to_install(project):
    with pytest.raises(BenchmarkError, match="majajhong2015 is not installed") as err:
        majajhong2015.load()
    assert "itbench data fetch majajhong2015" in str(err.value)
    info = describe("majajhong2015")
    assert info["installed"] is False and info["files"] == [] and "error" not in info


def test_tampered_processed_file_is_detected(project, tmp_path):
    src = build_majajhong_source(tmp_path / "bucket", n_objects=2, per_object=4)
    with pytest.warns(UserWarning):
        dest = majajhong2015.fetch(mirror=str(src.folder), progress=False, manifest=src.manifest)
    with open(dest / majajhong2015.PROCESSED, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataError, match="does not match the checksum recorded"):
        majajhong2015.load()


# --------------------------------------------------------------------------- nx414

SMALL = nx414.Shapes(n_train=6, n_val=3, n_test=4, n_neuroids=5, image_size=16)


@pytest.mark.parametrize("vlen", [False, True])
def test_nx414_import_and_load(project, tmp_path, vlen):
    home, _ = project
    course = write_it_data_h5(tmp_path / "IT_data.h5", vlen_objects=vlen)
    installed_path = nx414.import_file(course.path, SMALL)
    assert installed_path == home / "nx414" / "IT_data.h5" and installed("nx414")
    assert sha1_of(installed_path) == sha1_of(course.path)
    manifest = json.loads((home / "nx414" / "manifest.json").read_text())
    assert manifest["sha1"] == sha1_of(course.path) and manifest["shapes"]["n_train"] == 6

    data = load_source("nx414")
    assert data.trials is None and not data.synthetic and data.checksum == manifest["sha1"]
    ids = list(data.responses["stimulus_id"].values)
    assert ids == [f"train-{i:04d}" for i in range(6)] + [f"val-{i:04d}" for i in range(3)]
    np.testing.assert_array_equal(
        data.responses.values, np.concatenate([course.spikes["train"], course.spikes["val"]])
    )
    assert len(data.stimuli) == 13 and data.stimuli.index[-1] == "test-0003"
    x = data.stimuli.load_images(["test-0002", "val-0001", "train-0005", "val-0001"], size=16).numpy()
    np.testing.assert_array_equal(x[0], course.images["test"][2])
    np.testing.assert_array_equal(x[1], course.images["val"][1])
    np.testing.assert_array_equal(x[2], course.images["train"][5])
    np.testing.assert_array_equal(x[3], x[1])
    assert data.stimuli.load_images(["train-0000"]).shape == (1, 3, 224, 224)
    objects = data.stimuli.metadata["object_name"]
    categories = data.stimuli.metadata["category_name"]
    assert list(objects[:4]) == ["bear", "face0001", "_18", "not_an_hvm_object"]
    assert list(categories[:4]) == ["Animals", "Faces", "Tables", "unknown"]


def test_nx414_default_shapes_are_the_real_ones(tmp_path, project):
    assert nx414.Shapes().expected()["stimulus_train"] == ((2592, 3, 224, 224), "f")
    assert nx414.Shapes().expected()["spikes_val"] == ((288, 168), "f")
    assert "spikes_test" not in nx414.Shapes().expected()
    course = write_it_data_h5(tmp_path / "IT_data.h5")
    with pytest.raises(
        DataError, match=r"'stimulus_train' has shape \(6, 3, 16, 16\), expected \(2592, 3, 224, 224\)"
    ):
        nx414.import_file(course.path)
    assert not installed("nx414") and files_in(project[0]) == set()


def test_nx414_not_installed(project):
    with pytest.raises(BenchmarkError, match="itbench data import"):
        nx414.load()


# --------------------------------------------------------------------------- dispatch, registry


def test_dispatch_known_and_unknown():
    assert known() == ("majajhong2015", "majajhong2015.V4", "nx414", "demo")
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'"):
        load_source("nope")
    with pytest.raises(
        BenchmarkError, match="known benchmarks: majajhong2015, majajhong2015.V4, nx414, demo"
    ):
        describe("nope")


def test_hvm_registry_has_64_objects_in_8_categories():
    assert len(HVM_OBJECTS) == 8 and all(len(v) == 8 for v in HVM_OBJECTS.values())
    assert len({o.lower() for v in HVM_OBJECTS.values() for o in v}) == 64
    assert hvm_category("ELEPHANT_M") == hvm_category("elephant_m") == "Animals"
    assert hvm_category(" _19_flyingBoat ") == "Planes" and hvm_category("sofa") == "unknown"


def test_describe_without_splits_does_not_load(project, tmp_path, monkeypatch):
    course = write_it_data_h5(tmp_path / "IT_data.h5")
    nx414.import_file(course.path, SMALL)
    monkeypatch.setattr(nx414, "load", lambda: pytest.fail("describe(splits=False) must not load the data"))
    info = describe("nx414", splits=False)
    assert info["installed"] and info["files"][0]["sha1"] == sha1_of(course.path) and "splits" not in info
