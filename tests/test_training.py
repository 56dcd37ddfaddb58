"""Heads and the trainer: learning, early stopping, holdout from train only, determinism, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from torch import nn

from itbench.models.training import (
    ConvHead,
    ImageAugment,
    MLPHead,
    ShallowCNN,
    Trainer,
    TrainingError,
    fit_regressor,
    loss_function,
    predict,
)


def linear_problem(n: int = 400, d: int = 16, k: int = 4, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = x @ rng.standard_normal((d, k)).astype(np.float32) + noise * rng.standard_normal((n, k)).astype(
        np.float32
    )
    return x, y


def test_head_shapes():
    assert MLPHead(10, 3)(torch.randn(5, 10)).shape == (5, 3)
    assert MLPHead(10, 3, hidden=(8, 6), dropout=0.0)(torch.randn(5, 2, 5)).shape == (
        5,
        3,
    )  # flattens its input
    linear = MLPHead(10, 3, hidden=())
    assert len(linear.net) == 1 and isinstance(linear.net[0], nn.Linear)
    cnn = ShallowCNN(168)
    assert cnn(torch.randn(2, 3, 224, 224)).shape == (2, 168)
    assert [type(m) for m in cnn.features][:3] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    assert ConvHead(64, 7, channels=(16,), pool=2, input_size=14)(torch.randn(2, 64, 14, 14)).shape == (2, 7)
    with pytest.raises(TrainingError, match="too small"):
        ConvHead(3, 2, channels=(8, 8), pool=8, input_size=32)


def test_learns_a_linear_map_like_least_squares():
    x, y = linear_problem()
    torch.manual_seed(0)
    result = fit_regressor(
        MLPHead(16, 4, hidden=()), x, y, epochs=60, lr=0.05, batch_size=32, patience=None, progress=False
    )
    hist = result.history
    assert hist["train_loss"][-1] < hist["train_loss"][0] / 100
    x_new, _ = linear_problem(seed=0)
    ref = LinearRegression().fit(x, y).predict(x_new[:50])
    np.testing.assert_allclose(predict(result.model, x_new[:50]), ref, atol=0.05 * np.abs(ref).max())


def test_mlp_with_pearson_loss_learns():
    x, y = linear_problem(noise=0.1)
    torch.manual_seed(0)
    result = fit_regressor(
        MLPHead(16, 4, hidden=(32,), dropout=0.0), x, y, loss="pearson", epochs=15, lr=1e-2, progress=False
    )
    assert result.history["holdout_loss"][result.history["best_epoch"]] < 0.1  # holdout r > 0.9
    assert loss_function("mse+corr")(torch.ones(4, 2), torch.ones(4, 2)) >= 0


def test_early_stopping_restores_best_state():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 50)).astype(np.float32)
    y = rng.standard_normal((120, 3)).astype(np.float32)  # pure noise: the holdout loss soon rises
    torch.manual_seed(0)
    model = MLPHead(50, 3, hidden=(256,), dropout=0.0)
    result = fit_regressor(
        model,
        x,
        y,
        epochs=200,
        lr=1e-2,
        patience=3,
        holdout_fraction=0.25,
        scheduler="constant",
        warmup_epochs=0,
        progress=False,
    )
    hist = result.history
    assert hist["stopped_epoch"] < 199 and hist["stopped_epoch"] == hist["best_epoch"] + 4
    assert hist["best_holdout_loss"] == min(hist["holdout_loss"]) < hist["holdout_loss"][-1]
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.best_state[name])
    hold = np.array(hist["holdout_indices"])
    mse = float(np.mean((predict(model, x[hold]) - y[hold]) ** 2))
    assert mse == pytest.approx(hist["best_holdout_loss"], rel=1e-5)


class IndexSpy(nn.Module):
    """Predicts zeros; records which examples (input = their index) it was trained on."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(1, 1)
        self.seen_training: set[int] = set()

    def forward(self, x):
        if self.training:
            self.seen_training.update(int(v) for v in x[:, 0].tolist())
        return self.w(x * 0)


def test_holdout_is_carved_from_train_only():
    n = 50
    x = torch.arange(n, dtype=torch.float32)[:, None]
    spy = IndexSpy()
    result = fit_regressor(spy, x, torch.zeros(n, 1), epochs=2, holdout_fraction=0.2, progress=False)
    hold, train = set(result.history["holdout_indices"]), set(result.history["train_indices"])
    assert len(hold) == 10 and hold.isdisjoint(train) and hold | train == set(range(n))
    assert spy.seen_training == train  # gradient steps never saw a holdout example
    no_hold = fit_regressor(IndexSpy(), x, torch.zeros(n, 1), epochs=1, holdout_fraction=0.0, progress=False)
    assert no_hold.history["holdout_indices"] == []


def test_deterministic_under_a_seed_on_cpu():
    x, y = linear_problem(n=200)
    aug_calls = []

    def augment(batch):
        aug_calls.append(len(batch))
        return batch + 0.01 * torch.randn_like(batch)  # uses the global RNG, seeded by the trainer

    def run(seed):
        torch.manual_seed(123)  # same initial weights
        model = MLPHead(16, 4, hidden=(32,), dropout=0.3)
        return fit_regressor(model, x, y, epochs=3, seed=seed, augment=augment, progress=False).best_state

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert aug_calls and sum(aug_calls) == 3 * 3 * 180  # train examples only, every epoch


def test_trainable_blocks_and_lr_groups():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8)))
    model.add_module("head", nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(64, 8), torch.randn(64, 2)
    result = fit_regressor(
        model,
        x,
        y,
        epochs=2,
        trainable=["backbone.2", "head"],
        lr_groups={"backbone": 1e-4, "head": 1e-2},
        progress=False,
    )
    after = result.best_state
    for frozen in ["backbone.0.weight", "backbone.1.weight", "backbone.1.running_mean"]:
        assert torch.equal(before[frozen], after[frozen]), frozen  # frozen, BN statistics included
    for trained in ["backbone.2.weight", "head.weight"]:
        assert not torch.equal(before[trained], after[trained]), trained
    with pytest.raises(TrainingError, match="match no parameters"):
        fit_regressor(model, x, y, epochs=1, trainable=["neck"], progress=False)
    with pytest.raises(TrainingError, match="matches no parameters"):
        fit_regressor(model, x, y, epochs=1, lr_groups={"neck": 1e-3}, progress=False)


def test_dataset_inputs_and_trainer_object():
    x, y = linear_problem(n=100)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    torch.manual_seed(0)
    result = Trainer(epochs=5, lr=0.05, progress=False).fit(MLPHead(16, 4, hidden=()), dataset)
    assert result.history["train_loss"][-1] < result.history["train_loss"][0]
    with pytest.raises(TrainingError, match="unknown training option"):
        Trainer(epochz=3)


def test_bad_inputs_fail_clearly():
    x, y = linear_problem(n=20)
    head = MLPHead(16, 4)
    cases = [
        ({"train_inputs": x, "train_targets": y[:10]}, "inputs but"),
        ({"train_inputs": x, "train_targets": np.full_like(y, np.nan)}, "NaN"),
        ({"train_inputs": x, "train_targets": y, "holdout_fraction": 1.0}, "holdout_fraction"),
        ({"train_inputs": x, "train_targets": y, "loss": "l1"}, "unknown loss"),
        ({"train_inputs": x, "train_targets": y, "scheduler": "step"}, "unknown scheduler"),
        ({"train_inputs": x, "train_targets": None}, "missing"),
        ({"train_inputs": x[:1], "train_targets": y[:1]}, "at least two"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TrainingError, match=message) as err:
            fit_regressor(head, epochs=1, progress=False, **kwargs)
        assert err.value.hint
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA"):
            fit_regressor(head, x, y, device="cuda", progress=False)


def test_predict_is_eval_mode_and_batched():
    torch.manual_seed(0)
    head = MLPHead(16, 4, dropout=0.5).train()
    x, _ = linear_problem(n=37)
    out = predict(head, x, batch_size=10)
    assert head.training  # mode restored
    with torch.no_grad():
        ref = head.eval()(torch.from_numpy(x)).numpy()
    assert out.dtype == np.float32 and out.shape == (37, 4)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_image_augment_is_light_and_per_image():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ramp = torch.linspace(0.2, 0.8, 32).view(1, 1, 32, 1)  # smooth, left-right symmetric image
    pixels = (ramp * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)).expand(4, 3, 32, 32).clone()
    images = (pixels - mean) / std
    aug = ImageAugment(32)
    torch.manual_seed(0)
    out = aug(images)
    assert out.shape == images.shape
    assert not torch.allclose(out[0], out[1])  # independent randomness per image
    back = out * std + mean
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5  # still valid normalised images
    assert (back - pixels).abs().mean() < 0.1  # light: close to the input
    torch.manual_seed(0)
    assert torch.equal(aug(images), out)
    assert ImageAugment(32, flip=False, jitter=0.0, scale=(1.0, 1.0))(images).sub(images).abs().max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_bf16_and_channels_last():
    x = torch.randn(128, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = 4 * x.mean(dim=(2, 3))
    torch.manual_seed(0)
    model = ConvHead(3, 3, channels=(8,), pool=1, input_size=16)
    result = fit_regressor(model, x, y, epochs=20, lr=1e-3, device="cuda", progress=False)
    assert result.history["train_loss"][-1] < 0.2 * result.history["train_loss"][0]
    assert next(model.parameters()).is_cuda and model.features[0].weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert predict(result.model, x, device="cuda").shape == (128, 3)
