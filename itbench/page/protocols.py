"""The page's "Protocols and regions" section: fixed-split beside Brain-Score's protocol, IT beside V4.

Why: a number is only comparable with Brain-Score's ``MajajHong2015public.IT-pls``
when the protocol and the ceiling convention are known. This section lists,
per submission, the fixed-split (Table I) median r and the ``brainscore``
protocol's raw r with its error, each with both ceiled conventions (labelled
with name and date, defined under the table), and puts the benchmarks of one
group (IT and V4 of MajajHong2015) side by side. It reads records only;
records written before protocols existed count as ``fixed-split`` and get
their normalisations computed here from their median r and ceiling.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from itbench.scoring.brainscore import NORMALISATIONS, normalisations

FIXED = "fixed-split"
BRAINSCORE = "brainscore"


def _as_dict(record: Any) -> dict[str, Any]:
    """A typed record (or a plain dict, e.g. in tests) as JSON-like data."""
    if hasattr(record, "model_dump"):
        return dict(record.model_dump(mode="json", by_alias=True))
    return dict(record)


def protocol_of(record: Any) -> str:
    """A record's protocol; records from before protocols existed are fixed-split."""
    return str(_as_dict(record).get("protocol") or FIXED)


def take_protocol_records(benches: list[Any]) -> list[Any]:
    """Remove non-fixed-split records from each benchmark's main tables and return them."""
    taken: list[Any] = []
    for bench in benches:
        keep: list[Any] = []
        for sub in bench.submissions:
            (keep if protocol_of(sub.record) == FIXED else taken).append(sub)
        bench.submissions[:] = keep
    return taken


@dataclass
class Cell:
    """One benchmark x protocol result of one submission."""

    r: float | None = None
    error: float | None = None
    ceiling: float | None = None
    norms: dict[str, float | None] = field(default_factory=dict)
    seconds: float | None = None
    status: str = ""
    layer_note: str = ""


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def cell(record: Any) -> Cell:
    """The numbers of one record under its protocol (normalisations recomputed for old records)."""
    record = _as_dict(record)
    scores = record.get("scores") or {}
    block = record.get("brainscore") or {}
    if protocol_of(record) == BRAINSCORE:
        r, error, ceiling = (
            _num(block.get("raw_r")),
            _num(block.get("raw_r_error")),
            _num(block.get("ceiling")),
        )
    else:
        r, error, ceiling = _num(scores.get("median_r")), None, _num(scores.get("ceiling"))
    stored = record.get("normalisations") or normalisations(r, ceiling)
    norms = {k: _num((stored.get(k) or {}).get("value")) for k in NORMALISATIONS}
    selection = record.get("layer_selection") or {}
    note = str(selection.get("note") or "")
    seconds = _num((record.get("provenance") or {}).get("wall_time_s"))
    return Cell(r, error, ceiling, norms, seconds, str(record.get("status", "")), note)


@dataclass
class GroupTable:
    """Rows of one group of benchmarks (e.g. MajajHong2015 IT and V4)."""

    group: str
    benchmarks: list[str]
    rows: dict[str, dict[tuple[str, str], Cell]]  # submission id -> (benchmark, protocol) -> cell
    names: dict[str, str]


def group_tables(results: list[Any]) -> list[GroupTable]:
    """Fixed-split (val) and brainscore records grouped by the registry's benchmark groups."""
    from itbench.data import registry
    from itbench.errors import ItbenchError

    try:
        specs = {s.benchmark_id: s for s in registry.all_specs()}
    except ItbenchError:
        specs = {}
    order = {bid: i for i, bid in enumerate(specs)}
    tables: dict[str, GroupTable] = {}
    for res in results:
        proto = protocol_of(res.record)
        if proto == FIXED and res.split != "val":
            continue
        spec = specs.get(res.benchmark)
        group = (spec.group if spec and spec.group else None) or res.benchmark
        table = tables.setdefault(group, GroupTable(group, [], {}, {}))
        if res.benchmark not in table.benchmarks:
            table.benchmarks.append(res.benchmark)
        table.rows.setdefault(res.sub_id, {})[(res.benchmark, proto)] = cell(res.record)
        table.names[res.sub_id] = res.name
    out = []
    for group in sorted(tables, key=lambda g: (min(order.get(b, 999) for b in tables[g].benchmarks), g)):
        table = tables[group]
        table.benchmarks.sort(key=lambda b: (order.get(b, 999), b))
        if any(p == BRAINSCORE for row in table.rows.values() for _, p in row) or len(table.benchmarks) > 1:
            out.append(table)
    return out


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _r_text(c: Cell | None) -> str:
    if c is None:
        return "—"
    if c.status and c.status != "ok":
        return c.status
    text = _f(c.r) + (f" ± {c.error:.3f}" if c.error is not None else "")
    return text + (" †" if c.layer_note else "")


def _columns(table: GroupTable) -> list[tuple[str, str, str]]:
    """(benchmark, protocol, what) triples, in display order."""
    cols = []
    for bid in table.benchmarks:
        for proto in (FIXED, BRAINSCORE):
            if any((bid, proto) in row for row in table.rows.values()):
                cols += [(bid, proto, "r"), *[(bid, proto, key) for key in NORMALISATIONS], (bid, proto, "s")]
    return cols


def _head(bid: str, proto: str, what: str) -> str:
    if what == "r":
        return f"{bid} · {proto}<br>{'median r (val)' if proto == FIXED else 'raw r ± err'}"
    if what == "s":
        return "time (s)"
    return NORMALISATIONS[what]["formula"]


def _value(c: Cell | None, what: str) -> str:
    if what == "r":
        return _r_text(c)
    if c is None:
        return "—"
    if what == "s":
        return "—" if c.seconds is None else f"{c.seconds:.0f}"
    return _f(c.norms.get(what))


def _selection_lines(sweeps: list[Any]) -> list[tuple[str, str, bool]]:
    """(label, text, leaks) per sweep with a recorded layer selection."""
    out = []
    for sw in sorted(sweeps, key=lambda s: (s.benchmark, s.model, s.weights)):
        sel = sw.layer_selection
        scores = sel.chosen_scores
        mean_r = None if scores is None else scores.mean_r
        label = f"{sw.model} ({sw.weights}) on {sw.benchmark}"
        text = f"layer {sel.chosen}, {sw.split} mean r {_f(mean_r)}: {sel.note}"
        out.append((label, text, bool(sel.leaks)))
    return out


def render_html(tables: list[GroupTable], sweeps: list[Any] | None = None) -> str:
    """The section as an HTML fragment (empty when there is nothing to compare)."""
    lines = _selection_lines(sweeps or [])
    if not tables and not lines:
        return ""
    parts = [
        '<section class="protocols" id="protocols">',
        "<h2>Protocols and regions side by side</h2>",
        '<p class="desc">Fixed-split: Table I\'s protocol (fit on train, score the val split; median r over '
        "neuroids). Brain-Score: the <code>brainscore</code> protocol (10 stratified 90/10 splits by object, "
        "PLS(25) on a model's features or its own fit per split, median r over neuroids per split, mean over "
        "splits ± std/√10), as Brain-Score reports <code>MajajHong2015public.IT-pls</code>.</p>",
    ]
    for table in tables:
        cols = _columns(table)
        parts.append(f'<h3>{html.escape(table.group)}</h3><div class="table-wrap">')
        parts.append(
            f'<table class="leaderboard protocols" id="protocols-{html.escape(table.group)}"><thead><tr>'
        )
        parts.append("<th>Submission</th>")
        parts += [f'<th class="num">{_head(*c)}</th>' for c in cols]
        parts.append("</tr></thead><tbody>")
        for sub_id in sorted(table.rows):
            row = table.rows[sub_id]
            parts.append(
                f'<tr data-submission="{html.escape(sub_id)}"><td class="sub">'
                f'{html.escape(table.names.get(sub_id, sub_id))}<code class="id">{html.escape(sub_id)}</code></td>'
            )
            for bid, proto, what in cols:
                c = row.get((bid, proto))
                title = f' title="{html.escape(c.layer_note)}"' if c and c.layer_note and what == "r" else ""
                parts.append(
                    f'<td class="num" data-col="{html.escape(f"{bid}-{proto}-{what}")}"{title}>{_value(c, what)}</td>'
                )
            parts.append("</tr>")
        parts.append("</tbody></table></div>")
    parts.append('<dl class="defs">')
    for label in NORMALISATIONS.values():
        parts.append(
            f"<dt>{html.escape(label['formula'])}</dt>"
            f"<dd>{html.escape(label['name'])} ({html.escape(label['dates'])}): "
            f"{html.escape(label['definition'])}.</dd>"
        )
    parts.append(
        "<dt>†</dt><dd>the layer was chosen on the scored split itself (as Brain-Score's layer commitment "
        "does on the public set): the score is optimistic.</dd></dl>"
    )
    if lines:
        parts.append('<h3>Layer selection in the sweeps</h3><ul class="layer-selection">')
        for what, text, leaks in lines:
            flag = ' class="leaks"' if leaks else ""
            parts.append(
                f"<li{flag}><strong>{html.escape(what)}</strong>: {html.escape(text)}{' †' if leaks else ''}</li>"
            )
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def render_markdown(tables: list[GroupTable], sweeps: list[Any] | None = None) -> str:
    """The same section in GitHub Markdown (for leaderboard/README.md)."""
    selection = _selection_lines(sweeps or [])
    if not tables and not selection:
        return ""
    lines = ["## Protocols and regions side by side", ""]
    for table in tables:
        cols = _columns(table)
        heads = [_head(*c).replace("<br>", " ") for c in cols]
        lines += [f"### {table.group}", "", "| submission | " + " | ".join(heads) + " |"]
        lines.append("| --- |" + " ---: |" * len(cols))
        for sub_id in sorted(table.rows):
            row = table.rows[sub_id]
            values = [_value(row.get((bid, proto)), what) for bid, proto, what in cols]
            lines.append(f"| `{sub_id}` | " + " | ".join(values) + " |")
        lines.append("")
    for label in NORMALISATIONS.values():
        lines.append(f"- **{label['formula']}**: {label['name']} ({label['dates']}): {label['definition']}.")
    lines.append("- **†**: layer chosen on the scored split itself; the score is optimistic.")
    if selection:
        lines += ["", "### Layer selection in the sweeps", ""]
        lines += [f"- **{what}**: {text}{' †' if leaks else ''}" for what, text, leaks in selection]
    return "\n".join(lines) + "\n"
