"""The page's protocols section: fixed-split beside brainscore, IT beside V4, old records as fixed-split."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
from helpers_records import FIXTURES

from itbench.page.leaderboard import render
from itbench.page.protocols import cell, protocol_of

REPO = Path(__file__).resolve().parents[1]


def _brainscore_record(base: dict, bid: str, raw: float, err: float, ceiling: float) -> dict:
    rec = copy.deepcopy(base)
    rec.update(protocol="brainscore", split="cv")
    rec["benchmark"]["id"] = bid
    rec["brainscore"] = {"raw_r": raw, "raw_r_error": err, "ceiling": ceiling}
    rec.pop("normalisations", None)  # the page recomputes them when absent
    rec["provenance"]["wall_time_s"] = 12.0
    return rec


@pytest.fixture
def rendered(tmp_path, monkeypatch):
    monkeypatch.setenv("ITBENCH_ROOT", str(REPO))
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "majajhong2015", results / "majajhong2015")
    base = json.loads((FIXTURES / "majajhong2015" / "resnet50_layer3_ridge.json").read_text())
    assert "protocol" not in base  # a record from before protocols existed
    (results / "majajhong2015" / "resnet50_layer3_ridge.cv.json").write_text(
        json.dumps(_brainscore_record(base, "majajhong2015", 0.5, 0.01, 0.8))
    )
    v4 = results / "majajhong2015.V4"
    v4.mkdir()
    (v4 / "resnet50_layer3_ridge.cv.json").write_text(
        json.dumps(_brainscore_record(base, "majajhong2015.V4", 0.4, 0.02, 0.9))
    )
    out = tmp_path / "out"
    report = render(results, out, None, REPO / "benchmark" / "table1.csv")
    return base, out, report


def test_old_records_are_fixed_split_with_both_normalisations(rendered):
    base, _out, _report = rendered
    assert protocol_of(base) == "fixed-split"
    c = cell(base)
    r, ceiling = base["scores"]["median_r"], base["scores"]["ceiling"]
    assert c.norms["brainscore_pre2026"] == pytest.approx((r / ceiling) ** 2)
    assert c.norms["brainscore_pr2169"] == pytest.approx(r**2 / ceiling)


def test_it_and_v4_side_by_side_with_both_protocols(rendered):
    base, out, report = rendered
    assert not report.skipped
    page = (out / "index.html").read_text()
    section = page[page.index('id="protocols"') :]
    row = section[section.index('data-submission="resnet50_layer3_ridge"') :].split("</tr>")[0]
    cells = dict(re.findall(r'<td class="num" data-col="([^"]+)"[^>]*>([^<]*)</td>', row))
    assert cells["majajhong2015-brainscore-r"] == "0.500 ± 0.010"
    assert cells["majajhong2015.V4-brainscore-r"] == "0.400 ± 0.020"
    assert cells["majajhong2015-brainscore-brainscore_pre2026"] == f"{(0.5 / 0.8) ** 2:.3f}"
    assert cells["majajhong2015.V4-brainscore-brainscore_pr2169"] == f"{0.4**2 / 0.9:.3f}"
    assert cells["majajhong2015-fixed-split-r"] == f"{base['scores']['median_r']:.3f}"
    assert "Brain-Score until 2026-01-13" in section and "PR #2169" in section
    # the brainscore record is not ranked in the fixed-split table
    main = page[: page.index('id="protocols"')]
    assert "resnet50_layer3_ridge.cv" not in main and 'data-split="cv"' not in main
    md = (out / "README.md").read_text()
    assert "## Protocols and regions side by side" in md and "0.500 ± 0.010" in md
