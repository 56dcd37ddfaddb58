"""Pretrained ResNet50 layer3 + PCA(1000) + OLS: ImageNet ResNet50 (torchvision IMAGENET1K_V1) layer3 output (1024x14x14, flattened), PCA(1000), OLS."""

from itbench.models.recipes import layer_readout


def build(ctx):
    return layer_readout(ctx)  # everything is in submission.toml [params]
