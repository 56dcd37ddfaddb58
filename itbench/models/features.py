"""Layer activations of a network, extracted in one streamed pass.

Why streamed: a ResNet50 sweep over the stem and its 16 bottlenecks on the 3200
benchmark images would be ~60 GB of float32 if every activation were kept
(``layer1`` alone is 802,816 values per image, ~10 GB). :class:`FeatureExtractor`
therefore runs the model once over the images, batch by batch, and *reduces*
each requested layer's activation inside its forward hook, so only the reduced
(N, D) float32 matrix of each layer ever grows with N.

Reducers (a spec string is part of the activation-cache key):

* ``flatten``: the exact activation, flattened (C*H*W values).
* ``avgpool(k)``: adaptive average pooling of every spatial dim to ``k`` (so
  (C, H, W) -> C*k*k values); layers already flat pass through.
* ``random_projection(dim, seed)``: a fixed Johnson-Lindenstrauss projection
  of the flattened activation to ``dim`` values. It is the very sparse random
  projection of Li, Hastie & Church (2006) as scikit-learn generates it
  (density 1/sqrt(D), entries +-sqrt(1/(density*dim))): for layer1 of ResNet50
  (D = 802,816) a dense float32 Gaussian matrix with dim=1000 would be 3.2 GB,
  the sparse one holds ~0.9 M non-zeros (~11 MB), preserves norms and inner
  products as well in expectation, and is a sparse-dense matmul per batch.

Hooks rather than ``torchvision.models.feature_extraction.create_feature_extractor``:
forward hooks on named modules work on any ``nn.Module`` (timm models with
dynamic control flow need no FX tracing), leave the model object untouched,
and let the pass stop right after the last requested layer has fired (no
wasted compute in the later layers when only early layers are asked for).
Layer names are therefore module names, which are exactly the
``get_graph_node_names`` names of module outputs (``layer3``, ``layer3.5``,
``blocks.4``, ``avgpool``); functional nodes such as ``layer1.0.add`` are not
modules and are rejected with the close matches that are.

A module called several times in one forward pass (a shared ReLU, say)
contributes the output of its first call.

What the reducers cost in score, memory and speed is measured in ``perf/extraction.py``
(results and the tables in ``perf/README.md``, "Feature extraction").
"""

from __future__ import annotations

import difflib
import functools
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from itbench.console import show_progress
from itbench.errors import ItbenchError

__all__ = [
    "AvgPool",
    "FeatureError",
    "FeatureExtractor",
    "Flatten",
    "RandomProjection",
    "Reducer",
    "default_layers",
    "extract",
    "layer_names",
    "parse_reducer",
    "resolve_layers",
]


class FeatureError(ItbenchError):
    """A feature-extraction request that cannot be served (bad layer, reducer, device, size)."""


# --------------------------------------------------------------------------- reducers


class Reducer(Protocol):
    """Maps a batch of activations (B, ...) to float32 features (B, D) on the same device."""

    spec: str

    def __call__(self, act: Tensor) -> Tensor: ...


class Flatten:
    """The exact activation: kept for layers small enough to store whole."""

    spec = "flatten"

    def __call__(self, act: Tensor) -> Tensor:
        return act.reshape(act.shape[0], -1).float()

    def __repr__(self) -> str:
        return self.spec


class AvgPool:
    """Adaptive average pooling of every spatial dim to ``k``: keeps channels, coarsens space."""

    def __init__(self, k: int = 1):
        if int(k) < 1:
            raise FeatureError(f"avgpool size must be >= 1, got {k}", hint="e.g. reducer='avgpool(2)'")
        self.k = int(k)
        self.spec = f"avgpool(k={self.k})"

    def __call__(self, act: Tensor) -> Tensor:
        spatial = act.dim() - 2
        if spatial <= 0:  # already (B, C): nothing to pool
            return act.reshape(act.shape[0], -1).float()
        pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}.get(spatial)
        if pool is None:
            raise FeatureError(
                f"avgpool cannot pool a {act.dim()}-d activation", hint="use 'flatten' or 'random_projection'"
            )
        # pooling accumulates in float32 even for bf16 input, so pool first and convert the small result
        return pool(act, self.k).reshape(act.shape[0], -1).float()

    def __repr__(self) -> str:
        return self.spec


@functools.lru_cache(maxsize=32)
def _sparse_projection_csr(n_features: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays of sklearn's very sparse projection (dim x n_features); cached as it costs ~1 s for 800k dims."""
    from sklearn.random_projection import SparseRandomProjection

    srp = SparseRandomProjection(n_components=dim, density="auto", random_state=seed)
    # fit() only looks at the number of columns; one zero row keeps it cheap
    srp.fit(np.zeros((1, n_features), dtype=np.float32))
    comp = srp.components_.tocsr()
    return comp.indptr.astype(np.int64), comp.indices.astype(np.int64), comp.data.astype(np.float32)


class RandomProjection:
    """Fixed sparse Johnson-Lindenstrauss projection to ``dim`` values (see module docstring).

    The matrix depends only on (input size, ``dim``, ``seed``), so two layers of
    the same size share it and a rerun reproduces the features exactly.
    Layers with at most ``dim`` values are passed through unprojected: a
    projection up would only add noise-free redundancy.
    """

    def __init__(self, dim: int = 1000, seed: int = 0):
        if int(dim) < 1:
            raise FeatureError(
                f"random_projection dim must be >= 1, got {dim}", hint="e.g. 'random_projection(1000)'"
            )
        self.dim, self.seed = int(dim), int(seed)
        self.spec = f"random_projection(dim={self.dim},seed={self.seed})"
        self._mats: dict[tuple[int, str], Tensor] = {}

    def matrix(self, n_features: int, device: torch.device | str = "cpu") -> Tensor:
        """The (dim x n_features) sparse CSR projection on ``device``."""
        key = (n_features, str(device))
        if key not in self._mats:
            indptr, indices, data = _sparse_projection_csr(n_features, self.dim, self.seed)
            with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable
                warnings.simplefilter("ignore", UserWarning)
                self._mats[key] = torch.sparse_csr_tensor(
                    torch.from_numpy(indptr),
                    torch.from_numpy(indices),
                    torch.from_numpy(data),
                    size=(self.dim, n_features),
                    check_invariants=False,
                ).to(device)
        return self._mats[key]

    def __call__(self, act: Tensor) -> Tensor:
        # one kernel for dtype and layout (channels_last activations are flattened in NCHW order)
        flat = act.to(torch.float32, memory_format=torch.contiguous_format).reshape(act.shape[0], -1)
        if flat.shape[1] <= self.dim:
            return flat
        mat = self.matrix(flat.shape[1], flat.device)
        with torch.autocast(flat.device.type, enabled=False):  # keep the sparse product in float32
            # (dim x D) @ (D x B): a row-major D x B operand keeps the gather cache-friendly
            # (measured 2x faster than a column-major operand on an H200, 4x on CPU)
            return (mat @ flat.T.contiguous()).T.contiguous()

    def __repr__(self) -> str:
        return self.spec


_REDUCER_RE = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")


def parse_reducer(spec: str | Reducer | None) -> Reducer:
    """A reducer from its spec string ('flatten', 'avgpool(2)', 'random_projection(1000, seed=1)').

    Strings let submissions and configs name reducers; objects pass through.
    """
    if spec is None:
        return Flatten()
    if not isinstance(spec, str):
        if not callable(spec) or not isinstance(getattr(spec, "spec", None), str):
            raise FeatureError(
                f"not a reducer: {spec!r}", hint="pass a spec string or an object with .spec and __call__"
            )
        return spec
    match = _REDUCER_RE.match(spec)
    hint = "reducers: 'flatten', 'avgpool(k)', 'random_projection(dim, seed=0)'"
    if not match:
        raise FeatureError(f"cannot parse reducer {spec!r}", hint=hint)
    name, argtext = match.group(1), (match.group(2) or "").strip()
    args: list[int] = []
    kwargs: dict[str, int] = {}
    try:
        for part in filter(None, (p.strip() for p in argtext.split(","))):
            if "=" in part:
                key, value = (s.strip() for s in part.split("=", 1))
                kwargs[key] = int(value)
            else:
                args.append(int(part))
    except ValueError:
        raise FeatureError(f"reducer arguments must be integers: {spec!r}", hint=hint) from None
    factories: dict[str, Callable[..., Reducer]] = {
        "flatten": Flatten,
        "avgpool": AvgPool,
        "random_projection": RandomProjection,
        "rp": RandomProjection,
    }
    if name not in factories:
        raise FeatureError(f"unknown reducer {name!r}", hint=hint)
    try:
        return factories[name](*args, **kwargs)
    except TypeError as err:
        raise FeatureError(f"bad arguments for reducer {spec!r}: {err}", hint=hint) from None


# --------------------------------------------------------------------------- layers


def layer_names(model: nn.Module) -> list[str]:
    """All names that :func:`resolve_layers` accepts for ``model`` (its named modules)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layers(model: nn.Module, names: str | Sequence[str]) -> list[str]:
    """Validated, de-duplicated layer names (order kept); unknown names fail with close matches."""
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))
    if not names:
        raise FeatureError("no layers requested", hint="pass layer names, e.g. default_layers('resnet50')")
    known = layer_names(model)
    known_set = set(known)
    for name in names:
        if name not in known_set:
            close = difflib.get_close_matches(str(name), known, n=6, cutoff=0.5)
            hint = f"close matches: {', '.join(close)}" if close else "no close match"
            top = [n for n in known if "." not in n]
            raise FeatureError(
                f"{type(model).__name__} has no layer {name!r}",
                hint=f"{hint}; top-level layers: {', '.join(top)}; all names: itbench.models.features.layer_names(model)",
            )
    return names


_RESNET_BLOCKS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
}
_EFFNET_LITE0_BLOCKS = (1, 2, 2, 3, 3, 4, 1)
_CONVNEXT_BASE_BLOCKS = (3, 3, 27, 3)


def _block_counts(model: nn.Module | None, parents: Sequence[str], fallback: Sequence[int]) -> list[int]:
    """Numbers of children in each stage, read from the model when there is one."""
    if model is None:
        return list(fallback)
    return [len(model.get_submodule(p)) for p in parents]  # type: ignore[arg-type]  # stages are Sequentials; Module's stub hides __len__


def default_layers(model_name: str, granularity: str = "stages", model: nn.Module | None = None) -> list[str]:
    """The layer sweep (Fig. 1) of a known architecture, input to output.

    ``granularity='stages'``: the stem, each stage, the global pool.
    ``granularity='blocks'``: the stem and every residual/inverted-residual block
    (for resnet50: maxpool + the 16 bottlenecks layer1.0 .. layer4.2).
    Pass ``model`` to read block counts from it (and, for convnext_base, to
    tell timm's naming from torchvision's).
    """
    if granularity not in ("stages", "blocks"):
        raise FeatureError(f"unknown granularity {granularity!r}", hint="use 'stages' or 'blocks'")
    name = model_name.lower()
    if name in _RESNET_BLOCKS:
        stages = [f"layer{i}" for i in range(1, 5)]
        if granularity == "stages":
            return ["maxpool", *stages, "avgpool"]
        counts = _block_counts(model, stages, _RESNET_BLOCKS[name])
        return ["maxpool", *[f"{s}.{j}" for s, n in zip(stages, counts, strict=False) for j in range(n)]]
    if name == "efficientnet_lite0":
        stages = [f"blocks.{i}" for i in range(7)]
        if granularity == "stages":
            return ["conv_stem", *stages, "global_pool"]
        counts = _block_counts(model, stages, _EFFNET_LITE0_BLOCKS)
        return ["conv_stem", *[f"{s}.{j}" for s, n in zip(stages, counts, strict=False) for j in range(n)]]
    if name == "convnext_base":
        if model is not None and not hasattr(model, "stages"):  # torchvision naming
            stages = ["features.1", "features.3", "features.5", "features.7"]
            if granularity == "stages":
                return ["features.0", *stages, "avgpool"]
            counts = _block_counts(model, stages, _CONVNEXT_BASE_BLOCKS)
            return [
                "features.0",
                *[f"{s}.{j}" for s, n in zip(stages, counts, strict=False) for j in range(n)],
            ]
        stages = [f"stages.{i}" for i in range(4)]
        if granularity == "stages":
            return ["stem", *stages, "head.global_pool"]
        counts = _block_counts(model, [f"{s}.blocks" for s in stages], _CONVNEXT_BASE_BLOCKS)
        return ["stem", *[f"{s}.blocks.{j}" for s, n in zip(stages, counts, strict=False) for j in range(n)]]
    known = sorted([*_RESNET_BLOCKS, "efficientnet_lite0", "convnext_base"])
    raise FeatureError(
        f"no default layers for model {model_name!r}",
        hint=f"known: {', '.join(known)}; or pass layer names (itbench.models.features.layer_names(model))",
    )


# --------------------------------------------------------------------------- extraction


class _StopForward(Exception):
    """Raised from the last hook of a batch so the layers after it are not computed."""


Images = Tensor | np.ndarray | Iterable[Tensor] | Callable[[], Iterable[Tensor]]


def _as_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """The device to run on: as given, or where the model's parameters already are."""
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FeatureError(f"unknown device {device!r}", hint="use 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FeatureError(f"device {device!r} requested but CUDA is not available", hint="use device='cpu'")
    return dev


def _batches(images: Images, batch_size: int) -> tuple[Iterable[Tensor], int | None]:
    """Batches of images and their total count when known (for preallocation and the progress bar)."""
    if callable(images) and not isinstance(images, (Tensor, np.ndarray)):
        images = images()
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, Tensor):
        if images.dim() < 2:
            raise FeatureError(
                f"images must be batched (N, C, H, W), got shape {tuple(images.shape)}",
                hint="add a batch dimension with images[None]",
            )
        n = images.shape[0]
        return (images[i : i + batch_size] for i in range(0, n, batch_size)), n

    def unwrap() -> Iterable[Tensor]:
        for item in images:  # DataLoaders over TensorDatasets yield [x] or (x, y)
            if isinstance(item, (list, tuple)):
                item = item[0]
            yield torch.as_tensor(item)

    return unwrap(), None


def _pinned_ahead(batches: Iterable[Tensor]) -> Iterator[Tensor]:
    """Batches in pinned memory, the next one pinned in a thread while the GPU works on the current one.

    Pinning a 256-image batch is a ~150 MB host copy: done inline it leaves the
    GPU idle between batches, so it is overlapped with the forward pass.
    """

    def pin(batch: Tensor) -> Tensor:
        return batch if batch.is_cuda else batch.pin_memory()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(pin, batch)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def _memory_available() -> int | None:
    """MemAvailable in bytes (Linux), to refuse a request that would be killed for memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class FeatureExtractor:
    """Reduced activations of named layers of ``model``, computed in one pass per batch.

    On CUDA the model runs in channels_last with bf16 autocast (each can be
    turned off), inputs go over with non_blocking copies from pinned memory,
    and reduced features come back to pinned host buffers without a sync per
    batch. The model is moved to ``device`` and put in eval mode for the pass
    (its train/eval mode is restored afterwards).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        reducer: str | Reducer | Mapping[str, str | Reducer] | None = "flatten",
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        amp: bool | None = None,
        channels_last: bool | None = None,
        stop_early: bool = True,
        progress: bool = True,
    ):
        self.model = model
        self.layers = resolve_layers(model, layers)
        if isinstance(reducer, Mapping):  # one reducer per layer, e.g. flatten for small late layers
            missing = [layer for layer in self.layers if layer not in reducer]
            if missing:
                raise FeatureError(
                    f"no reducer given for layers {missing}", hint="give every layer a reducer"
                )
            self.reducers = {layer: parse_reducer(reducer[layer]) for layer in self.layers}
        else:
            shared = parse_reducer(reducer)
            self.reducers = dict.fromkeys(self.layers, shared)
        if int(batch_size) < 1:
            raise FeatureError(f"batch_size must be >= 1, got {batch_size}", hint="e.g. batch_size=64")
        self.batch_size = int(batch_size)
        self.device = _as_device(device, model)
        on_cuda = self.device.type == "cuda"
        self.amp = on_cuda if amp is None else bool(amp) and on_cuda
        self.channels_last = on_cuda if channels_last is None else bool(channels_last)
        self.stop_early = stop_early
        self.progress = progress

    def reducer_spec(self, layer: str) -> str:
        """The spec string of the reducer applied to ``layer`` (part of cache keys)."""
        return self.reducers[layer].spec

    def _hook(self, layer: str, store: dict[str, Tensor]) -> Callable[..., None]:
        """A forward hook that reduces ``layer``'s output at once, so the full activation is never kept."""
        reducer = self.reducers[layer]
        n_layers = len(self.layers)

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if layer in store:  # a module called twice: keep its first call
                return
            if isinstance(output, (list, tuple)):
                output = output[0]
            if not isinstance(output, Tensor):
                raise FeatureError(
                    f"layer {layer!r} returned {type(output).__name__}, not a tensor",
                    hint="choose a module whose output is a tensor",
                )
            store[layer] = reducer(output.detach())
            if self.stop_early and len(store) == n_layers:
                raise _StopForward

        return hook

    def _forward(self, batch: Tensor, store: dict[str, Tensor]) -> None:
        """One forward pass that fills ``store`` with each layer's reduced batch."""
        store.clear()
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                self.model(x)
        except _StopForward:
            pass
        missing = [layer for layer in self.layers if layer not in store]
        if missing:
            raise FeatureError(
                f"layers {missing} were not called in the forward pass",
                hint="pick modules that the model's forward() uses",
            )

    def _check_size(self, n: int, dims: Mapping[str, int]) -> None:
        """Refuse, with advice, an output that cannot fit in memory (flatten of early layers)."""
        total = 4 * n * sum(dims.values())
        available = _memory_available()
        if available is not None and total > 0.9 * available:
            big = max(dims, key=dims.__getitem__)
            raise FeatureError(
                f"the features would take {total / 2**30:.1f} GiB for {n} images "
                f"(largest: {big!r}, {dims[big]} values per image) but only {available / 2**30:.1f} GiB is free",
                hint="use reducer='avgpool(4)' or 'random_projection(1000)', or fewer layers/images",
            )

    def extract(self, images: Images) -> dict[str, np.ndarray]:
        """{layer: float32 array (N, D)} for ``images`` (Tensor, array, iterable or callable of batches)."""
        batches, n_total = _batches(images, self.batch_size)
        on_cuda = self.device.type == "cuda"
        model = self.model
        was_training = model.training
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        model.eval()
        store: dict[str, Tensor] = {}
        handles = [
            model.get_submodule(layer).register_forward_hook(self._hook(layer, store))
            for layer in self.layers
        ]
        buffers: dict[str, Tensor] = {}
        chunks: dict[str, list[Tensor]] = {layer: [] for layer in self.layers}
        done = 0
        try:
            with (
                torch.inference_mode(),
                tqdm(
                    total=n_total,
                    unit="img",
                    desc="features",
                    disable=not (self.progress and show_progress()),
                    leave=False,
                ) as bar,
            ):
                for batch in _pinned_ahead(batches) if on_cuda else batches:
                    self._forward(batch, store)
                    b = batch.shape[0]
                    if n_total is not None and not buffers:
                        self._check_size(n_total, {k: v.shape[1] for k, v in store.items()})
                        buffers = {
                            k: torch.empty((n_total, v.shape[1]), dtype=torch.float32, pin_memory=on_cuda)
                            for k, v in store.items()
                        }
                    for layer, value in store.items():
                        if n_total is not None:
                            buffers[layer][done : done + b].copy_(value, non_blocking=on_cuda)
                        else:
                            host = torch.empty(value.shape, dtype=torch.float32, pin_memory=on_cuda)
                            chunks[layer].append(host.copy_(value, non_blocking=on_cuda))
                    store.clear()
                    done += b
                    bar.update(b)
            if on_cuda:
                torch.cuda.synchronize(self.device)
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        if done == 0:
            raise FeatureError("no images to extract features from", hint="pass a non-empty batch of images")
        if n_total is not None:
            return {layer: buffers[layer].numpy() for layer in self.layers}
        return {layer: torch.cat(chunks[layer]).numpy() for layer in self.layers}

    __call__ = extract


def extract(
    model: nn.Module,
    images: Images,
    layers: str | Sequence[str],
    reducer: str | Reducer | Mapping[str, str | Reducer] | None = "flatten",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, np.ndarray]:
    """{layer: float32 (N, D)} reduced activations of ``layers`` for ``images``, in one pass.

    ``options`` go to :class:`FeatureExtractor` (``amp``, ``channels_last``, ``stop_early``).
    """
    extractor = FeatureExtractor(
        model, layers, reducer, batch_size=batch_size, device=device, progress=progress, **options
    )
    return extractor.extract(images)
