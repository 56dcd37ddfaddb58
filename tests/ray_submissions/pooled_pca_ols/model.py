"""Pixels average-pooled to 14 x 14 per channel, PCA (seeded by ctx.seed) to 40 components, OLS."""

import torch

from itbench.models.recipes import LinearReadoutModel


def build(ctx):
    pool = int(ctx.params["pool"])
    return LinearReadoutModel(
        lambda images: torch.nn.functional.avg_pool2d(images, pool).flatten(1),
        readout="ols",
        n_components=int(ctx.params["n_components"]),
        device=ctx.device,
        seed=ctx.seed,
    )
