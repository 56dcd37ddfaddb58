"""Pixels + OLS: Raw pixels (150,528 values), minimum-norm least squares."""

from itbench.models.recipes import LinearReadoutModel, pixels


def build(ctx):
    return LinearReadoutModel(pixels, readout="ols", device=ctx.device)
