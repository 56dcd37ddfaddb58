"""``itbench new``: a submission folder that works before it is edited.

The template is a complete small model (pooled pixels + cross-validated
ridge) with its own test, so a student starts from something that scores.
"""

from __future__ import annotations

from pathlib import Path

from itbench.errors import SubmissionError
from itbench.harness.submission import ID_PATTERN
from itbench.paths import project_root

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def scaffold(submission_id: str, root: Path | None = None) -> Path:
    """Create ``submissions/<id>/`` from the template; refuse to overwrite."""
    if not ID_PATTERN.match(submission_id):
        raise SubmissionError(
            f"'{submission_id}' is not a valid submission id",
            "use lower-case letters, digits, '_' or '-', e.g. my_resnet",
        )
    target = (root or project_root()) / "submissions" / submission_id
    if target.exists():
        raise SubmissionError(f"{target} already exists", "pick another id or edit that folder")
    target.mkdir(parents=True)
    for template in sorted(TEMPLATE_DIR.iterdir()):
        if template.suffix == ".tmpl":
            text = template.read_text().replace("{{id}}", submission_id)
            (target / template.stem).write_text(text)
    return target
