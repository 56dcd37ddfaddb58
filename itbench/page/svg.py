"""SVG text for the page: inlining figures, and reusing figures already drawn.

Drawing with matplotlib is the slowest part of ``itbench leaderboard`` (about
70 ms a figure, plus 0.6 s to import it). A figure depends only on numbers
in its record and on the drawing code, so a figure file already on disk that
was drawn from the same inputs by the same code is reused as it is: an
unchanged page re-renders without importing matplotlib, and the output is
byte-identical to a fresh draw (drawing is deterministic).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

_FIGURES_CODE = Path(__file__).with_name("figures.py")
_MARK = "<!-- itbench-figure "


def figure_key(inputs: Any) -> str:
    """SHA-1 of what a figure is drawn from: its inputs, the drawing code, matplotlib's version."""
    try:
        version = metadata.version("matplotlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - matplotlib is a dependency
        version = "unknown"
    digest = hashlib.sha1(_FIGURES_CODE.read_bytes())
    digest.update(version.encode())
    digest.update(json.dumps(inputs, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cached_figure(path: Path, inputs: Any, draw: Callable[[], str]) -> str:
    """The SVG at ``path`` when it was drawn from the same inputs, else a fresh ``draw()``.

    The key travels in the file as a trailing comment, so a figure file that
    was edited, truncated or drawn from other numbers is simply redrawn.
    """
    mark = f"{_MARK}{figure_key(inputs)} -->\n"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    if text.endswith(mark) and "</svg>" in text:
        return text
    return draw().rstrip("\n") + "\n" + mark


_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_KEY_COMMENT = re.compile(r"\s*<!-- itbench-figure [0-9a-f]+ -->\s*\Z")
_IDS = re.compile(r'(\bid=")([^"]+)(")|(url\(#)([^)]+)(\))|(href="#)([^"]+)(")')


def inline_svg(svg: str, prefix: str, label: str) -> str:
    """SVG text ready to embed in HTML: no XML prologue/metadata, ids made page-unique.

    Several figures on one page would otherwise share matplotlib's ids (clip
    paths, markers) - invalid HTML and a source of wrong clipping.
    """
    svg = _KEY_COMMENT.sub("", svg)
    body = _METADATA.sub("", _PROLOGUE.sub("", svg, count=1), count=1)

    def rename(match: re.Match[str]) -> str:
        groups = [g for g in match.groups() if g is not None]
        head, name, tail = groups
        return f"{head}{prefix}-{name}{tail}"

    body = _IDS.sub(rename, body)
    attrs = f' role="img" aria-label="{_attr(label)}" class="figure"'
    return body.replace("<svg ", f"<svg{attrs} ", 1).strip() + "\n"


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
