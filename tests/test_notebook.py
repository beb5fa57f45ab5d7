"""The walkthrough notebook: committed without outputs, runs top to bottom, shows its result.

The notebook is executed headless with nbclient in a kernel that runs *this*
interpreter (the test writes a ``python3`` kernelspec pointing at
``sys.executable`` and puts it first on ``JUPYTER_PATH``, so a user-level
kernelspec cannot redirect it to another Python). It takes a few minutes:
Theano compilation plus a short CPU training.
"""
import json
import os
import re
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # executes the whole notebook

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = os.path.join(REPO, "notebooks", "srcnn_walkthrough.ipynb")
PSNR_LINE = re.compile(r"PSNR \(Y, x(\d), (\w+)\): bicubic (\d+\.\d+) dB, SRCNN (\d+\.\d+) dB")
CELL_TIMEOUT = 900  # seconds for one cell (the training cell is the longest)


def _read():
    return nbformat.read(NOTEBOOK, as_version=4)


def _text(cell):
    """All stream and text/plain output of a code cell, concatenated."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "text/plain" in out.get("data", {}):
            parts.append(out.data["text/plain"])
    return "".join(parts)


def test_notebook_is_committed_without_outputs():
    nb = _read()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"cells {dirty} have outputs or execution counts; clear them before committing "
                       "(see notebooks/README.md, 'Editing')")
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed in a kernel running this interpreter, and the seconds it took."""
    tmp = tmp_path_factory.mktemp("notebook")
    spec_dir = tmp / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (this test's interpreter)", "language": "python"}))
    nb = _read()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(tmp / "jupyter") + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
        client = nbclient.NotebookClient(
            nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
            resources={"metadata": {"path": os.path.join(REPO, "notebooks")}})
        start = time.monotonic()
        try:
            client.execute()
        finally:
            nbformat.write(nb, str(tmp / "executed.ipynb"))   # kept for inspection on failure
    elapsed = time.monotonic() - start
    print(f"\nnotebook executed in {elapsed:.0f} s; executed copy: {tmp / 'executed.ipynb'}")
    return nb, elapsed


def test_notebook_runs_without_errors(executed):
    nb, _ = executed
    errors = [(i, out.ename, out.evalue) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for out in c.outputs if out.output_type == "error"]
    assert not errors
    unexecuted = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not unexecuted


def test_notebook_kernel_is_this_interpreter(executed):
    nb, _ = executed
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert f"sys.prefix: {sys.prefix}\n" in _text(first), _text(first)
    used = re.search(r"srcnn_theano from (.*)\n", _text(first))
    assert used and os.path.realpath(used.group(1)) == os.path.realpath(os.path.join(REPO, "srcnn_theano"))


def test_notebook_shows_comparison_and_beats_bicubic(executed):
    nb, _ = executed
    cells = [c for c in nb.cells if "comparison" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell is tagged 'comparison'"
    cell = cells[0]
    assert any("image/png" in out.get("data", {}) for out in cell.outputs), "no comparison figure"
    match = PSNR_LINE.search(_text(cell))
    assert match, f"no PSNR line in the comparison cell: {_text(cell)!r}"
    bicubic, srcnn = float(match.group(3)), float(match.group(4))
    assert srcnn > bicubic


def test_notebook_shows_loss_curve(executed):
    nb, _ = executed
    images = sum("image/png" in out.get("data", {})
                 for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    assert images >= 5   # HR/LR, YCbCr planes, sub-images, loss curve, comparison
    assert any("val loss" in _text(c) for c in nb.cells if c.cell_type == "code")
