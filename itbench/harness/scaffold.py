"""``itbench new``: a submission folder that works before it is edited.

The template is a complete small model (pooled pixels + cross-validated
ridge) with its own test, so a student starts from something that scores.
"""

from __future__ import annotations

import re
from pathlib import Path

from itbench.errors import SubmissionError
from itbench.harness.submission import BRAINSCORE_ID_PATTERN, ID_PATTERN
from itbench.paths import project_root

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
BRAINSCORE_TEMPLATE_DIR = TEMPLATE_DIR / "brainscore"
#: The Brain-Score packages a plugin submission pins (the versions the parity checks ran).
BRAINSCORE_VISION_VERSION = "2.4.2"
BRAINSCORE_CORE_VERSION = "2.5.0"


def scaffold(submission_id: str, root: Path | None = None) -> Path:
    """Create ``submissions/<id>/`` from the template; refuse to overwrite."""
    if not ID_PATTERN.match(submission_id):
        raise SubmissionError(
            f"'{submission_id}' is not a valid submission id",
            "use lower-case letters, digits, '_' or '-', e.g. my_resnet",
        )
    return _fill(TEMPLATE_DIR, _new_folder(submission_id, root), {"id": submission_id})


def _new_folder(submission_id: str, root: Path | None) -> Path:
    target = (root or project_root()) / "submissions" / submission_id
    if target.exists():
        raise SubmissionError(f"{target} already exists", "pick another id or edit that folder")
    target.mkdir(parents=True)
    return target


def _fill(templates: Path, target: Path, values: dict[str, str]) -> Path:
    """Each ``*.tmpl`` of ``templates`` into ``target`` with ``{{key}}`` replaced."""
    for template in sorted(templates.iterdir()):
        if template.suffix == ".tmpl":
            text = template.read_text()
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            (target / template.stem).write_text(text)
    return target


def brainscore_submission_id(model_id: str) -> str:
    """``bs_<model_id>`` made a valid folder name (lower case, other characters as '_', at most 64)."""
    return ("bs_" + re.sub(r"[^a-z0-9_\-]", "_", model_id.lower()))[:64]


def scaffold_brainscore(model_id: str, root: Path | None = None, version: str | None = None) -> Path:
    """``submissions/bs_<model_id>/``: a Brain-Score model plugin as a submission, in its own environment.

    Why a kind of its own: the plugin's code, weights logic and region-to-layer
    map ship in ``brainscore-vision``; the folder only pins that package
    (requirements.txt), names the plugin (``[brainscore]``) and loads it.
    """
    if not BRAINSCORE_ID_PATTERN.match(model_id):
        raise SubmissionError(
            f"'{model_id}' is not a Brain-Score model identifier",
            "use the plugin's registry name, e.g. pixels or alexnet (letters, digits, '_', '-', '.', ':')",
        )
    values = {
        "model_id": model_id,
        "version": version or BRAINSCORE_VISION_VERSION,
        "core_version": BRAINSCORE_CORE_VERSION,
    }
    target = _new_folder(brainscore_submission_id(model_id), root)
    return _fill(BRAINSCORE_TEMPLATE_DIR, target, values)
