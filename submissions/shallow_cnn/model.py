"""Shallow CNN from scratch: A 2-layer CNN (conv5x5-32, ReLU, maxpool 4; conv5x5-64, ReLU, maxpool 4; linear) trained from scratch on the responses with MSE and early stopping."""

from itbench.models.recipes import ShallowCNNModel


def build(ctx):
    return ShallowCNNModel(ctx.params, device=ctx.device, seed=ctx.seed)
