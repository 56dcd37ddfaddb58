"""ResNet50 + deep head (MSE): Frozen ImageNet ResNet50 pooled features (avgpool, 2048, standardized) -> MLP head (1024 hidden, dropout 0.3) trained with MSE loss and early stopping."""

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
