"""On-disk cache of layer activations, so a layer sweep or a re-score never recomputes features.

One ``.npy`` file per (model, weights, layer, preprocessing, reducer,
benchmark + data checksum, split, stimulus ids) under
``paths.cache_dir("activations")``, named by the SHA-1 of that key, plus a
small JSON index (``index.json``) with each entry's key, size and last use.

Why this shape:

* content-addressed file names make a write idempotent and let a file whose
  index entry was lost (a crash between the two writes) be adopted again;
* every write is a temporary file + ``os.replace`` and the index is updated
  under an ``fcntl`` lock, so concurrent runs and crashes never leave a
  half-written entry behind; an entry that fails to load anyway (disk
  trouble, a stray edit) is discarded with a warning and recomputed;
* the size limit (default 10 GB, ``$ITBENCH_CACHE_LIMIT_GB``) is kept by
  evicting least-recently-used entries after each write;
* a cache folder that cannot be written is not an error: extraction goes on
  without caching (one warning), and entries already there are still served.

:func:`info` and :func:`clear` serve ``itbench cache info|clear`` for every
cache kind in :data:`KINDS`; the runner's cache keys and layout live here too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from itbench import paths
from itbench.errors import ItbenchError

if TYPE_CHECKING:  # torch is imported where activations are computed: a warm re-score never needs it
    import torch
    from torch import nn

    from itbench.models.features import Images, Reducer

__all__ = [
    "ActivationCache",
    "ActivationKey",
    "CacheError",
    "cache_limit_bytes",
    "cached_extract",
    "clear",
    "info",
    "stimulus_hash",
    "weights_hash",
]

DEFAULT_LIMIT_GB = 10.0
LIMIT_ENV = "ITBENCH_CACHE_LIMIT_GB"
INDEX = "index.json"
_STALE_TMP_S = 3600.0


class CacheError(ItbenchError):
    """A cache request that cannot be served (bad size limit, unknown cache kind)."""


def cache_limit_bytes() -> int:
    """The activation cache's size limit: ``$ITBENCH_CACHE_LIMIT_GB`` or 10 GB."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return int(DEFAULT_LIMIT_GB * 1e9)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise CacheError(
            f"{LIMIT_ENV}={raw!r} is not a size in GB",
            hint=f"set it to a number such as 10 or 0.5, or unset it for {DEFAULT_LIMIT_GB:g} GB",
        )
    return int(value * 1e9)


def stimulus_hash(stimulus_ids: Sequence[str]) -> str:
    """SHA-1 of the ordered stimulus ids: the same images in another order are another entry."""
    digest = hashlib.sha1()
    for sid in stimulus_ids:
        digest.update(str(sid).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def weights_hash(model: nn.Module) -> str:
    """SHA-1 over the model's state dict (names, dtypes, shapes, bytes): identifies its weights."""
    import torch

    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().data)
    return digest.hexdigest()


@dataclass(frozen=True)
class ActivationKey:
    """Everything an activation matrix depends on; its digest names the cache file."""

    model: str
    weights: str
    layer: str
    preprocessing: str
    reducer: str
    benchmark: str
    data_checksum: str
    split: str
    stimuli: str

    def digest(self) -> str:
        """Stable SHA-1 of the key's fields."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class ActivationCache:
    """LRU-limited store of float32 activation matrices keyed by :class:`ActivationKey`."""

    def __init__(self, root: str | Path | None = None, limit_bytes: int | None = None):
        self.limit_bytes = cache_limit_bytes() if limit_bytes is None else int(limit_bytes)
        self.root: Path | None
        try:
            self.root = Path(root) if root is not None else paths.cache_dir("activations")
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            _warn(f"activation cache disabled: cannot create its folder ({err})")
            self.root = None
        self.writable = self.root is not None and self._probe_writable()
        self._warned_readonly = False

    # ---------------------------------------------------------------- internals

    def _probe_writable(self) -> bool:
        """Whether files can be created in the cache folder (checked once, by trying)."""
        assert self.root is not None
        try:
            fd, name = tempfile.mkstemp(dir=self.root, suffix=".tmp")
            os.close(fd)
            os.unlink(name)
            return True
        except OSError:
            return False

    def _skip_write(self) -> bool:
        """True when writes must be skipped; warns once per cache object."""
        if self.writable:
            return False
        if not self._warned_readonly:
            _warn(f"activation cache at {self.root} is not writable: features are not cached")
            self._warned_readonly = True
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock for index read-modify-write across processes."""
        assert self.root is not None
        with open(self.root / "index.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _file(self, digest: str) -> Path:
        assert self.root is not None
        return self.root / f"{digest}.npy"

    def _read_index(self) -> dict[str, dict[str, Any]]:
        """The index's entries; a missing or unreadable index is rebuilt from the files present."""
        assert self.root is not None
        path = self.root / INDEX
        try:
            data = json.loads(path.read_text())
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise ValueError("entries is not an object")
            return entries
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as err:
            _warn(f"activation cache index {path} is unreadable ({err}); rebuilding it from the files")
        entries = {}
        for file in self.root.glob("*.npy"):
            stat = file.stat()
            entries[file.stem] = {
                "bytes": stat.st_size,
                "created": stat.st_mtime,
                "last_used": stat.st_mtime,
                "key": None,
            }
        return entries

    def _write_index(self, entries: Mapping[str, Any]) -> None:
        assert self.root is not None
        _atomic_write_bytes(
            self.root / INDEX, json.dumps({"version": 1, "entries": entries}, indent=1).encode()
        )

    def _load(self, digest: str, entry: Mapping[str, Any] | None) -> np.ndarray | None:
        """The array stored under ``digest`` or None when it is missing or fails to load/verify."""
        path = self._file(digest)
        if not path.exists():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            _warn(f"discarding corrupt activation cache entry {path.name}: {err}")
            return _CORRUPT
        if entry is not None and entry.get("shape") is not None and list(array.shape) != list(entry["shape"]):
            _warn(
                f"discarding activation cache entry {path.name}: shape {array.shape} != indexed {entry['shape']}"
            )
            return _CORRUPT
        return array

    def _evict(self, entries: dict[str, dict[str, Any]], protect: Container[str] = frozenset()) -> None:
        """Drop least-recently-used entries until the total fits the limit; remove stale temp files.

        Entries in ``protect`` (those just written) go last, so a write evicts older work first.
        """
        total = sum(int(e.get("bytes", 0)) for e in entries.values())
        order = sorted(entries, key=lambda d: (d in protect, entries[d].get("last_used", 0.0)))
        for digest in order:
            if total <= self.limit_bytes:
                break
            total -= int(entries[digest].get("bytes", 0))
            self._file(digest).unlink(missing_ok=True)
            del entries[digest]
        now = time.time()
        assert self.root is not None
        for tmp in self.root.glob("*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > _STALE_TMP_S:
                    tmp.unlink()

    # ---------------------------------------------------------------- public API

    @property
    def enabled(self) -> bool:
        """Whether there is a cache folder at all (it may still be read-only)."""
        return self.root is not None

    def get_many(self, keys: Iterable[ActivationKey]) -> dict[ActivationKey, np.ndarray | None]:
        """Cached arrays for ``keys`` (None for a miss); refreshes last-use times of hits."""
        keys = list(keys)
        result: dict[ActivationKey, np.ndarray | None] = dict.fromkeys(keys)
        if self.root is None or not keys:
            return result
        entries = self._read_index()
        hits, bad = [], []
        for key in keys:
            digest = key.digest()
            array = self._load(digest, entries.get(digest))
            if array is _CORRUPT or (array is None and digest in entries):  # corrupt, or its file is gone
                bad.append(digest)
            elif array is not None:
                result[key] = array
                hits.append((digest, key, array))
        if (hits or bad) and self.writable:
            with self._locked():
                entries = self._read_index()
                now = time.time()
                for digest, key, array in hits:
                    entry = entries.get(digest)
                    if entry is None or not entry.get("key"):  # adopt a file the index lost
                        entry = entries[digest] = _entry(key, array, self._file(digest))
                    entry["last_used"] = now
                for digest in bad:
                    self._file(digest).unlink(missing_ok=True)
                    entries.pop(digest, None)
                self._write_index(entries)
        return result

    def get(self, key: ActivationKey) -> np.ndarray | None:
        """The cached array for ``key`` or None."""
        return self.get_many([key])[key]

    def put_many(self, items: Mapping[ActivationKey, np.ndarray]) -> int:
        """Store arrays (float32, atomically), then evict LRU entries over the limit; returns how many were stored."""
        if self.root is None or not items or self._skip_write():
            return 0
        written: list[tuple[ActivationKey, np.ndarray]] = []
        for key, array in items.items():
            array = np.ascontiguousarray(array, dtype=np.float32)
            if array.nbytes > self.limit_bytes:
                _warn(
                    f"not caching {key.layer!r}: {array.nbytes / 1e9:.2f} GB exceeds the cache limit "
                    f"of {self.limit_bytes / 1e9:.2f} GB (set {LIMIT_ENV})"
                )
                continue
            try:
                _atomic_save_npy(self._file(key.digest()), array)
            except OSError as err:
                _warn(f"could not write activation cache entry for {key.layer!r}: {err}")
                continue
            written.append((key, array))
        if not written:
            return 0
        with self._locked():
            entries = self._read_index()
            for key, array in written:
                entries[key.digest()] = _entry(key, array, self._file(key.digest()))
            self._evict(entries, protect={key.digest() for key, _ in written})
            self._write_index(entries)
        return len(written)

    def put(self, key: ActivationKey, array: np.ndarray) -> bool:
        """Store one array; False when it was not cached."""
        return self.put_many({key: array}) == 1

    def entries(self) -> dict[str, dict[str, Any]]:
        """The index: digest -> {key, bytes, shape, created, last_used}."""
        return self._read_index() if self.root is not None else {}

    def info(self) -> dict[str, Any]:
        """Entries, total size, limit, and a per-model breakdown."""
        entries = self.entries()
        by_model: dict[str, dict[str, int]] = {}
        for entry in entries.values():
            model = (entry.get("key") or {}).get("model", "unknown")
            slot = by_model.setdefault(model, {"entries": 0, "bytes": 0})
            slot["entries"] += 1
            slot["bytes"] += int(entry.get("bytes", 0))
        return {
            "root": str(self.root) if self.root else None,
            "entries": len(entries),
            "bytes": sum(int(e.get("bytes", 0)) for e in entries.values()),
            "limit_bytes": self.limit_bytes,
            "writable": self.writable,
            "by_model": by_model,
        }

    def clear(self) -> dict[str, int]:
        """Remove every entry; returns the number of entries and bytes freed."""
        if self.root is None or self._skip_write():
            return {"entries": 0, "bytes": 0}
        with self._locked():
            entries = self._read_index()
            freed = sum(int(e.get("bytes", 0)) for e in entries.values())
            for file in self.root.glob("*.npy"):
                file.unlink(missing_ok=True)
            self._write_index({})
        return {"entries": len(entries), "bytes": freed}


_CORRUPT: Any = object()  # sentinel: a file exists but is not a valid entry


def _entry(key: ActivationKey, array: np.ndarray, path: Path) -> dict[str, Any]:
    now = time.time()
    try:
        size = path.stat().st_size
    except OSError:
        size = int(array.nbytes)
    return {"key": asdict(key), "bytes": size, "shape": list(array.shape), "created": now, "last_used": now}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temp file + rename, so readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- extraction through the cache


def cached_extract(
    model: nn.Module,
    images: Images,
    layers: str | Sequence[str],
    reducer: str | Reducer | None = "flatten",
    *,
    model_name: str,
    benchmark_id: str,
    data_checksum: str,
    split: str,
    stimulus_ids: Sequence[str],
    weights_id: str | None = None,
    preprocessing_id: str = "imagenet-224",
    cache: ActivationCache | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, np.ndarray]:
    """:func:`itbench.models.features.extract` with the activation cache in front of it.

    Only the layers missing from the cache are computed (in one pass). Pass
    ``images`` as a callable to avoid loading images at all on a full hit.
    ``weights_id`` defaults to a hash of the model's state dict.
    """
    from itbench.models.features import FeatureExtractor, resolve_layers

    layers = resolve_layers(model, layers)
    cache = cache if cache is not None else ActivationCache()
    extractor = FeatureExtractor(
        model, layers, reducer, batch_size=batch_size, device=device, progress=progress, **options
    )
    weights = weights_id if weights_id is not None else weights_hash(model)
    stimuli = stimulus_hash(stimulus_ids)
    keys = {
        layer: ActivationKey(
            model_name,
            weights,
            layer,
            preprocessing_id,
            extractor.reducer_spec(layer),
            benchmark_id,
            data_checksum,
            split,
            stimuli,
        )
        for layer in layers
    }
    found = cache.get_many(keys.values())
    out: dict[str, np.ndarray] = {}
    for layer, key in keys.items():
        array = found[key]
        if array is not None and array.ndim == 2 and array.shape[0] == len(stimulus_ids):
            out[layer] = array
    missing = [layer for layer in layers if layer not in out]
    if missing:
        sub = FeatureExtractor(
            model,
            missing,
            {layer: extractor.reducers[layer] for layer in missing},
            batch_size=batch_size,
            device=device,
            progress=progress,
            **options,
        )
        fresh = sub.extract(images)
        n = next(iter(fresh.values())).shape[0]
        if n != len(stimulus_ids):
            raise CacheError(
                f"got {n} images but {len(stimulus_ids)} stimulus ids",
                hint="pass the stimulus ids of exactly the images being extracted, in order",
            )
        cache.put_many({keys[layer]: fresh[layer] for layer in missing})
        out.update(fresh)
    return {layer: out[layer] for layer in layers}


# --------------------------------------------------------------------------- all cache kinds (CLI)

#: Every cache kind, with what it holds: the one list ``itbench cache`` offers.
KINDS: dict[str, str] = {
    "activations": "layer activations of in-process extraction (sweeps, perf scripts)",
    "predictions": "validated predictions, keyed by submission code, data, split, params, seed and sandbox",
    "submissions": "each submission's own namespace: its fitted state and its activation cache",
}


def run_key(*parts: Any) -> str:
    """A short stable key for a run's inputs (JSON of the parts, SHA-1, 20 hex digits)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def outputs_dir(submission_id: str) -> Path:
    """The parent's cache of one submission's validated outputs (predictions, features).

    Per submission, so that it can be counted against that submission's disk quota.
    """
    return paths.cache_dir("predictions") / submission_id


def prediction_file(submission_id: str, fit_key: str, split: str) -> Path:
    """Where the validated predictions of one fitted run on one split are kept."""
    return outputs_dir(submission_id) / f"{run_key(fit_key, split)}.npy"


def submission_namespace(submission_id: str) -> Path:
    """The only cache folder a sandboxed submission may write (its fitted state, activations)."""
    return paths.cache_dir("submissions") / submission_id


def _cache_root() -> Path:
    """Root of every cache kind (``$ITBENCH_CACHE`` or ``<data home>/cache``)."""
    return paths.cache_root()


def _kind_dir(kind: str) -> Path:
    if kind not in KINDS:
        raise CacheError(f"unknown cache kind {kind!r}", hint=f"kinds: {', '.join(KINDS)}")
    return _cache_root() / kind


def _folder_usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``, ignoring lock/index bookkeeping."""
    files, size = 0, 0
    for path in folder.rglob("*"):
        if path.is_file() and path.name not in ("index.lock", INDEX):
            files += 1
            size += path.stat().st_size
    return files, size


def info(kind: str | None = None) -> dict[str, Any]:
    """Entries and bytes per cache kind (``activations`` also with its index details)."""
    root = _cache_root()
    kinds = [kind] if kind else list(KINDS)
    per_kind: dict[str, dict[str, Any]] = {}
    for name in kinds:
        folder = _kind_dir(name)
        if not folder.is_dir():
            per_kind[name] = {"entries": 0, "bytes": 0}
        elif name == "activations":
            per_kind[name] = ActivationCache(folder).info()
        else:
            files, size = _folder_usage(folder)
            per_kind[name] = {"entries": files, "bytes": size}
    return {
        "root": str(root),
        "entries": sum(k["entries"] for k in per_kind.values()),
        "bytes": sum(k["bytes"] for k in per_kind.values()),
        "kinds": per_kind,
    }


def clear(kind: str | None = None) -> dict[str, int]:
    """Empty one cache kind or all of them; returns entries and bytes freed."""
    kinds = [kind] if kind else list(KINDS)
    freed = {"entries": 0, "bytes": 0}
    for name in kinds:
        folder = _kind_dir(name)
        if not folder.is_dir():
            continue
        if name == "activations":
            done = ActivationCache(folder).clear()
        else:
            files, size = _folder_usage(folder)
            try:
                for child in folder.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            except OSError as err:
                raise CacheError(
                    f"cannot clear cache {name!r}: {err}", hint=f"check permissions of {folder}"
                ) from None
            done = {"entries": files, "bytes": size}
        freed["entries"] += done["entries"]
        freed["bytes"] += done["bytes"]
    return freed
