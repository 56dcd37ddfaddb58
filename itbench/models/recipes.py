"""Ready-made model shapes so that a Table I row is a few lines.

``LinearReadoutModel``: any featurizer -> optional PCA -> OLS / ridge, with
fit/predict/save/load, the contract the runner expects. Featurizers for
pixels and for network layers live here too.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itbench.models.readouts import DEFAULT_ALPHAS, OLS, PCA, RidgeGCV

READOUTS = ("ols", "ridge", "ridge_cv")

Featurizer = Callable[[torch.Tensor], Any]


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Raw normalised pixels, flattened (Table I rows 1-4)."""
    return images.flatten(1)


def make_readout(
    kind: str, alpha: float | None = None, alphas: tuple[float, ...] | None = None
) -> OLS | RidgeGCV:
    """OLS, ridge with a fixed alpha, or ridge with alpha per neuroid by LOO-CV."""
    if kind == "ols":
        return OLS()
    if kind == "ridge":
        return RidgeGCV(alphas=[float(alpha if alpha is not None else 1.0)])
    if kind == "ridge_cv":
        return RidgeGCV(alphas=list(alphas or DEFAULT_ALPHAS), alpha_per_target=True)
    raise ValueError(f"unknown readout '{kind}', choose one of {READOUTS}")


class LinearReadoutModel:
    """features -> [PCA(n)] -> linear readout, fitted on the train split only."""

    def __init__(
        self,
        featurizer: Featurizer,
        readout: str = "ridge_cv",
        n_components: int | None = None,
        alpha: float | None = None,
        alphas: tuple[float, ...] | None = None,
        device: str = "cpu",
        seed: int = 0,
    ):
        self.featurizer = featurizer
        self.readout_kind = readout
        self.n_components = n_components
        self.alpha, self.alphas = alpha, alphas
        self.device = device
        self.seed = seed
        self.pca: PCA | None = None
        self.readout: Any = None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.featurizer(images)
        feats = torch.as_tensor(np.asarray(feats) if not torch.is_tensor(feats) else feats)
        return feats.to(self.device, torch.float32)

    def features(self, images: torch.Tensor) -> np.ndarray:
        """The featurizer's output (before PCA): what Brain-Score's protocol reads out with PLS."""
        return self._features(images).cpu().numpy()

    def fit(self, train: Any) -> LinearReadoutModel:
        x = self._features(train.images)
        if self.n_components:
            n = min(self.n_components, x.shape[0] - 1, x.shape[1])
            self.pca = PCA(n, random_state=self.seed)
            x = self.pca.fit_transform(x)
        y = torch.as_tensor(train.responses, dtype=torch.float32, device=self.device)
        self.readout = make_readout(self.readout_kind, self.alpha, self.alphas).fit(x, y)
        return self

    def predict(self, images: torch.Tensor) -> np.ndarray:
        x = self._features(images)
        if self.pca is not None:
            x = self.pca.transform(x)
        pred = self.readout.predict(x)
        return pred.detach().cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)

    def save(self, directory: Path) -> None:
        torch.save({"pca": self.pca, "readout": self.readout}, Path(directory) / "readout.pt")

    def load(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "readout.pt", weights_only=False, map_location=self.device)
        self.pca, self.readout = state["pca"], state["readout"]


def tensor_hash(images: torch.Tensor) -> str:
    """Content hash of an image batch: the activation cache key when ids are unknown."""
    import hashlib

    array = images.detach().cpu().contiguous().numpy()
    digest = hashlib.sha1(str((array.shape, array.dtype.str)).encode())
    digest.update(array.data.cast("B"))
    return digest.hexdigest()


class LayerFeatures:
    """Featurizer: one layer of a named network, reduced while streaming, cached on disk."""

    def __init__(
        self,
        model_name: str,
        layer: str,
        pretrained: bool = True,
        reducer: str = "flatten",
        batch_size: int = 64,
        device: str = "cpu",
        seed: int = 0,
        use_cache: bool = True,
    ):
        self.model_name, self.layer, self.pretrained = model_name, layer, pretrained
        self.reducer, self.batch_size, self.device = reducer, batch_size, device
        self.seed, self.use_cache = seed, use_cache
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            from itbench.models.pretrained import build_model

            self._model = build_model(self.model_name, pretrained=self.pretrained, seed=self.seed)
        return self._model

    @property
    def weights_id(self) -> str:
        from itbench.models.pretrained import random_weights_forced

        random = not self.pretrained or random_weights_forced()
        return f"{self.model_name}-{f'random-seed{self.seed}' if random else 'pretrained'}"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        from itbench.models.cache import cached_extract
        from itbench.models.features import extract

        if not self.use_cache:
            return extract(
                self.model, images, [self.layer], self.reducer, batch_size=self.batch_size, device=self.device
            )[self.layer]
        digest = tensor_hash(images)
        return cached_extract(
            self.model,
            images,
            [self.layer],
            self.reducer,
            model_name=self.model_name,
            benchmark_id="content",
            data_checksum=digest,
            split="-",
            stimulus_ids=[f"{digest}:{i}" for i in range(len(images))],
            weights_id=self.weights_id,
            batch_size=self.batch_size,
            device=self.device,
        )[self.layer]


class _Standardizer:
    """z-scores columns with train statistics; heads train better on unit-scale targets."""

    def __init__(self, data: np.ndarray):
        self.mean = data.mean(axis=0, keepdims=True)
        self.std = data.std(axis=0, keepdims=True) + 1e-8

    def apply(self, data: np.ndarray) -> np.ndarray:
        return ((data - self.mean) / self.std).astype(np.float32)

    def invert(self, data: np.ndarray) -> np.ndarray:
        return data * self.std + self.mean


def _train_options(params: dict[str, Any], device: str, seed: int) -> dict[str, Any]:
    """Trainer options from a submission's params (unknown keys are left out)."""
    keys = (
        "epochs",
        "lr",
        "weight_decay",
        "batch_size",
        "holdout_fraction",
        "patience",
        "scheduler",
        "warmup_epochs",
        "loss",
        "grad_clip",
    )
    options = {k: params[k] for k in keys if k in params}
    options.update(device=device, seed=seed)
    return options


class _TrainedModel(abc.ABC):
    """Shared fit/predict/save/load for networks trained on standardized responses."""

    network: torch.nn.Module | None = None

    def __init__(self, params: dict[str, Any], device: str = "cpu", seed: int = 0):
        self.params, self.device, self.seed = dict(params), device, seed
        self.targets: _Standardizer | None = None
        self.history: dict[str, Any] = {}

    @abc.abstractmethod
    def _make_network(self, n_inputs: int | None, n_outputs: int) -> torch.nn.Module:
        """The network this model shape trains (inputs: features or images)."""

    def _inputs(self, images: torch.Tensor) -> Any:
        return images

    def _train(self, inputs: Any, targets: np.ndarray, **extra: Any) -> None:
        from itbench.models.training import fit_regressor

        options = _train_options(self.params, self.device, self.seed)
        options.update(extra)
        assert self.network is not None  # fit() builds the network before training it
        result = fit_regressor(self.network, inputs, targets, **options)
        self.network, self.history = result.model, result.history

    def fit(self, train: Any) -> _TrainedModel:
        torch.manual_seed(self.seed)
        inputs = self._inputs(train.images)
        self.targets = _Standardizer(np.asarray(train.responses, dtype=np.float64))
        n_in = inputs.shape[1] if inputs.ndim == 2 else None
        self.network = self._make_network(n_in, train.responses.shape[1])
        self._train(inputs, self.targets.apply(train.responses))
        return self

    def predict(self, images: torch.Tensor) -> np.ndarray:
        from itbench.models.training import predict

        assert self.network is not None and self.targets is not None, "call fit() or load() first"
        out = predict(
            self.network,
            self._inputs(images),
            batch_size=int(self.params.get("batch_size", 64)),
            device=self.device,
        )
        return self.targets.invert(out.astype(np.float64))

    def save(self, directory: Path) -> None:
        assert self.network is not None, "call fit() or load() first"
        torch.save(
            {"network": self.network.state_dict(), "targets": self.targets, "extra": self._extra_state()},
            Path(directory) / "network.pt",
        )

    def load(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "network.pt", weights_only=False, map_location="cpu")
        self.targets = state["targets"]
        self._load_extra_state(state["extra"])
        self.network = self._make_network(state["extra"].get("n_inputs"), self.targets.mean.shape[1])
        self.network.load_state_dict(state["network"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore what ``_extra_state`` saved; most heads have nothing extra."""


class FrozenHeadModel(_TrainedModel):
    """Frozen features (a featurizer) -> standardized -> MLP head trained on responses."""

    def __init__(self, featurizer: Featurizer, params: dict[str, Any], device: str = "cpu", seed: int = 0):
        super().__init__(params, device, seed)
        self.featurizer = featurizer
        self.features: _Standardizer | None = None
        self.n_inputs: int | None = None

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        feats = np.asarray(self.featurizer(images), dtype=np.float64)
        if self.features is None:  # first call is the fit on train
            self.features = _Standardizer(feats)
        return torch.from_numpy(self.features.apply(feats))

    def _make_network(self, n_inputs: int | None, n_outputs: int) -> torch.nn.Module:
        from itbench.models.training import MLPHead

        self.n_inputs = n_inputs
        if n_inputs is None:
            raise ValueError("the featurizer must return (N, D) features for an MLP head; flatten them")
        return MLPHead(
            n_inputs,
            n_outputs,
            hidden=tuple(self.params.get("hidden", (1024,))),
            dropout=float(self.params.get("dropout", 0.3)),
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"features": self.features, "n_inputs": self.n_inputs}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.features, self.n_inputs = extra["features"], extra["n_inputs"]


class ShallowCNNModel(_TrainedModel):
    """Table I row 8: a 2-layer CNN trained from scratch on the responses."""

    def _make_network(self, n_inputs: int | None, n_outputs: int) -> torch.nn.Module:
        from itbench.models.training import ShallowCNN

        return ShallowCNN(
            n_outputs,
            channels=tuple(self.params.get("channels", (32, 64))),
            kernel_size=int(self.params.get("kernel_size", 5)),
            pool=int(self.params.get("pool", 4)),
            dropout=float(self.params.get("dropout", 0.0)),
        )


class BackboneRegressor(torch.nn.Module):
    """A classification network with its classifier replaced by an MLP head."""

    def __init__(self, backbone: torch.nn.Module, n_outputs: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        from itbench.models.training import MLPHead

        if hasattr(backbone, "reset_classifier"):  # timm
            backbone.reset_classifier(0)  # type: ignore[operator]  # timm method; Module.__getattr__ says Tensor | Module
            dim: int = backbone.num_features  # type: ignore[assignment]  # timm's int attribute, typed as above
        elif isinstance(fc := getattr(backbone, "fc", None), torch.nn.Linear):  # torchvision ResNet
            dim = fc.in_features
            backbone.fc = torch.nn.Identity()
        else:
            raise ValueError(f"cannot find the classifier of {type(backbone).__name__}")
        self.backbone = backbone
        self.head = MLPHead(dim, n_outputs, hidden=hidden, dropout=dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class FineTunedModel(_TrainedModel):
    """Table I row 12: a pretrained network, some blocks unfrozen, a deep head, augmentation."""

    def __init__(
        self,
        model_name: str,
        params: dict[str, Any],
        pretrained: bool = True,
        device: str = "cpu",
        seed: int = 0,
    ):
        super().__init__(params, device, seed)
        self.model_name, self.pretrained = model_name, pretrained

    def _make_network(self, n_inputs: int | None, n_outputs: int) -> torch.nn.Module:
        from itbench.models.pretrained import build_model

        backbone = build_model(self.model_name, pretrained=self.pretrained, seed=self.seed)
        return BackboneRegressor(
            backbone,
            n_outputs,
            tuple(self.params.get("hidden", (1024,))),
            float(self.params.get("dropout", 0.3)),
        )

    def _train(self, inputs: Any, targets: np.ndarray, **extra: Any) -> None:
        from itbench.models.training import ImageAugment

        unfreeze = [f"backbone.{name}" for name in self.params.get("unfreeze", [])]
        augment = ImageAugment() if self.params.get("augment", True) else None
        super()._train(
            inputs,
            targets,
            trainable=[*unfreeze, "head"],
            augment=augment,
            lr_groups={"backbone": float(self.params.get("backbone_lr", 1e-4))} if unfreeze else None,
        )


def layer_readout(ctx: Any) -> LinearReadoutModel:
    """A network layer -> [PCA] -> readout, all from a submission's params.

    params: ``model``, ``layer``, ``readout`` (ols | ridge | ridge_cv), and
    optionally ``pretrained`` (default true), ``reducer`` (default flatten),
    ``n_components``, ``alpha``.
    """
    p = ctx.params
    features = LayerFeatures(
        p["model"],
        p["layer"],
        pretrained=p.get("pretrained", True),
        reducer=p.get("reducer", "flatten"),
        batch_size=ctx.batch_size,
        device=ctx.device,
        seed=ctx.seed,
    )
    return LinearReadoutModel(
        features,
        readout=p["readout"],
        n_components=p.get("n_components"),
        alpha=p.get("alpha"),
        device=ctx.device,
        seed=ctx.seed,
    )
