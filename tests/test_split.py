"""itbench.data.split: making, writing, reading and validating the fixed split files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_data import isolate

from itbench.data.sources import nx414
from itbench.data.split import (
    check_split_covers,
    file_hash,
    load_split,
    make_split,
    read_split,
    split_counts,
    split_path,
    write_split,
)
from itbench.errors import DataError

REPO_SPLITS = Path(__file__).resolve().parents[1] / "benchmark" / "splits"


def hvm_sized_ids(n_objects: int = 64, per_object: int = 50):
    ids = [hashlib.sha1(f"{o}-{k}".encode()).hexdigest() for o in range(n_objects) for k in range(per_object)]
    objects = [f"object{o:02d}" for o in range(n_objects) for _ in range(per_object)]
    return ids, objects


def test_make_split_has_report_sizes_and_is_stratified():
    ids, objects = hvm_sized_ids()
    split = make_split(ids, objects, 2592, 288, 320, seed=0)
    assert split_counts(split) == {"train": 2592, "val": 288, "test": 320}
    assert sorted(split.index) == sorted(ids)
    per_object = pd.crosstab(pd.Series(objects, index=ids), split.reindex(ids))
    assert (per_object["test"] == 5).all()  # 320 / 64 objects
    assert set(per_object["val"]) <= {4, 5}  # 288 / 64 = 4.5
    assert set(per_object["train"]) <= {40, 41}


def test_make_split_is_deterministic_and_order_independent():
    ids, objects = hvm_sized_ids(8, 10)
    first = make_split(ids, objects, 64, 8, 8, seed=3)
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = make_split([ids[i] for i in order], [objects[i] for i in order], 64, 8, 8, seed=3)
    pd.testing.assert_series_equal(first, shuffled)
    other_seed = make_split(ids, objects, 64, 8, 8, seed=4)
    assert not first.equals(other_seed)


def test_make_split_refuses_impossible_requests():
    ids, objects = hvm_sized_ids(2, 3)
    with pytest.raises(DataError, match="cannot split 6 stimuli into 3 \\+ 1 \\+ 1 = 5"):
        make_split(ids, objects, 3, 1, 1)
    with pytest.raises(DataError, match="cannot stratify"):
        make_split([*ids, "lonely"], [*objects, "singleton"], 3, 2, 2)
    with pytest.raises(DataError, match="more than once"):
        make_split(ids + ids[:1], objects + objects[:1], 5, 1, 1)


def test_write_read_roundtrip_with_comments(tmp_path):
    split = pd.Series(
        ["train", "val", "test", "train"],
        index=pd.Index(["a", "b#1", "c", "d"], name="stimulus_id"),
        name="split",
    )
    path = write_split(split, tmp_path / "s.csv", comment="made by a test\nseed 0")
    text = path.read_text()
    assert text.startswith("# made by a test\n# seed 0\nstimulus_id,split\n")
    pd.testing.assert_series_equal(read_split(path), split)
    assert file_hash(path) == hashlib.sha1(text.encode()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("stimulus_id,split\na,train\nb,holdout\n", "unknown label\\(s\\) 'holdout'"),
        ("stimulus_id,split\na,train\na,test\n", "more than once: a"),
        ("id,split\na,train\n", "lacks column\\(s\\) stimulus_id"),
    ],
)
def test_read_split_refuses_bad_files(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        read_split(tmp_path / "bad.csv")


def test_load_split_uses_project_root(tmp_path, monkeypatch):
    _, root = isolate(tmp_path, monkeypatch)
    with pytest.raises(DataError, match="no split file at .*splits/mine.csv"):
        load_split("mine")
    write_split(
        pd.Series(["test"], index=pd.Index(["x"], name="stimulus_id"), name="split"),
        root / "benchmark" / "splits" / "mine.csv",
    )
    assert split_path("mine") == root / "benchmark" / "splits" / "mine.csv"
    assert load_split("mine").to_dict() == {"x": "test"}


def test_committed_nx414_split_is_the_files_own_split():
    path = REPO_SPLITS / "nx414.csv"
    split = read_split(path)
    assert split_counts(split) == {"train": 2592, "val": 288, "test": 320}
    pd.testing.assert_series_equal(split, nx414.split_table())
    assert split.index[0] == "train-0000" and split.index[-1] == "test-0319"


def test_check_split_covers():
    split = pd.Series(["train", "test"], index=pd.Index(["a", "b"], name="stimulus_id"))
    check_split_covers(split, ["b", "a"], "s")
    with pytest.raises(
        DataError, match="1 stimuli have no split \\(e.g. c\\), 1 split ids are not in the data \\(e.g. b\\)"
    ):
        check_split_covers(split, ["a", "c"], "s")
