"""Stimulus sets -> image tensors, exactly as the report's models consumed them.

A :class:`StimulusSet` is a pandas DataFrame indexed by ``stimulus_id`` (as in
Brain-Score, where a stimulus set is a DataFrame) plus an *image source*:
image files in a folder or a zip (BrainIO's ``stimulus_<id>.zip``), or images
already stored as normalised tensors in an HDF5 file (the course file
``IT_data.h5``). ``load_images`` always returns a float32 tensor of shape
(N, 3, size, size), normalised with the ImageNet mean and std; grey images are
repeated over the three channels.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch is imported where used: scoring cached predictions needs no torch
    import torch

from itbench.console import show_progress
from itbench.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
#: Above this many images ``load_images`` shows a progress bar by default.
PROGRESS_MIN = 256


# --------------------------------------------------------------------------- helpers


def _as_tensor(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    import torch

    return batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.array(batch, copy=True))


def to_unit_chw(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (0-255) or float (0-1) images, HWC/NHWC or grey HW/NHW -> float32 (N, 3, H, W) in [0, 1].

    Why: every image path (PIL files, numpy arrays from generators, user code)
    funnels through one conversion, so grey handling and scaling cannot drift.
    """
    import torch

    x = _as_tensor(batch)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif torch.is_floating_point(x):
        x = x.float()
        if x.numel() and (float(x.max()) > 1.0 + 1e-6 or float(x.min()) < -1e-6):
            raise DataError(
                f"float images must lie in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]",
                hint="pass uint8 images (0-255) or floats scaled to [0, 1]",
            )
    else:
        raise DataError(f"images must be uint8 or float, got {x.dtype}")
    if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] not in (1, 3, 4)):
        x = x.unsqueeze(-1)  # grey HW or NHW
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"images must be (N, H, W, C) with C in 1, 3, 4, got shape {tuple(x.shape)}",
            hint="pass channels-last images (HWC), as PIL and numpy produce them",
        )
    x = x[..., :3] if x.shape[-1] == 4 else x  # drop alpha
    x = x.expand(*x.shape[:3], 3) if x.shape[-1] == 1 else x
    return x.permute(0, 3, 1, 2).contiguous()


def normalize_chw(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of (N, 3, H, W) images in [0, 1]."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of (N, C, H, W) to size x size (as Brain-Score's Resize((s, s)))."""
    import torch.nn.functional as F

    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normalize(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1]-float HWC images -> ImageNet-normalised float32 (N, 3, H, W), no resizing."""
    return normalize_chw(to_unit_chw(batch))


def to_model_input(batch: np.ndarray | torch.Tensor, size: int | None = DEFAULT_SIZE) -> torch.Tensor:
    """uint8 or [0, 1]-float HWC images -> what a submission receives: (N, 3, size, size), normalised."""
    x = to_unit_chw(batch)
    if size is not None:
        x = resize(x, size)
    return normalize_chw(x)


def _show(progress: bool | None, n_images: int) -> bool:
    """Progress bars by default only for large batches, and only where a person watches (a terminal)."""
    return n_images >= PROGRESS_MIN and show_progress() if progress is None else progress


_T = TypeVar("_T")


def _progress(iterable: Iterable[_T], total: int, show: bool, desc: str) -> Iterable[_T]:
    """Wrap in a tqdm bar when asked."""
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


# --------------------------------------------------------------------------- image sources


class ImageSource(Protocol):
    """Where a stimulus set's pixels come from."""

    def load(self, rows: pd.DataFrame, size: int, progress: bool | None) -> torch.Tensor:
        """Images for ``rows`` (a slice of the stimulus table), (N, 3, size, size) normalised."""

    def describe(self) -> str:
        """One line for messages and ``itbench data info``."""


def _decode(data: bytes, stimulus_id: str, where: str) -> np.ndarray:
    """Decode one image file to an RGB uint8 array (grey -> 3 equal channels)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") else max(float(grey.max()), 1.0)
                return np.repeat((grey / peak * 255.0).round().astype(np.uint8)[..., None], 3, axis=-1)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(
            f"image for stimulus {stimulus_id!r} ({where}) cannot be read: {err}",
            hint="the stimulus archive is damaged: delete it and fetch it again",
        ) from err


class ImageFiles:
    """Image files in a folder or a zip; the table's ``filename`` is the path inside it.

    A zip is read member by member (never extracted as a whole); members are
    also found by base name when the archive nests them in one folder.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.exists():
            raise DataError(
                f"no stimulus images at {self.root}",
                hint="fetch the benchmark data (`itbench data fetch <benchmark>`) or pass the right folder/zip",
            )
        self.is_zip = self.root.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.root):
            raise DataError(
                f"{self.root} is neither a folder nor a zip archive",
                hint="the stimulus zip is damaged or truncated: delete it and fetch it again",
            )
        self._members: dict[str, str] | None = None

    def describe(self) -> str:
        return f"{'zip' if self.is_zip else 'folder'} {self.root}"

    def _member_map(self, archive: zipfile.ZipFile) -> dict[str, str]:
        """filename -> member name, also keyed by base name where that is unambiguous."""
        if self._members is None:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            members = {n: n for n in names}
            base_counts = pd.Series([n.rsplit("/", 1)[-1] for n in names]).value_counts()
            for n in names:
                base = n.rsplit("/", 1)[-1]
                if base_counts[base] == 1:
                    members.setdefault(base, n)
            self._members = members
        return self._members

    def missing(self, filenames: Sequence[str]) -> list[str]:
        """Which of ``filenames`` are not in the folder/zip (cheap: no decoding)."""
        if self.is_zip:
            with zipfile.ZipFile(self.root) as archive:
                members = self._member_map(archive)
                return [f for f in filenames if f not in members and f.rsplit("/", 1)[-1] not in members]
        return [f for f in filenames if not (self.root / f).is_file()]

    def _read_bytes(self, archive: zipfile.ZipFile | None, filename: str, stimulus_id: str) -> bytes:
        if archive is None:
            path = self.root / filename
            if not path.is_file():
                raise DataError(
                    f"image for stimulus {stimulus_id!r} is missing: no file {path}",
                    hint="the stimulus folder is incomplete: fetch the stimulus set again",
                )
            return path.read_bytes()
        members = self._member_map(archive)
        member = members.get(filename) or members.get(filename.rsplit("/", 1)[-1])
        if member is None:
            raise DataError(
                f"image for stimulus {stimulus_id!r} is missing: {filename!r} is not in {self.root}",
                hint="the stimulus zip is incomplete or does not belong to this CSV: fetch it again",
            )
        try:
            return archive.read(member)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise DataError(
                f"image for stimulus {stimulus_id!r} cannot be read from {self.root}: {err}",
                hint="the stimulus zip is damaged: delete it and fetch it again",
            ) from err

    def load(self, rows: pd.DataFrame, size: int, progress: bool | None) -> torch.Tensor:
        import torch

        out = torch.empty((len(rows), 3, size, size), dtype=torch.float32)
        archive = zipfile.ZipFile(self.root) if self.is_zip else None
        try:
            pairs = zip(rows.index, rows["filename"], strict=False)
            for i, (sid, filename) in enumerate(
                _progress(pairs, len(rows), _show(progress, len(rows)), "images")
            ):
                data = self._read_bytes(archive, str(filename), str(sid))
                pixels = _decode(data, str(sid), f"{self.root}:{filename}")
                out[i] = resize(to_unit_chw(pixels), size)[0]
        except zipfile.BadZipFile as err:
            raise DataError(
                f"cannot read the stimulus zip {self.root}: {err}", hint="fetch it again"
            ) from err
        finally:
            if archive is not None:
                archive.close()
        return normalize_chw(out)


class HDF5Images:
    """Images already normalised, stored as (N, 3, H, W) float arrays in an HDF5 file.

    The table's ``h5_dataset`` / ``h5_index`` columns say where each image is;
    only the requested images are read (h5py fancy indexing, in sorted order).
    """

    chunk = 128  # images per HDF5 read: bounded memory, few reads

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"no image file at {self.path}", hint="import the data file again")

    def describe(self) -> str:
        return f"hdf5 {self.path}"

    def load(self, rows: pd.DataFrame, size: int, progress: bool | None) -> torch.Tensor:
        import h5py
        import torch

        out = torch.empty((len(rows), 3, size, size), dtype=torch.float32)
        names = rows["h5_dataset"].to_numpy()
        indices = rows["h5_index"].to_numpy().astype(np.int64)
        chunks = []  # (dataset, output positions, file indices), sorted and unique per read
        for name in pd.unique(names):
            pos = np.flatnonzero(names == name)
            order = np.argsort(indices[pos], kind="stable")
            pos = pos[order]
            for start in range(0, len(pos), self.chunk):
                chunks.append((name, pos[start : start + self.chunk]))
        try:
            with h5py.File(self.path, "r") as handle:
                for name, pos in _progress(chunks, len(chunks), _show(progress, len(rows)), "image chunks"):
                    uniq, inverse = np.unique(indices[pos], return_inverse=True)
                    block = torch.from_numpy(np.asarray(handle[name][uniq], dtype=np.float32))
                    out[pos] = resize(block, size)[inverse]
        except (OSError, KeyError) as err:
            raise DataError(
                f"cannot read images from {self.path}: {err}",
                hint="the data file is damaged: import it again (`itbench data import nx414 <file>`)",
            ) from err
        return out


# --------------------------------------------------------------------------- the stimulus set


class StimulusSet(pd.DataFrame):
    """A stimulus table indexed by ``stimulus_id`` plus the images it refers to.

    Subclasses DataFrame like Brain-Score's StimulusSet so metadata columns
    (object_name, category_name, variation, ...) are used directly;
    ``image_source`` survives slicing.
    """

    _metadata = ["image_source", "identifier"]  # noqa: RUF012 (pandas reads this class attribute by name)

    @property
    def _constructor(self) -> type[StimulusSet]:
        return StimulusSet

    @property
    def metadata(self) -> pd.DataFrame:
        """The table as a plain DataFrame (index stimulus_id), without the images."""
        return pd.DataFrame(self)

    @property
    def ids(self) -> np.ndarray:
        """stimulus_ids in table order."""
        return self.index.to_numpy()

    def _rows(self, ids: Sequence[str] | None) -> pd.DataFrame:
        if ids is None:
            return pd.DataFrame(self)
        ids = [str(i) for i in ids]
        unknown = [i for i in ids if i not in self.index]
        if unknown:
            raise DataError(
                f"{len(unknown)} of {len(ids)} requested stimulus ids are not in stimulus set "
                f"{getattr(self, 'identifier', None) or ''}: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else ""),
                hint="ask for ids from the benchmark's split file",
            )
        return pd.DataFrame(self).loc[ids]

    def load_images(
        self, ids: Sequence[str] | None = None, size: int = DEFAULT_SIZE, progress: bool | None = None
    ) -> torch.Tensor:
        """(N, 3, size, size) float32, ImageNet-normalised, in the order of ``ids`` (default: all)."""
        import torch

        source = getattr(self, "image_source", None)
        if source is None:
            raise DataError("this stimulus set has no images attached", hint="load it with load_stimulus_set")
        rows = self._rows(ids)
        if len(rows) == 0:
            return torch.empty((0, 3, size, size), dtype=torch.float32)
        return source.load(rows, size, progress)

    def missing_files(self) -> list[str]:
        """Filenames the image folder/zip lacks (empty for tensor-backed sets)."""
        source = getattr(self, "image_source", None)
        return source.missing(list(self["filename"])) if isinstance(source, ImageFiles) else []


def make_stimulus_set(table: pd.DataFrame, source: ImageSource, identifier: str | None = None) -> StimulusSet:
    """Wrap a table (indexed by stimulus_id) and an image source into a StimulusSet."""
    stimuli = StimulusSet(table.copy())
    stimuli.index = stimuli.index.astype(str)
    stimuli.index.name = "stimulus_id"
    duplicated = stimuli.index[stimuli.index.duplicated()].unique()
    if len(duplicated):
        raise DataError(
            f"stimulus set {identifier or ''} lists {len(duplicated)} stimulus ids more than once: "
            f"{', '.join(map(str, duplicated[:5]))}",
            hint="each stimulus_id must appear on one row only",
        )
    stimuli.image_source = source
    stimuli.identifier = identifier
    return stimuli


def read_stimulus_csv(csv_path: str | os.PathLike) -> pd.DataFrame:
    """A BrainIO stimulus CSV as a table indexed by stimulus_id (``image_id`` renamed)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"no stimulus CSV at {csv_path}", hint="fetch the benchmark data first")
    try:
        table = pd.read_csv(csv_path, dtype={"stimulus_id": str, "image_id": str, "filename": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse the stimulus CSV {csv_path}: {err}", hint="fetch it again") from err
    if "stimulus_id" not in table.columns and "image_id" in table.columns:
        table = table.rename(columns={"image_id": "stimulus_id"})
    missing = [c for c in ("stimulus_id", "filename") if c not in table.columns]
    if missing:
        raise DataError(
            f"stimulus CSV {csv_path} lacks column(s) {', '.join(missing)} "
            f"(it has {', '.join(map(str, table.columns))})",
            hint="a BrainIO stimulus CSV needs stimulus_id (or image_id) and filename columns",
        )
    return table.set_index("stimulus_id")


def load_stimulus_set(
    csv_path: str | os.PathLike, images_path: str | os.PathLike, identifier: str | None = None
) -> StimulusSet:
    """Read a BrainIO stimulus set (CSV + zip or folder of images), like StimulusSetLoader.

    Only the id and filename columns are required; all others are carried along.
    Images are not read here, so loading is cheap; ``load_images`` reads them.
    """
    table = read_stimulus_csv(csv_path)
    return make_stimulus_set(table, ImageFiles(images_path), identifier or Path(csv_path).stem)
