"""ConvNeXt-Base + deep head: Frozen ImageNet ConvNeXt-Base pooled features (1024, standardized) -> MLP head (1024 hidden, GELU, dropout 0.3) trained with MSE, AdamW, cosine schedule, early stopping on a 10% holdout of train."""

from itbench.models.recipes import FrozenHeadModel, LayerFeatures


def build(ctx):
    p = ctx.params
    features = LayerFeatures(
        p["model"],
        p["layer"],
        pretrained=True,
        reducer="flatten",
        batch_size=ctx.batch_size,
        device=ctx.device,
        seed=ctx.seed,
    )
    return FrozenHeadModel(features, p, device=ctx.device, seed=ctx.seed)
