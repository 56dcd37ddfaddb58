"""Streamed feature extraction: exactness against hook-free references, reducers, layer names."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from sklearn.random_projection import SparseRandomProjection
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models.feature_extraction import create_feature_extractor

from itbench.models import features
from itbench.models.features import (
    AvgPool,
    FeatureError,
    FeatureExtractor,
    Flatten,
    RandomProjection,
    default_layers,
    extract,
    layer_names,
    parse_reducer,
    resolve_layers,
)


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_flatten_matches_torchvision_feature_extractor(resnet18, images):
    layers = ["maxpool", "layer1", "layer3.1", "avgpool"]
    ours = extract(
        resnet18, images, layers, "flatten", batch_size=2, progress=False
    )  # 5 images, uneven batches
    ref_model = create_feature_extractor(resnet18, {name: name for name in layers})
    with torch.no_grad():
        ref = ref_model(images)
    for name in layers:
        assert ours[name].dtype == np.float32
        assert ours[name].shape == (5, ref[name][0].numel())
        np.testing.assert_allclose(ours[name], ref[name].flatten(1).numpy(), rtol=1e-5, atol=1e-5)


def test_timm_model_matches_manual_slicing(images):
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    ours = extract(model, images, ["blocks.2", "global_pool"], batch_size=3, progress=False)
    with torch.no_grad():  # the same forward written out by hand
        x = model.bn1(model.conv_stem(images))
        for i, block in enumerate(model.blocks):
            x = block(x)
            if i == 2:
                b2 = x
        pooled = model.global_pool(model.bn2(model.conv_head(x)))
    np.testing.assert_allclose(ours["blocks.2"], b2.flatten(1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["global_pool"], pooled.numpy(), rtol=1e-5, atol=1e-5)


def test_avgpool_reducer_equals_adaptive_pool_of_exact_activations(resnet18, images):
    exact = extract(resnet18, images, ["layer2"], "flatten", progress=False)["layer2"]
    pooled = extract(resnet18, images, ["layer2"], "avgpool(3)", progress=False)["layer2"]
    ref = F.adaptive_avg_pool2d(torch.from_numpy(exact).view(5, 128, 8, 8), 3).flatten(1).numpy()
    np.testing.assert_allclose(pooled, ref, rtol=1e-5, atol=1e-6)
    flat = torch.randn(4, 7)  # already flat: passes through
    assert torch.equal(AvgPool(2)(flat), flat)


def test_random_projection_matches_sklearn_and_is_deterministic():
    x = torch.randn(6, 3000, generator=torch.Generator().manual_seed(0))
    ours = RandomProjection(200, seed=7)(x).numpy()
    ref = SparseRandomProjection(n_components=200, random_state=7).fit(x.numpy()).transform(x.numpy())
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-4, atol=1e-4)
    assert np.array_equal(ours, RandomProjection(200, seed=7)(x).numpy())
    assert not np.allclose(ours, RandomProjection(200, seed=8)(x).numpy())
    small = torch.randn(3, 50)  # fewer values than dim: passed through unprojected
    assert torch.equal(RandomProjection(200)(small), small)


def test_random_projection_preserves_norms_and_distances():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 20000, generator=gen) * torch.rand(12, 1, generator=gen)
    y = RandomProjection(2000, seed=0)(x)
    norm_ratio = (y.norm(dim=1) / x.norm(dim=1)) ** 2
    assert torch.all((norm_ratio > 0.85) & (norm_ratio < 1.15)), norm_ratio
    dist_ratio = torch.pdist(y) ** 2 / torch.pdist(x) ** 2
    assert torch.all((dist_ratio > 0.85) & (dist_ratio < 1.15)), dist_ratio


def test_reducer_specs_parse_and_fail_clearly():
    assert parse_reducer("flatten").spec == "flatten"
    assert parse_reducer("avgpool(2)").spec == "avgpool(k=2)"
    assert parse_reducer("random_projection(100, seed=3)").spec == "random_projection(dim=100,seed=3)"
    assert parse_reducer(None).spec == Flatten().spec
    for bad in ["pca(3)", "avgpool(two)", "random_projection(dim=1, foo=2)", "avgpool(0)", "((("]:
        with pytest.raises(FeatureError) as err:
            parse_reducer(bad)
        assert err.value.hint


def test_unknown_layers_fail_with_close_matches(resnet18):
    with pytest.raises(FeatureError, match="no layer 'layer5'") as err:
        resolve_layers(resnet18, ["layer1", "layer5"])
    assert "layer4" in err.value.hint
    with pytest.raises(FeatureError, match="layer1.0.add") as err:  # a functional graph node, not a module
        resolve_layers(resnet18, "layer1.0.add")
    assert "layer1.0" in err.value.hint
    with pytest.raises(FeatureError, match="no layers"):
        resolve_layers(resnet18, [])
    assert resolve_layers(resnet18, ["layer2", "layer2", "fc"]) == ["layer2", "fc"]
    assert "layer3.1.conv2" in layer_names(resnet18)


def test_default_layers_exist_in_the_models():
    torch.manual_seed(0)
    r50 = torchvision.models.resnet50(weights=None)
    sweep = default_layers("resnet50", "blocks")
    assert len(sweep) == 17 and sweep[0] == "maxpool" and sweep[-1] == "layer4.2"
    assert resolve_layers(r50, sweep) == sweep
    assert default_layers("resnet50") == ["maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
    eff = timm.create_model("efficientnet_lite0", pretrained=False)
    assert default_layers("efficientnet_lite0") == [
        "conv_stem",
        *[f"blocks.{i}" for i in range(7)],
        "global_pool",
    ]
    resolve_layers(eff, default_layers("efficientnet_lite0", "blocks"))
    atto = timm.create_model(
        "convnext_atto", pretrained=False
    )  # timm naming, block counts read from the model
    resolve_layers(atto, default_layers("convnext_base", "blocks", model=atto))
    resolve_layers(atto, default_layers("convnext_base", model=atto))
    with pytest.raises(FeatureError, match="no default layers"):
        default_layers("alexnet")


def test_early_stop_skips_later_layers_and_hooks_are_removed(resnet18, images):
    calls = []
    handle = resnet18.fc.register_forward_hook(lambda *a: calls.append(1))
    try:
        early = extract(resnet18, images, ["layer1"], progress=False)
        assert calls == []  # the pass stopped after layer1
        full = extract(resnet18, images, ["layer1"], progress=False, stop_early=False)
        assert len(calls) == 1
    finally:
        handle.remove()
    np.testing.assert_array_equal(early["layer1"], full["layer1"])
    assert all(not m._forward_hooks for m in resnet18.modules())


def test_iterables_and_callables_of_batches(resnet18, images):
    ref = extract(resnet18, images, ["layer4"], "avgpool(1)", progress=False)["layer4"]
    loader = DataLoader(TensorDataset(images, torch.zeros(5)), batch_size=2)
    np.testing.assert_allclose(
        extract(resnet18, loader, ["layer4"], "avgpool(1)", progress=False)["layer4"],
        ref,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        extract(resnet18, lambda: iter(images.split(3)), ["layer4"], "avgpool(1)", progress=False)["layer4"],
        ref,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        extract(resnet18, images.numpy(), ["layer4"], "avgpool(1)", progress=False)["layer4"],
        ref,
        rtol=1e-5,
        atol=1e-6,
    )


def test_per_layer_reducers_and_train_mode_restored(resnet18, images):
    resnet18.train()
    try:
        out = extract(
            resnet18,
            images,
            ["layer1", "avgpool"],
            {"layer1": "avgpool(1)", "avgpool": "flatten"},
            progress=False,
        )
        assert resnet18.training
    finally:
        resnet18.eval()
    assert out["layer1"].shape == (5, 64) and out["avgpool"].shape == (5, 512)
    with pytest.raises(FeatureError, match="no reducer"):
        FeatureExtractor(resnet18, ["layer1", "fc"], {"layer1": "flatten"})


def test_bad_requests_fail_clearly(resnet18, images, monkeypatch):
    with pytest.raises(FeatureError, match="batched"):
        extract(resnet18, torch.randn(3), ["layer1"], progress=False)
    with pytest.raises(FeatureError, match="no images"):
        extract(resnet18, [], ["layer1"], progress=False)
    with pytest.raises(FeatureError, match="batch_size"):
        extract(resnet18, images, ["layer1"], batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(FeatureError, match="CUDA"):
            extract(resnet18, images, ["layer1"], device="cuda")
    monkeypatch.setattr(features, "_memory_available", lambda: 1000)  # far too little for flatten
    with pytest.raises(FeatureError, match="GiB") as err:
        extract(resnet18, images, ["layer1"], progress=False)
    assert "avgpool" in err.value.hint


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("reducer", ["flatten", "avgpool(2)", "random_projection(300)"])
def test_cuda_matches_cpu(images, reducer):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    layers = ["layer2", "layer3.1", "avgpool"]
    cpu = extract(model, images, layers, reducer, progress=False, device="cpu")
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # full float32 convolutions for the exact comparison
    try:
        exact = extract(
            model, images, layers, reducer, progress=False, device="cuda", amp=False, channels_last=True
        )
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    fast = extract(model, images, layers, reducer, progress=False, device="cuda")  # bf16 autocast
    for name in layers:
        scale = np.abs(cpu[name]).max()
        err = np.abs(exact[name] - cpu[name]).max() / scale
        assert err < 1e-4, (name, err)
        r = np.corrcoef(fast[name].ravel(), cpu[name].ravel())[0, 1]
        assert r > 0.98, (name, r)
