"""A Brain-Score model plugin as an itbench featurizer: its committed IT activations.

Why: Brain-Score users have their models as ``brainscore_vision`` plugins
(``brainscore_vision/models/<id>/``), which register a ``ModelCommitment``
with a region-to-layer map. Those models look at stimulus *files*, not
tensors, so the featurizer writes itbench's model input back to image files
(de-normalised, uint8 RGB PNGs, 224 x 224) in a private folder, builds the
``StimulusSet`` Brain-Score's benchmarks build, places it on the model's
screen as MajajHong2015 does (8 degrees) and returns what
``start_recording('IT', [(70, 170)])`` / ``look_at`` give, one row per image
in input order. It runs inside the sandbox in the submission's own
environment (``brainscore-vision`` and its pins), where there is no network:
dependency installation at load time is off (``BS_INSTALL_DEPENDENCIES=no``)
and a plugin whose weights cannot be fetched raises
:class:`~itbench.errors.WeightsUnavailable` with the plugin's own error; the
harness records it ``failed`` with those words (only its own check before
launch may record ``skipped``: a child's claim is not believed).
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itbench.errors import WeightsUnavailable

REGION = "IT"
TIME_BINS = [(70, 170)]  # MajajHong2015's IT time bin
VISUAL_DEGREES = 8  # MajajHong2015's stimuli span 8 degrees
NUMBER_OF_TRIALS = 50  # as its benchmark asks (a deterministic model answers once)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Exception names (anywhere in the chain) that mean a download was attempted without network.
_NETWORK_ERRORS = (
    "URLError",
    "ConnectionError",
    "EndpointConnectionError",
    "NoCredentialsError",
    "gaierror",
    "MaxRetryError",
    "NewConnectionError",
    "LocalEntryNotFoundError",
)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (N, 3, H, W) floats back to uint8 RGB (N, H, W, 3), as image files hold them."""
    x = images.detach().cpu().double()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    unit = (x * std + mean) * 255.0
    return unit.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def write_stimuli(images: torch.Tensor, folder: Path) -> tuple[list[str], list[Path]]:
    """One PNG per image in ``folder``; the stimulus ids (input order) and the files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    ids, files = [], []
    for i, pixels in enumerate(to_uint8(images)):
        stimulus_id = f"itbench{i:06d}"
        path = folder / f"{stimulus_id}.png"
        Image.fromarray(pixels, "RGB").save(path)
        ids.append(stimulus_id)
        files.append(path)
    return ids, files


def _quiet_brainscore(workdir: Path) -> None:
    """Brain-Score's switches for a sandbox: no installs at load time, no shared result cache."""
    os.environ["BS_INSTALL_DEPENDENCIES"] = "no"
    os.environ.setdefault("RESULTCACHING_DISABLE", "1")
    os.environ.setdefault("RESULTCACHING_HOME", str(workdir / "result_caching"))
    os.environ.setdefault("BRAINIO_HOME", str(workdir / "brainio"))
    os.environ.setdefault("BRAINSCORE_HOME", str(workdir / "brainscore"))


def download_failure(err: BaseException) -> str | None:
    """Why the error chain is a download the sandbox stopped (no network, read-only weights cache), or None."""
    cause: BaseException | None = err
    while cause is not None:
        if type(cause).__name__ in _NETWORK_ERRORS:
            first = str(cause).splitlines()[0][:200] if str(cause) else ""
            return f"no network ({type(cause).__name__}: {first})"
        if isinstance(cause, OSError) and cause.errno == errno.EROFS:  # torch hub making its cache folder
            return "its weights are not in the harness's weights cache, which is read-only here"
        cause = cause.__cause__ or cause.__context__
    return None


def load_plugin(model_id: str) -> Any:
    """The plugin's brain model, by Brain-Score's registry; a weights download means ``WeightsUnavailable``."""
    from brainscore_vision import load_model

    try:
        return load_model(model_id)
    except ModuleNotFoundError as err:  # a package the plugin's own requirements.txt names
        err.hint = (  # type: ignore[attr-defined]  # the worker reports an error's hint beside it
            f"add {err.name or 'that package'} to the submission's requirements.txt "
            "(the plugin's own list: brainscore_vision/models/<id>/requirements.txt)"
        )
        raise
    except Exception as err:
        why = download_failure(err)
        if why:
            raise WeightsUnavailable(
                f"Brain-Score plugin '{model_id}' needs weights it cannot fetch in the sandbox: {why}",
                hint="the sandbox has no network; put the plugin's weights in TORCH_HOME / HF_HOME first",
            ) from err
        raise


class BrainScorePluginFeatures:
    """Featurizer: a Brain-Score plugin's IT activations of the images, (N, n_features) float32."""

    def __init__(self, model_id: str, workdir: Path | None = None):
        self.model_id = model_id
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="brainscore-"))
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            _quiet_brainscore(self.workdir)
            self._model = load_plugin(self.model_id)
        return self._model

    def stimulus_set(self, images: torch.Tensor) -> Any:
        """The images as Brain-Score's StimulusSet of PNG files (identifier: a hash of the pixels)."""
        import pandas as pd
        from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet

        digest = hashlib.sha1(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
        ids, files = write_stimuli(images, self.workdir / f"stimuli-{digest}")
        stimuli = StimulusSet(pd.DataFrame({"stimulus_id": ids}))
        stimuli.stimulus_paths = dict(zip(ids, [str(f) for f in files], strict=True))
        stimuli.identifier = f"itbench-{digest}"
        return stimuli

    def activations(self, images: torch.Tensor) -> Any:
        """The plugin's recorded IT assembly (presentation x neuroid), in Brain-Score's own layout."""
        from brainscore_vision.benchmark_helpers.screen import place_on_screen

        model = self.model
        model.start_recording(REGION, time_bins=TIME_BINS)
        stimuli = place_on_screen(
            self.stimulus_set(images),
            target_visual_degrees=model.visual_degrees(),
            source_visual_degrees=VISUAL_DEGREES,
        )
        source = model.look_at(stimuli, number_of_trials=NUMBER_OF_TRIALS)
        if "time_bin" in source.dims:
            source = source.squeeze("time_bin", drop=True)
        return source

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        source = self.activations(images)
        order = {str(s): i for i, s in enumerate(source["stimulus_id"].values)}
        rows = [order[f"itbench{i:06d}"] for i in range(len(images))]
        values = np.asarray(source.transpose("presentation", "neuroid").values)
        return np.ascontiguousarray(values[rows], dtype=np.float32)
