"""itbench.models.pretrained: offline EfficientNet-Lite0 weights, seeded random twins, clear offline failures.

No test touches the network: downloads are replaced by functions that raise
URLError (as an offline machine does) and caches point at empty temp folders.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F

from itbench.errors import ItbenchError, WeightsUnavailable
from itbench.models import pretrained

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
EGYPTIAN_CAT = 285


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return pretrained.efficientnet_lite0()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty torch hub and HF caches; any download attempt fails like an offline machine."""

    def no_network(url, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known (test: offline)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(pretrained, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.delenv(pretrained.RANDOM_WEIGHTS_ENV, raising=False)
    return tmp_path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- EfficientNet-Lite0


def test_lite0_classifies_chelsea_as_egyptian_cat(lite0):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the chelsea test image")
    img = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 255
    x = (F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True) - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        logits = lite0(x)
    assert not lite0.training
    assert int(logits.argmax()) == EGYPTIAN_CAT


def test_lite0_weights_are_the_packaged_tensors_in_order(lite0):
    source = torch.load(pretrained.lite0_weights_file(), map_location="cpu", weights_only=True)
    assert len(source) == pretrained.LITE0_N_TENSORS
    loaded = lite0.state_dict()
    assert torch.equal(loaded["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(loaded["classifier.weight"], source["_fc.weight"])
    assert all(torch.equal(a, b) for a, b in zip(loaded.values(), source.values(), strict=False))


@pytest.mark.parametrize("damage", ["drop_last", "swap_first_two"])
def test_lite0_refuses_weights_that_do_not_pair(monkeypatch, damage):
    real = torch.load(pretrained.lite0_weights_file(), map_location="cpu", weights_only=True)
    items = list(real.items())
    if damage == "drop_last":
        items = items[:-1]
    else:  # conv_stem (32,3,3,3) and bn weight (32,) swap places: shapes no longer line up
        items[0], items[1] = items[1], items[0]
    monkeypatch.setattr(torch, "load", lambda *a, **k: OrderedDict(items))
    with pytest.raises(WeightsUnavailable) as err:
        pretrained.efficientnet_lite0()
    message = str(err.value)
    assert "EfficientNet-Lite0" in message and "hint:" in message
    assert ("295 tensors" in message) if damage == "drop_last" else ("(32, 3, 3, 3)" in message)


def test_random_twin_is_seeded_and_differs_from_pretrained(lite0):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    a = pretrained.efficientnet_lite0(pretrained=False, seed=0)
    b = pretrained.efficientnet_lite0(pretrained=False, seed=0)
    c = pretrained.efficientnet_lite0(pretrained=False, seed=1)
    assert _same_weights(a, b)
    assert not torch.equal(a.conv_stem.weight, c.conv_stem.weight)
    assert not torch.equal(a.conv_stem.weight, lite0.conv_stem.weight)
    assert not a.training
    torch.manual_seed(123)  # building a seeded model leaves the caller's RNG stream alone
    pretrained.efficientnet_lite0(pretrained=False, seed=5)
    assert torch.equal(torch.rand(3), expected_next)


# --------------------------------------------------------------------------- downloaded weights


def test_resnet50_offline_raises_helpful_weights_unavailable(offline):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as err:
        pretrained.resnet50()
    assert time.perf_counter() - start < 10
    message = str(err.value)
    cache = offline / "torch" / "hub" / "checkpoints"
    assert "resnet50" in message and "IMAGENET1K_V1" in message
    assert str(cache / "resnet50-0676ba61.pth") in message  # where it was looked for
    assert "hint:" in message and "internet" in message and "TORCH_HOME" in message
    assert isinstance(err.value.__cause__, URLError)


def test_resnet50_uses_a_cached_checkpoint_without_network(offline):
    twin = pretrained.resnet50(pretrained=False, seed=3)
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(twin.state_dict(), cache / "resnet50-0676ba61.pth")
    model = pretrained.resnet50()
    assert _same_weights(model, twin)
    assert not model.training


def test_resnet50_damaged_cache_file_says_delete_it(offline):
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet50-0676ba61.pth").write_bytes(b"half a download")
    with pytest.raises(WeightsUnavailable) as err:
        pretrained.resnet50()
    assert (
        "cannot be loaded" in str(err.value) and f"delete {cache / 'resnet50-0676ba61.pth'}" in err.value.hint
    )


def test_convnext_offline_names_the_hf_cache(offline):
    with pytest.raises(WeightsUnavailable) as err:
        pretrained.convnext_base()
    message = str(err.value)
    assert "convnext_base" in message
    assert str(offline / "hf" / "models--timm--convnext_base.fb_in22k_ft_in1k") in message
    assert "unreachable" in message and "internet" in message


def test_timm_model_loads_from_the_hf_cache_without_network(offline, monkeypatch):
    from safetensors.torch import save_file

    twin = pretrained.build_model("test_resnet", pretrained=False, seed=7)
    snapshot = offline / "hf" / "models--timm--test_resnet.r160_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in twin.state_dict().items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(
        pretrained, "_reachable", lambda *a, **k: pytest.fail("a cached model must not probe the network")
    )
    assert _same_weights(pretrained.build_model("test_resnet"), twin)


def test_random_weights_env_switch_skips_downloads(offline, monkeypatch, lite0):
    monkeypatch.setenv(pretrained.RANDOM_WEIGHTS_ENV, "1")
    assert _same_weights(pretrained.resnet50(), pretrained.resnet50(pretrained=False, seed=0))
    assert _same_weights(
        pretrained.build_model("resnet50", seed=2), pretrained.resnet50(pretrained=False, seed=2)
    )
    assert not torch.equal(pretrained.efficientnet_lite0().conv_stem.weight, lite0.conv_stem.weight)
    monkeypatch.setenv(pretrained.RANDOM_WEIGHTS_ENV, "0")
    assert not pretrained.random_weights_forced()
    with pytest.raises(WeightsUnavailable):
        pretrained.resnet50()


# --------------------------------------------------------------------------- registry


def test_build_model_registry_and_fallbacks(offline):
    import timm
    import torchvision

    lite = pretrained.build_model("efficientnet_lite0", pretrained=False, seed=4)
    assert _same_weights(lite, pretrained.efficientnet_lite0(pretrained=False, seed=4))
    assert isinstance(pretrained.build_model("test_resnet", pretrained=False), timm.models.ResNet)
    assert isinstance(pretrained.build_model("alexnet", pretrained=False), torchvision.models.AlexNet)
    with pytest.raises(WeightsUnavailable, match="alexnet"):
        pretrained.build_model("alexnet")  # torchvision download, offline


def test_build_model_unknown_name_says_what_exists():
    with pytest.raises(ItbenchError) as err:
        pretrained.build_model("no_such_net")
    assert "no_such_net" in str(err.value) and "efficientnet_lite0" in err.value.hint


def test_messages_name_the_home_folder_as_tilde():
    """Skip reasons are published in records: no user name in them."""
    from pathlib import Path

    assert pretrained._shown(Path.home() / ".cache" / "torch" / "x.pth") == "~/.cache/torch/x.pth"
    assert pretrained._shown(Path("/opt/weights/x.pth")) == "/opt/weights/x.pth"
