"""The leaderboard renderer, checked against the fixture records read independently.

The page is parsed with html5lib (strict), every number shown is compared with
the record it came from (read here with ``json``, not through itbench), the
Table I differences are recomputed from ``benchmark/table1.csv`` with ``csv``,
and the outputs are checked for determinism and self-containment.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import html5lib
import numpy as np
import pytest
from helpers_records import FIXTURES, fixture_records

from itbench.errors import DataError
from itbench.page.leaderboard import (
    InvalidRecord,
    RenderReport,
    load_results,
    parse_submission,
    render,
    sanitize,
)

REPO = Path(__file__).resolve().parents[1]
TABLE1 = REPO / "benchmark" / "table1.csv"
NS = {"h": "http://www.w3.org/1999/xhtml"}


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_records", REPO / "tests" / "fixtures" / "make_records.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_records"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


# --- helpers: independent readers ----------------------------------------------------


def table1() -> dict[int, dict[str, float]]:
    with TABLE1.open() as handle:
        return {
            int(r["row"]): {"ev": float(r["mean_ev"]), "r": float(r["mean_corr"])}
            for r in csv.DictReader(handle)
        }


def parse_strict(path: Path):
    """Parse as HTML5 in strict mode: any parse error raises."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    return parser.parse(path.read_bytes())


def text(el) -> str:
    return re.sub(r"\s+", " ", "".join(el.itertext())).strip()


def table_cells(doc, table_id: str) -> list[dict[str, tuple[str, str, object]]]:
    """Rows of a leaderboard table: column -> (text, data-value, element)."""
    table = doc.find(f".//table[@id='{table_id}']")
    assert table is not None, f"no table {table_id}"
    rows = []
    for tr in table.find("tbody").findall("tr"):
        cells = {td.get("data-col"): (text(td), td.get("data-value"), td) for td in tr.findall("td")}
        cells["_id"] = (tr.get("data-submission"), tr.get("data-status"), tr)
        rows.append(cells)
    return rows


def f3(x: float) -> str:
    return f"{x:.3f}"


def is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# an absolute path of at least two components, not inside a URL or a relative path
RESOLUTION = 1e-5  # records store per-resample values to 6 decimals: closer to 0 than this is 0
ABS_PATH = re.compile(r"(?<![\w.~<>:/-])/[\w.-]+/")


def expected_rank_texts(recs: dict[str, dict]) -> dict[str, str]:
    """Rank labels recomputed here: paired percentile CIs of adjacent mean r differences, chained."""
    scored = sorted(
        (k for k, r in recs.items() if r["status"] == "ok" and not is_missing(r["scores"]["mean_r"])),
        key=lambda k: -recs[k]["scores"]["mean_r"],
    )
    tied = []
    for a, b in itertools.pairwise(scored):
        ba, bb = recs[a].get("bootstrap"), recs[b].get("bootstrap")
        if not ba or not bb or ba["key"] != bb["key"]:
            tied.append(False)
            continue
        lo, hi = np.percentile(np.array(ba["mean_r"]) - np.array(bb["mean_r"]), [2.5, 97.5])
        tied.append(lo <= RESOLUTION and hi >= -RESOLUTION)
    out, start = {}, 0
    for i in range(len(scored)):
        if i == len(scored) - 1 or not tied[i]:
            label = str(start + 1) if i == start else f"{start + 1}–{i + 1}"
            out.update(dict.fromkeys(scored[start : i + 1], label))
            start = i + 1
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RenderReport]:
    out = tmp_path_factory.mktemp("lb")
    report = render(FIXTURES, out, None, TABLE1)
    return out, report


@pytest.fixture(scope="module")
def index(rendered):
    return parse_strict(rendered[0] / "index.html")


# --- the page ------------------------------------------------------------------------


def test_pages_are_strict_html5(rendered) -> None:
    out, report = rendered
    pages = [out / "index.html", *sorted((out / "submissions").glob("*/*.html"))]
    assert len(pages) == 1 + report.n_submissions
    for page in pages:
        parse_strict(page)  # raises on the first parse error


def test_every_score_cell_equals_the_record(index) -> None:
    for bench, split in (("demo", "val"), ("demo", "test"), ("nx414", "val"), ("majajhong2015", "val")):
        recs = fixture_records(bench, split)
        rows = table_cells(index, f"table-{bench}-{split}")
        assert sorted(r["_id"][0] for r in rows) == sorted(recs)
        for row in rows:
            rec = recs[row["_id"][0]]
            assert row["_id"][1] == rec["status"]
            name_text = row["submission"][0]
            assert rec["submission"]["name"] in name_text and rec["submission"]["id"] in name_text
            t1 = rec["submission"]["table1_row"]
            assert row["table1_row"][0] == ("—" if t1 is None else str(t1))
            assert row["created"][0] == rec["created"][:10]
            keys = ["mean_ev", "mean_r", "median_r"] + (["normalized_r"] if "normalized_r" in row else [])
            for key in keys:
                shown, value, _ = row[key]
                if rec["status"] != "ok":
                    assert (shown, value) == ("—", "")
                    continue
                expected = rec["scores"][key]
                if is_missing(expected):
                    assert (shown, value) == ("n/a", "")
                    continue
                assert float(value) == expected  # exact: data-value carries repr()
                lo, hi = rec["scores"]["ci"][key]
                assert shown == f"{expected:.3f} [{lo:.2f}, {hi:.2f}]"


def test_ranking_order_and_ranks(index) -> None:
    recs = fixture_records("demo")
    rows = table_cells(index, "table-demo-val")
    ids = [r["_id"][0] for r in rows]
    scored = sorted(
        (k for k, r in recs.items() if r["status"] == "ok" and not is_missing(r["scores"]["mean_r"])),
        key=lambda k: -recs[k]["scores"]["mean_r"],
    )
    assert ids[: len(scored)] == scored
    assert [r["rank"][1] for r in rows[: len(scored)]] == [str(i + 1) for i in range(len(scored))]
    labels = expected_rank_texts(recs)
    assert [r["rank"][0] for r in rows[: len(scored)]] == [labels[k] for k in scored]
    # the twins built indistinguishable share a range; the pair built to differ does not
    assert labels["resnet50_layer3"] == labels["resnet50_layer3_rerun"] == "2–3"
    assert labels["resnet50_best"] == "1"
    rest = ids[len(scored) :]
    # ok-but-unscored, then failed, then skipped: listed, unranked, never hidden
    assert rest == ["constant_model", "shallow_cnn", "convnext_linear"]
    assert all(r["rank"] == ("—", "", r["rank"][2]) for r in rows[len(scored) :])


def test_failed_and_skipped_rows_show_their_reason(index) -> None:
    recs = fixture_records("demo")
    rows = {r["_id"][0]: r for r in table_cells(index, "table-demo-val")}
    for sub_id, status in (("shallow_cnn", "failed"), ("convnext_linear", "skipped")):
        shown = rows[sub_id]["status"][0]
        first_line = recs[sub_id]["error"].splitlines()[0]
        assert shown.startswith(f"{status} ")
        reason_el = rows[sub_id]["status"][2].find(".//span[@class='reason']")
        assert reason_el.get("title") == sanitize(recs[sub_id]["error"])  # full text on hover
        assert shown[len(status) + 1 :][:30] == first_line[:30]  # the words before any path
        assert not ABS_PATH.search(shown) and not ABS_PATH.search(reason_el.get("title"))
    # the skipped row's cache path is shown relative to the home folder, without the user
    skipped = rows["convnext_linear"]["status"][2].find(".//span[@class='reason']")
    assert "at ~/.cache/huggingface/hub/models--timm--convnext_base and" in skipped.get("title")
    assert "not cached at ~/…/models--timm--convnext_base" in text(skipped)  # one short line
    assert "https://huggingface.co/timm/convnext_base" in skipped.get("title")  # URLs are kept
    assert "alice" not in skipped.get("title") + text(skipped)


def test_table1_columns_and_deltas(index) -> None:
    ref = table1()
    for bench in ("nx414", "majajhong2015"):
        recs = fixture_records(bench)
        for row in table_cells(index, f"table-{bench}-val"):
            rec = recs[row["_id"][0]]
            t1 = ref[rec["submission"]["table1_row"]]
            ev, r = rec["scores"]["mean_ev"], rec["scores"]["mean_r"]
            assert float(row["report_mean_ev"][1]) == t1["ev"]
            assert float(row["report_mean_r"][1]) == t1["r"]
            assert row["report_mean_ev"][0] == f3(t1["ev"])
            assert float(row["delta_mean_ev"][1]) == pytest.approx(ev - t1["ev"], abs=1e-12)
            assert float(row["delta_mean_r"][1]) == pytest.approx(r - t1["r"], abs=1e-12)
            assert row["delta_mean_ev"][0] == f"{ev - t1['ev']:+.3f}"
            assert row["delta_mean_r"][0] == f"{r - t1['r']:+.3f}"
    # A hand-checked case: nx414 resnet50_layer3 (row 5 of Table I: 0.398 / 0.623).
    rec = fixture_records("nx414")["resnet50_layer3"]
    row = {r["_id"][0]: r for r in table_cells(index, "table-nx414-val")}["resnet50_layer3"]
    assert row["delta_mean_r"][0] == f"{rec['scores']['mean_r'] - 0.623:+.3f}"
    # Synthetic data is never compared with the report; nx414 has no ceilings.
    demo_rows = table_cells(index, "table-demo-val")
    assert "delta_mean_ev" not in demo_rows[0] and "report_mean_r" not in demo_rows[0]
    assert "normalized_r" not in table_cells(index, "table-nx414-val")[0]
    assert "normalized_r" in table_cells(index, "table-majajhong2015-val")[0]


def test_synthetic_banner_only_on_demo(index) -> None:
    sections = {s.get("data-benchmark"): s for s in index.iter("section") if s.get("data-benchmark")}
    assert list(sections) == ["majajhong2015", "nx414", "demo"]  # real data first
    banner = "SYNTHETIC demo benchmark — not real neural data"
    assert banner in text(sections["demo"])
    assert all(banner not in text(sections[b]) for b in ("nx414", "majajhong2015"))


def test_skipped_records_are_reported_not_fatal(rendered, index) -> None:
    _out, report = rendered
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {"demo/broken.json", "nx414/wrong_schema.json"}
    assert "not valid JSON" in skipped["demo/broken.json"]
    assert "itbench.record/0" in skipped["nx414/wrong_schema.json"]
    note = index.find(".//section[@id='skipped-records']")
    assert "demo/broken.json" in text(note) and "nx414/wrong_schema.json" in text(note)
    assert "demo/broken.json" in str(report)  # what the CLI prints
    assert report.n_submissions == 13 and report.n_sweeps == 2


def test_no_external_urls_and_unique_ids(rendered) -> None:
    out, _ = rendered
    for page in [out / "index.html", *sorted((out / "submissions").glob("*/*.html"))]:
        doc = parse_strict(page)
        ids = []
        for el in doc.iter():
            if not isinstance(el.tag, str):
                continue
            for attr, value in el.attrib.items():
                if attr in ("src", "href") or attr.endswith("}href") or attr == "xlink:href":
                    assert not re.match(r"(?i)^\s*(https?:)?//", value), (page, value)
                if attr == "id":
                    ids.append(value)
            assert el.tag not in ("link", "iframe", "img"), (page, el.tag)
            if el.tag == "script":
                assert "src" not in el.attrib
        assert len(ids) == len(set(ids)), f"duplicate ids in {page.name}"
        # every relative link points to a file that was written
        for el in doc.iter("a"):
            href = el.get("href", "")
            if href and not href.startswith("#"):
                assert (page.parent / href.split("#")[0]).resolve().is_file(), (page, href)


def test_detail_page_has_figure_and_provenance(rendered) -> None:
    out, _ = rendered
    rec = fixture_records("majajhong2015")["resnet50_layer3_ridge"]
    doc = parse_strict(out / "submissions" / "majajhong2015" / "resnet50_layer3_ridge.html")
    svg = doc.find(".//figure/{http://www.w3.org/2000/svg}svg")
    assert svg is not None
    prov = {
        text(tr.find("th")): text(tr.find("td"))
        for tr in doc.find(".//table[@class='kv provenance']").iter("tr")
    }
    assert prov["wall_time_s"] == str(rec["provenance"]["wall_time_s"])
    assert prov["packages.torch"] == rec["provenance"]["packages"]["torch"]
    assert prov["record"] == "majajhong2015/resnet50_layer3_ridge.json"
    scores = {
        td.get("data-col"): td.get("data-value")
        for td in doc.find(".//table[@class='kv scores']").iter("td")
        if td.get("data-col")
    }
    assert float(scores["median_ev"]) == rec["scores"]["median_ev"]
    # failed records get a page with the error, no figure
    failed = parse_strict(out / "submissions" / "demo" / "shallow_cnn.html")
    assert "expected (58, 168)" in text(failed.find(".//pre"))
    assert failed.find(".//figure") is None


def test_sweep_figure_has_both_weights(rendered, index) -> None:
    out, _ = rendered
    fig = index.find(".//figure[@id='fig-demo-sweep-resnet50-val']")
    assert fig is not None
    assert "pretrained, random" in text(fig.find("figcaption"))
    svg_file = (out / "figures" / "demo" / "sweep-resnet50.svg").read_text()
    assert svg_file.startswith("<?xml") and "pretrained" in svg_file and "random" in svg_file
    assert index.find(".//section[@id='bench-nx414']//figure") is None  # no sweep there


# --- machine outputs and Markdown ----------------------------------------------------


def test_results_json_and_csv_match_records(rendered) -> None:
    out, _ = rendered
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 13
    by_key = {(r["benchmark"], r["split"], r["submission_id"]): r for r in rows}
    for bench in ("demo", "nx414", "majajhong2015"):
        for split in ("val", "test"):
            for sub_id, rec in fixture_records(bench, split).items():
                row = by_key[(bench, split, sub_id)]
                assert row["status"] == rec["status"]
                for key in ("mean_ev", "median_ev", "mean_r", "median_r", "normalized_r"):
                    expected = (rec["scores"] or {}).get(key)
                    assert row[key] == expected
    with (out / "results.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [r["submission_id"] for r in csv_rows] == [r["submission_id"] for r in rows]
    for c, j in zip(csv_rows, rows, strict=False):
        assert c["mean_r"] == ("" if j["mean_r"] is None else repr(j["mean_r"]))


def test_readme_tables(rendered) -> None:
    out, _ = rendered
    md = (out / "README.md").read_text()
    # every table row has as many cells as its header
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        lines = block.strip("\n").split("\n")
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
        assert len(widths) == 1, lines
    rec = fixture_records("nx414")["resnet50_layer3"]
    line = next(ln for ln in md.splitlines() if "`resnet50_layer3`" in ln and "0.398" in ln)
    ev = rec["scores"]["mean_ev"]
    assert f"| {ev:.3f} [" in line and f"| {ev - 0.398:+.3f} |" in line
    assert "SYNTHETIC demo benchmark — not real neural data" in md
    assert "Constant predictor &lt;baseline&gt;" in md  # user text cannot inject HTML
    for target in re.findall(r"\]\((figures/[^)]+\.svg)\)", md):
        assert (out / target).is_file(), target


# --- determinism, staleness, speed ---------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_is_byte_identical(rendered, tmp_path: Path) -> None:
    out, _ = rendered
    again = tmp_path / "again"
    render(FIXTURES, again, None, TABLE1)
    first, second = _tree(out), _tree(again)
    assert list(first) == list(second)
    assert [k for k in first if first[k] != second[k]] == []
    render(FIXTURES, again, None, TABLE1)  # re-render in place: still identical
    assert _tree(again) == second


def test_figure_does_not_depend_on_previous_draws() -> None:
    from itbench.page.figures import SubmissionFigures

    a = json.loads((FIXTURES / "demo" / "resnet50_best.json").read_text())
    b = json.loads((FIXTURES / "majajhong2015" / "random_resnet50.json").read_text())

    def draw(drawer, rec):
        pn = rec["per_neuroid"]
        return drawer.draw(pn["r"], pn["ev"], pn["ceiling"], rec["examples"])

    fresh = draw(SubmissionFigures(), a)
    reused = SubmissionFigures()
    draw(reused, b)
    assert draw(reused, a) == fresh


def test_stale_outputs_removed_and_records_untouched(tmp_path: Path) -> None:
    out = tmp_path / "leaderboard"
    results = out / "results"
    shutil.copytree(FIXTURES, results)
    before = _tree(results)
    render(results, out, None, TABLE1)
    assert (out / "submissions" / "demo" / "pixels_ridge.html").is_file()
    (results / "demo" / "pixels_ridge.json").unlink()
    render(results, out, None, TABLE1)
    assert not (out / "submissions" / "demo" / "pixels_ridge.html").exists()
    assert not (out / "figures" / "demo" / "pixels_ridge.svg").exists()
    del before["demo/pixels_ridge.json"]
    assert _tree(results) == before  # records are never written by the renderer


def test_benchmark_filter_and_empty_benchmark(tmp_path: Path) -> None:
    report = render(FIXTURES, tmp_path / "o", ["nx414", "nosuch"], TABLE1)
    assert report.benchmarks == ["nosuch", "nx414"] or report.benchmarks == ["nx414", "nosuch"]
    doc = parse_strict(tmp_path / "o" / "index.html")
    assert doc.find(".//section[@id='bench-demo']") is None
    assert "No result records" in text(doc.find(".//section[@id='bench-nosuch']"))


def test_twenty_records_render_fast_without_torch(tmp_path: Path) -> None:
    root = tmp_path / "results"
    recs = {}
    for i in range(17):
        bench = "nx414" if i % 3 == 0 else "demo"
        recs[f"{bench}/sub{i:02d}.json"] = gen.submission_record(
            bench,
            f"sub{i:02d}",
            f"Submission {i}",
            1 + i % 12,
            seed=100 + i,
            quality=0.2 + 0.02 * i,
            ceilings=bench == "demo",
        )
    recs["demo/fail.json"] = gen.submission_record("demo", "fail", "Fails", None, "failed", error="boom")
    recs["demo/sweeps/resnet50-pretrained.json"] = gen.sweep_record("demo", "resnet50", "pretrained")
    recs["demo/sweeps/resnet50-random.json"] = gen.sweep_record("demo", "resnet50", "random")
    gen.write_records(root, recs)
    script = (
        "import sys, time; t = time.perf_counter(); "
        "from itbench.page.leaderboard import render; "
        f"r = render({str(root)!r}, {str(tmp_path / 'out')!r}, None, {str(TABLE1)!r}); "
        "print(round(time.perf_counter() - t, 3), r.n_submissions, r.n_sweeps, "
        "'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    ).stdout.split()
    wall = time.perf_counter() - start
    print(f"\n20 records: import+render {out[0]} s, process wall {wall:.2f} s (target < 2 s)")
    assert out[1:] == ["18", "2", "False"]  # rendered everything, never imported torch


# --- validation and errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(schema="itbench.record/2"), "schema"),
        (lambda r: r.update(status="done"), "status"),
        (lambda r: r["submission"].update(id="../../etc"), "submission.id"),
        (lambda r: r["submission"].update(table1_row="5"), "table1_row"),
        (lambda r: r["scores"].update(mean_r="0.5"), "scores.mean_r"),
        (lambda r: r["scores"]["ci"].update(mean_r=[0.1]), "scores.ci.mean_r"),
        (lambda r: r["per_neuroid"]["r"].pop(), "differ in length"),
        (lambda r: r["examples"]["measured"][0].pop(), "examples.measured"),
        (lambda r: r.update(benchmark="demo"), "benchmark"),
    ],
)
def test_invalid_records_are_rejected_with_reason(mutate, message) -> None:
    rec = gen.submission_record("demo", "x", "X", None, seed=1)
    parse_submission(json.loads(json.dumps(rec)), "demo/x.json")  # valid as generated
    mutate(rec)
    with pytest.raises(InvalidRecord, match=re.escape(message)):
        parse_submission(rec, "demo/x.json")


def test_nan_tokens_are_accepted_and_image_major_examples_are_not() -> None:
    rec = gen.submission_record("demo", "x", "X", None, seed=1)
    text_ = json.dumps(rec).replace('"mean_r": ' + json.dumps(rec["scores"]["mean_r"]), '"mean_r": NaN')
    parsed = parse_submission(json.loads(text_), "demo/x.json")
    assert math.isnan(parsed.scores["mean_r"])
    assert len(parsed.examples["measured"]) == len(rec["examples"]["neuroid_id"])
    # the scorer writes examples neuroid-major; a transposed block is not silently "fixed"
    rec["examples"]["measured"] = [list(col) for col in zip(*rec["examples"]["measured"], strict=True)]
    with pytest.raises(InvalidRecord, match="examples"):
        parse_submission(rec, "demo/x.json")


def test_misplaced_and_duplicate_records_are_skipped(tmp_path: Path) -> None:
    rec = gen.submission_record("demo", "a", "A", None, seed=1)
    gen.write_records(tmp_path, {"nx414/a.json": rec, "demo/a.json": rec, "demo/b.json": rec})
    benches, skipped = load_results(tmp_path)
    reasons = {s.path: s.reason for s in skipped}
    assert "benchmark 'demo'" in reasons["nx414/a.json"]
    assert "duplicate" in reasons["demo/b.json"]
    assert [s.sub_id for b in benches for s in b.submissions] == ["a"]


def test_missing_inputs_raise_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no result records folder") as err:
        render(tmp_path / "nope", tmp_path / "out", None, TABLE1)
    assert err.value.hint
    bad = tmp_path / "table1.csv"
    bad.write_text("row,model\n1,OLS\n")
    (tmp_path / "results").mkdir()
    with pytest.raises(DataError, match="mean_corr"):
        render(tmp_path / "results", tmp_path / "out", None, bad)
    with pytest.raises(DataError, match="not a benchmark id"):
        render(tmp_path / "results", tmp_path / "out", ["../x"], TABLE1)


# --- Table I section, which differences are real, no machine details ---------------------


def table1_rows(doc) -> list[dict[str, tuple[str, object]]]:
    table = doc.find(".//section[@id='table1']//table[@id='table1-compare']")
    assert table is not None
    return [
        {td.get("data-col"): (text(td), td) for td in tr.findall("td")} | {"_row": tr.get("data-row")}
        for tr in table.find("tbody").findall("tr")
    ]


def test_table1_section_lists_the_report_and_the_reproductions(index) -> None:
    ref = table1()
    rows = table1_rows(index)
    assert [int(r["_row"]) for r in rows] == list(range(1, 13))
    for r in rows:
        t1 = ref[int(r["_row"])]
        assert float(r["report_mean_ev"][1].get("data-value")) == t1["ev"]
        assert r["report_mean_r"][0] == f3(t1["r"])
    by_row = {int(r["_row"]): r for r in rows}
    # nx414 row 5 is reproduced: value, CI, Δ and whether the report's value is inside the CI
    rec = fixture_records("nx414")["resnet50_layer3"]
    cell_text, cell = by_row[5]["nx414-mean_r"]
    lo, hi = rec["scores"]["ci"]["mean_r"]
    assert cell_text.startswith(f"{rec['scores']['mean_r']:.3f} [{lo:.2f}, {hi:.2f}]")
    assert f"Δ {rec['scores']['mean_r'] - 0.623:+.3f}" in cell_text
    inside = lo <= 0.623 <= hi
    assert cell.get("data-in-ci") == str(inside).lower()
    assert ("✓ in CI" if inside else "✗ outside") in cell_text
    ev_lo, ev_hi = rec["scores"]["ci"]["mean_ev"]
    assert by_row[5]["nx414-mean_ev"][1].get("data-in-ci") == str(ev_lo <= 0.398 <= ev_hi).lower()
    # the synthetic demo is shown but never compared
    demo_text, demo_cell = by_row[12]["demo-mean_r"]
    assert demo_text.startswith(f"{fixture_records('demo')['resnet50_best']['scores']['mean_r']:.3f}")
    assert "Δ" not in demo_text and demo_cell.get("data-in-ci") is None
    demo_head = index.find(".//table[@id='table1-compare']//th[@data-benchmark='demo']")
    assert "synthetic" in text(demo_head)
    # rows without a record say why in one line and how to get one
    missing_text, missing = by_row[3]["nx414-why"]
    assert missing.get("data-status") == "missing"
    assert missing_text == "no record yet itbench score submissions/pixels_pca_ols -b nx414"
    skipped_text, skipped = by_row[9]["demo-why"]
    assert skipped.get("data-status") == "skipped" and skipped_text.startswith("skipped: convnext_base")
    assert "not cached at ~/…/models-" in skipped_text and "alice" not in skipped_text
    assert skipped.get("title") == sanitize(fixture_records("demo")["convnext_linear"]["error"])
    assert "itbench score submissions/convnext_base_linear -b demo" in skipped_text


def test_readme_has_table1(rendered) -> None:
    md = (rendered[0] / "README.md").read_text()
    section = md.split("## Table I of the report, reproduced", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if re.match(r"\| \d+ \|", ln)]
    assert [int(ln.split("|")[1]) for ln in lines] == list(range(1, 13))
    ref = table1()
    for ln in lines:
        cells = [c.strip() for c in ln.split("|")[1:-1]]
        t1 = ref[int(cells[0])]
        assert cells[2:4] == [f3(t1["ev"]), f3(t1["r"])]
    rec = fixture_records("nx414")["resnet50_best"]
    assert f"Δ {rec['scores']['mean_r'] - 0.678:+.3f}" in lines[11]
    assert "`itbench score submissions/pixels_pca_ols -b nx414`" in lines[2]


def test_results_json_has_paired_comparisons(rendered) -> None:
    rows = json.loads((rendered[0] / "results.json").read_text())
    recs = fixture_records("demo")
    demo = [r for r in rows if r["benchmark"] == "demo" and r["split"] == "val" and r["rank"] is not None]
    labels = expected_rank_texts(recs)
    assert {r["submission_id"]: r["rank_group"] for r in demo} == labels
    for a, b in itertools.pairwise(demo):
        ra, rb = recs[a["submission_id"]], recs[b["submission_id"]]
        diff = np.array(ra["bootstrap"]["mean_r"]) - np.array(rb["bootstrap"]["mean_r"])
        lo, hi = np.percentile(diff, [2.5, 97.5])
        assert a["next_submission_id"] == b["submission_id"]
        assert a["delta_next_mean_r"] == pytest.approx(ra["scores"]["mean_r"] - rb["scores"]["mean_r"])
        assert (a["delta_next_ci_low"], a["delta_next_ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert a["tied_with_next"] == bool(lo <= RESOLUTION and hi >= -RESOLUTION)
    best = next(r for r in demo if r["submission_id"] == "resnet50_best")
    assert set(best["better_than"]) == {"resnet50_layer3", "resnet50_layer3_rerun", "pixels_ridge"}
    twin = next(r for r in demo if r["submission_id"] == "resnet50_layer3")
    assert twin["not_distinguishable_from"] == ["resnet50_layer3_rerun"]
    assert twin["worse_than"] == ["resnet50_best"] and twin["better_than"] == ["pixels_ridge"]
    # a record without the shared-resample bootstrap is "not compared", never tied or ranked apart
    mh = {r["submission_id"]: r for r in rows if r["benchmark"] == "majajhong2015"}
    assert mh["resnet50_layer3_ridge"]["not_compared_with"] == ["random_resnet50"]
    assert mh["resnet50_layer3_ridge"]["tied_with_next"] is None
    assert [mh[k]["rank_group"] for k in ("resnet50_layer3_ridge", "random_resnet50")] == ["1", "2"]
    assert "no paired bootstrap" in mh["resnet50_layer3_ridge"]["delta_next_note"]


def test_detail_page_lists_significant_differences(rendered) -> None:
    doc = parse_strict(rendered[0] / "submissions" / "demo" / "resnet50_layer3.html")
    rows = {td.get("data-col"): text(td) for td in doc.find(".//table[@class='kv comparisons']").iter("td")}
    assert rows["better_than"] == "Ridge from pixels (alpha=0.1)"
    assert rows["worse_than"] == "ResNet50 (layers 2-4 unfrozen + augmentation)"
    assert rows["not_distinguishable_from"] == "Pretrained ResNet50 layer3 + OLS (rerun)"
    assert "tied" in rows["delta_next"]


def test_no_absolute_paths_or_user_names_in_outputs(rendered) -> None:
    out, _ = rendered
    files = [p for p in sorted(out.rglob("*")) if p.suffix in (".html", ".md", ".json", ".csv")]
    assert any("/home/alice" in p.read_text() for p in FIXTURES.rglob("*.json"))  # the records have them
    for path in files:
        body = path.read_text()
        if path.suffix == ".html":
            body = re.sub(r"<svg.*?</svg>", "", body, flags=re.S)  # figure markup is not prose
        assert "alice" not in body, path
        assert not ABS_PATH.search(re.sub(r"https?://\S+", "", body)), (path, ABS_PATH.search(body))
    prov = parse_strict(out / "submissions" / "demo" / "pixels_ridge.html")
    table = prov.find(".//table[@class='kv provenance']")
    values = {text(tr.find("th")): text(tr.find("td")) for tr in table.iter("tr")}
    assert values["data_home"] == "~/.cache/itbench"


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("not cached at /root/.cache/torch/x.pth and", "not cached at ~/.cache/torch/x.pth and"),
        ("see /home/bob/data/IT_data.h5.", "see ~/data/IT_data.h5."),
        ("/Users/carol/x", "~/x"),
        ('File "/srv/app/itbench/model.py", line 3', 'File "<path>/model.py", line 3'),
        ("(path=/tmp/abc/def)", "(path=<path>/def)"),
        ("from https://download.pytorch.org/models/r.pth", "from https://download.pytorch.org/models/r.pth"),
        ("submissions/resnet50_best and n/a", "submissions/resnet50_best and n/a"),
    ],
)
def test_sanitize(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown


def test_figures_are_reused_only_when_drawn_from_the_same_numbers(tmp_path: Path) -> None:
    """An unchanged record re-renders without matplotlib; a changed one, or an edited file, is redrawn."""
    from itbench.page.svg import cached_figure

    calls: list[int] = []

    def draw() -> str:
        calls.append(1)
        return '<svg xmlns="http://www.w3.org/2000/svg"><g id="a"/></svg>\n'

    path = tmp_path / "f.svg"
    first = cached_figure(path, [1.0, 2.0], draw)
    path.write_text(first)
    assert cached_figure(path, [1.0, 2.0], draw) == first and len(calls) == 1  # reused
    assert cached_figure(path, [1.0, 2.5], draw) == first.replace(  # other numbers: drawn again
        first.splitlines()[-1], cached_figure(tmp_path / "none.svg", [1.0, 2.5], draw).splitlines()[-1]
    )
    assert len(calls) == 3
    path.write_text(first.replace('id="a"', 'id="b"').replace("</svg>", "</svg >"))  # edited by hand
    cached_figure(path, [1.0, 2.0], lambda: draw())
    path.write_text(first[: len(first) // 2])  # truncated
    assert cached_figure(path, [1.0, 2.0], draw) == first and len(calls) == 5


def test_rerender_with_cached_figures_is_byte_identical(tmp_path: Path) -> None:
    """The second render reuses every figure and writes exactly the bytes of the first."""
    results = tmp_path / "results"
    gen.write_records(results, gen.fixture_set())
    out = tmp_path / "out"
    render(results, out)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    render(results, out)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first
