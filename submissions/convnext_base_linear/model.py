"""ConvNeXt-Base + PCA + linear: ImageNet ConvNeXt-Base (timm convnext_base) globally pooled final features (1024), PCA(1000), OLS. The report does not say which stage; its weak linear score suggests the pooled output."""

from itbench.models.recipes import layer_readout


def build(ctx):
    return layer_readout(ctx)  # everything is in submission.toml [params]
