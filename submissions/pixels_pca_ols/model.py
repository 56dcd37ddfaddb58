"""Pixels + PCA(1000) + OLS: Raw pixels, PCA to 1000 components (fitted on train), OLS."""

from itbench.models.recipes import LinearReadoutModel, pixels


def build(ctx):
    return LinearReadoutModel(
        pixels, readout="ols", n_components=int(ctx.params["n_components"]), device=ctx.device, seed=ctx.seed
    )
