"""Table I rows 5-12 end to end at full size on one GPU (issue: GPU timings).

``python -m perf.gpu_table1 [--quick] [--device cuda] [--rows 5,6,...]``

A 3200-image benchmark at real size is made by tiling the demo's 640 images
five times (each copy flipped/shifted so no two are identical) with the
demo's responses repeated; split 2592 / 288 / 320 as the real data. Each row's
submission is built at ``full`` size with random weights (the GPU machines
have no internet: ``ITBENCH_RANDOM_WEIGHTS=1``; speed does not depend on the
weights) and timed through fit and predict, reporting images/s. The last row
compares the harness's feature extraction with a bare bf16 channels_last
``model(x)`` loop over the same images (fraction reached). Writes
``perf/results/gpu-table1-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ITBENCH_RANDOM_WEIGHTS", "1")

from itbench.contract import Context, TrainData
from itbench.harness.submission import build_model, discover
from itbench.models.features import extract
from itbench.models.pretrained import build_model as build_network
from itbench.scoring.benchmark import load_benchmark

N_TRAIN, N_VAL = 2592, 288


def tiled_benchmark(n_total: int) -> tuple[TrainData, torch.Tensor]:
    """Demo images tiled to ``n_total`` (flipped / rolled copies), responses repeated."""
    bench = load_benchmark("demo")
    np.concatenate([bench.stimulus_ids(s) for s in ("train", "val", "test")])
    images = torch.cat([bench.images(s) for s in ("train", "val", "test")])
    responses = np.concatenate([bench.responses(s) for s in ("train", "val", "test")])
    copies, targets = [], []
    for k in range(-(-n_total // len(images))):
        variant = images.flip(-1) if k % 2 else images
        copies.append(torch.roll(variant, shifts=4 * k, dims=-2))
        targets.append(responses)
    x, y = torch.cat(copies)[:n_total], np.concatenate(targets)[:n_total].astype(np.float32)
    labels = np.array([f"tile{i}" for i in range(n_total)])
    n_train = round(n_total * N_TRAIN / 3200)
    train = TrainData(
        x[:n_train],
        y[:n_train],
        labels[:n_train],
        labels[:n_train],
        labels[:n_train],
        np.asarray(bench.neuroid_ids),
    )
    n_val = round(n_total * N_VAL / 3200)
    return train, x[n_train : n_train + n_val]


def time_row(sub, train: TrainData, val: torch.Tensor, device: str, size: str) -> dict:
    ctx = Context(device=device, batch_size=128, seed=0, params=sub.params_for(size), size=size)
    model = build_model(sub, ctx)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if hasattr(model, "fit"):
        model.fit(train)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    pred = np.asarray(model.predict(val))
    predict_s = time.perf_counter() - started
    assert pred.shape == (len(val), train.responses.shape[1]) and np.isfinite(pred).all()
    epochs = int(sub.params_for(size).get("epochs", 1))
    row = {
        "row": sub.table1_row,
        "submission": sub.id,
        "size": size,
        "fit_s": round(fit_s, 2),
        "predict_s": round(predict_s, 2),
        "train_images_per_s": round(len(train) * epochs / fit_s, 1) if fit_s else None,
        "predict_images_per_s": round(len(val) / predict_s, 1),
    }
    if device.startswith("cuda"):
        row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def extraction_fraction(images: torch.Tensor, device: str, batch_size: int = 256) -> dict:
    """Harness extraction vs a bare bf16 channels_last forward loop (same model, images)."""
    model = build_network("resnet50", pretrained=False).to(device).eval()
    on_cuda = device.startswith("cuda")

    def bare() -> float:
        net = model.to(memory_format=torch.channels_last) if on_cuda else model
        started = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=on_cuda):
            for i in range(0, len(images), batch_size):
                x = images[i : i + batch_size].to(device, non_blocking=True)
                net(x.contiguous(memory_format=torch.channels_last) if on_cuda else x)
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def ours() -> float:
        started = time.perf_counter()
        extract(
            model,
            images,
            ["avgpool"],
            "flatten",
            batch_size=batch_size,
            device=device,
            progress=False,
            stop_early=False,
        )
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    bare(), ours()  # warm-up: cudnn autotune, allocator
    t_bare = float(np.median([bare() for _ in range(3)]))
    t_ours = float(np.median([ours() for _ in range(3)]))
    return {
        "task": "extraction vs bare bf16 channels_last loop (resnet50 avgpool)",
        "bare_images_per_s": round(len(images) / t_bare, 1),
        "ours_images_per_s": round(len(images) / t_ours, 1),
        "fraction": round(t_bare / t_ours, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="64 images, ci-size training: a smoke run")
    parser.add_argument("--rows", default="5,6,7,8,9,10,11,12")
    args = parser.parse_args()
    rows = {int(r) for r in args.rows.split(",")}
    n_total = 80 if args.quick else 3200
    train, val = tiled_benchmark(n_total)
    results = []
    for sub in discover(ROOT):
        if sub.table1_row in rows:
            size = "ci" if args.quick and "ci" in sub.sizes else "full"
            results.append(time_row(sub, train, val, args.device, size))
            print(json.dumps(results[-1]), flush=True)
    fraction = extraction_fraction(torch.cat([train.images, val]), args.device)
    print(json.dumps(fraction), flush=True)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    out = {
        "device": device_name,
        "n_images": n_total,
        "quick": args.quick,
        "rows": results,
        "extraction": fraction,
        "date": dt.date.today().isoformat(),
        "torch": torch.__version__,
    }
    if not args.quick:
        path = ROOT / "bench" / "results" / f"gpu-table1-{args.device.split(':')[0]}-{out['date']}.json"
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
