"""Brain-Score's ``pixels`` model plugin, reproduced from what an itbench submission receives.

Why: the plugin (``brainscore_vision/models/pixels/model.py``) needs no
weights, so scoring it under both harnesses anchors the ``brainscore``
protocol end to end. It opens each stimulus file, converts it to RGB,
resizes it to 256 x 256 with PIL's default filter (bicubic) and returns the
uint8 pixels flattened (H, W, C): 196,608 features. An itbench submission
does not get the files but the model input: the images resized (bilinear,
antialiased) to 224 x 224 and ImageNet-normalised. When the originals are
``source_size`` pixels square and upsampled, that resize is a linear map of
full column rank, so its pseudo-inverse recovers the original uint8 pixels
exactly (checked: every recovered value must lie within :data:`TOLERANCE` of
an integer, else the images did not come from ``source_size``-pixel files and
the featurizer says so). From there the plugin's own steps are applied.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from itbench.data.stimuli import IMAGENET_MEAN, IMAGENET_STD, resize

PLUGIN_SIZE = 256  # the plugin's image.resize((256, 256))
#: Largest distance of a recovered pixel (0-255 scale) from an integer that still counts as exact.
TOLERANCE = 0.05


class NotRecoverable(ValueError):
    """The model input is not an upsampled ``source_size``-pixel image, so the files cannot be recovered."""


def _resize_matrix(source: int, target: int) -> torch.Tensor:
    """The 1-D operator (target x source) of itbench's image resize, read off the basis images."""
    basis = torch.eye(source).view(source, 1, source, 1).expand(source, 1, source, source).contiguous()
    return resize(basis, target)[:, 0, :, 0].double().T


def recover_uint8(images: torch.Tensor, source_size: int) -> np.ndarray:
    """The original uint8 images (N, source, source, 3) behind itbench's normalised model input."""
    x = images.detach().cpu().double()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    unit = x * std + mean
    if x.shape[-1] == source_size:
        scaled = unit * 255.0
    else:
        inverse = torch.linalg.pinv(_resize_matrix(source_size, x.shape[-1]))
        scaled = torch.einsum("ih,nchw,jw->ncij", inverse, unit, inverse) * 255.0
    off = float((scaled - scaled.round()).abs().max()) if scaled.numel() else 0.0
    if off > TOLERANCE:
        raise NotRecoverable(
            f"the images are not {source_size}-pixel originals resized to {x.shape[-1]} "
            f"(recovered pixels are up to {off:.3f} from an integer); set source_size to the files' size"
        )
    return scaled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def plugin_pixels(original: np.ndarray) -> np.ndarray:
    """The plugin's features of one uint8 RGB image: PIL resize to 256 x 256 (bicubic), flattened."""
    image = Image.fromarray(original).convert("RGB").resize((PLUGIN_SIZE, PLUGIN_SIZE))
    return np.asarray(image).reshape(-1)


class BrainScorePixels:
    """Featurizer: Brain-Score's ``pixels`` features, every ``stride``-th one (1 = all 196,608)."""

    def __init__(self, source_size: int, stride: int = 1):
        self.source_size, self.stride = int(source_size), int(stride)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        rows = []
        for start in range(0, len(images), 64):  # chunks: the float64 inverse of 640 images is ~1 GB
            originals = recover_uint8(images[start : start + 64], self.source_size)
            rows += [plugin_pixels(img)[:: self.stride] for img in originals]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
