"""ResNet50 fine-tuned (layers 2-4 unfrozen, deep head, augmentation): ImageNet ResNet50 with layer2-layer4 trainable (lr 1e-4) and an MLP head (1024 hidden, lr 1e-3) on the pooled features, random resized crops, flips and light colour jitter, MSE, AdamW, cosine schedule with warmup, bf16 + channels_last on CUDA, early stopping on a 10% holdout of train."""

from itbench.models.recipes import FineTunedModel


def build(ctx):
    p = ctx.params
    return FineTunedModel(p["model"], p, pretrained=True, device=ctx.device, seed=ctx.seed)
