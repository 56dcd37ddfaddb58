"""The leaderboard: a static page, a Markdown table and machine tables from records alone.

``render`` reads the result records under ``leaderboard/results/<benchmark>/``
(submissions, and layer sweeps under ``sweeps/``), never runs a model and never
imports torch, and writes into ``out_dir``:

- ``index.html``: self-contained (inline CSS, inline SVG figures, a small inline
  table sorter; no network requests, works from ``file://``);
- ``submissions/<benchmark>/<id>[.<split>].html``: per-submission detail pages;
- ``figures/<benchmark>/*.svg``: the same figures as files, for ``README.md``;
- ``README.md``: the tables in GitHub-flavoured Markdown;
- ``results.json`` / ``results.csv``: one flattened row per submission record.

Output is deterministic (sorted iteration, no timestamps but the records'
own dates, reproducible SVG), so re-rendering unchanged records changes no byte.
A record that cannot be read or does not follow the schema is skipped and
reported, never fatal: one bad file must not take the whole page down.

Ranking: within a benchmark and split, ``ok`` records by mean Pearson r
(Table I's "Mean Corr."), highest first, ties share a rank; records whose mean
r is undefined (NaN) follow unranked, then failed, then skipped ones. Which
differences are real: adjacent ranks are compared by a paired bootstrap over
the split's shared image resamples stored in each record
(:func:`compare_ranked`); neighbours that cannot be told apart share a rank
range ("2–3"), and every pair's verdict goes into ``results.json``.

Table I: a section lists the report's twelve rows beside each benchmark's
best val-split record per row (:func:`table1_view`); the report is compared
(reproduced minus report, inside the CI or not) only on real data
(non-synthetic benchmarks) and the val split, where the report's numbers live.

The page is public: reasons and provenance are shown through
:func:`sanitize` (no absolute local paths or user names); records keep the
full text.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itbench.errors import DataError
from itbench.harness.record import (
    InvalidRecord,
    Scores,
    SubmissionRecord,
    SweepRecord,
    parse_record,
    read_record,
)
from itbench.page.svg import cached_figure, inline_svg
from itbench.scoring import metrics
from itbench.version import __version__

if TYPE_CHECKING:
    import jinja2

SCORE_KEYS = (
    "mean_ev",
    "median_ev",
    "mean_r",
    "median_r",
    "ceiling",
    "normalized_r",
    "feve",
    "r_over_ceiling",
)
CI_KEYS = ("mean_ev", "median_ev", "mean_r", "median_r", "normalized_r", "feve", "r_over_ceiling")
COUNT_KEYS = ("n_neuroids", "n_images", "n_nan_r")
TEMPLATES = Path(__file__).resolve().parent / "templates"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # ids become file names: no dots, no slashes
#: Benchmark ids may hold inner dots (``majajhong2015.V4``): the registry's pattern.
_BENCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*")


def benchmark_info(benchmark_id: str) -> tuple[str, str]:
    """Title and description of a benchmark, from its manifest (the registry owns them)."""
    from itbench.data import registry
    from itbench.errors import ItbenchError

    try:
        spec = registry.get(benchmark_id)
    except ItbenchError:
        return benchmark_id, "A benchmark without a manifest in this itbench checkout."
    return spec.title, spec.description


SPLIT_NAMES = {"val": "validation split", "test": "test split", "train": "train split"}


# --- parsed records ------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedRecord:
    """A file under results_root that was not rendered, and why."""

    path: str  # relative to results_root
    reason: str


@dataclass(frozen=True)
class SubmissionResult:
    """One submission record, validated and normalised (NaN for missing numbers)."""

    rel: str
    benchmark: str
    synthetic: bool
    split: str
    sub_id: str
    name: str
    table1_row: int | None
    status: str
    reason: str
    created: str
    scores: dict[str, float]
    ci: dict[str, tuple[float, float]]
    counts: dict[str, int | None]
    per_neuroid: dict[str, list[float] | None] | None
    examples: dict[str, Any] | None
    provenance: dict[str, Any]
    record: SubmissionRecord

    @property
    def stem(self) -> str:
        """File stem shared by the record, its detail page and its figure."""
        return self.sub_id if self.split == "val" else f"{self.sub_id}.{self.split}"


@dataclass(frozen=True)
class SweepLayer:
    layer: str
    depth: float
    scores: dict[str, float]
    ci: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class SweepResult:
    """One layer-sweep record (one model x weights)."""

    rel: str
    benchmark: str
    synthetic: bool
    split: str
    model: str
    weights: str
    readout: str
    created: str
    layers: list[SweepLayer]
    layer_selection: Any = None  # the record's LayerSelection (chosen layer, on what data)


@dataclass
class RenderReport:
    """What ``render`` did: counts, files written, records skipped, time taken."""

    out_dir: Path
    benchmarks: list[str]
    n_submissions: int = 0
    n_sweeps: int = 0
    skipped: list[SkippedRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [
            f"leaderboard: {self.n_submissions} submission records and {self.n_sweeps} "
            f"sweeps over {len(self.benchmarks)} benchmark(s) "
            f"({', '.join(self.benchmarks) or 'none'}) -> {self.out_dir / 'index.html'} "
            f"in {self.seconds:.2f} s"
        ]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --- from typed records to the page's view ---------------------------------------------


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _scores(
    scores: Scores | None,
) -> tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, int | None]]:
    """Scores with NaN for undefined values, as the tables and figures want them."""
    scores = scores or Scores()
    values = {key: _nan(getattr(scores, key)) for key in SCORE_KEYS}
    ci = {}
    for key in CI_KEYS:
        pair = scores.ci.get(key) or (None, None)
        ci[key] = (_nan(pair[0]), _nan(pair[1]))
    counts = {key: getattr(scores, key) for key in COUNT_KEYS}
    return values, ci, counts


def submission_result(record: SubmissionRecord, rel: str) -> SubmissionResult:
    """The page's view of one submission record."""
    scores, ci, counts = _scores(record.scores)
    pn = record.per_neuroid
    per_neuroid = (
        None
        if pn is None
        else {
            "r": [_nan(v) for v in pn.r],
            "ev": [_nan(v) for v in pn.ev],
            "ceiling": None if pn.ceiling is None else [_nan(v) for v in pn.ceiling],
        }
    )
    ex = record.examples
    examples = (
        None
        if ex is None
        else {
            "neuroid_id": ex.neuroid_id,
            "stimulus_id": ex.stimulus_id,
            "measured": [[_nan(v) for v in row] for row in ex.measured],
            "predicted": [[_nan(v) for v in row] for row in ex.predicted],
        }
    )
    return SubmissionResult(
        rel=rel,
        benchmark=record.benchmark.id,
        synthetic=record.benchmark.synthetic,
        split=record.split,
        sub_id=record.submission.id,
        name=record.submission.name or record.submission.id,
        table1_row=record.submission.table1_row,
        status=record.status,
        reason=record.error or "",
        created=record.created,
        scores=scores,
        ci=ci,
        counts=counts,
        per_neuroid=per_neuroid,
        examples=examples,
        provenance=record.provenance.model_dump(mode="json", exclude_unset=True),
        record=record,
    )


def sweep_result(record: SweepRecord, rel: str) -> SweepResult:
    """The page's view of one layer-sweep record."""
    layers = []
    for layer in record.layers:
        scores, ci, _ = _scores(layer.scores)
        layers.append(SweepLayer(layer.layer, float(layer.depth), scores, ci))
    return SweepResult(
        rel=rel,
        benchmark=record.benchmark.id,
        synthetic=record.benchmark.synthetic,
        split=record.split,
        model=record.model,
        weights=record.weights,
        readout=record.readout,
        created=record.created,
        layers=layers,
        layer_selection=record.layer_selection,
    )


def parse_submission(data: Any, rel: str) -> SubmissionResult:
    """Validate parsed JSON as a submission record; raises ``InvalidRecord`` saying why."""
    record = parse_record(data)
    if not isinstance(record, SubmissionRecord):
        raise InvalidRecord("kind: expected a submission record")
    return submission_result(record, rel)


# --- loading -------------------------------------------------------------------------


@dataclass
class BenchmarkResults:
    """Everything found for one benchmark."""

    id: str
    submissions: list[SubmissionResult] = field(default_factory=list)
    sweeps: list[SweepResult] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return (
            self.id == "demo"
            or any(r.synthetic for r in self.submissions)
            or any(r.synthetic for r in self.sweeps)
        )


def _record_files(bench_dir: Path) -> list[Path]:
    """Record files: ``*.json`` beside and in ``sweeps/`` (``failures/`` and dotfiles skipped)."""
    files = list(bench_dir.glob("*.json")) + list(bench_dir.glob("sweeps/*.json"))
    return sorted(p for p in files if not p.name.startswith(".") and p.is_file())


def load_results(
    results_root: Path,
    benchmarks: Sequence[str] | None = None,
) -> tuple[list[BenchmarkResults], list[SkippedRecord]]:
    """Read and validate every record; invalid ones come back as ``SkippedRecord``."""
    results_root = Path(results_root)
    if not results_root.is_dir():
        raise DataError(
            f"no result records folder at {results_root}",
            "score a submission first (itbench score <folder>) or pass the "
            "folder that holds <benchmark>/<submission>.json records",
        )
    if benchmarks is None:
        ids = sorted(
            p.name
            for p in results_root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and _BENCH.fullmatch(p.name)
        )
    else:
        ids = sorted(set(benchmarks))
        bad = [b for b in ids if not _BENCH.fullmatch(b)]
        if bad:
            raise DataError(
                f"not a benchmark id: {', '.join(map(repr, bad))}",
                "benchmark ids are names such as demo, nx414, majajhong2015",
            )
    out: list[BenchmarkResults] = []
    skipped: list[SkippedRecord] = []
    for bid in ids:
        bench = BenchmarkResults(bid)
        seen: set[tuple[str, ...]] = set()
        for path in _record_files(results_root / bid):
            rel = path.relative_to(results_root).as_posix()
            try:
                item = _load_one(path, rel)
            except InvalidRecord as err:
                skipped.append(SkippedRecord(rel, str(err)))
                continue
            if item.benchmark != bid:
                skipped.append(
                    SkippedRecord(rel, f"record is for benchmark {item.benchmark!r} but lies under {bid}/")
                )
                continue
            key = (
                (item.split, "submission", item.sub_id)
                if isinstance(item, SubmissionResult)
                else (item.split, "sweep", item.model, item.weights)
            )
            if key in seen:
                skipped.append(SkippedRecord(rel, f"duplicate of an earlier record ({' / '.join(key)})"))
                continue
            seen.add(key)
            if isinstance(item, SubmissionResult):
                bench.submissions.append(item)
            else:
                bench.sweeps.append(item)
        out.append(bench)
    out.sort(key=lambda b: (b.synthetic, b.id))  # real data first, demo last
    return out, skipped


def _load_one(path: Path, rel: str) -> SubmissionResult | SweepResult:
    record = read_record(path)
    if isinstance(record, SweepRecord):
        return sweep_result(record, rel)
    return submission_result(record, rel)


# --- Table I -------------------------------------------------------------------------


@dataclass(frozen=True)
class Table1Row:
    row: int
    section: str
    model: str
    mean_ev: float
    mean_r: float
    submission: str | None = None  # the submission folder that reproduces it (optional column)


def load_table1(path: Path) -> dict[int, Table1Row]:
    """The report's Table I (row, section, model, mean_ev, mean_corr[, submission]) by row number."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(
            f"cannot read Table I numbers from {path}: {err.strerror}",
            "pass the benchmark/table1.csv of the itbench checkout",
        ) from None
    rows: dict[int, Table1Row] = {}
    reader = csv.DictReader(io.StringIO(text))
    missing = {"row", "section", "model", "mean_ev", "mean_corr"} - set(reader.fieldnames or ())
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(sorted(missing))}",
            "expected header: row,section,model,mean_ev,mean_corr",
        )
    for line in reader:
        try:
            sub = (line.get("submission") or "").strip()
            row = Table1Row(
                int(line["row"]),
                line["section"],
                line["model"],
                float(line["mean_ev"]),
                float(line["mean_corr"]),
                sub if _NAME.fullmatch(sub) else None,
            )
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: bad Table I line {dict(line)}",
                "row must be an integer, mean_ev and mean_corr numbers",
            ) from None
        rows[row.row] = row
    return rows


# --- table rows ----------------------------------------------------------------------


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _rank(subs: list[SubmissionResult]) -> list[tuple[int | None, SubmissionResult]]:
    """Leaderboard order and competition ranks (1, 2, 2, 4) by mean r."""

    def key(s: SubmissionResult) -> tuple:
        scored = s.status == "ok" and _finite(s.scores["mean_r"])
        group = (0 if scored else 2) if s.status == "ok" else ("ok", "failed", "skipped").index(s.status) + 2
        if scored and not sandboxed(s):
            group = 1  # unsandboxed runs never rank above a sandboxed one
        return (group, -s.scores["mean_r"] if scored else 0.0, s.sub_id)

    ordered = sorted(subs, key=key)
    out: list[tuple[int | None, SubmissionResult]] = []
    rank, prev = 0, None
    for i, sub in enumerate(ordered, start=1):
        if sub.status == "ok" and _finite(sub.scores["mean_r"]):
            mark = (sandboxed(sub), sub.scores["mean_r"])
            if mark != prev:
                rank, prev = i, mark
            out.append((rank, sub))
        else:
            out.append((None, sub))
    return out


def sandboxed(sub: SubmissionResult) -> bool:
    """False only for a record that says it ran unsandboxed (``--unsandboxed``)."""
    return sub.provenance.get("sandboxed") is not False


def test_evaluations(sub: SubmissionResult) -> int | None:
    """How many times this submission has been scored on the test split (test records only)."""
    value = sub.record.test_evaluations  # validated by the record schema (an int >= 0 or None)
    return value if sub.split == "test" else None


def brainscore_plugin(sub: SubmissionResult) -> dict[str, str | None]:
    """A Brain-Score plugin submission's identifier and package version (the locked one when the record has it).

    Why the lock first: ``[brainscore] version`` is what the folder asked for;
    the environment's lock is what the run imported.
    """
    ref = sub.record.submission.brainscore
    if ref is None:
        return {"brainscore_model_id": None, "brainscore_package": None, "brainscore_version": None}
    env = sub.record.provenance.environment
    prefix = f"{ref.package.lower().replace('_', '-')}=="
    locked = [p.split("==", 1)[1] for p in (env.packages if env else []) if p.lower().startswith(prefix)]
    return {
        "brainscore_model_id": ref.model_id,
        "brainscore_package": ref.package,
        "brainscore_version": locked[0] if locked else ref.version,
    }


def compares_table1(sub: SubmissionResult) -> bool:
    """Table I is on real data, val split: compare only there."""
    return not sub.synthetic and sub.split == "val" and sub.table1_row is not None


def _no_comparison() -> dict[str, Any]:
    """The comparison fields of a row that is not ranked (fresh lists every time)."""
    return {
        "rank_group": None,
        "rank_low": None,
        "rank_high": None,
        "next_submission_id": None,
        "delta_next_mean_r": None,
        "delta_next_ci_low": None,
        "delta_next_ci_high": None,
        "tied_with_next": None,
        "delta_next_note": None,
        "better_than": [],
        "worse_than": [],
        "not_distinguishable_from": [],
        "not_compared_with": [],
    }


def flat_row(
    rank: int | None,
    sub: SubmissionResult,
    table1: Mapping[int, Table1Row],
    comparison: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One machine-readable row (also what the templates render from).

    ``comparison`` is this submission's entry of :func:`compare_ranked` (tie
    group, paired difference to the next rank, who it beats or trails).
    """
    row: dict[str, Any] = {
        "benchmark": sub.benchmark,
        "synthetic": sub.synthetic,
        "split": sub.split,
        "rank": rank,
        "submission_id": sub.sub_id,
        "submission_name": sub.name,
        "table1_row": sub.table1_row,
        "status": sub.status,
        "reason": sanitize(sub.reason) or None,
        "created": sub.created or None,
        "sandboxed": sandboxed(sub),
        "test_evaluations": test_evaluations(sub),
        **brainscore_plugin(sub),
    }
    for key in SCORE_KEYS:
        row[key] = sub.scores[key]
        if key in CI_KEYS:
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = sub.ci[key]
        if key in metrics.DEFINITIONS:  # itbench's ceiled scores say what they are (issue 19)
            row[f"{key}_formula"] = metrics.DEFINITIONS[key]["formula"]
    row.update(sub.counts)
    ref = table1.get(sub.table1_row) if compares_table1(sub) else None  # type: ignore[arg-type]
    row["report_mean_ev"] = ref.mean_ev if ref else None
    row["report_mean_r"] = ref.mean_r if ref else None
    row["delta_mean_ev"] = sub.scores["mean_ev"] - ref.mean_ev if ref else None
    row["delta_mean_r"] = sub.scores["mean_r"] - ref.mean_r if ref else None
    row.update(_no_comparison() if comparison is None else comparison)
    row["paired_n_boot"] = sub.record.bootstrap.n_boot if sub.record.bootstrap else None
    row["code_hash"] = sub.record.submission.code_hash
    row["data_checksum"] = sub.record.benchmark.data_checksum
    row["split_hash"] = sub.record.benchmark.split_hash
    row["record"] = sub.rel
    row["detail"] = f"submissions/{sub.benchmark}/{sub.stem}.html"
    row["figure"] = (
        f"figures/{sub.benchmark}/{sub.stem}.svg" if sub.status == "ok" and sub.per_neuroid else None
    )
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


# --- formatting (also registered as template filters) ------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """A score for people: fixed decimals; missing/NaN as 'n/a'."""
    if not _finite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    return "0." + "0" * digits if text == "-0." + "0" * digits else text


def fmt_delta(value: Any) -> str:
    return "n/a" if not _finite(value) else ("+" if value >= 0 else "-") + fmt(abs(value))


def fmt_ci(low: Any, high: Any) -> str:
    return "" if not (_finite(low) and _finite(high)) else f"[{fmt(low, 2)}, {fmt(high, 2)}]"


def data_value(value: Any) -> str:
    """Exact sort key for the page's sorter; empty means missing (sorts last)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


_MD_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "|": "\\|",
        "*": "\\*",
        "_": "\\_",
        "`": "\\`",
        "[": "\\[",
        "]": "\\]",
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
        "\n": " ",
        "\r": " ",
    }
)


def md_cell(text: Any) -> str:
    """User text in Markdown: literal (no emphasis, links or HTML), one line, pipe-safe."""
    return str(text).translate(_MD_ESCAPES).strip()


def first_line(text: str, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def day(created: str) -> str:
    return created[:10] if created else ""


# --- no machine details on the page ------------------------------------------------

# An absolute POSIX path: starts a word (not inside a URL or a relative path).
_ABS_PATH = re.compile(r"(?<![^\s'\"(\[=,:])/(?:[^\s/'\"()<>\[\],;:]+/)*[^\s/'\"()<>\[\],;:]*")
_HOME = re.compile(r"^/(?:home|Users)/[^/]+|^/root(?=/|$)")


def _short_path(match: re.Match[str]) -> str:
    path = match.group(0)
    if path == "/":
        return path
    home = _HOME.match(path)
    if home:
        return "~" + path[home.end() :]
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return f"<path>/{name}" if name else "<path>"


def sanitize(text: Any) -> str:
    """Text for the page with machine details removed: home paths as ``~/...``, others as ``<path>/name``.

    Reasons and provenance are written by the machine that ran a submission;
    the page is public, so local paths and user names stay in the record only.
    URLs (``https://host/a/b``) and relative paths are left alone.
    """
    return _ABS_PATH.sub(_short_path, str(text)) if text is not None else ""


_LONG_PATH = re.compile(r"(~|<path>)((?:/[^\s/'\"()<>\[\],;:]+)+)/([^\s/'\"()<>\[\],;:]+)")


def short_reason(text: str, limit: int = 110) -> str:
    """The first line of a reason, sanitised, paths cut to their file name, to fit a table cell.

    ``not cached at ~/.cache/torch/hub/checkpoints/resnet50.pth`` becomes
    ``not cached at ~/…/resnet50.pth``: the useful part of a path in one line
    is the file it names; the hover text and the record keep the rest.
    """
    line = first_line(sanitize(text), 10_000)
    return first_line(_LONG_PATH.sub(lambda m: f"{m.group(1)}/…/{m.group(3)}", line), limit)


# --- which differences are real --------------------------------------------------------


def _samples(sub: SubmissionResult) -> tuple[str, list[float | None]] | None:
    """(key, per-resample mean r) when the record carries the shared-resample bootstrap."""
    boot = sub.record.bootstrap
    if boot is None or sub.status != "ok" or not _finite(sub.scores["mean_r"]):
        return None
    return f"{boot.key}/{boot.n_boot}", list(boot.mean_r)


def _comparison(a: SubmissionResult, b: SubmissionResult) -> tuple[metrics.PairedDifference | None, str]:
    """Paired bootstrap of mean r, a - b; None with the reason when it cannot be computed."""
    sa, sb = _samples(a), _samples(b)
    if sa is None or sb is None:
        missing = ", ".join(s.sub_id for s, x in ((a, sa), (b, sb)) if x is None)
        return None, f"no paired bootstrap in the record of {missing} (re-score to add it)"
    if sa[0] != sb[0]:
        return None, "scored on different image resamples (different split or n_boot): not paired"
    return metrics.paired_difference(sa[1], sb[1], a.scores["mean_r"], b.scores["mean_r"]), ""


def compare_ranked(ranked: list[tuple[int | None, SubmissionResult]]) -> dict[str, dict[str, Any]]:
    """Per submission id: tie group, difference to the next rank, and who it beats or trails.

    Adjacent ranks are compared by a paired bootstrap of the difference in mean
    r over the split's shared image resamples; a 95% CI that covers 0 means the
    two are not told apart. Runs of such neighbours form a tie group shown as
    "first–last". A pair without paired data (an older record, another
    resample set) is reported as not compared and does not join a group.
    Every other pair is compared the same way for the per-submission lists.
    """
    scored = [sub for rank, sub in ranked if rank is not None]
    out: dict[str, dict[str, Any]] = {}
    adjacent: list[metrics.PairedDifference | None] = []
    notes: list[str] = []
    for a, b in itertools.pairwise(scored):
        diff, note = _comparison(a, b)
        adjacent.append(diff)
        notes.append(note)
    # no paired data is "not tested", not "tied": such neighbours keep their own ranks
    groups = metrics.rank_groups([d is not None and d.tied for d in adjacent]) if scored else []
    for i, sub in enumerate(scored):
        first, last = groups[i]
        nxt = adjacent[i] if i < len(adjacent) else None
        info: dict[str, Any] = {
            "rank_group": f"{first}–{last}" if last > first else str(first),
            "rank_low": first,
            "rank_high": last,
            "next_submission_id": scored[i + 1].sub_id if i + 1 < len(scored) else None,
            "delta_next_mean_r": nxt.delta if nxt else None,
            "delta_next_ci_low": nxt.low if nxt else None,
            "delta_next_ci_high": nxt.high if nxt else None,
            "tied_with_next": (nxt.tied if nxt else None) if i + 1 < len(scored) else None,
            "delta_next_note": (notes[i] or None) if i < len(notes) else None,
            "better_than": [],
            "worse_than": [],
            "not_distinguishable_from": [],
            "not_compared_with": [],
        }
        out[sub.sub_id] = info
    for i, a in enumerate(scored):
        for b in scored[i + 1 :]:
            diff, _ = _comparison(a, b)
            if diff is None:
                out[a.sub_id]["not_compared_with"].append(b.sub_id)
                out[b.sub_id]["not_compared_with"].append(a.sub_id)
            elif diff.sign > 0:
                out[a.sub_id]["better_than"].append(b.sub_id)
                out[b.sub_id]["worse_than"].append(a.sub_id)
            elif diff.sign < 0:
                out[a.sub_id]["worse_than"].append(b.sub_id)
                out[b.sub_id]["better_than"].append(a.sub_id)
            else:
                out[a.sub_id]["not_distinguishable_from"].append(b.sub_id)
                out[b.sub_id]["not_distinguishable_from"].append(a.sub_id)
    return out


# --- Table I beside the reproductions ------------------------------------------------


@dataclass
class _T1Cell:
    """One Table I row on one benchmark: the reproduction, or why there is none."""

    row: dict[str, Any] | None  # the flat row of the record, when there is an ok one
    status: str  # ok / failed / skipped / missing
    why: str  # one short line when not ok
    how: str  # the command that would produce one
    detail: str = ""  # the whole reason, sanitised (shown on hover)
    ev_in_ci: bool | None = None
    r_in_ci: bool | None = None


@dataclass
class _T1Bench:
    id: str
    title: str
    synthetic: bool
    cells: dict[int, _T1Cell]


def _in_ci(value: float, low: Any, high: Any) -> bool | None:
    return bool(low <= value <= high) if _finite(low) and _finite(high) else None


def table1_view(
    table1: Mapping[int, Table1Row], benches: Sequence[tuple[str, str, bool, list[dict[str, Any]]]]
) -> list[_T1Bench]:
    """Table I beside each benchmark's val-split reproductions (best ok record per row)."""
    out = []
    for bid, title, synthetic, rows in benches:
        cells: dict[int, _T1Cell] = {}
        for n, ref in sorted(table1.items()):
            folder = ref.submission or "<id>"
            how = f"itbench score submissions/{folder} -b {bid}"
            mine = [r for r in rows if r["split"] == "val" and r["table1_row"] == n]
            ok = [r for r in mine if r["status"] == "ok" and r["mean_r"] is not None]
            if ok:
                best = max(ok, key=lambda r: r["mean_r"])
                cell = _T1Cell(best, "ok", "", how)
                if not synthetic:
                    cell.ev_in_ci = _in_ci(ref.mean_ev, best["mean_ev_ci_low"], best["mean_ev_ci_high"])
                    cell.r_in_ci = _in_ci(ref.mean_r, best["mean_r_ci_low"], best["mean_r_ci_high"])
            elif mine:
                first = mine[0]
                why = short_reason(first["reason"] or "", 90) or "no scores in the record"
                cell = _T1Cell(None, first["status"], f"{first['status']}: {why}", how, first["reason"] or "")
            else:
                cell = _T1Cell(None, "missing", "no record yet", how)
            cells[n] = cell
        out.append(_T1Bench(bid, title, synthetic, cells))
    return out


# --- rendering -----------------------------------------------------------------------


def _atomic_write(path: Path, data: str) -> None:
    """Readers (a browser, a web server) see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        fmt=fmt,
        fmt_delta=fmt_delta,
        fmt_ci=fmt_ci,
        dv=data_value,
        md=md_cell,
        first_line=first_line,
        day=day,
        sanitize=sanitize,
        short_reason=short_reason,
    )
    env.globals.update(version=__version__, split_names=SPLIT_NAMES)
    return env


@dataclass
class _Table:
    split: str
    rows: list[dict[str, Any]]
    compare: bool  # show the Table I columns
    ceilings: bool  # show the ceiling-normalised column (only data with trials has it)


@dataclass
class _SweepFigure:
    model: str
    split: str
    weights: list[str]
    readout: str
    svg_file: str
    svg: str
    inline: str
    sweeps: list[SweepResult]


@dataclass
class _BenchView:
    id: str
    title: str
    description: str
    synthetic: bool
    tables: list[_Table]
    sweeps: list[_SweepFigure]
    table1_missing: list[Table1Row]


@functools.lru_cache(maxsize=1)
def _drawer() -> Any:
    from itbench.page import figures  # matplotlib: imported only when a figure must be drawn

    return figures.SubmissionFigures()


def _draw(r: list[float], ev: list[float], ceiling: list[float] | None, examples: Any) -> str:
    """A submission's per-neuroid figure, drawn fresh (``cached_figure`` calls it on a miss)."""
    svg: str = _drawer().draw(r, ev, ceiling, examples)
    return svg


def _sweep_figures(bench: BenchmarkResults, out_dir: Path) -> list[_SweepFigure]:
    groups: dict[tuple[str, str], list[SweepResult]] = {}
    for sw in bench.sweeps:
        groups.setdefault((sw.model, sw.split), []).append(sw)
    out = []
    for (model, split), sweeps in sorted(groups.items(), key=lambda kv: (kv[0][1] != "val", kv[0])):
        sweeps.sort(key=lambda s: (s.weights != "pretrained", s.weights))
        lines = [
            {
                "weights": s.weights,
                "layers": [layer.layer for layer in s.layers],
                "depth": [layer.depth for layer in s.layers],
                "mean_ev": [layer.scores["mean_ev"] for layer in s.layers],
                "ev_ci": [layer.ci["mean_ev"] for layer in s.layers],
                "mean_r": [layer.scores["mean_r"] for layer in s.layers],
                "r_ci": [layer.ci["mean_r"] for layer in s.layers],
            }
            for s in sweeps
        ]
        stem = f"sweep-{model}" + ("" if split == "val" else f".{split}")

        def draw(model: str = model, lines: list[dict[str, Any]] = lines) -> str:
            from itbench.page import figures  # matplotlib: imported only on a cache miss

            return figures.sweep_figure(model, [figures.SweepLine(**line) for line in lines])

        svg = cached_figure(out_dir / f"figures/{bench.id}/{stem}.svg", ["sweep", model, lines], draw)
        label = f"Layer sweep of {model} on {bench.id} ({split}): mean EV and r by depth"
        out.append(
            _SweepFigure(
                model,
                split,
                [s.weights for s in sweeps],
                "; ".join(sorted({s.readout for s in sweeps if s.readout})),
                f"figures/{bench.id}/{stem}.svg",
                svg,
                inline_svg(svg, f"{bench.id}-{stem}", label),
                sweeps,
            )
        )
    return out


def _provenance_rows(sub: SubmissionResult) -> list[tuple[str, str]]:
    """Provenance flattened to (key, value) lines, nested dicts as dotted keys."""

    def walk(prefix: str, value: Any) -> Iterable[tuple[str, str]]:
        if isinstance(value, dict):
            for key in sorted(value):
                yield from walk(f"{prefix}.{key}" if prefix else str(key), value[key])
        else:
            yield prefix, "null" if value is None else str(value)

    head = {
        "record": sub.rel,
        "created": sub.created or None,
        "code_hash": sub.record.submission.code_hash,
        "data_checksum": sub.record.benchmark.data_checksum,
        "split_hash": sub.record.benchmark.split_hash,
    }
    # records before the typed record module copied the hashes into provenance too
    provenance = {k: v for k, v in sub.provenance.items() if k not in head}
    rows = [(k, "null" if v is None else str(v)) for k, v in head.items()]
    return [(k, sanitize(v)) for k, v in rows + list(walk("", provenance))]


def render(
    results_root: Path, out_dir: Path, benchmarks: list[str] | None = None, table1_csv: Path | None = None
) -> RenderReport:
    """Render the leaderboard for ``benchmarks`` (default: all found) into ``out_dir``.

    ``table1_csv`` defaults to the project's ``benchmark/table1.csv``; without
    it the Table I comparison is left out (and a warning says so).
    """
    from itbench.page import protocols  # fixed-split beside brainscore, IT beside V4

    start = time.perf_counter()
    out_dir = Path(out_dir)
    benches, skipped = load_results(Path(results_root), benchmarks)
    report = RenderReport(out_dir=out_dir, benchmarks=[b.id for b in benches], skipped=skipped)
    table1 = _table1_numbers(table1_csv, report)
    protocol_tables = protocols.group_tables(  # takes the other protocols' records out of the split tables
        [*protocols.take_protocol_records(benches), *(r for b in benches for r in b.submissions)]
    )
    selections = [s for b in benches for s in b.sweeps if s.layer_selection is not None]
    page = _Pages(out_dir, table1, _environment())
    for bench in benches:
        page.add_benchmark(bench)
        report.n_submissions += len(bench.submissions)
        report.n_sweeps += len(bench.sweeps)
    context = {
        "benchmarks": page.views,
        "table1_view": table1_view(table1, page.t1_inputs),
        "skipped": skipped,
        "table1": table1,
        "n_records": report.n_submissions + report.n_sweeps,
        "protocols_html": protocols.render_html(protocol_tables, selections),
        "protocols_md": protocols.render_markdown(protocol_tables, selections),
    }
    report.files = page.write(context)
    report.seconds = time.perf_counter() - start
    return report


def _table1_numbers(table1_csv: Path | None, report: RenderReport) -> dict[int, Table1Row]:
    """The report's Table I, from ``table1_csv`` or the project's copy (a warning when there is none)."""
    if table1_csv is not None:
        return load_table1(Path(table1_csv))
    from itbench.paths import benchmark_dir

    default = benchmark_dir() / "table1.csv"
    if default.is_file():
        return load_table1(default)
    report.warnings.append(f"no Table I numbers at {default}: comparison left out")
    return {}


class _Pages:
    """The files of one rendering, gathered before any is written (so a failure writes nothing)."""

    def __init__(self, out_dir: Path, table1: dict[int, Table1Row], env: jinja2.Environment) -> None:
        self.out_dir, self.table1, self.env = out_dir, table1, env
        self.detail_tpl = env.get_template("lb_detail.html.j2")
        self.written: dict[Path, str] = {}
        self.views: list[_BenchView] = []
        self.t1_inputs: list[tuple[str, str, bool, list[dict[str, Any]]]] = []
        self.all_rows: list[dict[str, Any]] = []

    def add_benchmark(self, bench: BenchmarkResults) -> None:
        """One benchmark's tables (one per split), detail pages and sweep figures."""
        title, description = benchmark_info(bench.id)
        splits = sorted({s.split for s in bench.submissions}, key=lambda s: (s != "val", s))
        tables = [self._split_table(bench, split, title) for split in splits]
        sweeps = _sweep_figures(bench, self.out_dir)
        for fig in sweeps:
            self.written[self.out_dir / fig.svg_file] = fig.svg
        reproduced = {s.table1_row for s in bench.submissions if compares_table1(s)}
        missing = (
            [t for n, t in sorted(self.table1.items()) if n not in reproduced]
            if not bench.synthetic and self.table1
            else []
        )
        self.views.append(_BenchView(bench.id, title, description, bench.synthetic, tables, sweeps, missing))
        if bench.submissions:
            self.t1_inputs.append((bench.id, title, bench.synthetic, [r for t in tables for r in t.rows]))

    def _split_table(self, bench: BenchmarkResults, split: str, title: str) -> _Table:
        """The ranked table of one split, and a detail page per submission in it."""
        subs = [s for s in bench.submissions if s.split == split]
        ranked = _rank(subs)
        comparisons = compare_ranked(ranked)
        rows = [flat_row(rank, sub, self.table1, comparisons.get(sub.sub_id)) for rank, sub in ranked]
        self.all_rows.extend(rows)
        names = {s.sub_id: s.name for s in subs}
        for (_, sub), row in zip(ranked, rows, strict=False):
            self._detail(bench, sub, row, names, title)
        return _Table(
            split,
            rows,
            compare=any(compares_table1(s) for s in subs) and bool(self.table1),
            ceilings=any(_finite(s.scores["ceiling"]) or _finite(s.scores["normalized_r"]) for s in subs),
        )

    def _detail(
        self,
        bench: BenchmarkResults,
        sub: SubmissionResult,
        row: dict[str, Any],
        names: dict[str, str],
        title: str,
    ) -> None:
        """A submission's detail page, with its per-neuroid figure inline."""
        inline = None
        if row["figure"]:
            pn = sub.per_neuroid or {}
            args = (pn.get("r") or [], pn.get("ev") or [], pn.get("ceiling"), sub.examples)
            figure = self.out_dir / row["figure"]
            svg = cached_figure(figure, ["submission", *args], partial(_draw, *args))
            self.written[figure] = svg
            label = f"Per-neuroid scores of {sub.name} on {bench.id} ({sub.split})"
            inline = inline_svg(svg, f"{bench.id}-{sub.stem}", label)
        self.written[self.out_dir / row["detail"]] = self.detail_tpl.render(
            sub=sub,
            reason=sanitize(sub.reason),
            names=names,
            row=row,
            bench_title=title,
            synthetic=bench.synthetic,
            figure=inline,
            provenance=_provenance_rows(sub),
            table1=self.table1.get(sub.table1_row) if sub.table1_row else None,
            css=_asset("lb_style.css"),
            root="../../",
        )

    def write(self, context: dict[str, Any]) -> list[Path]:
        """The index, the Markdown table and the results files; then every file, atomically; stale ones removed."""
        out, written = self.out_dir, self.written
        written[out / "index.html"] = self.env.get_template("lb_index.html.j2").render(
            css=_asset("lb_style.css"), js=_asset("lb_sort.js"), **context
        )
        written[out / "README.md"] = self.env.get_template("lb_readme.md.j2").render(**context)
        written[out / "results.json"] = (
            json.dumps(self.all_rows, indent=1, sort_keys=False, allow_nan=False) + "\n"
        )
        written[out / "results.csv"] = _csv(self.all_rows)
        for path in sorted(written):
            _atomic_write(path, written[path])
        _remove_stale(out, set(written))
        return sorted(written)


def _asset(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    columns = list(rows[0]) if rows else ["benchmark", "split", "rank", "submission_id"]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    """Exact floats, empty for missing, lists of ids joined with ';', text made formula-safe."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return csv_cell(";".join(map(str, value)))
    return csv_cell(value)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")


def csv_cell(value: Any) -> Any:
    """Text a spreadsheet will not run: a leading ``=``/``+``/``-``/``@`` gets a quote (OWASP)."""
    if isinstance(value, str):
        value = "".join(ch for ch in value if ch >= " " or ch == "\t")  # no control characters
        if value.startswith(_FORMULA_START):
            return "'" + value
    return value


def _remove_stale(out_dir: Path, keep: set[Path]) -> None:
    """Drop detail pages and figures of records that no longer exist (ours only)."""
    for sub, pattern in (("submissions", "*.html"), ("figures", "*.svg")):
        base = out_dir / sub
        if not base.is_dir():
            continue
        for path in sorted(base.glob(f"*/{pattern}"), reverse=True):
            if path not in keep:
                path.unlink()
        for folder in sorted(base.iterdir(), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
