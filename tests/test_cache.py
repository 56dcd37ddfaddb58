"""Activation cache: hits and misses, LRU eviction, size limit, corrupt entries, read-only folders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from itbench.models import cache as cache_mod
from itbench.models.cache import (
    ActivationCache,
    ActivationKey,
    CacheError,
    cache_limit_bytes,
    cached_extract,
    stimulus_hash,
    weights_hash,
)
from itbench.models.features import extract


def key(layer: str = "layer1", reducer: str = "flatten", split: str = "train") -> ActivationKey:
    return ActivationKey("resnet18", "w0", layer, "imagenet-224", reducer, "demo", "c0", split, "s0")


def arr(n: int = 4, d: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture
def store(tmp_path: Path) -> ActivationCache:
    return ActivationCache(tmp_path / "acts", limit_bytes=10**6)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_put_get_roundtrip_and_index(store):
    assert store.get(key()) is None
    a = arr()
    assert store.put(key(), a)
    np.testing.assert_array_equal(store.get(key()), a)
    assert store.get(key(split="val")) is None  # any field of the key matters
    index = json.loads((store.root / "index.json").read_text())["entries"]
    entry = index[key().digest()]
    assert entry["key"]["layer"] == "layer1" and entry["shape"] == [4, 10]
    assert entry["bytes"] == (store.root / f"{key().digest()}.npy").stat().st_size
    assert not list(store.root.glob("*.tmp"))  # atomic writes leave no temp files
    info = store.info()
    assert (
        info["entries"] == 1
        and info["bytes"] == entry["bytes"]
        and info["by_model"]["resnet18"]["entries"] == 1
    )


def test_lru_eviction_keeps_recently_used(tmp_path):
    one = arr(10, 100)  # 4000 bytes + header
    store = ActivationCache(tmp_path, limit_bytes=3 * 4200)  # room for three entries
    for name in "abc":
        store.put(key(name), one)
        time.sleep(0.01)
    assert store.get(key("a")) is not None  # refresh a: b is now least recently used
    time.sleep(0.01)
    store.put(key("d"), one)
    kept = {e["key"]["layer"] for e in store.entries().values()}
    assert kept == {"a", "c", "d"}
    assert not (tmp_path / f"{key('b').digest()}.npy").exists()
    assert store.info()["bytes"] <= 3 * 4200


def test_entry_over_the_limit_is_not_cached(tmp_path):
    store = ActivationCache(tmp_path, limit_bytes=1000)
    with pytest.warns(RuntimeWarning, match="exceeds the cache limit"):
        assert not store.put(key(), arr(10, 100))
    assert store.get(key()) is None and store.info()["entries"] == 0


def test_limit_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ITBENCH_CACHE_LIMIT_GB", "0.5")
    assert cache_limit_bytes() == 500_000_000
    assert ActivationCache(tmp_path).limit_bytes == 500_000_000
    monkeypatch.delenv("ITBENCH_CACHE_LIMIT_GB")
    assert cache_limit_bytes() == 10_000_000_000
    for bad in ("ten", "-1", "nan"):
        monkeypatch.setenv("ITBENCH_CACHE_LIMIT_GB", bad)
        with pytest.raises(CacheError, match="ITBENCH_CACHE_LIMIT_GB") as err:
            cache_limit_bytes()
        assert err.value.hint


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_entry_is_discarded(store, damage):
    store.put(key(), arr())
    path = store.root / f"{key().digest()}.npy"
    if damage == "garbage":
        path.write_bytes(b"not a numpy file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        np.save(path, arr(3, 10))
    with pytest.warns(RuntimeWarning, match="discarding"):
        assert store.get(key()) is None
    assert not path.exists() and key().digest() not in store.entries()
    assert store.put(key(), arr()) and store.get(key()) is not None  # recomputed value is stored again


def test_missing_file_and_unreadable_index(store):
    store.put(key("a"), arr(seed=1))
    store.put(key("b"), arr(seed=2))
    (store.root / f"{key('a').digest()}.npy").unlink()
    assert store.get(key("a")) is None and key("a").digest() not in store.entries()
    (store.root / "index.json").write_text("{ this is not json")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        hit = store.get(key("b"))  # index rebuilt from the files, the entry adopted
    np.testing.assert_array_equal(hit, arr(seed=2))
    assert key("b").digest() in store.entries()


def test_orphan_file_is_adopted(store):
    store.put(key(), arr())
    (store.root / "index.json").unlink()
    np.testing.assert_array_equal(store.get(key()), arr())
    assert store.entries()[key().digest()]["key"]["layer"] == "layer1"


def test_read_only_cache_serves_hits_and_skips_writes(store):
    store.put(key("a"), arr())
    store.writable = False  # what the write probe finds on a read-only folder
    with pytest.warns(RuntimeWarning, match="not writable"):
        assert not store.put(key("b"), arr())
    assert store.get(key("a")) is not None and store.get(key("b")) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_detected(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert not ActivationCache(folder).writable
    finally:
        folder.chmod(0o755)


def test_uncreatable_folder_disables_cache_but_extraction_works(tmp_path, model, images):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match="disabled"):
        store = ActivationCache(blocker / "acts")
    assert not store.enabled and store.get(key()) is None and store.put(key(), arr()) is False
    out = cached_extract(
        model,
        images,
        ["layer1"],
        "avgpool(1)",
        model_name="r18",
        benchmark_id="demo",
        data_checksum="c",
        split="train",
        stimulus_ids=list("abcd"),
        cache=store,
        progress=False,
    )
    assert out["layer1"].shape == (4, 64)


def test_cached_extract_hits_partial_hits_and_keys(tmp_path, model, images):
    store = ActivationCache(tmp_path, limit_bytes=10**8)
    ids = [f"im{i}" for i in range(4)]
    common = {
        "model_name": "r18",
        "benchmark_id": "demo",
        "data_checksum": "c",
        "split": "train",
        "stimulus_ids": ids,
        "cache": store,
        "progress": False,
    }
    forwards = []
    handle = model.conv1.register_forward_hook(lambda *a: forwards.append(1))
    try:
        first = cached_extract(model, images, ["layer1"], "avgpool(2)", **common)
        assert len(forwards) == 1

        def no_images():
            raise AssertionError("a full hit must not load images")

        again = cached_extract(model, no_images, ["layer1"], "avgpool(2)", **common)
        assert len(forwards) == 1
        np.testing.assert_array_equal(again["layer1"], first["layer1"])
        both = cached_extract(
            model, images, ["layer1", "layer3"], "avgpool(2)", **common
        )  # layer3 only computed
        assert len(forwards) == 2 and store.info()["entries"] == 2
        cached_extract(model, images, ["layer1"], "avgpool(1)", **common)  # another reducer: a miss
        assert len(forwards) == 3
        cached_extract(model, images, ["layer1"], "avgpool(2)", **{**common, "stimulus_ids": ids[::-1]})
        assert len(forwards) == 4  # same images in another order: another entry
    finally:
        handle.remove()
    ref = extract(model, images, ["layer1", "layer3"], "avgpool(2)", progress=False)
    for name in ref:
        np.testing.assert_allclose(both[name], ref[name], rtol=1e-6)
    with pytest.raises(CacheError, match="stimulus ids"):
        cached_extract(model, images, ["layer2"], "avgpool(1)", **{**common, "stimulus_ids": ids[:3]})


def test_hashes(model):
    assert weights_hash(model) == weights_hash(model)
    other = torchvision.models.resnet18(weights=None)
    assert weights_hash(other) != weights_hash(model)
    assert stimulus_hash(["a", "b"]) != stimulus_hash(["b", "a"])
    assert stimulus_hash(["ab"]) != stimulus_hash(["a", "b"])


def test_info_and_clear_over_kinds(tmp_path, monkeypatch):
    monkeypatch.setenv("ITBENCH_HOME", str(tmp_path))
    monkeypatch.delenv("ITBENCH_CACHE", raising=False)
    store = ActivationCache()
    assert store.root == tmp_path / "cache" / "activations"
    store.put(key("a"), arr())
    store.put(key("b"), arr())
    fitted = cache_mod.submission_namespace("sub1") / "fitted" / "k"
    fitted.mkdir(parents=True)
    (fitted / "state.pt").write_bytes(b"x" * 100)
    info = cache_mod.info()
    assert sorted(info["kinds"]) == sorted(cache_mod.KINDS)  # every kind listed, even when empty
    assert info["kinds"]["activations"]["entries"] == 2
    assert info["kinds"]["submissions"] == {"entries": 1, "bytes": 100}
    assert info["kinds"]["predictions"] == {"entries": 0, "bytes": 0}
    assert info["entries"] == 3 and info["bytes"] == info["kinds"]["activations"]["bytes"] + 100
    assert cache_mod.clear("submissions") == {"entries": 1, "bytes": 100}
    assert not any((tmp_path / "cache" / "submissions").iterdir())
    assert cache_mod.info("activations")["entries"] == 2
    freed = cache_mod.clear()
    assert freed["entries"] == 2 and cache_mod.info()["entries"] == 0
    assert store.get(key("a")) is None
    assert cache_mod.clear("predictions") == {"entries": 0, "bytes": 0}
    for bad in ("../etc", "fitted", "never_used"):
        with pytest.raises(CacheError, match="unknown cache kind"):
            cache_mod.clear(bad)
