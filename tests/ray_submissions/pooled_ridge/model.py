"""Pixels average-pooled to 8 x 8 per channel (192 values), ridge with alpha per neuroid: seconds to fit."""

import torch

from itbench.models.recipes import LinearReadoutModel


def build(ctx):
    pool = int(ctx.params["pool"])
    return LinearReadoutModel(
        lambda images: torch.nn.functional.avg_pool2d(images, pool).flatten(1),
        readout="ridge_cv",
        device=ctx.device,
    )
