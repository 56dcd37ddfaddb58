"""The embedded SYNTHETIC demo benchmark: committed files, their contract, and its loader.

The files are read with the field's libraries directly (hashlib, pandas,
zipfile + PIL, h5py, xarray) and checked against hand-computed expectations;
the ceiling is recomputed here with numpy/scipy, independently of itbench.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image
from scipy import stats

from itbench.data.sources import demo
from itbench.errors import DataError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "benchmark" / "demo"
SPLIT = REPO / "benchmark" / "splits" / "demo.csv"
N_IMAGES, N_SITES, MIN_REPS = 640, 168, 20


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((DEMO / "manifest.json").read_text())


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return pd.read_csv(DEMO / "stimuli.csv", dtype={"stimulus_id": str})


@pytest.fixture(scope="module")
def raw_assembly() -> xr.DataArray:
    with xr.open_dataset(DEMO / "assembly.nc", engine="h5netcdf") as ds:
        return ds["__xarray_dataarray_variable__"].load()


@pytest.fixture(scope="module")
def trials(raw_assembly) -> np.ndarray:
    """(images, reps, sites) in stimulus-table order, built with pandas (not itbench)."""
    frame = pd.DataFrame(
        {"sid": raw_assembly["stimulus_id"].values, "rep": raw_assembly["repetition"].values}
    )
    order = np.lexsort((frame["rep"].to_numpy(), frame["sid"].to_numpy()))
    n_reps = frame.groupby("sid").size().iloc[0]
    return raw_assembly.values[order].reshape(-1, n_reps, raw_assembly.sizes["neuroid"]).astype(np.float64)


@pytest.fixture(scope="module")
def generator():
    return demo.load_generator()


# --------------------------------------------------------------------------- files and manifest


def test_checksums_and_sizes_match_manifest(manifest):
    assert manifest["synthetic"] is True
    assert set(manifest["files"]) == {"stimuli.csv", "stimuli.zip", "assembly.nc"}
    for name, entry in manifest["files"].items():
        data = (DEMO / name).read_bytes()
        assert hashlib.sha1(data).hexdigest() == entry["sha1"], name
        assert len(data) == entry["size"], name
    assert hashlib.sha1(SPLIT.read_bytes()).hexdigest() == manifest["split"]["sha1"]
    committed = sum(p.stat().st_size for p in DEMO.iterdir() if p.is_file()) + SPLIT.stat().st_size
    assert committed <= 20 * 1024 * 1024
    assert manifest["settings"]["layer"].startswith("blocks.")


def test_stimuli_are_hvm_like(table):
    assert len(table) == N_IMAGES and table["stimulus_id"].is_unique
    assert {
        "stimulus_id",
        "filename",
        "object_name",
        "category_name",
        "variation",
        "ty",
        "tz",
        "s",
        "rxy",
    } <= set(table)
    assert table["category_name"].nunique() == 8 and table["object_name"].nunique() == 64
    assert (table.groupby("category_name")["object_name"].nunique() == 8).all()
    per_object = table.groupby(["object_name", "variation"]).size().unstack()
    assert (per_object[0] == 2).all() and (per_object[3] == 4).all() and (per_object[6] == 4).all()
    v0 = table[table["variation"] == 0]
    assert (v0[["ty", "tz", "rxy"]] == 0).all().all() and (v0["s"] == 1).all()
    for level, t_max, r_max in ((3, 0.25, 45), (6, 0.5, 90)):
        rows = table[table["variation"] == level]
        assert rows[["ty", "tz"]].abs().to_numpy().max() <= t_max and rows["rxy"].abs().max() <= r_max
    # more variation at level 6 than at level 3
    spread = table.groupby("variation")[["ty", "s", "rxy"]].std()
    assert (spread.loc[6] > spread.loc[3]).all()


def test_images_are_128px_grey_pngs_named_by_pixel_sha1(table):
    with zipfile.ZipFile(DEMO / "stimuli.zip") as archive:
        assert sorted(archive.namelist()) == sorted(table["filename"])
        for sid, filename in zip(table["stimulus_id"], table["filename"], strict=False):
            with Image.open(io.BytesIO(archive.read(filename))) as img:
                assert img.format == "PNG" and img.mode == "L" and img.size == (128, 128)
                pixels = np.asarray(img)
            assert hashlib.sha1(pixels.tobytes()).hexdigest()[:16] == sid


def test_assembly_is_brainio_style_trial_level(raw_assembly, table):
    da = raw_assembly
    assert da.dims == ("presentation", "neuroid") and da.dtype == np.float32
    assert da.sizes["neuroid"] == N_SITES
    for coord in ("stimulus_id", "object_name", "category_name", "variation", "repetition"):
        assert da[coord].dims == ("presentation",)
    assert set(da["region"].values) == {"IT"} and len(set(da["animal"].values)) == 2
    assert len(set(da["neuroid_id"].values)) == N_SITES
    assert int(da.attrs["synthetic"]) == 1 and "SYNTHETIC" in da.attrs["description"]
    reps = (
        pd.Series(da["repetition"].values).groupby(da["stimulus_id"].values).agg(["size", "nunique", "max"])
    )
    assert (
        len(reps) == N_IMAGES and (reps["size"] >= MIN_REPS).all() and (reps["size"] == reps["nunique"]).all()
    )
    meta = table.set_index("stimulus_id").loc[da["stimulus_id"].values]
    assert (meta["object_name"].to_numpy() == da["object_name"].values).all()
    assert (meta["variation"].to_numpy() == da["variation"].values).all()
    with h5py.File(DEMO / "assembly.nc", "r") as f:
        assert f["__xarray_dataarray_variable__"].compression == "gzip"


def test_ceiling_recomputed_independently(trials, manifest):
    rng = np.random.default_rng(0)
    n_reps = trials.shape[1]
    corrected = []
    for _ in range(10):
        perm = rng.permutation(n_reps)
        a, b = trials[:, perm[: n_reps // 2]].mean(1), trials[:, perm[n_reps // 2 :]].mean(1)
        r = stats.pearsonr(a, b, axis=0).statistic
        corrected.append(2 * r / (1 + r))
    ceiling = np.mean(corrected, axis=0)
    assert ceiling.shape == (N_SITES,)
    assert 0.7 <= np.median(ceiling) <= 0.9
    p10, p90 = np.percentile(ceiling, [10, 90])
    assert p90 - p10 > 0.1  # sites differ in reliability
    assert abs(np.median(ceiling) - manifest["ceiling"]["median"]) < 0.02


def test_noise_variance_grows_with_the_mean(trials):
    """Poisson-like: across images, a site's trial variance rises with its mean rate."""
    means, variances = trials.mean(1), trials.var(1, ddof=1)
    rho = [stats.spearmanr(means[:, j], variances[:, j]).statistic for j in range(N_SITES)]
    assert np.median(rho) > 0.2


# --------------------------------------------------------------------------- split


def test_split_sizes_and_stratification(table):
    first = SPLIT.read_text().splitlines()[0]
    assert first.startswith("#") and "seed=" in first and "SYNTHETIC" in first
    split = pd.read_csv(SPLIT, comment="#", dtype=str).set_index("stimulus_id")["split"]
    assert split.value_counts().to_dict() == {"train": 518, "val": 58, "test": 64}
    assert set(split.index) == set(table["stimulus_id"])
    labelled = table.set_index("stimulus_id").join(split)
    per_object = labelled.groupby("object_name")["split"].value_counts().unstack(fill_value=0)
    assert (per_object["test"] == 1).all()
    assert per_object["val"].isin([0, 1]).all() and per_object["val"].sum() == 58
    assert (per_object["train"] >= 8).all()
    val_categories = labelled[labelled["split"] == "val"].groupby("category_name").size()
    assert len(val_categories) == 8 and val_categories.min() >= 7


# --------------------------------------------------------------------------- loader


def test_load_returns_synthetic_source_data(trials, table):
    data = demo.load()
    assert data.benchmark_id == "demo" and data.synthetic is True
    assert "SYNTHETIC" in data.description
    assert (
        data.responses.shape == (N_IMAGES, N_SITES)
        and data.trials.sizes["presentation"] >= N_IMAGES * MIN_REPS
    )
    assert list(data.stimuli.index) == list(table["stimulus_id"])
    assert list(data.responses["stimulus_id"].values) == list(table["stimulus_id"])
    order = np.argsort(table["stimulus_id"].to_numpy())  # `trials` is in sorted-id order
    expected = np.empty_like(trials[:, 0])
    expected[order] = trials.mean(1)
    np.testing.assert_allclose(data.responses.values, expected, rtol=1e-5, atol=1e-4)
    images = data.stimuli.load_images(list(table["stimulus_id"][:2]))
    assert tuple(images.shape) == (2, 3, 224, 224)
    assert len(data.checksum) == 40 and data.checksum == demo.load().checksum


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    for name in ("manifest.json", "stimuli.csv", "stimuli.zip", "assembly.nc"):
        shutil.copy(DEMO / name, tmp_path / name)
    return tmp_path


def test_corrupted_file_raises_checksum_error(demo_copy):
    path = demo_copy / "assembly.nc"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        demo.load(demo_copy)
    message = str(err.value)
    assert "assembly.nc" in message and "sha1" in message
    assert "git checkout benchmark/demo" in message and "generate.py" in message


def test_missing_file_and_bad_manifest_raise_data_error(demo_copy):
    (demo_copy / "stimuli.zip").unlink()
    with pytest.raises(DataError, match="stimuli.zip is missing"):
        demo.load(demo_copy)
    (demo_copy / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        demo.load(demo_copy)


def test_files_lists_paths_sizes_and_checksums(manifest):
    listed = {f["name"]: f for f in demo.files()}
    assert {n: f["sha1"] for n, f in listed.items()} == {n: e["sha1"] for n, e in manifest["files"].items()}
    assert all(f["size"] == manifest["files"][n]["size"] for n, f in listed.items())


# --------------------------------------------------------------------------- generator (fast parts)


def test_generator_reproduces_committed_images(generator, table):
    """Rendering two objects again gives the committed ids, metadata and pixels (deterministic)."""
    cfg = generator.Settings(categories=("Cars",), objects_per_category=2)
    rows, images = generator.render_stimuli(cfg)
    committed = table.set_index("stimulus_id").loc[rows["stimulus_id"]]
    assert list(committed["object_name"]) == list(rows["object_name"]) == ["car00"] * 10 + ["car01"] * 10
    np.testing.assert_allclose(
        committed[["ty", "tz", "s", "rxy"]].to_numpy(), rows[["ty", "tz", "s", "rxy"]].to_numpy()
    )
    with zipfile.ZipFile(DEMO / "stimuli.zip") as archive:
        stored = np.asarray(Image.open(io.BytesIO(archive.read(rows["filename"].iloc[5]))))
    np.testing.assert_array_equal(stored, images[5])


def test_generator_noise_hits_its_target_ceiling(generator):
    """The per-site fano factor calibration, checked on synthetic rates with a hand-computed target."""
    cfg = generator.Settings(
        n_sites=60, n_reps=20, ceiling_median=0.8, ceiling_logit_sd=0.0, round_decimals=6
    )
    rng = np.random.default_rng(1)
    rates = 20 + 10 * np.abs(rng.standard_normal((800, 60)))
    trial_values, target = generator.trial_responses(rates, cfg, rng)
    np.testing.assert_allclose(target, 0.8)
    a, b = trial_values[:, ::2].mean(1), trial_values[:, 1::2].mean(1)
    r = stats.pearsonr(a, b, axis=0).statistic
    assert abs(np.median(2 * r / (1 + r)) - 0.8) < 0.03
