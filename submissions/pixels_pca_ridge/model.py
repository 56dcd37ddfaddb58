"""Pixels + PCA(1000) + ridge (best alpha): Raw pixels, PCA(1000), ridge with alpha per neuroid by leave-one-out CV on train."""

from itbench.models.recipes import LinearReadoutModel, pixels


def build(ctx):
    return LinearReadoutModel(
        pixels,
        readout="ridge_cv",
        n_components=int(ctx.params["n_components"]),
        device=ctx.device,
        seed=ctx.seed,
    )
