"""Independent reader of the fixture result records (plain json, not itbench)."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"


def fixture_records(benchmark: str, split: str = "val") -> dict[str, dict]:
    """Valid records of one benchmark and split, by submission id (corrupt ones skipped)."""
    out = {}
    for path in sorted((FIXTURES / benchmark).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if rec.get("schema") == "itbench.record/1" and rec.get("split", "val") == split:
            out[rec["submission"]["id"]] = rec
    return out
