"""Submission discovery and metadata validation: every error names the problem."""

from __future__ import annotations

import re
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
    sub = load_submission(folder, tmp_path / "submissions")
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
        ('title = "X"\n', GOOD_MODEL, "unknown key `title`"),
        ('name = ""\n', GOOD_MODEL, "`name`: String should have at least 1 character"),
        (
            'name = "X"\ntable1_row = 13\n',
            GOOD_MODEL,
            "`table1_row`: Input should be less than or equal to 12",
        ),
        ('name = "X"\n[sizes]\nsmall = 3\n', GOOD_MODEL, "`sizes.small`: Input should be a valid dictionary"),
        (
            'name = "X"\n[limits]\nmemory_gb = "4"\n',
            GOOD_MODEL,
            "`limits.memory_gb`: Input should be a valid number",
        ),
        ('name = "X"\nneeds = "gpu"\n', GOOD_MODEL, "`needs`: Input should be a valid dictionary"),
        ('name = "X"\n[needs]\ngpu = "yes"\n', GOOD_MODEL, "`needs.gpu`: Input should be a valid boolean"),
        (
            'name = "X"\n[limits]\ntimeout_s = -1\n',
            GOOD_MODEL,
            "`limits.timeout_s`: Input should be greater than 0",
        ),
        ('name = "X"\nauthors = "me"\n', GOOD_MODEL, "`authors`: Input should be a valid list"),
        ('name = "X\\u001b[2J"\n', GOOD_MODEL, "`name`: String should match pattern"),
        ('name = "X"\n[needs]\nweights = ["../../etc"]\n', GOOD_MODEL, "`needs.weights.0`"),
        ("name = 5\n", GOOD_MODEL, "`name`: Input should be a valid string"),
        ('name = "X"\n[oops]\n', GOOD_MODEL, "unknown key `oops`"),
    ],
)
def test_metadata_errors_are_specific(tmp_path, toml, model, message):
    folder = make(tmp_path, toml=toml, model=model)
    with pytest.raises(SubmissionError, match=re.escape(message)) as info:
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
    sub = load_submission(path, tmp_path / "submissions")
    assert sub.id == "my_model" and "my_model" in sub.name
    assert (path / "test_model.py").exists()
    with pytest.raises(SubmissionError, match="already exists"):
        scaffold("my_model", tmp_path)
    with pytest.raises(SubmissionError, match="not a valid submission id"):
        scaffold("My Model", tmp_path)


def test_identity_is_the_folder_name_only_inside_submissions(tmp_path):
    """A same-named folder elsewhere gets its own external id (it cannot overwrite the record)."""
    inside = make(tmp_path / "project", name="pixels_ridge")
    outside = make(tmp_path / "elsewhere", name="pixels_ridge")
    root = tmp_path / "project" / "submissions"
    assert load_submission(inside, root).id == "pixels_ridge"
    other = load_submission(outside, root).id
    assert other.startswith("external-pixels_ridge-") and other != "pixels_ridge"
    assert other == load_submission(outside, root).id  # stable
    with pytest.raises(SubmissionError, match="folder name"):
        load_submission(make(tmp_path / "project", name="x" * 65), root)


def test_check_module_names_file_and_line_without_running_it(tmp_path):
    from itbench.harness.submission import check_module

    marker = tmp_path / "ran"
    bad = make(tmp_path, name="syntax", model=f"open({str(marker)!r}, 'w')\ndef build(ctx)\n    pass\n")
    with pytest.raises(SubmissionError, match=r"model.py line 2: SyntaxError"):
        check_module(load_submission(bad))
    assert not marker.exists()  # compiled, never executed
    nobuild = make(tmp_path, name="nobuild", model="def make(ctx):\n    return 1\n")
    with pytest.raises(SubmissionError, match="does not define build"):
        check_module(load_submission(nobuild))
    check_module(load_submission(make(tmp_path, name="good")))


def test_discover_all_reports_bad_folders_and_keeps_the_rest(tmp_path):
    from itbench.harness.submission import discover_all

    make(tmp_path, name="a")
    make(tmp_path, name="b", toml='name = "B"\n[limits]\nmemory_gb = "4"\n')
    make(tmp_path, name="c")
    found = {p.name: s for p, s in discover_all(tmp_path)}
    assert [k for k, v in found.items() if isinstance(v, SubmissionError)] == ["b"]
    assert "limits.memory_gb" in str(found["b"])
    assert found["a"].id == "a" and found["c"].id == "c"


def test_pathological_files_are_errors_not_crashes(tmp_path):
    from itbench.harness.submission import check_module

    deep_toml = make(
        tmp_path, name="deep_toml", toml='name = "X"\n[params]\na = ' + "[" * 20000 + "]" * 20000
    )
    with pytest.raises(SubmissionError, match="nested too deeply"):
        load_submission(deep_toml)
    deep_py = make(tmp_path, name="deep_py", model="x = " + "-" * 200000 + "1\ndef build(ctx):\n    pass\n")
    with pytest.raises(SubmissionError, match="model.py"):
        check_module(load_submission(deep_py))
    nul = make(tmp_path, name="nul", model="def build(ctx):\n    return 1\x00\n")
    with pytest.raises(SubmissionError, match="model.py"):
        check_module(load_submission(nul))
