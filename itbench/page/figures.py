"""Leaderboard figures: matplotlib (Agg/SVG, no pyplot) rendered to SVG text.

Two kinds of figure, both small so a whole leaderboard renders in about a
second: a per-submission panel row (per-neuroid r and EV histograms,
predicted vs measured for the example neuroids, r against the ceiling) and the
layer sweep of Fig. 1 (EV and r against depth, CI bands, pretrained and random
weights on the same axes).

SVG output is made byte-for-byte reproducible (fixed ``svg.hashsalt``, text
kept as text, no date in the metadata), so re-rendering unchanged records
yields unchanged files. This module never imports torch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.colors
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from itbench.page.svg import inline_svg  # noqa: F401  (re-exported: figures.inline_svg)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.typing import RcKeyType

# Deterministic SVG: salted ids instead of random ones, text as <text>, small fonts.
RC: dict[RcKeyType, object] = {
    "svg.hashsalt": "itbench",
    "svg.fonttype": "none",
    "font.family": ["DejaVu Sans"],
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.titley": 1.02,  # fixed title position: skips a costly overlap search per draw
    "axes.titlepad": 2.0,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.2,
    "path.simplify": False,  # keep every point of the dot clouds (see _dots)
}

# Okabe-Ito: distinguishable under the common colour-vision deficiencies.
BLUE, ORANGE, GREEN, VERMILION, PURPLE, GREY = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#777777",
)
EXAMPLE_COLORS = (BLUE, VERMILION, GREEN, PURPLE, ORANGE, "#56B4E9")
WEIGHT_COLORS = {"pretrained": BLUE, "random": VERMILION}
EV_FLOOR = -1.0  # EV below this (e.g. random features: -537) is clipped in histograms


@dataclass(frozen=True)
class SweepLine:
    """One model x weights curve of a layer sweep, in depth order."""

    weights: str
    layers: Sequence[str]
    depth: Sequence[float]
    mean_ev: Sequence[float]
    ev_ci: Sequence[tuple[float, float]]
    mean_r: Sequence[float]
    r_ci: Sequence[tuple[float, float]]


def _text(label: str) -> str:
    """User strings go into matplotlib labels: escape '$' so it is not mathtext."""
    return label.replace("$", r"\$")


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def _to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _clear(ax: Axes) -> None:
    """Remove data artists but keep the axes (re-creating axes and ticks is the slow part)."""
    for artist in (*ax.collections, *ax.patches, *ax.lines, *ax.texts):
        artist.remove()
    ax.set_title("")
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_autoscale_on(False)  # every panel sets its limits from its own data
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(4))
        axis.set_major_formatter(ScalarFormatter())


def _fix_label_positions(ax: Axes, x_offset: float, y_offset: float) -> None:
    """Place axis labels at fixed offsets instead of measuring every tick label each draw."""
    ax.xaxis.set_label_coords(0.5, x_offset)
    ax.yaxis.set_label_coords(y_offset, 0.5)


def _padded(lo: float, hi: float, frac: float = 0.05) -> tuple[float, float]:
    if not hi - lo > 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * frac
    return lo - pad, hi + pad


def _dots(ax: Axes, x: np.ndarray, y: np.ndarray, color: str, size: float = 2.6, alpha: float = 0.7) -> None:
    """A point cloud as ONE path of zero-length round-capped strokes.

    A scatter writes one SVG element per point (thousands per page, most of
    the render time); this writes one element per cloud and looks the same.
    """
    nan = np.full(x.shape, np.nan)
    ax.plot(
        np.column_stack([x, x, nan]).ravel(),
        np.column_stack([y, y, nan]).ravel(),
        color=color,
        alpha=alpha,
        linewidth=size,
        solid_capstyle="round",
    )


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color=GREY, fontsize=7)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks([])
    ax.set_yticks([])


class SubmissionFigures:
    """Draws the per-submission panel row, reusing one Figure across submissions.

    Re-using the axes avoids re-creating tick machinery for every submission,
    which is most of matplotlib's cost; every draw sets all state it uses, so a
    submission's SVG does not depend on what was drawn before (tested).
    """

    def __init__(self) -> None:
        self._figs: dict[int, tuple[Figure, list]] = {}

    def _canvas(self, n_panels: int) -> tuple[Figure, list]:
        if n_panels not in self._figs:
            with matplotlib.rc_context(RC):
                fig = Figure(figsize=(2.05 * n_panels, 2.05))
                axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
                fig.subplots_adjust(
                    left=0.55 / (2.05 * n_panels), right=0.985, bottom=0.2, top=0.86, wspace=0.42
                )
                for ax in axes:
                    _fix_label_positions(ax, -0.17, -0.25)
            self._figs[n_panels] = (fig, axes)
        fig, axes = self._figs[n_panels]
        for ax in axes:
            _clear(ax)
        return fig, axes

    def draw(
        self,
        r: Sequence[float],
        ev: Sequence[float],
        ceiling: Sequence[float] | None,
        examples: Mapping[str, Sequence] | None,
    ) -> str:
        """SVG of: r histogram, EV histogram, examples scatter, r vs ceiling (if any)."""
        has_ceiling = ceiling is not None and _finite(ceiling).size > 0
        with matplotlib.rc_context(RC):
            fig, axes = self._canvas(4 if has_ceiling else 3)
            _hist(axes[0], _finite(r), "per-neuroid r", "Pearson r", BLUE, floor=None)
            _hist(axes[1], _finite(ev), "per-neuroid EV", "explained variance", GREEN, floor=EV_FLOOR)
            _examples(axes[2], examples)
            if has_ceiling:
                _r_vs_ceiling(axes[3], r, ceiling)  # type: ignore[arg-type]
        return _to_svg(fig)


def _hist(ax: Axes, values: np.ndarray, title: str, xlabel: str, color: str, floor: float | None) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if values.size == 0:
        _no_data(ax, "no finite values")
        return
    mean, median = float(values.mean()), float(np.median(values))  # of the raw values
    n_clipped = 0
    if floor is not None:
        n_clipped = int((values < floor).sum())
        values = np.maximum(values, floor)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 0.1:  # (nearly) constant values: a readable bar, not a sliver
        lo, hi = (lo, lo + 0.2) if n_clipped else (lo - 0.1, hi + 0.1)
    counts, edges = np.histogram(values, bins=20, range=(lo, hi))
    ax.stairs(
        counts,
        edges,
        fill=True,
        facecolor=matplotlib.colors.to_rgba(color, 0.35),
        edgecolor=color,
        linewidth=0.9,
    )
    x_lo, x_hi = _padded(lo, hi, 0.02)
    marker = max(median, lo)
    ax.axvline(marker, color="black", linewidth=0.8, linestyle="--")
    # Labels go on the side away from the median line so they never cross it.
    x, ha = (0.97, "right") if (marker - x_lo) / (x_hi - x_lo) < 0.5 else (0.03, "left")
    ax.text(
        x,
        0.97,
        f"mean {mean:.3g}\nmedian {median:.3g}\n(dashed)",
        transform=ax.transAxes,
        ha=ha,
        va="top",
        fontsize=6.2,
    )
    if n_clipped:
        ax.text(
            x,
            0.66,
            f"{n_clipped} below {floor:g}\n(drawn at {floor:g})",
            transform=ax.transAxes,
            ha=ha,
            va="top",
            fontsize=6.2,
            color=VERMILION,
        )
    ax.set_ylabel("neuroids")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(0.0, max(1.0, float(counts.max())) * 1.45)  # room for the labels


def _examples(ax: Axes, examples: Mapping[str, Sequence] | None) -> None:
    ax.set_title("example neuroids")
    ax.set_xlabel("measured")
    ax.set_ylabel("predicted")
    if not examples or not examples.get("neuroid_id"):
        _no_data(ax, "no examples in record")
        return
    lo, hi = math.inf, -math.inf
    labels: list[tuple[str, str]] = []
    for i, (nid, meas, pred) in enumerate(
        zip(examples["neuroid_id"], examples["measured"], examples["predicted"], strict=False)
    ):
        m, p = np.asarray(meas, dtype=float), np.asarray(pred, dtype=float)
        ok = np.isfinite(m) & np.isfinite(p)
        if not ok.any():
            continue
        color = EXAMPLE_COLORS[i % len(EXAMPLE_COLORS)]
        _dots(ax, m[ok], p[ok], color)
        labels.append((str(nid), color))
        lo = min(lo, float(m[ok].min()), float(p[ok].min()))
        hi = max(hi, float(m[ok].max()), float(p[ok].max()))
    if lo > hi:
        _no_data(ax, "no finite examples")
        return
    ax.plot([lo, hi], [lo, hi], color=GREY, linewidth=0.7, linestyle=":")
    for j, (nid, color) in enumerate(labels):  # a legend costs 10x more to lay out
        ax.text(
            0.03,
            0.97 - 0.075 * j,
            _text(nid),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=5.5,
            color=color,
        )
    ax.set_xlim(*_padded(lo, hi))
    y_lo, y_hi = _padded(lo, hi)
    ax.set_ylim(y_lo, y_hi + 0.35 * (y_hi - y_lo))  # headroom for the neuroid labels


def _r_vs_ceiling(ax: Axes, r: Sequence[float], ceiling: Sequence[float]) -> None:
    ax.set_title("r vs ceiling")
    ax.set_xlabel("ceiling (split-half)")
    ax.set_ylabel("Pearson r")
    r_arr, c_arr = np.asarray(r, dtype=float), np.asarray(ceiling, dtype=float)
    ok = np.isfinite(r_arr) & np.isfinite(c_arr)
    if not ok.any():
        _no_data(ax, "no finite pairs")
        return
    _dots(ax, c_arr[ok], r_arr[ok], BLUE)
    lo = min(0.0, float(c_arr[ok].min()), float(r_arr[ok].min()))
    hi = max(1.0, float(c_arr[ok].max()), float(r_arr[ok].max()))
    # the bound: the ceiling is a reliability, so no model's r exceeds sqrt(ceiling) (issue 19)
    grid = np.linspace(max(lo, 0.0), hi, 200)
    ax.plot(grid, np.sqrt(grid), color=GREY, linewidth=0.7, linestyle=":")
    ax.text(
        0.03,
        0.97,
        "dotted: r = \u221aceiling (the bound)",
        transform=ax.transAxes,
        ha="left",
        va="top",
        color=GREY,
        fontsize=6.2,
    )  # top-left: r <= sqrt(ceiling) keeps points away
    ax.set_xlim(*_padded(lo, hi, 0.03))
    ax.set_ylim(*_padded(lo, hi, 0.03))


def sweep_figure(model: str, lines: Sequence[SweepLine]) -> str:
    """Fig. 1: mean EV and mean r against depth, 95% CI bands, one colour per weights."""
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(7.4, 2.6))
        ax_ev, ax_r = fig.subplots(1, 2)
        fig.subplots_adjust(left=0.08, right=0.85, bottom=0.25, top=0.88, wspace=0.3)
        for ax in (ax_ev, ax_r):
            _fix_label_positions(ax, -0.3, -0.14)
        ticks: dict[float, str] = {}
        min_ev, max_ev = 0.0, 0.0
        for line in sorted(lines, key=lambda ln: (ln.weights != "pretrained", ln.weights)):
            color = WEIGHT_COLORS.get(line.weights, GREEN)
            order = np.argsort(np.asarray(line.depth, dtype=float), kind="stable")
            depth = np.asarray(line.depth, dtype=float)[order]
            for ax, mean, ci in ((ax_ev, line.mean_ev, line.ev_ci), (ax_r, line.mean_r, line.r_ci)):
                y = np.asarray(mean, dtype=float)[order]
                band = np.asarray(ci, dtype=float).reshape(-1, 2)[order]
                ax.fill_between(depth, band[:, 0], band[:, 1], color=color, alpha=0.2, linewidth=0)
                ax.plot(depth, y, marker="o", markersize=3, color=color, label=_text(line.weights))
            for d, name in zip(depth, np.asarray(line.layers, dtype=object)[order], strict=False):
                ticks.setdefault(float(d), str(name))
            finite_ev = _finite(line.mean_ev)
            if finite_ev.size:
                min_ev = min(min_ev, float(finite_ev.min()))
                max_ev = max(max_ev, float(finite_ev.max()))
        if min_ev < EV_FLOOR:  # random features can reach EV of -500: keep 0..1 readable
            # linscale: give -1..1 (where trained features live) as much room as 3 decades
            ax_ev.set_yscale("symlog", linthresh=1.0, linscale=3.0)
            ax_ev.set_yticks(*_symlog_ticks(min_ev, max_ev))
        ax_ev.axhline(0.0, color=GREY, linewidth=0.6, linestyle=":")
        ax_ev.set_title(f"{_text(model)}: mean EV by depth")
        ax_ev.set_ylabel("mean EV" + (" (symlog)" if min_ev < EV_FLOOR else ""))
        ax_r.set_title(f"{_text(model)}: mean r by depth")
        ax_r.set_ylabel("mean Pearson r")
        positions = sorted(ticks)
        for ax in (ax_ev, ax_r):
            ax.set_xticks(
                positions,
                [_text(ticks[p]) for p in positions],
                rotation=30 if len(positions) > 4 else 0,
                ha="right" if len(positions) > 4 else "center",
            )
            ax.set_xlabel("layer (by depth)")
        ax_r.legend(
            loc="upper left",
            bbox_to_anchor=(1.03, 1.0),
            frameon=False,
            title="weights\n(band: 95% CI)",
            alignment="left",
        )
    return _to_svg(fig)


def _symlog_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Readable ticks for EV on a symlog axis: 0 and 0.5 steps above, decades below -1."""
    ticks = [t for t in (1.0, 0.5) if t <= hi + 0.25] + [0.0]
    decade = 1.0
    while -decade >= lo * 1.05 or decade == 1.0:
        ticks.append(-decade)
        decade *= 10.0
    ticks.sort()
    return ticks, [f"{t:g}".replace("-", "\u2212") for t in ticks]
