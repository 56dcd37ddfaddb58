"""Which device a run uses: ``auto`` means CUDA when a GPU is visible, else CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from itbench.errors import ItbenchError

#: What ``--device`` accepts: auto, cpu, or a CUDA device (cuda = cuda:0).
DEVICES = ("auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(8)))


def _cuda_visible() -> bool:
    """Whether a CUDA GPU is usable, without importing torch when it can be avoided.

    Scoring from cached predictions should not pay torch's import time, so
    the driver's presence is checked first; torch has the last word.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if "torch" not in sys.modules and not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when a GPU is visible, else CPU."""
    if device == "auto":
        return "cuda" if _cuda_visible() else "cpu"
    if device.startswith("cuda") and not _cuda_visible():
        raise ItbenchError(
            f"--device {device} was asked for but no CUDA GPU is visible", "use --device cpu or --device auto"
        )
    return device
