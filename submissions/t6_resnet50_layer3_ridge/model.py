"""Pretrained ResNet50 layer3 + PCA(1000) + ridge: ImageNet ResNet50 layer3 (flattened), PCA(1000), ridge with alpha per neuroid by LOO-CV on train."""

from itbench.recipes import LayerFeatures, LinearReadoutModel


def build(ctx):
    p = ctx.params
    features = LayerFeatures(p["model"], p["layer"], pretrained=p.get("pretrained", True),
                             reducer=p.get("reducer", "flatten"), batch_size=ctx.batch_size,
                             device=ctx.device, seed=ctx.seed)
    return LinearReadoutModel(features, readout=p["readout"], n_components=p.get("n_components"),
                              device=ctx.device, seed=ctx.seed)
