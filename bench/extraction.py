"""Extraction benchmarks: hook overhead vs a bare forward loop, and peak memory of a layer sweep.

``run(quick, device)`` returns rows for ``bench/run.py``:

* ``extraction throughput``: images/s of :func:`itbench.features.extract` over a
  layer sweep vs a bare ``model(x)`` loop over the same images, same model,
  same batch size, same precision and memory format (target ratio >= 0.9).
  Quick: ResNet18 (random weights) on 64 images; full: ResNet50 on 256.
* ``sweep peak RSS``: a fresh subprocess extracts stem + the 16 bottlenecks of
  ResNet50 (random weights) with ``random_projection(1000)`` and reports its
  peak resident memory (``ru_maxrss``); target <= 6 GiB at 3200 images. The
  images are held in memory as one (N, 3, 224, 224) tensor, as the benchmark
  hands them over, so the measured RSS includes them (1.8 GiB at N=3200).
  Quick mode measures at two small N to show the growth per image is only the
  input + output bytes (no activation grows with N); full mode measures at
  the N given by ``--rss-images`` (default 3200).

Run directly: ``python bench/extraction.py [--quick] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from itbench.features import default_layers, extract  # noqa: E402

GIB = 2**30


def _model(name: str) -> torch.nn.Module:
    """A torchvision model with random weights (the weights do not change the cost)."""
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def _bare_loop(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Seconds for a plain ``model(x)`` pass with the same settings the extractor uses."""
    on_cuda = device.type == "cuda"
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size]
            if on_cuda:
                x = x.pin_memory().to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            out = model(x)
            if on_cuda:
                out.float().cpu()  # the logits come back, as the features do
    if on_cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def throughput_row(quick: bool, device: str) -> dict:
    """Extractor vs bare loop: best of interleaved repeats, so a busy shared CPU hurts both alike."""
    dev = torch.device(device)
    name, n, batch = ("resnet18", 64, 32) if quick else ("resnet50", 256, 32)
    if dev.type == "cuda":
        n, batch = (512, 64) if quick else (3200, 128)
    model = _model(name).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    layers = default_layers(name, "blocks")
    reducer = "random_projection(1000)"
    images = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    extract(model, images[:batch], layers, reducer, batch_size=batch, device=dev, progress=False)  # warm-up
    _bare_loop(model, images[:batch], batch, dev)
    ours, ref = [], []
    for _ in range(2 if quick else 3):
        ref.append(_bare_loop(model, images, batch, dev))
        start = time.perf_counter()
        extract(model, images, layers, reducer, batch_size=batch, device=dev, progress=False)
        ours.append(time.perf_counter() - start)
    ours_s, ref_s = min(ours), min(ref)
    ratio = ref_s / ours_s  # throughput ratio: ours / bare
    return {"task": f"extraction throughput ({name}, {len(layers)} layers, {reducer}, {dev.type})",
            "ours_s": round(ours_s, 3), "ref_s": round(ref_s, 3), "ratio": round(ratio, 3),
            "target": ">= 0.9", "met": ratio >= 0.9,
            "notes": f"{n} images 224px, batch {batch}; ratio = bare time / ours (images/s ours / bare); "
                     f"{n / ours_s:.1f} img/s ours, {n / ref_s:.1f} img/s bare; best of repeats"}


def rss_worker(n: int, batch: int, reducer: str, device: str) -> dict:
    """In a fresh process: peak RSS of a ResNet50 stem + 16-bottleneck sweep over n in-memory images."""
    dev = torch.device(device)
    model = _model("resnet50")
    layers = default_layers("resnet50", "blocks")
    images = torch.empty(n, 3, 224, 224)
    gen = torch.Generator().manual_seed(0)
    for i in range(0, n, batch):  # filled in small chunks: no second full-size temporary
        images[i:i + batch] = torch.randn(images[i:i + batch].shape, generator=gen)
    start = time.perf_counter()
    feats = extract(model, images, layers, reducer, batch_size=batch, device=dev, progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"n": n, "batch": batch, "reducer": reducer, "layers": len(layers), "seconds": seconds,
            "peak_rss_gib": peak / GIB, "input_gib": images.numel() * 4 / GIB,
            "output_gib": sum(f.nbytes for f in feats.values()) / GIB}


def _measure_rss(n: int, batch: int, reducer: str, device: str, threads: int | None = None) -> dict:
    """Run :func:`rss_worker` in a subprocess (peak RSS must not include this process's history)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-worker", str(n), "--batch", str(batch),
           "--reducer", reducer, "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"rss worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_row(quick: bool, device: str, full_n: int = 3200) -> dict:
    """Peak RSS row; quick mode shows the per-image growth is input + output only."""
    reducer, batch = "random_projection(1000)", 32
    if quick:
        small, large = _measure_rss(32, batch, reducer, device), _measure_rss(96, batch, reducer, device)
        per_img = (large["peak_rss_gib"] - small["peak_rss_gib"]) / (large["n"] - small["n"])
        io_per_img = (large["input_gib"] + large["output_gib"]) / large["n"]
        projected = large["peak_rss_gib"] + per_img * (full_n - large["n"])
        return {"task": "sweep peak RSS (resnet50 stem+16 bottlenecks, projected to 3200)",
                "ours_s": round(large["seconds"], 2), "ref_s": None, "ratio": None,
                "target": "<= 6 GiB at 3200 images", "met": projected <= 6.0,
                "notes": f"measured {small['peak_rss_gib']:.2f} GiB at N={small['n']}, "
                         f"{large['peak_rss_gib']:.2f} GiB at N={large['n']} ({reducer}, batch {batch}, {device}); "
                         f"growth {per_img * 1024:.2f} MiB/img vs {io_per_img * 1024:.2f} MiB/img of "
                         f"input+output tensors, so nothing else grows with N; linear projection to "
                         f"N={full_n}: {projected:.2f} GiB (projection, not a measurement)"}
    res = _measure_rss(full_n, batch, reducer, device)
    return {"task": f"sweep peak RSS (resnet50 stem+16 bottlenecks, N={full_n})",
            "ours_s": round(res["seconds"], 2), "ref_s": None, "ratio": None,
            "target": "<= 6 GiB at 3200 images", "met": res["peak_rss_gib"] <= 6.0 and full_n >= 3200,
            "notes": f"measured peak RSS {res['peak_rss_gib']:.2f} GiB at N={res['n']} ({reducer}, batch {batch}, "
                     f"{device}); of which input images {res['input_gib']:.2f} GiB, features "
                     f"{res['output_gib']:.3f} GiB"}


def run(quick: bool = True, device: str = "cpu") -> list[dict]:
    """All extraction rows for ``bench/run.py``."""
    return [throughput_row(quick, device), memory_row(quick, device)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rss-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-images", type=int, default=3200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reducer", default="random_projection(1000)")
    parser.add_argument("--only", choices=["throughput", "memory"], default=None)
    args = parser.parse_args()
    if args.rss_worker is not None:
        print(json.dumps(rss_worker(args.rss_worker, args.batch, args.reducer, args.device)))
        return
    rows = []
    if args.only in (None, "throughput"):
        rows.append(throughput_row(args.quick, args.device))
    if args.only in (None, "memory"):
        rows.append(memory_row(args.quick, args.device, args.rss_images))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
