"""Submission discovery and metadata validation: every error names the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from itbench.contract import Context
from itbench.errors import SubmissionError
from itbench.harness.scaffold import scaffold
from itbench.harness.submission import build_model, discover, load_submission

GOOD_MODEL = "class M:\n    def predict(self, images):\n        return images[:, :2, 0, 0].numpy()\n\ndef build(ctx):\n    return M()\n"


def make(
    tmp_path: Path, name: str = "sub", toml: str = 'name = "A model"\n', model: str | None = GOOD_MODEL
) -> Path:
    folder = tmp_path / "submissions" / name
    folder.mkdir(parents=True)
    if toml is not None:
        (folder / "submission.toml").write_text(toml)
    if model is not None:
        (folder / "model.py").write_text(model)
    return folder


def test_metadata_parsed_with_size_presets(tmp_path):
    folder = make(
        tmp_path,
        toml='name = "X"\ntable1_row = 5\nauthors = ["A"]\n[needs]\ngpu = true\n'
        'weights = ["resnet50"]\n[limits]\ntimeout_s = 60\n[params]\nepochs = 30\nlr = 0.1\n'
        "[sizes.small]\nepochs = 2\n",
    )
    sub = load_submission(folder)
    assert (sub.id, sub.name, sub.table1_row, sub.needs_gpu, sub.weights) == (
        "sub",
        "X",
        5,
        True,
        ["resnet50"],
    )
    assert sub.timeout_s == 60
    assert sub.params_for("small") == {"epochs": 2, "lr": 0.1}
    assert sub.params_for("full") == {"epochs": 30, "lr": 0.1}


@pytest.mark.parametrize(
    "toml, model, message",
    [
        (None, GOOD_MODEL, "missing submission.toml"),
        ('name = "X"\n', None, "missing model.py"),
        ('name = "X\n', GOOD_MODEL, "not valid TOML"),
        ('title = "X"\n', GOOD_MODEL, "unknown keys"),
        ('name = ""\n', GOOD_MODEL, "non-empty `name`"),
        ('name = "X"\ntable1_row = 13\n', GOOD_MODEL, "table1_row must be an integer 1-12"),
        ('name = "X"\n[sizes]\nsmall = 3\n', GOOD_MODEL, "[sizes.<name>]"),
    ],
)
def test_metadata_errors_are_specific(tmp_path, toml, model, message):
    folder = make(tmp_path, toml=toml, model=model)
    with pytest.raises(SubmissionError, match=message.replace("[", r"\[").replace("`", "`")) as info:
        load_submission(folder)
    assert "submission 'sub'" in str(info.value)


def test_bad_folder_names_and_missing_folder(tmp_path):
    with pytest.raises(SubmissionError, match="no submission folder"):
        load_submission(tmp_path / "nope")
    with pytest.raises(SubmissionError, match="lower-case"):
        load_submission(make(tmp_path, name="Bad Name"))


@pytest.mark.parametrize(
    "model, message",
    [
        ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
        ("x = 1\n", "does not define build"),
        ("def build(ctx):\n    return object()\n", "has no predict"),
    ],
)
def test_module_errors(tmp_path, model, message):
    sub = load_submission(make(tmp_path, model=model))
    with pytest.raises(SubmissionError, match=message):
        build_model(sub, Context())


def test_discover_and_build(tmp_path):
    make(tmp_path, name="b")
    make(tmp_path, name="a")
    (tmp_path / "submissions" / "notes").mkdir()  # folders without metadata are ignored
    subs = discover(tmp_path)
    assert [s.id for s in subs] == ["a", "b"]
    import torch

    model = build_model(subs[0], Context())
    assert model.predict(torch.ones(3, 3, 4, 4)).shape == (3, 2)


def test_code_hash_changes_with_any_file(tmp_path):
    folder = make(tmp_path)
    sub = load_submission(folder)
    before = sub.code_hash()
    assert before == load_submission(folder).code_hash()
    (folder / "helper.py").write_text("X = 1\n")
    assert sub.code_hash() != before


def test_scaffold_creates_a_valid_submission_and_refuses_overwrite(tmp_path):
    (tmp_path / "submissions").mkdir()
    path = scaffold("my_model", tmp_path)
    sub = load_submission(path)
    assert sub.id == "my_model" and "my_model" in sub.name
    assert (path / "test_model.py").exists()
    with pytest.raises(SubmissionError, match="already exists"):
        scaffold("my_model", tmp_path)
    with pytest.raises(SubmissionError, match="not a valid submission id"):
        scaffold("My Model", tmp_path)
