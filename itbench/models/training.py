"""Deep read-outs: MLP heads on features, a shallow CNN on pixels, and the loop that fits them.

:func:`fit_regressor` trains any ``nn.Module`` that maps inputs to (N, n_neuroids)
predictions — an :class:`MLPHead` on precomputed features, a
:class:`ShallowCNN` on images, or a pretrained backbone with a head for
fine-tuning — with AdamW, a warm-up + cosine schedule, and early stopping on a
holdout carved out of the *training* data only (the benchmark's val/test
responses never reach a submission). It returns the model with its best
weights (lowest holdout loss) restored and the history of the run.

Determinism: under a seed, a CPU run is bit-for-bit reproducible (the seed
drives the holdout split, the batch order, dropout and augmentation, and
``torch.use_deterministic_algorithms`` is on for the run). On CUDA,
bf16 autocast and channels_last are used by default and results are only
reproducible up to floating-point non-associativity.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from itbench.console import show_progress
from itbench.errors import ItbenchError

__all__ = [
    "ConvHead",
    "FitResult",
    "ImageAugment",
    "MLPHead",
    "ShallowCNN",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "fit_regressor",
    "loss_function",
    "predict",
]


class TrainingError(ItbenchError):
    """A training request that cannot be served (bad shapes, options, or device)."""


# --------------------------------------------------------------------------- models


class MLPHead(nn.Module):
    """Features (N, in_dim) -> responses (N, out_dim) through hidden layers (Linear-act-dropout each)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (1024,),
        dropout: float = 0.3,
        activation: Callable[[], nn.Module] = nn.GELU,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = int(in_dim)
        for size in hidden:
            layers += [nn.Linear(width, int(size)), activation(), nn.Dropout(dropout)]
            width = int(size)
        layers.append(nn.Linear(width, int(out_dim)))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class ConvHead(nn.Module):
    """(N, C, H, W) maps or pixels -> (N, out_dim): [conv-ReLU-maxpool] per channel width, then a linear layer.

    The linear layer's input size is worked out from ``input_size`` so a wrong
    input shape fails at construction-time checks rather than deep in a run.
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 5,
        pool: int = 4,
        input_size: int | tuple[int, int] = 224,
        dropout: float = 0.0,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = int(in_channels)
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        for size in channels:
            blocks += [
                nn.Conv2d(width, int(size), kernel_size, padding=kernel_size // 2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(pool),
            ]
            width, h, w = int(size), h // pool, w // pool
        if h < 1 or w < 1:
            raise TrainingError(
                f"input {input_size} is too small for {len(channels)} poolings by {pool}",
                hint="use a smaller pool or fewer conv layers",
            )
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(width * h * w, int(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.dropout(self.features(x).flatten(1)))


class ShallowCNN(ConvHead):
    """Table I row 8: a 2-layer CNN from 224x224 RGB pixels to the sites' responses."""

    def __init__(
        self,
        out_dim: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 5,
        pool: int = 4,
        input_size: int | tuple[int, int] = 224,
        dropout: float = 0.0,
    ):
        super().__init__(3, out_dim, channels, kernel_size, pool, input_size, dropout)


_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class ImageAugment(nn.Module):
    """Light augmentation of ImageNet-normalised image batches, with fresh randomness per image.

    Colour jitter works on [0, 1] pixels, so images are un-normalised, jittered
    and re-normalised. torchvision.transforms.v2 draws one set of parameters
    per call, hence the loop over the batch.
    """

    mean: Tensor  # buffers registered in __init__
    std: Tensor

    def __init__(
        self, size: int = 224, scale: tuple[float, float] = (0.8, 1.0), flip: bool = True, jitter: float = 0.1
    ):
        super().__init__()
        from torchvision.transforms import v2

        ops: list[nn.Module] = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
        if flip:
            ops.append(v2.RandomHorizontalFlip())
        if jitter > 0:
            ops.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        self.transform = v2.Compose(ops)
        self.register_buffer("mean", torch.tensor(_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        pixels = (images * std + mean).clamp(0, 1)
        out = torch.stack([self.transform(img) for img in pixels])
        return (out - mean) / std


# --------------------------------------------------------------------------- losses


def _pearson_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - mean over outputs of the Pearson r across the batch."""
    pred = pred - pred.mean(0, keepdim=True)
    target = target - target.mean(0, keepdim=True)
    r = (pred * target).sum(0) / (pred.norm(dim=0) * target.norm(dim=0) + 1e-8)
    return 1.0 - r.mean()


def loss_function(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """'mse', 'pearson' (1 - mean r) or 'mse+corr' (their sum)."""
    losses: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "mse": F.mse_loss,
        "pearson": _pearson_loss,
        "mse+corr": lambda p, t: F.mse_loss(p, t) + _pearson_loss(p, t),
    }
    if name not in losses:
        raise TrainingError(f"unknown loss {name!r}", hint=f"choose one of {', '.join(losses)}")
    return losses[name]


# --------------------------------------------------------------------------- data


class _TensorPairs(Dataset):
    """(input, target) pairs over two aligned tensors."""

    def __init__(self, inputs: Tensor, targets: Tensor):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.inputs[i], self.targets[i]


def _as_tensor(x: Any, what: str) -> Tensor:
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    except (TypeError, ValueError) as err:
        raise TrainingError(
            f"{what} cannot be turned into a tensor: {err}", hint="pass arrays or tensors"
        ) from None
    return t.float() if t.is_floating_point() or t.dtype in (torch.int32, torch.int64) else t


def _as_dataset(inputs: Any, targets: Any) -> Dataset:
    """A dataset of (input, target) from tensors/arrays or an existing dataset."""
    if isinstance(inputs, Dataset) and targets is None:
        if len(inputs) == 0:  # type: ignore[arg-type]
            raise TrainingError("the training dataset is empty", hint="pass at least two examples")
        return inputs
    if targets is None:
        raise TrainingError(
            "train_targets is missing", hint="pass targets, or a Dataset of (input, target) pairs"
        )
    x, y = _as_tensor(inputs, "train_inputs"), _as_tensor(targets, "train_targets")
    if y.dim() == 1:
        y = y[:, None]
    if len(x) != len(y):
        raise TrainingError(
            f"{len(x)} inputs but {len(y)} targets", hint="inputs and targets must be aligned"
        )
    if len(x) < 2:
        raise TrainingError("need at least two training examples", hint="pass more data")
    if not torch.isfinite(y).all():
        raise TrainingError("train_targets contain NaN or inf", hint="drop or impute those responses first")
    return _TensorPairs(x, y)


def _batches(
    dataset: Dataset, indices: np.ndarray, batch_size: int, shuffle: bool, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mini-batches; tensor datasets are sliced directly (no per-item collation)."""
    order = torch.as_tensor(indices)
    if shuffle:
        order = order[torch.randperm(len(order), generator=generator)]
    if isinstance(dataset, _TensorPairs):
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield dataset.inputs[idx], dataset.targets[idx]
        return
    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False)
    yield from loader


# --------------------------------------------------------------------------- trainer


@dataclass
class TrainConfig:
    """Options of one fit (see :func:`fit_regressor`)."""

    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    holdout_fraction: float = 0.1
    patience: int | None = 10
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    loss: str = "mse"
    augment: Callable[[Tensor], Tensor] | None = None
    device: str | torch.device = "cpu"
    amp: bool | None = None
    channels_last: bool | None = None
    seed: int = 0
    progress: bool = True
    lr_groups: Mapping[str, float] | None = None
    trainable: Sequence[str] | None = None
    grad_clip: float | None = None


@dataclass
class FitResult:
    """The fitted model (best weights loaded), those weights, and the run's history."""

    model: nn.Module
    best_state: dict[str, Tensor]
    history: dict[str, Any] = field(default_factory=dict)


def _split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and holdout indices: a seeded random ``fraction`` of the *training* examples."""
    if not 0.0 <= fraction < 1.0:
        raise TrainingError(f"holdout_fraction must be in [0, 1), got {fraction}", hint="e.g. 0.1")
    order = np.random.default_rng(seed).permutation(n)
    n_hold = round(n * fraction)
    if fraction > 0 and n_hold == 0:
        n_hold = 1
    if n - n_hold < 1:
        raise TrainingError(
            f"{n} examples leave nothing to train on after a {fraction} holdout",
            hint="lower holdout_fraction or pass more data",
        )
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def _lr_lambda(total_steps: int, warmup_steps: int, kind: str) -> Callable[[int], float]:
    """Multiplier of the base lr per step: linear warm-up, then cosine decay (or constant)."""
    if kind not in ("cosine", "constant", "none"):
        raise TrainingError(f"unknown scheduler {kind!r}", hint="use 'cosine' or 'constant'")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind != "cosine":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a run, then the caller's setting back."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Freeze what is not ``trainable``; one optimizer group per ``lr_groups`` prefix, the rest at ``lr``."""
    named = list(model.named_parameters())
    if cfg.trainable is not None:
        prefixes = tuple(cfg.trainable)
        unknown = [p for p in prefixes if not any(n == p or n.startswith(p + ".") for n, _ in named)]
        if unknown:
            raise TrainingError(
                f"trainable names match no parameters: {unknown}",
                hint="use module name prefixes such as 'backbone.layer4' or 'head'",
            )
        for name, param in named:
            param.requires_grad_(any(name == p or name.startswith(p + ".") for p in prefixes))
    groups: dict[str, list[nn.Parameter]] = {}
    lr_of = dict(cfg.lr_groups or {})
    for prefix in lr_of:
        if not any(n == prefix or n.startswith(prefix + ".") for n, _ in named):
            raise TrainingError(
                f"lr_groups prefix {prefix!r} matches no parameters",
                hint="use module name prefixes such as 'backbone' or 'head'",
            )
    for name, param in named:
        if not param.requires_grad:
            continue
        match = max((p for p in lr_of if name == p or name.startswith(p + ".")), key=len, default="")
        groups.setdefault(match, []).append(param)
    if not groups:
        raise TrainingError("the model has no trainable parameters", hint="check `trainable`")
    return [
        {"params": params, "lr": lr_of.get(prefix, cfg.lr), "name": prefix or "default"}
        for prefix, params in groups.items()
    ]


def _freeze_norm_stats(model: nn.Module) -> None:
    """Keep BatchNorm running stats fixed in fully frozen modules (fine-tuning only some blocks)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


class Trainer:
    """Fits a regressor under a :class:`TrainConfig`; :func:`fit_regressor` is the one-call form."""

    def __init__(self, config: TrainConfig | None = None, **options: Any):
        self.config = config or TrainConfig()
        for key, value in options.items():
            if not hasattr(self.config, key):
                raise TrainingError(
                    f"unknown training option {key!r}",
                    hint=f"options: {', '.join(TrainConfig.__dataclass_fields__)}",
                )
            setattr(self.config, key, value)

    def _device(self) -> torch.device:
        try:
            device = torch.device(self.config.device)
        except (RuntimeError, TypeError):
            raise TrainingError(
                f"unknown device {self.config.device!r}", hint="use 'cpu' or 'cuda'"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError("CUDA requested but not available", hint="use device='cpu'")
        return device

    def fit(self, model: nn.Module, train_inputs: Any, train_targets: Any = None) -> FitResult:
        """Train ``model`` on (inputs, targets) or a Dataset of pairs; returns the best model and history."""
        cfg = self.config
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise TrainingError("epochs and batch_size must be >= 1", hint="e.g. epochs=50, batch_size=64")
        device = self._device()
        on_cuda = device.type == "cuda"
        amp = on_cuda if cfg.amp is None else bool(cfg.amp) and on_cuda
        channels_last = on_cuda if cfg.channels_last is None else bool(cfg.channels_last) and on_cuda
        dataset = _as_dataset(train_inputs, train_targets)
        train_idx, hold_idx = _split_holdout(len(dataset), cfg.holdout_fraction, cfg.seed)  # type: ignore[arg-type]  # _as_dataset checked len()
        loss_fn = loss_function(cfg.loss)

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        groups = _param_groups(model, cfg)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(total, round(cfg.warmup_epochs * steps_per_epoch), cfg.scheduler)
        )

        def to_device(x: Tensor) -> Tensor:
            x = x.to(device, non_blocking=True)
            return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x

        history: dict[str, Any] = {
            "train_loss": [],
            "holdout_loss": [],
            "lr": [],
            "best_epoch": None,
            "stopped_epoch": None,
            "train_indices": train_idx.tolist(),
            "holdout_indices": hold_idx.tolist(),
        }
        best_loss, best_state, since_best = math.inf, None, 0
        with (
            _deterministic(not on_cuda),
            tqdm(
                range(cfg.epochs),
                desc="training",
                unit="epoch",
                disable=not (cfg.progress and show_progress()),
                leave=False,
            ) as bar,
        ):
            for epoch in bar:
                model.train()
                _freeze_norm_stats(model)
                running, count = 0.0, 0
                for x, y in _batches(dataset, train_idx, cfg.batch_size, True, generator):
                    x, y = to_device(x), y.to(device, non_blocking=True).float()
                    if cfg.augment is not None:
                        x = cfg.augment(x)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        pred = model(x)
                    loss = loss_fn(pred.float(), y)
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"training diverged (loss {loss.item()}) at epoch {epoch}",
                            hint="lower lr, or standardise the targets",
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    running += loss.item() * len(y)
                    count += len(y)
                history["train_loss"].append(running / count)
                history["lr"].append(optimizer.param_groups[0]["lr"])
                if len(hold_idx):
                    hold = self._evaluate(
                        model, dataset, hold_idx, loss_fn, to_device, amp, device, generator
                    )
                else:
                    hold = history["train_loss"][-1]  # no holdout: the last epoch is the best one
                history["holdout_loss"].append(hold)
                bar.set_postfix(train=f"{history['train_loss'][-1]:.4g}", holdout=f"{hold:.4g}")
                if hold < best_loss or not len(hold_idx):
                    best_loss, since_best = hold, 0
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    history["best_epoch"] = epoch
                else:
                    since_best += 1
                    if cfg.patience is not None and since_best > cfg.patience:
                        break
        history["stopped_epoch"] = epoch
        history["best_holdout_loss"] = best_loss
        assert best_state is not None
        model.load_state_dict(best_state)
        model.eval()
        return FitResult(model=model, best_state=best_state, history=history)

    @staticmethod
    def _evaluate(
        model: nn.Module,
        dataset: Dataset,
        indices: np.ndarray,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        to_device: Callable[[Tensor], Tensor],
        amp: bool,
        device: torch.device,
        generator: torch.Generator,
    ) -> float:
        """Loss over the holdout, computed on all of it at once (Pearson needs the whole set)."""
        model.eval()
        preds, targets = [], []
        with torch.inference_mode():
            for x, y in _batches(dataset, indices, 512, False, generator):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    preds.append(model(to_device(x)).float())
                targets.append(y.to(device).float())
            return float(loss_fn(torch.cat(preds), torch.cat(targets)))


def fit_regressor(
    model: nn.Module, train_inputs: Any, train_targets: Any = None, **options: Any
) -> FitResult:
    """Train ``model`` to map inputs to targets; returns :class:`FitResult` with the best weights loaded.

    ``train_inputs``/``train_targets``: aligned tensors or arrays (features for
    a head, images for a CNN or a backbone), or a Dataset of (input, target)
    pairs with ``train_targets=None``. The holdout for early stopping is a
    seeded ``holdout_fraction`` of these training examples. Options (see
    :class:`TrainConfig`): ``epochs, lr, weight_decay, batch_size,
    holdout_fraction, patience, scheduler ('cosine'|'constant'),
    warmup_epochs, loss ('mse'|'pearson'|'mse+corr'), augment (a callable on
    input batches, e.g. ImageAugment()), device, amp, channels_last, seed,
    progress, lr_groups ({'backbone': 1e-4}), trainable (['backbone.layer2',
    'backbone.layer3', 'backbone.layer4', 'head']), grad_clip``.
    """
    return Trainer(**options).fit(model, train_inputs, train_targets)


def predict(
    model: nn.Module,
    inputs: Any,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    amp: bool | None = None,
) -> np.ndarray:
    """Predictions of ``model`` for ``inputs`` as float32 (N, out) numpy, in eval + inference mode."""
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    use_amp = device.type == "cuda" if amp is None else bool(amp) and device.type == "cuda"
    x_all = _as_tensor(inputs, "inputs")
    was_training = model.training
    model.to(device).eval()
    outs = []
    try:
        with torch.inference_mode():
            for i in range(0, len(x_all), batch_size):
                x = x_all[i : i + batch_size].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    outs.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise TrainingError("no inputs to predict", hint="pass a non-empty batch")
    return torch.cat(outs).numpy()
