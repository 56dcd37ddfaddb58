"""Random ResNet50 layer3 + PCA(1000) + OLS: Randomly initialised ResNet50 (seeded), layer3 flattened, PCA(1000), OLS: the control for task training."""

from itbench.models.recipes import layer_readout


def build(ctx):
    return layer_readout(ctx)  # everything is in submission.toml [params]
