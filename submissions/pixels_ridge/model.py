"""Pixels + ridge (CV alpha): Starter: raw pixels, ridge with alpha per neuroid by leave-one-out CV on train (no PCA)."""

from itbench.models.recipes import LinearReadoutModel, pixels


def build(ctx):
    return LinearReadoutModel(pixels, readout="ridge_cv", device=ctx.device)
