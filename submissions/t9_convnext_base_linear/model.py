"""ConvNeXt-Base + PCA + linear: ImageNet ConvNeXt-Base (timm convnext_base) globally pooled final features (1024), PCA(1000), OLS. The report does not say which stage; its weak linear score suggests the pooled output."""

from itbench.recipes import LayerFeatures, LinearReadoutModel


def build(ctx):
    p = ctx.params
    features = LayerFeatures(p["model"], p["layer"], pretrained=p.get("pretrained", True),
                             reducer=p.get("reducer", "flatten"), batch_size=ctx.batch_size,
                             device=ctx.device, seed=ctx.seed)
    return LinearReadoutModel(features, readout=p["readout"], n_components=p.get("n_components"),
                              device=ctx.device, seed=ctx.seed)
