"""Pretrained ResNet50 layer3 + PCA(1000) + ridge: ImageNet ResNet50 layer3 (flattened), PCA(1000), ridge with alpha per neuroid by LOO-CV on train."""

from itbench.models.recipes import layer_readout


def build(ctx):
    return layer_readout(ctx)  # everything is in submission.toml [params]
