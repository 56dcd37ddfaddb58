"""EfficientNet-Lite0 fine-tuned (row-12 recipe): Offline: ImageNet EfficientNet-Lite0 with blocks.4-6 + conv_head trainable and an MLP head, augmentation, as Table I row 12 does for ResNet50."""

from itbench.models.recipes import FineTunedModel


def build(ctx):
    p = ctx.params
    return FineTunedModel(p["model"], p, pretrained=True, device=ctx.device, seed=ctx.seed)
