"""Brain-Score model plugins as submissions (issue 23, items 2, 3 and 5).

Offline: the scaffold (``itbench new --from-brainscore``), the ``[brainscore]``
metadata, the record field, the image files a plugin looks at, the weights
rule and the page. With PyPI: Brain-Score's own ``pixels`` plugin is built in
its environment and scored in the sandbox under ``--protocol brainscore``; its
record must equal, to 1e-6, the record of a plain features submission that
computes the plugin's features here, from the plugin's source
(``brainscore_vision/models/pixels/model.py``: open, RGB, resize to 256 x 256
with PIL's default filter, flatten), so the activations that crossed the
sandbox are the plugin's own, row for row.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import urllib.error
from pathlib import Path
from types import ModuleType

import html5lib
import numpy as np
import pytest
from helpers_records import FIXTURES
from PIL import Image

from itbench import api
from itbench.data.stimuli import to_model_input
from itbench.errors import SubmissionError, WeightsUnavailable
from itbench.harness import environments, runcore, sandbox
from itbench.harness.record import BrainScorePlugin, SubmissionRecord, SubmissionRef
from itbench.harness.scaffold import BRAINSCORE_VISION_VERSION, scaffold_brainscore
from itbench.harness.submission import check_module, load_submission
from itbench.harness.untrusted import ChildStatus
from itbench.models import brainscore_plugin
from itbench.page.leaderboard import render

REPO = Path(__file__).resolve().parents[1]
TABLE1 = REPO / "benchmark" / "table1.csv"


# --- the scaffold and the metadata ------------------------------------------------------------


def test_scaffold_pins_brainscore_and_names_the_plugin(tmp_path: Path) -> None:
    folder = scaffold_brainscore("pixels", tmp_path)
    assert folder == tmp_path / "submissions" / "bs_pixels"
    meta = tomllib.loads((folder / "submission.toml").read_text())
    assert meta["brainscore"] == {
        "model_id": "pixels",
        "package": "brainscore-vision",
        "version": BRAINSCORE_VISION_VERSION,
    }
    reqs = [
        line for line in (folder / "requirements.txt").read_text().splitlines() if not line.startswith("#")
    ]
    assert f"brainscore-vision=={BRAINSCORE_VISION_VERSION}" in reqs and "numpy<2" in reqs
    assert not any(line.startswith("torch") for line in reqs)  # torch is the harness's (layered)
    sub = load_submission(folder, tmp_path / "submissions")
    assert sub.brainscore == meta["brainscore"] and sub.id == "bs_pixels"
    check_module(sub)  # compiles, defines build
    assert 'MODEL_ID = "pixels"' in (folder / "model.py").read_text()
    spec = environments.declared(sub)
    assert spec is not None and f"brainscore-vision=={BRAINSCORE_VISION_VERSION}" in spec.requirements


def test_scaffold_folder_name_from_an_odd_identifier_and_refusals(tmp_path: Path) -> None:
    folder = scaffold_brainscore("ResNet-50:Robust.v2", tmp_path)
    assert folder.name == "bs_resnet-50_robust_v2"
    assert load_submission(folder).brainscore["model_id"] == "ResNet-50:Robust.v2"  # type: ignore[index]
    with pytest.raises(SubmissionError, match="already exists"):
        scaffold_brainscore("ResNet-50:Robust.v2", tmp_path)
    with pytest.raises(SubmissionError, match="not a Brain-Score model identifier"):
        scaffold_brainscore("../etc", tmp_path)


def test_brainscore_table_is_schema_checked(tmp_path: Path) -> None:
    folder = scaffold_brainscore("pixels", tmp_path)
    toml = folder / "submission.toml"
    toml.write_text(toml.read_text().replace('version = "', 'colour = "red"\nversion = "'))
    with pytest.raises(SubmissionError, match=r"unknown key `brainscore.colour`"):
        load_submission(folder)


def _itbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("itbench")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


def test_cli_new_from_brainscore(tmp_path: Path) -> None:
    done = _itbench("new", "--from-brainscore", "pixels", "--root", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "submissions" / "bs_pixels" / "requirements.txt").is_file()
    assert "itbench env build bs_pixels" in done.stdout
    both = _itbench("new", "x", "--from-brainscore", "pixels", "--root", str(tmp_path), cwd=tmp_path)
    neither = _itbench("new", "--root", str(tmp_path), cwd=tmp_path)
    for done in (both, neither):
        assert done.returncode == 2 and "one of them" in done.stderr and "Traceback" not in done.stderr


# --- the record -------------------------------------------------------------------------------


def test_record_carries_the_plugin_only_when_there_is_one() -> None:
    plain = SubmissionRef(id="a", name="A").model_dump(mode="json")
    assert "brainscore" not in plain  # records of other submissions keep their bytes
    ref = SubmissionRef(
        id="bs_pixels",
        name="B",
        brainscore=BrainScorePlugin(model_id="pixels", package="brainscore-vision", version="2.4.2"),
    )
    again = SubmissionRef.model_validate(json.loads(json.dumps(ref.model_dump(mode="json"))))
    assert again == ref
    with pytest.raises(ValueError):
        BrainScorePlugin(model_id="<script>", package="brainscore-vision", version="2.4.2")


# --- what the plugin looks at -----------------------------------------------------------------


def test_stimulus_files_hold_the_images_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    originals = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    images = to_model_input(originals, size=None)  # what a submission receives
    ids, files = brainscore_plugin.write_stimuli(images, tmp_path / "s")
    assert ids == ["itbench000000", "itbench000001", "itbench000002"]
    for original, file in zip(originals, files, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(file)), original)


def test_network_failure_while_loading_is_weights_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ModuleType("brainscore_vision")

    def load_model(model_id: str) -> None:
        try:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        except urllib.error.URLError as err:
            raise RuntimeError("could not load weights") from err

    fake.load_model = load_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "brainscore_vision", fake)
    with pytest.raises(WeightsUnavailable, match="'alexnet' needs weights .* no network .URLError"):
        brainscore_plugin.load_plugin("alexnet")

    def read_only(model_id: str) -> None:  # torch hub creating its checkpoints folder in the bound cache
        raise OSError(30, "Read-only file system", "/root/.cache")

    fake.load_model = read_only  # type: ignore[attr-defined]
    with pytest.raises(WeightsUnavailable, match="not in the harness's weights cache") as caught:
        brainscore_plugin.load_plugin("alexnet")
    assert "/root" not in str(caught.value)  # no machine path in a record

    def needs_timm(model_id: str) -> None:
        raise ModuleNotFoundError("No module named 'timm'", name="timm")

    fake.load_model = needs_timm  # type: ignore[attr-defined]
    with pytest.raises(ModuleNotFoundError) as missing:
        brainscore_plugin.load_plugin("convnext")
    assert getattr(missing.value, "hint", "").startswith("add timm to the submission's requirements.txt")

    def broken(model_id: str) -> None:
        raise KeyError(model_id)

    fake.load_model = broken  # type: ignore[attr-defined]
    with pytest.raises(KeyError):  # not a network failure: the run fails with the error itself
        brainscore_plugin.load_plugin("nope")


def test_a_childs_claim_of_unavailable_weights_fails_the_run_with_its_words(tmp_path: Path) -> None:
    """A skip comes only from the parent's own check before launch: a child (or a submission raising an
    exception of that name) claiming it is ``failed``, with the plugin's words quoted."""
    sub = load_submission(scaffold_brainscore("alexnet", tmp_path))
    result = sandbox.IsolatedResult(
        returncode=1,
        timed_out=False,
        killed_reason=None,
        peak_rss_gb=0.0,
        stdout_tail="",
        stderr_tail="",
        sandboxed=True,
        wall_s=0.0,
    )
    status = ChildStatus(ok=False, phase="features", error_type="WeightsUnavailable", error="no network")
    (tmp_path / "status.json").write_text(status.model_dump_json())
    with pytest.raises(SubmissionError, match="WeightsUnavailable in features: no network") as caught:
        runcore._read_back_status(sub, tmp_path, result, sandbox.Limits(timeout_s=60))
    assert type(caught.value) is SubmissionError


# --- the page ---------------------------------------------------------------------------------


def test_page_shows_the_identifier_and_package_version(tmp_path: Path) -> None:
    results = tmp_path / "results" / "demo"
    results.mkdir(parents=True)
    record = json.loads((FIXTURES / "demo" / "pixels_ridge.json").read_text())
    record["submission"].update(
        id="bs_cornet",
        name="Brain-Score cornet",
        brainscore={"model_id": "CORnet-S", "package": "brainscore-vision", "version": "2.4.2"},
    )
    record["provenance"]["environment"] = {
        "key": "0123abcd",
        "requirements": ["brainscore-vision==2.4.2"],
        "packages": ["brainscore-vision==2.4.1", "numpy==1.26.4"],  # the lock wins over the asked-for pin
        "layered": ["numpy==1.26.4"],
        "lock_sha256": "0" * 64,
        "sdists_allowed": False,
    }
    (results / "bs_cornet.json").write_text(json.dumps(record))
    shutil.copy(FIXTURES / "demo" / "shallow_cnn.json", results / "shallow_cnn.json")
    out = tmp_path / "lb"
    render(tmp_path / "results", out, None, TABLE1)
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    index = parser.parse((out / "index.html").read_bytes())
    spans = index.findall(".//span[@data-col='brainscore']")
    assert len(spans) == 1 and "".join(spans[0].itertext()) == "Brain-Score CORnet-S, brainscore-vision 2.4.1"
    detail = parser.parse((out / "submissions" / "demo" / "bs_cornet.html").read_bytes())
    cells = {td.get("data-col"): "".join(td.itertext()) for td in detail.iter("td") if td.get("data-col")}
    assert cells["brainscore_model_id"] == "CORnet-S"
    assert cells["brainscore_version"] == "brainscore-vision==2.4.1"
    other = (out / "submissions" / "demo" / "shallow_cnn.html").read_text()
    assert "Brain-Score plugin" not in other
    rows = {r["submission_id"]: r for r in json.loads((out / "results.json").read_text())}
    assert (
        rows["bs_cornet"]["brainscore_model_id"] == "CORnet-S"
        and rows["shallow_cnn"]["brainscore_version"] is None
    )
    assert "(Brain-Score `CORnet-S`, brainscore-vision 2.4.1)" in (out / "README.md").read_text()


# --- end to end: Brain-Score's pixels plugin in its own environment (needs PyPI) --------------

REFERENCE_MODEL = '''
import numpy as np
import torch
from PIL import Image

from itbench.models.recipes import LinearReadoutModel

MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float64).view(1, 3, 1, 1)


def plugin_pixels(images):
    """brainscore_vision/models/pixels/model.py, on the uint8 files the images were."""
    unit = (images.double() * STD + MEAN) * 255.0
    files = unit.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rows = [np.asarray(Image.fromarray(f).convert("RGB").resize((256, 256))).reshape(-1) for f in files]
    return np.stack(rows).astype(np.float32)


def build(ctx):
    return LinearReadoutModel(plugin_pixels)
'''


def _pypi_reachable() -> str:
    """'' when the index answers, else why not."""
    import os
    import urllib.request

    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
    try:
        with urllib.request.urlopen(f"{index.rstrip('/')}/brainscore-vision/", timeout=15) as reply:
            return "" if reply.status == 200 else f"{index} answered {reply.status}"
    except OSError as err:
        return f"{index} unreachable: {err}"


@pytest.mark.slow
def test_pixels_plugin_scores_its_own_activations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _pypi_reachable()
    if reason:
        pytest.skip(f"needs the package index to build brainscore-vision's environment ({reason})")
    if not sandbox.available():
        pytest.skip(f"needs the sandbox: {sandbox.unavailable_reason()}")
    root = tmp_path / "project"
    (root / "submissions").mkdir(parents=True)
    (root / "benchmark").symlink_to(REPO / "benchmark")
    monkeypatch.setenv("ITBENCH_ROOT", str(root))
    monkeypatch.setenv("ITBENCH_RESULTS", str(tmp_path / "results"))
    plugin = scaffold_brainscore("pixels", root)
    reference = root / "submissions" / "pixels_reference"
    reference.mkdir()
    (reference / "submission.toml").write_text('name = "pixels plugin, reimplemented"\n')
    (reference / "model.py").write_text(REFERENCE_MODEL)

    lines: list[str] = []
    got = api.score(str(plugin), "demo", protocol="brainscore", device="cpu", log=lines.append)
    assert got.status == "ok", (got.error, got.error_traceback)
    want = api.score(str(reference), "demo", protocol="brainscore", device="cpu", log=lines.append)
    assert want.status == "ok", want.error
    _same_brainscore_numbers(got, want)
    env = got.provenance.environment
    assert env is not None and f"brainscore-vision=={BRAINSCORE_VISION_VERSION}" in env.packages
    assert got.submission.brainscore == BrainScorePlugin(
        model_id="pixels", package="brainscore-vision", version=BRAINSCORE_VISION_VERSION
    )


def _same_brainscore_numbers(got: SubmissionRecord, want: SubmissionRecord) -> None:
    """Raw r, every split's median r and the per-neuroid r agree to 1e-6."""
    a, b = got.brainscore, want.brainscore
    assert a is not None and b is not None
    assert abs(a.raw_r - b.raw_r) < 1e-6, (a.raw_r, b.raw_r)
    np.testing.assert_allclose(a.split_median_r, b.split_median_r, atol=1e-6)
    assert got.per_neuroid is not None and want.per_neuroid is not None
    np.testing.assert_allclose(np.array(got.per_neuroid.r), np.array(want.per_neuroid.r), atol=1e-6)
    diffs = [abs(a.raw_r - b.raw_r), *np.abs(np.subtract(a.split_median_r, b.split_median_r))]
    diffs.append(float(np.max(np.abs(np.subtract(got.per_neuroid.r, want.per_neuroid.r)))))
    print(
        f"pixels plugin vs its source reimplemented: raw r {a.raw_r:.6f}, largest difference {max(diffs):.1e}"
    )
