"""itbench.data.stimuli: BrainIO stimulus sets (folder or zip) -> normalised image tensors."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from helpers_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    hvm_like_table,
    png_bytes,
    write_png_zip,
    write_stimulus_csv,
)
from PIL import Image

import itbench.data.stimuli as stimuli_mod
from itbench.data.stimuli import StimulusSet, load_stimulus_set, normalize, to_model_input
from itbench.errors import DataError


def reference(pixels: np.ndarray) -> np.ndarray:
    """Independent ImageNet normalisation of uint8 HWC (or grey HW) pixels -> CHW float."""
    rgb = np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels
    return ((rgb.astype(np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


# --------------------------------------------------------------------------- the real fixture images


@pytest.fixture
def fixture_set(shared_fixtures) -> StimulusSet:
    images = shared_fixtures / "images"
    return load_stimulus_set(images / "image_test_ten_images.csv", images)


def test_fixture_images_load_as_stimulus_set(fixture_set):
    assert isinstance(fixture_set, StimulusSet)
    assert fixture_set.index.name == "stimulus_id" and len(fixture_set) == 10
    assert list(fixture_set["thing"]) == [f"foo{i}" for i in range(10)]  # extra column carried
    x = fixture_set.load_images(["n3", "n0"])
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32


def test_fixture_normalisation_matches_pil_numpy(fixture_set, shared_fixtures):
    """At native size (256) every pixel must equal (p/255 - mean)/std, computed with PIL + numpy."""
    x = fixture_set.load_images(["n0", "n7"], size=256).numpy()
    for i, name in enumerate(["n0", "n7"]):
        pixels = np.asarray(Image.open(shared_fixtures / "images" / f"{name}.png").convert("RGB"))
        np.testing.assert_allclose(x[i], reference(pixels), atol=1e-5)
    pixel = np.asarray(Image.open(shared_fixtures / "images" / "n0.png").convert("RGB"))[100, 37]
    expected = (pixel / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x[0][:, 100, 37], expected, atol=1e-5)


def test_fixture_resize_matches_pil_bilinear(fixture_set, shared_fixtures):
    """Antialiased bilinear to 224 agrees with PIL's bilinear resize up to PIL's uint8 rounding."""
    x = fixture_set.load_images(["n5"]).numpy()[0]
    unit = x * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    pil = Image.open(shared_fixtures / "images" / "n5.png").convert("RGB").resize((224, 224), Image.BILINEAR)
    ref = np.asarray(pil, dtype=np.float64).transpose(2, 0, 1) / 255.0
    assert np.abs(unit - ref).max() < 1.5 / 255


# --------------------------------------------------------------------------- project-made files


@pytest.fixture
def zipped(tmp_path):
    table = hvm_like_table(3, 3)
    csv = write_stimulus_csv(table, tmp_path / "stimulus_test.csv", old_naming=True)
    pixels = write_png_zip(table, tmp_path / "stimulus_test.zip", size=32, grey_every=3)
    return table, csv, tmp_path / "stimulus_test.zip", pixels


def test_zip_set_renames_image_id_and_carries_metadata(zipped):
    table, csv, archive, _ = zipped
    stim = load_stimulus_set(csv, archive)
    assert list(stim.index) == list(table["stimulus_id"])
    assert {"filename", "object_name", "category_name", "variation"} <= set(stim.columns)
    assert stim.metadata.loc[table["stimulus_id"][4], "object_name"] == table["object_name"][4]


def test_zip_images_exact_including_grey(zipped):
    table, csv, archive, pixels = zipped
    stim = load_stimulus_set(csv, archive)
    ids = [table["stimulus_id"][i] for i in (4, 0, 3)]  # 0 and 3 are grey
    x = stim.load_images(ids, size=32).numpy()
    for i, sid in enumerate(ids):
        np.testing.assert_allclose(x[i], reference(pixels[sid]), atol=1e-5)
    grey = x[1] * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    np.testing.assert_allclose(grey[0], grey[1], atol=1e-6)
    np.testing.assert_allclose(grey[1], grey[2], atol=1e-6)


def test_zip_and_folder_and_nested_zip_agree(zipped, tmp_path):
    table, csv, archive, _ = zipped
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(archive) as z:
        z.extractall(folder)
    nested = tmp_path / "nested.zip"
    write_png_zip(table, nested, size=32, grey_every=3, prefix="stimulus_test/")
    ids = list(table["stimulus_id"])
    a = load_stimulus_set(csv, archive).load_images(ids)
    b = load_stimulus_set(csv, folder).load_images(ids)
    c = load_stimulus_set(csv, nested).load_images(ids)
    assert torch.equal(a, b) and torch.equal(a, c) and a.shape == (9, 3, 224, 224)


def test_slices_keep_their_images(zipped):
    _, csv, archive, _ = zipped
    stim = load_stimulus_set(csv, archive)
    animals = stim[stim["category_name"] == "Animals"]
    assert isinstance(animals, StimulusSet) and len(animals) == 6
    assert animals.load_images(size=8).shape == (6, 3, 8, 8)


def test_progress_bar_for_large_batches(zipped, capsys, monkeypatch):
    table, csv, archive, _ = zipped
    stim = load_stimulus_set(csv, archive)
    stim.load_images(list(table["stimulus_id"]), size=8)
    assert "images" not in capsys.readouterr().err
    monkeypatch.setattr(stimuli_mod, "PROGRESS_MIN", 5)
    monkeypatch.setenv("ITBENCH_PROGRESS", "0")  # a log, not a terminal: no bar, however large
    stim.load_images(list(table["stimulus_id"]), size=8)
    assert "images" not in capsys.readouterr().err
    monkeypatch.setenv("ITBENCH_PROGRESS", "1")  # a person watching
    stim.load_images(list(table["stimulus_id"]), size=8)
    assert "images" in capsys.readouterr().err


# --------------------------------------------------------------------------- failures


def test_unknown_ids_are_refused(zipped):
    _, csv, archive, _ = zipped
    with pytest.raises(
        DataError, match=r"2 of 3 requested stimulus ids are not in stimulus set .*nope1, nope2"
    ):
        load_stimulus_set(csv, archive).load_images(
            ["nope1", hvm_like_table(1, 1)["stimulus_id"][0], "nope2"]
        )


def test_missing_image_in_zip_and_folder(zipped, tmp_path):
    table, csv, _archive, _ = zipped
    partial = tmp_path / "partial.zip"
    write_png_zip(table.iloc[1:], partial)
    missing_id = table["stimulus_id"][0]
    stim = load_stimulus_set(csv, partial)
    assert stim.missing_files() == [table["filename"][0]]
    with pytest.raises(
        DataError, match=f"image for stimulus '{missing_id}' is missing.*not in .*partial.zip"
    ):
        stim.load_images([missing_id])
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(DataError, match=f"'{missing_id}' is missing: no file"):
        load_stimulus_set(csv, empty).load_images([missing_id])


def test_unreadable_image_is_a_data_error(tmp_path):
    table = hvm_like_table(1, 2)
    csv = write_stimulus_csv(table, tmp_path / "s.csv")
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as z:
        z.writestr(table["filename"][0], b"this is not a png")
        z.writestr(table["filename"][1], png_bytes(np.zeros((4, 4, 3), np.uint8)))
    stim = load_stimulus_set(csv, tmp_path / "s.zip")
    assert stim.load_images([table["stimulus_id"][1]], size=4).shape == (1, 3, 4, 4)
    with pytest.raises(DataError, match="cannot be read"):
        stim.load_images(list(table["stimulus_id"]))


def test_bad_csvs_and_paths(tmp_path, zipped):
    _, _, archive, _ = zipped
    (tmp_path / "nofile.csv").write_text("stimulus_id,thing\na,1\n")
    with pytest.raises(DataError, match="lacks column\\(s\\) filename"):
        load_stimulus_set(tmp_path / "nofile.csv", archive)
    (tmp_path / "dup.csv").write_text("stimulus_id,filename\na,a.png\na,b.png\n")
    with pytest.raises(DataError, match="more than once: a"):
        load_stimulus_set(tmp_path / "dup.csv", archive)
    with pytest.raises(DataError, match="no stimulus CSV"):
        load_stimulus_set(tmp_path / "absent.csv", archive)
    with pytest.raises(DataError, match="no stimulus images at"):
        load_stimulus_set(tmp_path / "dup.csv", tmp_path / "absent.zip")
    (tmp_path / "fake.zip").write_bytes(b"PK but not really")
    with pytest.raises(DataError, match="neither a folder nor a zip"):
        load_stimulus_set(tmp_path / "dup.csv", tmp_path / "fake.zip")


# --------------------------------------------------------------------------- normalize helpers


def test_normalize_uint8_float_grey_and_rgba_agree():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    expected = np.stack([reference(b) for b in batch])
    np.testing.assert_allclose(normalize(batch).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(normalize(batch.astype(np.float32) / 255).numpy(), expected, atol=1e-5)
    rgba = np.concatenate([batch, np.full((2, 5, 6, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_allclose(normalize(rgba).numpy(), expected, atol=1e-5)
    grey = batch[..., 0]
    np.testing.assert_allclose(normalize(grey).numpy(), np.stack([reference(g) for g in grey]), atol=1e-5)
    single = normalize(batch[0])
    assert single.shape == (1, 3, 5, 6)


def test_to_model_input_resizes_to_224():
    x = to_model_input(np.zeros((3, 10, 12, 3), np.uint8))
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), -IMAGENET_MEAN / IMAGENET_STD, atol=1e-6)


def test_normalize_refuses_out_of_range_floats_and_bad_shapes():
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        normalize(np.full((1, 2, 2, 3), 255.0, np.float32))
    with pytest.raises(DataError, match="uint8 or float"):
        normalize(np.zeros((1, 2, 2, 3), np.int32))
    with pytest.raises(DataError, match="channels-last"):
        normalize(np.zeros((1, 2, 2, 2, 3), np.uint8))


def test_png_helper_is_real_png():
    assert Image.open(io.BytesIO(png_bytes(np.zeros((3, 3), np.uint8)))).format == "PNG"
