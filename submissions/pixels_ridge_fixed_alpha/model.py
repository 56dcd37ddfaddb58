"""Pixels + ridge (alpha = 0.1): Raw pixels, ridge with the report's fixed alpha = 0.1."""

from itbench.models.recipes import LinearReadoutModel, pixels


def build(ctx):
    return LinearReadoutModel(pixels, readout="ridge", alpha=float(ctx.params["alpha"]), device=ctx.device)
