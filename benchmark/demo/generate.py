"""Generator of the SYNTHETIC embedded demo benchmark (HvM-like images, surrogate IT sites).

Everything this script writes is synthetic: the images are procedurally drawn
and the "neural" responses come from a fixed network, not from an animal.
Run it from the repository root to rebuild the committed files::

    .venv/bin/python benchmark/demo/generate.py            # into benchmark/demo/
    .venv/bin/python benchmark/demo/generate.py --out-dir /tmp/demo --split-path /tmp/demo.csv

Same seed, same library versions -> same images, ids, responses and split.

Stimuli (HvM-like). 8 categories x 8 objects. Each category is a family of
procedurally drawn grey 2.5-D shapes (flat parts, then relief shading from a
distance-transform height map lit from the upper left); the 8 objects of a
family differ in proportions, parts and grey levels. Each object appears in 10
images: 2 at variation 0 (centred, s=1, no rotation), 4 at variation 3 and 4 at
variation 6 (position ty, tz uniform in +-0.25 / +-0.5 image half-widths, scale
s in [0.8, 1.2] / [0.6, 1.4], in-plane rotation rxy in +-45 / +-90 degrees), on
a fresh 1/f^a noise background per image. 640 images, 128x128 grey PNG.
stimulus_id = first 16 hex digits of the sha1 of the decoded pixels.

Responses (168 surrogate "IT" sites, two surrogate animals).
  1. layer: EfficientNet-Lite0 with its ImageNet weights (``itbench.models.pretrained``),
     layer ``blocks.4`` (112 channels, 14x14 at 224 px), fed the images exactly
     as a submission sees them (``itbench.data.stimuli.to_model_input``: 224x224,
     grey repeated over RGB, ImageNet-normalised);
  2. readout, two linear parts with equal variance in each site's drive:
     (a) pooling + sparse readout: the 112 channel means (global average
     pooling) read out with fixed random sparse Gaussian weights, 4-12
     channels per site (feature selectivity, position-tolerant);
     (b) the whitened top-100 principal components of the full flattened
     14x14x112 map (over the 640 images) read out with dense Gaussian weights
     (the spatially structured part).
     Why (b): with only (a), a sweep that flattens layers and fits
     PCA + ridge on 518 images finds blocks.4 barely ahead of blocks.5
     (channel-mean directions are hard for ridge on 21952 raw features);
     with (a) + (b) blocks.4 leads under flattening and under 1x1, 2x2 and
     4x4 average pooling alike. The drive is z-scored per site;
  3. nonlinearity: rate = baseline + gain * softplus(slope * drive + offset)
     (modest rectification: mostly linear in the layer's features), baseline
     2-15 and gain 8-40 spikes/s;
  4. noise model: each of >= 20 repetitions per image is
     rate + sqrt(fano * rate) * N(0, 1) (Gaussian, variance proportional to the
     mean, Poisson-like), with a per-site fano factor chosen so that the site's
     Spearman-Brown corrected split-half consistency hits a target drawn from a
     logit-normal distribution (median 0.8); values are rounded to 0.01.
Presentations are stored in a random (seeded) order, trial-level, as a
BrainIO-style NetCDF (flat coords, float32, zlib).

The split is stratified by object: 518 / 58 / 64 (the report's 2592/288/320 of
3200, scaled to 640): 1 test image per object, 1 val image for 58 objects.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from PIL import Image, ImageDraw
from scipy import ndimage

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

GENERATOR_VERSION = "1"
CATEGORIES = ("Animals", "Boats", "Cars", "Chairs", "Faces", "Fruits", "Planes", "Tables")
#: variation level -> (images per object, max |ty|,|tz|, scale range, max |rxy| in degrees)
VARIATIONS = {0: (2, 0.0, (1.0, 1.0), 0.0), 3: (4, 0.25, (0.8, 1.2), 45.0), 6: (4, 0.5, (0.6, 1.4), 90.0)}
FILES = ("stimuli.csv", "stimuli.zip", "assembly.nc")
VARIABLE = "__xarray_dataarray_variable__"


@dataclass(frozen=True)
class Settings:
    """Everything that determines the output; recorded in manifest.json."""

    seed: int = 20251126
    image_size: int = 128
    supersample: int = 2
    objects_per_category: int = 8
    layer: str = "blocks.4"
    n_sites: int = 168
    n_reps: int = 20
    channels_per_site: tuple[int, int] = (4, 12)
    n_components: int = 100
    pc_share: float = 0.5
    ceiling_median: float = 0.8
    ceiling_logit_sd: float = 0.45
    animals: tuple[str, str] = ("SurrogateA", "SurrogateB")
    round_decimals: int = 2
    categories: tuple[str, ...] = CATEGORIES


# =========================================================================== drawing


class Sketch:
    """Parts drawn in object coordinates (x right, y up, roughly [-1, 1]) onto albedo + mask."""

    def __init__(self, size: int):
        self.size = size
        self.albedo = Image.new("L", (size, size), 0)
        self.mask = Image.new("L", (size, size), 0)
        self._a = ImageDraw.Draw(self.albedo)
        self._m = ImageDraw.Draw(self.mask)

    def _px(self, pts) -> list[tuple[float, float]]:
        h = self.size / 2
        return [(h + 0.45 * h * x, h - 0.45 * h * y) for x, y in pts]

    def poly(self, pts, grey: float) -> None:
        """A filled polygon of albedo ``grey`` (0-1)."""
        px = self._px(pts)
        self._a.polygon(px, fill=round(255 * np.clip(grey, 0, 1)))
        self._m.polygon(px, fill=255)

    def ellipse(self, cx, cy, rx, ry, grey, angle=0.0, n=64) -> None:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        x, y = rx * np.cos(t), ry * np.sin(t)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        self.poly(list(zip(cx + c * x - s * y, cy + s * x + c * y, strict=False)), grey)

    def rect(self, x0, y0, x1, y1, grey, angle=0.0) -> None:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        self.poly(
            [(cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy)) for x, y in corners], grey
        )

    def line(self, pts, width, grey) -> None:
        px = self._px(pts)
        w = max(1, round(width * 0.45 * self.size / 2))
        self._a.line(px, fill=round(255 * np.clip(grey, 0, 1)), width=w, joint="curve")
        self._m.line(px, fill=255, width=w, joint="curve")


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def draw_animal(sk: Sketch, rng, k: int) -> None:
    """Side-view quadruped: body, neck, head, legs, tail (proportions vary: dog .. giraffe)."""
    body, dark = _u(rng, 0.4, 0.85), _u(rng, 0.1, 0.3)
    L, H = _u(rng, 0.45, 0.7), _u(rng, 0.17, 0.3)
    leg, lw = _u(rng, 0.25, 0.55), _u(rng, 0.05, 0.1)
    for x in (-0.75 * L, -0.5 * L, 0.5 * L, 0.75 * L):
        sk.rect(x - lw / 2, -H * 0.5 - leg, x + lw / 2, 0, body * 0.85)
    neck_h = _u(rng, 0.05, 0.6) if k % 2 else _u(rng, 0.0, 0.2)
    hx, hy, hr = L + _u(rng, 0.05, 0.2), H * 0.5 + neck_h, _u(rng, 0.12, 0.22)
    sk.line([(0.7 * L, 0), (hx, hy)], _u(rng, 0.12, 0.2), body)
    tail_end = (-L - _u(rng, 0.15, 0.4), _u(rng, -0.35, 0.35))
    sk.line([(-0.9 * L, 0.3 * H), tail_end], 0.05, body * 0.8)
    sk.ellipse(0, 0, L, H, body)
    sk.ellipse(hx + 0.3 * hr, hy, hr * _u(rng, 1.1, 1.6), hr, body)
    sk.poly(
        [
            (hx - 0.5 * hr, hy + 0.6 * hr),
            (hx - 0.1 * hr, hy + 0.6 * hr),
            (hx - 0.4 * hr, hy + hr * _u(rng, 1.3, 2.0)),
        ],
        body * 0.9,
    )
    sk.ellipse(hx + 0.5 * hr, hy + 0.25 * hr, 0.18 * hr, 0.18 * hr, dark)
    if k % 4 == 3:  # spots
        for _ in range(5):
            sk.ellipse(_u(rng, -0.7, 0.7) * L, _u(rng, -0.5, 0.5) * H, 0.08, 0.06, dark)


def draw_boat(sk: Sketch, rng, k: int) -> None:
    """Side-view boats: sailboat, motor boat with cabin, or ship with funnels."""
    hull, light, dark = _u(rng, 0.2, 0.6), _u(rng, 0.75, 0.95), _u(rng, 0.05, 0.25)
    W, d = _u(rng, 0.75, 1.0), _u(rng, 0.15, 0.3)
    w = W * _u(rng, 0.45, 0.8)
    sk.poly(
        [(-W, 0.0), (W + _u(rng, 0.0, 0.2), _u(rng, 0.0, 0.15)), (w, -d), (-w * _u(rng, 0.85, 1.05), -d)],
        hull,
    )
    sk.rect(-W, -0.03, W, 0.02, light)
    kind = k % 3
    if kind == 0:  # sails
        mh = _u(rng, 0.7, 1.1)
        sk.line([(0, 0), (0, mh)], 0.04, dark)
        sk.poly([(0.03, 0.08), (0.03, mh), (W * _u(rng, 0.6, 0.9), 0.08)], light)
        sk.poly([(-0.03, 0.12), (-0.03, mh * 0.9), (-W * _u(rng, 0.4, 0.8), 0.12)], light * 0.9)
    elif kind == 1:  # cabin with windows
        cw, ch = W * _u(rng, 0.35, 0.6), _u(rng, 0.2, 0.35)
        x0 = _u(rng, -0.4, 0.0) * W
        sk.poly([(x0, 0), (x0 + cw, 0), (x0 + cw - 0.08, ch), (x0, ch)], light)
        for i in range(3):
            sk.ellipse(x0 + cw * (0.2 + 0.28 * i), ch * 0.55, 0.04, 0.04, dark)
    else:  # ship: superstructure and funnels
        sk.rect(-W * 0.6, 0, W * 0.5, _u(rng, 0.12, 0.2), light)
        for i in range(1 + k % 2 + 1):
            x = -W * 0.4 + i * 0.3
            sk.rect(x, 0.1, x + 0.12, _u(rng, 0.35, 0.5), dark if i % 2 else hull * 0.6)


def draw_car(sk: Sketch, rng, k: int) -> None:
    """Side-view cars: sedan/sports car/van/truck with two or three wheels."""
    body, glass, tyre = _u(rng, 0.35, 0.9), _u(rng, 0.05, 0.3), _u(rng, 0.05, 0.15)
    L, h = _u(rng, 0.8, 1.0), _u(rng, 0.16, 0.28)
    sk.poly([(-L, -0.1), (L, -0.1), (L, -0.1 + h * 0.8), (L - 0.1, -0.1 + h), (-L + 0.05, -0.1 + h)], body)
    ch = _u(rng, 0.15, 0.32)
    top = -0.1 + h
    if k % 4 == 3:  # truck: cab at the front, cargo box behind
        sk.rect(-L, top, L * 0.35, top + ch * 1.4, body * 0.8)
        sk.poly([(L * 0.4, top), (L * 0.95, top), (L * 0.85, top + ch), (L * 0.4, top + ch)], body)
        sk.poly(
            [
                (L * 0.5, top + 0.03),
                (L * 0.83, top + 0.03),
                (L * 0.76, top + ch * 0.8),
                (L * 0.5, top + ch * 0.8),
            ],
            glass,
        )
    else:
        a, b = _u(rng, -0.6, -0.3) * L, _u(rng, 0.25, 0.55) * L
        slant = _u(rng, 0.05, 0.3)
        sk.poly([(a, top), (b, top), (b - slant, top + ch), (a + slant * 0.7, top + ch)], body)
        m = (a + b) / 2
        sk.poly(
            [
                (a + 0.06, top + 0.03),
                (m - 0.02, top + 0.03),
                (m - 0.02, top + ch * 0.8),
                (a + slant * 0.7 + 0.05, top + ch * 0.8),
            ],
            glass,
        )
        sk.poly(
            [
                (m + 0.02, top + 0.03),
                (b - 0.06, top + 0.03),
                (b - slant - 0.03, top + ch * 0.8),
                (m + 0.02, top + ch * 0.8),
            ],
            glass,
        )
    r = _u(rng, 0.13, 0.2)
    xs = (-0.65 * L, 0.65 * L) if k % 4 != 3 else (-0.7 * L, -0.35 * L, 0.65 * L)
    for x in xs:
        sk.ellipse(x, -0.1, r, r, tyre)
        sk.ellipse(x, -0.1, r * 0.45, r * 0.45, 0.8)


def draw_chair(sk: Sketch, rng, k: int) -> None:
    """Side-view chairs: straight, tilted back, rocking, swivel; with or without arms."""
    wood, dark = _u(rng, 0.3, 0.85), _u(rng, 0.1, 0.3)
    sw, t = _u(rng, 0.3, 0.45), _u(rng, 0.05, 0.12)
    bh, tilt = _u(rng, 0.55, 0.95), _u(rng, 0.0, 0.25)
    sk.rect(-sw, 0, sw, t, wood)
    sk.poly([(-sw, t), (-sw + 0.08, t), (-sw + 0.08 - tilt, t + bh), (-sw - tilt, t + bh)], wood * 0.9)
    lh, lw = _u(rng, 0.45, 0.7), _u(rng, 0.04, 0.08)
    if k % 4 == 3:  # swivel: post and star base
        sk.rect(-0.04, -lh * 0.8, 0.04, 0, dark)
        sk.poly([(-sw, -lh), (sw, -lh), (0.05, -lh * 0.8), (-0.05, -lh * 0.8)], dark)
    else:
        sk.rect(-sw + 0.02, -lh, -sw + 0.02 + lw, 0, wood * 0.8)
        sk.rect(sw - 0.02 - lw, -lh, sw - 0.02, 0, wood * 0.8)
        if k % 4 == 2:  # rockers
            xs = np.linspace(-sw * 1.4, sw * 1.4, 20)
            sk.line(list(zip(xs, -lh + 0.6 * (xs / (sw * 1.4)) ** 2 * 0.2, strict=False)), 0.05, dark)
    if k % 2:  # arm rests
        sk.rect(-sw, t + 0.25, sw * 0.9, t + 0.3, wood * 0.7)
        sk.rect(sw * 0.8, t, sw * 0.9, t + 0.3, wood * 0.7)


def draw_face(sk: Sketch, rng, k: int) -> None:
    """Frontal faces: head oval, ears, eyes, brows, nose, mouth, optional hair and beard."""
    skin, dark, white = _u(rng, 0.45, 0.85), _u(rng, 0.05, 0.25), 0.95
    rx, ry = _u(rng, 0.42, 0.58), _u(rng, 0.58, 0.78)
    sk.ellipse(-rx, 0.0, 0.1, 0.17, skin * 0.9)
    sk.ellipse(rx, 0.0, 0.1, 0.17, skin * 0.9)
    if k % 3 != 2:  # hair cap
        sk.ellipse(0, ry * 0.25, rx * 1.08, ry * _u(rng, 0.8, 0.95), dark)
    sk.ellipse(0, 0, rx, ry, skin)
    ex, ey, er = rx * _u(rng, 0.35, 0.5), ry * _u(rng, 0.1, 0.3), _u(rng, 0.07, 0.12)
    for sx in (-1, 1):
        sk.ellipse(sx * ex, ey, er * 1.4, er, white)
        sk.ellipse(sx * ex, ey, er * 0.6, er * 0.6, dark)
        sk.line([(sx * (ex - er), ey + er * 1.6), (sx * (ex + er), ey + er * _u(rng, 1.4, 2.2))], 0.04, dark)
    sk.poly([(0, ey - 0.02), (-0.07, -ry * 0.25), (0.07, -ry * 0.25)], skin * 0.75)
    sk.ellipse(0, -ry * 0.52, rx * _u(rng, 0.25, 0.5), _u(rng, 0.03, 0.08), dark * 1.5)
    if k % 4 == 1:  # beard
        sk.poly([(-rx * 0.8, -ry * 0.35), (rx * 0.8, -ry * 0.35), (0.1, -ry * 1.1), (-0.1, -ry * 1.1)], dark)
        sk.ellipse(0, -ry * 0.52, rx * 0.3, 0.04, skin * 0.6)


def draw_fruit(sk: Sketch, rng, k: int) -> None:
    """Fruits, one kind per object: apple, pear, banana, lemon, strawberry, cherries, grapes, pineapple."""
    g, dark, leaf = _u(rng, 0.4, 0.9), _u(rng, 0.05, 0.25), _u(rng, 0.3, 0.6)
    r = _u(rng, 0.45, 0.6)
    kind = k % 8
    if kind == 0:  # apple
        sk.line([(0, r * 0.8), (0.05, r * 1.2)], 0.05, dark)
        sk.ellipse(0.2, r * 1.1, 0.18, 0.07, leaf, angle=20)
        sk.ellipse(-r * 0.35, 0, r * 0.7, r * 0.9, g)
        sk.ellipse(r * 0.35, 0, r * 0.7, r * 0.9, g)
    elif kind == 1:  # pear
        sk.ellipse(0, -r * 0.35, r * 0.75, r * 0.7, g)
        sk.ellipse(0, r * 0.45, r * 0.45, r * 0.5, g)
        sk.line([(0, r * 0.9), (-0.05, r * 1.25)], 0.05, dark)
    elif kind == 2:  # banana: crescent
        t = np.linspace(np.radians(200), np.radians(340), 24)
        outer = [(1.0 * np.cos(a), 1.0 * np.sin(a) + 0.6) for a in t]
        inner = [(0.8 * np.cos(a), 0.6 * np.sin(a) + 0.6) for a in t[::-1]]
        sk.poly(outer + inner, g)
        sk.rect(-0.98, -0.05, -0.88, 0.08, dark, angle=-30)
    elif kind == 3:  # lemon: ellipse with tips
        sk.ellipse(0, 0, r * 1.2, r * 0.85, g, angle=_u(rng, -20, 20))
        sk.ellipse(-r * 1.2, 0, 0.1, 0.07, g)
        sk.ellipse(r * 1.2, 0, 0.1, 0.07, g)
    elif kind == 4:  # strawberry: rounded triangle with seeds
        sk.poly([(-r, r * 0.5), (r, r * 0.5), (0.05, -r * 1.1), (-0.05, -r * 1.1)], g)
        sk.ellipse(0, r * 0.5, r, r * 0.3, g)
        for i in range(4):
            sk.ellipse(-r * 0.6 + i * r * 0.4, r * 0.75, 0.12, 0.05, leaf, angle=30 * (i - 1.5))
        for x, y in rng.uniform([-0.5, -0.6], [0.5, 0.3], size=(10, 2)) * r:
            sk.ellipse(x, y, 0.025, 0.035, dark)
    elif kind == 5:  # cherries
        for sx in (-1, 1):
            sk.line([(sx * r * 0.55, -r * 0.2), (0, r * 1.1)], 0.035, dark)
            sk.ellipse(sx * r * 0.55, -r * 0.45, r * 0.45, r * 0.45, g)
    elif kind == 6:  # grapes: cluster of circles
        for row in range(4):
            for i in range(4 - row):
                sk.ellipse((i - (3 - row) / 2) * 0.27, 0.35 - row * 0.25, 0.15, 0.15, g * (0.85 + 0.05 * i))
        sk.line([(0, 0.45), (0.05, 0.75)], 0.05, dark)
    else:  # pineapple: scaly oval and a crown of leaves
        for a in (-25, 0, 25):
            sk.ellipse(a / 100, r * 1.05, 0.06, 0.3, leaf, angle=a)
        sk.ellipse(0, -0.1, r * 0.75, r * 1.05, g)
        for row, y in enumerate(np.linspace(-0.75, 0.55, 6) * r):
            half = r * 0.75 * np.sqrt(max(0.0, 1 - ((y + 0.1) / (r * 1.05)) ** 2)) - 0.06
            for x in np.arange(-half + (row % 2) * 0.07, half, 0.14):
                sk.ellipse(x, y, 0.035, 0.05, dark)


def draw_plane(sk: Sketch, rng, k: int) -> None:
    """Top-view aircraft: fuselage, swept main wings, tailplane, optional engines."""
    g, dark = _u(rng, 0.45, 0.95), _u(rng, 0.1, 0.35)
    fl, fw = _u(rng, 0.8, 1.0), _u(rng, 0.07, 0.12)
    span, chord, sweep = _u(rng, 0.55, 0.95), _u(rng, 0.2, 0.4), _u(rng, 0.0, 0.45)
    xw = _u(rng, -0.1, 0.15)
    for s in (-1, 1):
        sk.poly(
            [
                (xw + chord / 2, 0),
                (xw - chord / 2, 0),
                (xw - chord / 2 - sweep, s * span),
                (xw - chord / 2 - sweep + chord * 0.4, s * span),
            ],
            g * 0.9,
        )
        ts = span * _u(rng, 0.25, 0.4)
        sk.poly(
            [
                (-fl * 0.75, 0),
                (-fl * 0.95, 0),
                (-fl - sweep * 0.4, s * ts),
                (-fl - sweep * 0.4 + 0.1, s * ts),
            ],
            g * 0.85,
        )
        if k % 2:
            sk.ellipse(xw + 0.08 - sweep * 0.4, s * span * 0.4, 0.12, 0.05, dark)
    sk.ellipse(0, 0, fl, fw, g)
    sk.ellipse(fl * 0.75, 0, 0.08, fw * 0.6, dark)


def draw_table(sk: Sketch, rng, k: int) -> None:
    """Side-view tables: two legs, trestle, pedestal, or four legs in perspective; optional shelf."""
    wood, dark = _u(rng, 0.3, 0.85), _u(rng, 0.1, 0.3)
    tw, tt, th = _u(rng, 0.75, 1.05), _u(rng, 0.05, 0.12), _u(rng, 0.45, 0.85)
    top = th - 0.4
    sk.rect(-tw, top, tw, top + tt, wood)
    lw, bottom = _u(rng, 0.05, 0.1), -0.4
    kind = k % 4
    if kind == 0:
        for x in (-tw + 0.08, tw - 0.08 - lw):
            sk.rect(x, bottom, x + lw, top, wood * 0.85)
    elif kind == 1:  # trestle: A-shaped legs
        for c in (-tw * 0.6, tw * 0.6):
            sk.line([(c - 0.15, bottom), (c, top)], lw, wood * 0.85)
            sk.line([(c + 0.15, bottom), (c, top)], lw, wood * 0.85)
    elif kind == 2:  # pedestal
        sk.rect(-0.07, bottom + 0.05, 0.07, top, dark)
        sk.ellipse(0, bottom + 0.04, tw * 0.45, 0.05, dark)
    else:  # four legs, back pair offset and darker
        for x in (-tw + 0.2, tw - 0.12):
            sk.rect(x, bottom + 0.1, x + lw * 0.8, top, wood * 0.6)
        for x in (-tw + 0.05, tw - 0.05 - lw):
            sk.rect(x, bottom, x + lw, top, wood * 0.85)
    if k >= 4:  # lower shelf
        sk.rect(
            -tw * 0.8,
            bottom + (top - bottom) * 0.3,
            tw * 0.8,
            bottom + (top - bottom) * 0.3 + 0.05,
            wood * 0.7,
        )


FAMILIES = {
    "Animals": draw_animal,
    "Boats": draw_boat,
    "Cars": draw_car,
    "Chairs": draw_chair,
    "Faces": draw_face,
    "Fruits": draw_fruit,
    "Planes": draw_plane,
    "Tables": draw_table,
}


def relief_shading(mask: np.ndarray, depth_px: float = 10.0) -> np.ndarray:
    """Lambertian shading of a height map that rises from the silhouette (the 2.5-D look)."""
    dist = ndimage.distance_transform_edt(mask)
    height = np.sqrt(np.clip(dist / depth_px, 0, 1)) * depth_px
    gy, gx = np.gradient(height)
    normal = np.stack([-gx, -gy, np.ones_like(height)])
    normal /= np.linalg.norm(normal, axis=0)
    light = np.array([-0.5, -0.6, 0.62])  # from the upper left (image rows grow downwards)
    light /= np.linalg.norm(light)
    return np.clip(np.tensordot(light, normal, axes=1) / light[2], 0.3, 1.4)


def render_object(
    category: str, k: int, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One object's shaded intensity and mask (float 0-1), centred and scaled to a common extent."""
    sk = Sketch(size)
    FAMILIES[category](sk, rng, k)
    albedo = np.asarray(sk.albedo, dtype=np.float64) / 255
    mask = np.asarray(sk.mask, dtype=np.float64) / 255
    shade = relief_shading(mask > 0.5, depth_px=size / 25)
    # centre the bounding box and scale its longer side to 80% of the canvas
    rows, cols = np.nonzero(mask > 0.5)
    cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    k_scale = 0.8 * size / extent
    data = (k_scale**-1, 0, cx - size / 2 / k_scale, 0, k_scale**-1, cy - size / 2 / k_scale)
    out = []
    for arr in (np.clip(albedo * shade, 0, 1), mask):
        img = Image.fromarray(arr.astype(np.float32), mode="F")
        out.append(
            np.asarray(img.transform((size, size), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR))
        )
    return out[0], out[1]


def pink_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 1/f^a texture (a in 0.9..1.5), mean and contrast random: a natural-like background."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amp = f ** -rng.uniform(0.9, 1.5)
    amp[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amp.shape)
    img = np.fft.irfft2(amp * np.exp(1j * phase), s=(size, size))
    img = (img - img.mean()) / img.std()
    return np.clip(rng.uniform(0.3, 0.7) + rng.uniform(0.07, 0.17) * img, 0, 1)


def place(
    obj: np.ndarray, mask: np.ndarray, ty: float, tz: float, s: float, rxy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Object canvas -> image canvas: rotate by rxy (deg), scale by s, shift by (ty, tz) half-widths."""
    size = obj.shape[0]
    c = size / 2
    k = 1 / (0.75 * s)  # at s=1 the object's longer side spans 0.8 * 0.75 = 60% of the image
    cos, sin = np.cos(np.radians(rxy)), np.sin(np.radians(rxy))
    ox, oy = c + ty * c, c - tz * c  # +tz is up
    a, b, d, e = k * cos, -k * sin, k * sin, k * cos
    data = (a, b, c - a * ox - b * oy, d, e, c - d * ox - e * oy)
    out = []
    for arr in (obj, mask):
        img = Image.fromarray(arr.astype(np.float32), mode="F")
        out.append(
            np.asarray(img.transform((size, size), Image.Transform.AFFINE, data, Image.Resampling.BICUBIC))
        )
    return out[0], np.clip(out[1], 0, 1)


def to_uint8(canvas: np.ndarray, size: int) -> np.ndarray:
    """Supersampled float canvas -> final uint8 image (antialiased downsampling)."""
    img = Image.fromarray(np.clip(canvas, 0, 1).astype(np.float32), mode="F").resize(
        (size, size), Image.Resampling.LANCZOS
    )
    return np.clip(np.rint(np.asarray(img) * 255), 0, 255).astype(np.uint8)


def pixel_id(pixels: np.ndarray) -> str:
    """Stable stimulus id: sha1 of the decoded pixels (not of the PNG bytes, which depend on zlib)."""
    return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16]


def render_stimuli(cfg: Settings) -> tuple[pd.DataFrame, np.ndarray]:
    """All images and their metadata table (one row per image, category/object/variation order)."""
    big = cfg.image_size * cfg.supersample
    rows, images = [], []
    for category in cfg.categories:
        for k in range(cfg.objects_per_category):
            rng = np.random.default_rng([cfg.seed, 1, CATEGORIES.index(category), k])
            obj, mask = render_object(category, k, rng, big)
            name = f"{category.lower().rstrip('s')}{k:02d}"
            for variation, (count, t_max, (s_lo, s_hi), r_max) in VARIATIONS.items():
                for _ in range(count):
                    ty, tz = rng.uniform(-t_max, t_max, 2) if t_max else (0.0, 0.0)
                    s, rxy = rng.uniform(s_lo, s_hi), rng.uniform(-r_max, r_max) if r_max else 0.0
                    placed, alpha = place(obj, mask, ty, tz, s, rxy)
                    canvas = pink_noise(rng, big) * (1 - alpha) + placed * alpha
                    pixels = to_uint8(canvas, cfg.image_size)
                    sid = pixel_id(pixels)
                    rows.append(
                        {
                            "stimulus_id": sid,
                            "filename": f"{sid}.png",
                            "object_name": name,
                            "category_name": category,
                            "variation": variation,
                            "ty": round(float(ty), 4),
                            "tz": round(float(tz), 4),
                            "s": round(float(s), 4),
                            "rxy": round(float(rxy), 2),
                        }
                    )
                    images.append(pixels)
    table = pd.DataFrame(rows)
    if table["stimulus_id"].duplicated().any():
        raise RuntimeError("two images have the same pixels; change the seed")
    return table, np.stack(images)


# =========================================================================== responses


def layer_activations(images: np.ndarray, cfg: Settings, batch: int = 16) -> np.ndarray:
    """EfficientNet-Lite0's ``cfg.layer`` output (N, C, H, W) for the images, as a submission would compute it."""
    import torch

    from itbench.data.stimuli import to_model_input
    from itbench.models import pretrained

    if pretrained.random_weights_forced():
        raise SystemExit(
            f"{pretrained.RANDOM_WEIGHTS_ENV} is set: the demo must be generated with the real weights"
        )
    torch.set_num_threads(1)  # bit-reproducible convolutions
    model = pretrained.efficientnet_lite0(pretrained=True)
    grabbed = []
    hook = model.get_submodule(cfg.layer).register_forward_hook(lambda _m, _i, out: grabbed.append(out))
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                model(to_model_input(images[start : start + batch][..., None]))
    finally:
        hook.remove()
    return torch.cat(grabbed).double().numpy()


def zscore(x: np.ndarray) -> np.ndarray:
    """Column-wise z-score; constant columns become 0."""
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def principal_scores(flat: np.ndarray, k: int) -> np.ndarray:
    """Unit-variance scores of the top-k principal components, signs fixed (largest loading positive)."""
    u, _, _ = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    u = u[:, :k]
    u *= np.sign(u[np.abs(u).argmax(axis=0), np.arange(k)])
    return zscore(u)


def site_rates(acts: np.ndarray, cfg: Settings, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Noise-free rates (images x sites): two linear readouts of the layer, then a softplus.

    Half of each site's drive variance is a sparse random readout of the layer's
    channel means (feature selectivity, invariant to position); half a random
    readout of the whitened top principal components of the full activation map
    (the spatially structured part). Both are linear in the layer, and both are
    found by PCA + ridge on the layer under flattening or pooling, while the
    neighbouring layers can only approximate them.
    """
    n_img, n_chan = acts.shape[:2]
    channels = acts.mean(axis=(2, 3))
    sparse = np.zeros((n_chan, cfg.n_sites))
    lo, hi = cfg.channels_per_site
    for j in range(cfg.n_sites):
        picks = rng.choice(n_chan, size=int(rng.integers(lo, hi + 1)), replace=False)
        sparse[picks, j] = rng.standard_normal(len(picks))
    pcs = principal_scores(acts.reshape(n_img, -1), cfg.n_components)
    dense = rng.standard_normal((cfg.n_components, cfg.n_sites))
    share = cfg.pc_share
    drive = zscore(
        np.sqrt(share) * zscore(pcs @ dense)
        + np.sqrt(1 - share) * zscore((channels - channels.mean(0)) @ sparse)
    )
    slope = rng.uniform(0.8, 1.5, cfg.n_sites)
    offset = rng.uniform(-0.5, 1.0, cfg.n_sites)
    baseline = rng.uniform(2.0, 15.0, cfg.n_sites)
    gain = rng.uniform(8.0, 40.0, cfg.n_sites)
    rates = baseline + gain * np.logaddexp(0.0, slope * drive + offset)  # softplus
    return rates, {
        "layer_shape": list(acts.shape[1:]),
        "mean_channels_per_site": round(float((sparse != 0).sum(0).mean()), 2),
    }


def trial_responses(
    rates: np.ndarray, cfg: Settings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Trials (images x reps x sites): Gaussian noise with variance fano * rate; fano set per site from a target ceiling."""
    logit = np.log(
        cfg.ceiling_median / (1 - cfg.ceiling_median)
    ) + cfg.ceiling_logit_sd * rng.standard_normal(cfg.n_sites)
    target = 1 / (1 + np.exp(-logit))
    half_rel = target / (2 - target)  # undo Spearman-Brown: reliability of a half (n_reps / 2 trials)
    half = cfg.n_reps / 2
    fano = rates.var(axis=0) * (1 / half_rel - 1) * half / rates.mean(axis=0)
    noise = rng.standard_normal((rates.shape[0], cfg.n_reps, rates.shape[1]))
    trials = rates[:, None, :] + np.sqrt(fano * rates)[:, None, :] * noise
    return np.round(trials, cfg.round_decimals), target


def build_assembly(
    trials: np.ndarray, table: pd.DataFrame, cfg: Settings, rng: np.random.Generator
) -> xr.DataArray:
    """Trial-level presentation x neuroid DataArray, presentations in a random order, flat coords."""
    n_img, n_rep, n_site = trials.shape
    img_idx, rep_idx = np.meshgrid(np.arange(n_img), np.arange(n_rep), indexing="ij")
    order = rng.permutation(n_img * n_rep)
    img_idx, rep_idx = img_idx.ravel()[order], rep_idx.ravel()[order]
    values = trials[img_idx, rep_idx].astype(np.float32)
    n_a = n_site // 2
    animal = np.array([cfg.animals[0]] * n_a + [cfg.animals[1]] * (n_site - n_a))
    neuroid_id = np.array([f"{a}_{i:03d}" for i, a in enumerate(animal)])
    pres = {
        c: ("presentation", table[c].to_numpy()[img_idx])
        for c in ("stimulus_id", "object_name", "category_name", "variation")
    }
    return xr.DataArray(
        values,
        dims=("presentation", "neuroid"),
        coords={
            **pres,
            "repetition": ("presentation", rep_idx.astype(np.int64)),
            "neuroid_id": ("neuroid", neuroid_id),
            "region": ("neuroid", np.full(n_site, "IT")),
            "animal": ("neuroid", animal),
        },
        attrs={
            "synthetic": 1,
            "description": "SYNTHETIC surrogate IT responses (itbench demo benchmark); not neural data",
            "generator": "benchmark/demo/generate.py",
            "generator_version": GENERATOR_VERSION,
            "layer": f"efficientnet_lite0.{cfg.layer}",
            "seed": cfg.seed,
            "units": "spikes/s (surrogate)",
        },
    )


def object_stratified_split(table: pd.DataFrame, rng: np.random.Generator, n_val: int = 58) -> pd.Series:
    """518/58/64: one test image per object, one val image for ``n_val`` objects, spread over categories.

    (sklearn's stratified splitting cannot give 58 val images to 64 classes, so
    the assignment is done per object here.)
    """
    objects = table.groupby("category_name", sort=True)["object_name"].unique()
    n_skip = table["object_name"].nunique() - n_val
    skip_categories = rng.choice(objects.index.to_numpy(), size=n_skip, replace=False)
    no_val = {str(rng.choice(objects[c])) for c in skip_categories}
    split = pd.Series("train", index=pd.Index(table["stimulus_id"], name="stimulus_id"), name="split")
    for name, rows in table.groupby("object_name", sort=True)["stimulus_id"]:
        order = rng.permutation(rows.to_numpy())
        split[order[0]] = "test"
        if name not in no_val:
            split[order[1]] = "val"
    return split


# =========================================================================== writing


def write_zip(table: pd.DataFrame, images: np.ndarray, path: Path) -> None:
    """PNG files in a zip with fixed timestamps, so equal content gives equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, pixels in zip(table["filename"], images, strict=False):
            buf = io.BytesIO()
            Image.fromarray(pixels, mode="L").save(buf, format="PNG", optimize=True)
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
            archive.writestr(info, buf.getvalue())


def write_netcdf(da: xr.DataArray, path: Path) -> None:
    """BrainIO-style NetCDF4 (h5netcdf): flat coords, float32 data, zlib + shuffle."""
    path.unlink(missing_ok=True)
    da = da.rename(None)  # stored as __xarray_dataarray_variable__, as DataArray.to_netcdf does in BrainIO
    da.to_netcdf(
        path, engine="h5netcdf", encoding={VARIABLE: {"zlib": True, "complevel": 9, "shuffle": True}}
    )


def write_preview(table: pd.DataFrame, images: np.ndarray, path: Path, thumb: int = 64) -> None:
    """Contact sheet for the README: one row per category, per object its first variation-0 and variation-6 image."""
    picks = [
        table[(table["object_name"] == name) & (table["variation"] == v)].index[0]
        for name in table["object_name"].unique()
        for v in (0, 6)
    ]
    n_cols = 2 * table.groupby("category_name")["object_name"].nunique().max()
    tiles = [Image.fromarray(images[i]).resize((thumb, thumb), Image.Resampling.LANCZOS) for i in picks]
    sheet = Image.new("L", (n_cols * thumb, len(tiles) // n_cols * thumb))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % n_cols) * thumb, (i // n_cols) * thumb))
    sheet.save(path, format="PNG", optimize=True)


def generate(
    out_dir: Path = HERE,
    split_path: Path = ROOT / "benchmark" / "splits" / "demo.csv",
    cfg: Settings = Settings(),
) -> dict:
    """Build every file of the demo benchmark; returns the manifest (also written as manifest.json)."""
    from itbench.data.download import file_sha1
    from itbench.data.split import write_split
    from itbench.scoring.metrics import split_half_ceiling

    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    table, images = render_stimuli(cfg)
    acts = layer_activations(images, cfg)
    rng = np.random.default_rng([cfg.seed, 2])
    rates, readout = site_rates(acts, cfg, rng)
    del acts
    trials, _ = trial_responses(rates, cfg, rng)
    ceiling = split_half_ceiling(trials, n_splits=10, seed=cfg.seed)

    table.to_csv(out_dir / "stimuli.csv", index=False, lineterminator="\n")
    write_zip(table, images, out_dir / "stimuli.zip")
    write_preview(table, images, out_dir / "preview.png")
    write_netcdf(build_assembly(trials, table, cfg, rng), out_dir / "assembly.nc")
    split = object_stratified_split(table, np.random.default_rng([cfg.seed, 4]))
    sizes = {f"n_{label}": int((split == label).sum()) for label in ("train", "val", "test")}
    write_split(
        split,
        split_path,
        comment=(
            f"SYNTHETIC demo benchmark split, seed={cfg.seed} (benchmark/demo/generate.py): stratified by object_name: "
            "1 test image per object, 1 val image for 58 of the 64 objects (the 6 without one in 6 different "
            "categories), the rest train = 518/58/64, the report's 2592/288/320 of 3200 scaled to 640"
        ),
    )

    manifest = {
        "benchmark_id": "demo",
        "title": "Demo (embedded, synthetic)",
        "description": "SYNTHETIC HvM-like images and surrogate IT responses from EfficientNet-Lite0 "
        f"{cfg.layer}; see README.md",
        "citation": "itbench demo benchmark (synthetic; benchmark/demo/generate.py). Not neural data.",
        "loader": "demo",
        "synthetic": True,
        "region": "IT (surrogate)",
        "protocols": ["fixed-split", "brainscore"],
        "default_protocol": "fixed-split",
        "order": 30,
        "generator": "benchmark/demo/generate.py",
        "generator_version": GENERATOR_VERSION,
        "settings": asdict(cfg),
        "readout": readout,
        "files": {
            name: {"sha1": file_sha1(out_dir / name), "size": (out_dir / name).stat().st_size}
            for name in FILES
        },
        "split": {"path": "benchmark/splits/demo.csv", "sha1": file_sha1(split_path), **sizes},
        "counts": {
            "images": len(table),
            "objects": int(table["object_name"].nunique()),
            "categories": int(table["category_name"].nunique()),
            "sites": cfg.n_sites,
            "reps": cfg.n_reps,
        },
        "ceiling": {
            "median": round(float(np.median(ceiling)), 4),
            "p10": round(float(np.percentile(ceiling, 10)), 4),
            "p90": round(float(np.percentile(ceiling, 90)), 4),
            "method": "itbench.scoring.metrics.split_half_ceiling (split-half over repetitions, Spearman-Brown corrected, mean of 10 random splits)",
        },
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"generated in {time.time() - t0:.1f} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where stimuli/assembly/manifest go")
    parser.add_argument("--split-path", type=Path, default=ROOT / "benchmark" / "splits" / "demo.csv")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    args = parser.parse_args(argv)
    manifest = generate(args.out_dir, args.split_path, Settings(seed=args.seed))
    c = manifest["ceiling"]
    print(
        f"SYNTHETIC demo benchmark written to {args.out_dir}; "
        f"ceiling median {c['median']} (p10 {c['p10']}, p90 {c['p90']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
