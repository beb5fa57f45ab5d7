"""The walkthrough notebook: stored with its outputs, runs top to bottom, and its outputs are fresh.

The notebook is executed headless by ``scripts/notebook_outputs.py``'s
:func:`execute` (nbclient, a kernel on *this* interpreter), the way ``make
notebook-outputs`` stores it. The stored outputs must be what it prints now:
the same text, every number equal to its printed precision (one unit in the
last printed digit either way, a rounding that falls the other way), and the
same figures, by number and size. Cells tagged ``output-varies`` (what
``os.listdir`` returns depends on the file system) are compared by their
figures only. Cells tagged ``output-trained`` print what a short training
made: the BLAS that :mod:`srcnn_theano.blas` links on each machine (MKL or
OpenBLAS) and its thread count sum float32 products in their own order, and
668 SGD steps carry those roundings into the printed losses and PSNRs, so
their numbers agree within :data:`TRAINED_DB` dB (numbers followed by "dB")
or :data:`TRAINED_REL` of their value. The execution takes a few minutes: Theano compilation plus a
short CPU training.
"""
import base64
import copy
import importlib.util
import io
import os
import re
import sys

import pytest

from conftest import REPO, require_data

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = os.path.join(REPO, "notebooks", "srcnn_walkthrough.ipynb")
PSNR_LINE = re.compile(r"PSNR \(Y, x(\d), (\w+)\): bicubic (\d+\.\d+) dB, SRCNN (\d+\.\d+) dB")
MAX_BYTES = 3 * 2**20
NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?(?:[eE][-+]?\d+)?")
VARIES = "output-varies"
TRAINED = "output-trained"
TRAINED_DB = 0.1      # dB, for a trained network's PSNR and gain
TRAINED_REL = 0.02    # of the value, for its losses
PROBE = "import os, sys, srcnn_theano\nprint(f'sys.prefix: {sys.prefix}')\n" \
        "print(f'srcnn_theano from {os.path.dirname(srcnn_theano.__file__)}')"

_spec = importlib.util.spec_from_file_location("notebook_outputs",
                                               os.path.join(REPO, "scripts", "notebook_outputs.py"))
notebook_outputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook_outputs)


def _read():
    return nbformat.read(NOTEBOOK, as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _text(cell):
    """A code cell's stdout, then its stderr and text/plain outputs, each concatenated.

    (How a kernel splits one stream into outputs depends on timing, so the
    pieces of a stream are joined.)
    """
    outs = cell.get("outputs", [])
    stdout = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stdout")
    stderr = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stderr")
    plain = "".join(o.data["text/plain"] for o in outs if "text/plain" in o.get("data", {}))
    return stdout + (f"[stderr]{stderr}" if stderr else "") + plain


def _figures(cell):
    """(width, height) of each PNG a cell shows, in order."""
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(out.data["image/png"]))).size
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]


def same_text(stored, fresh, trained=False):
    """None if ``fresh`` is ``stored`` with every number equal to its printed precision, else why not.

    ``trained``: numbers may differ by :data:`TRAINED_DB` (dB values) or
    :data:`TRAINED_REL` of their value (the others) too.
    """
    if NUMBER.sub("#", stored) != NUMBER.sub("#", fresh):
        return f"the text differs:\n--- stored\n{stored}\n--- now\n{fresh}"
    for a, b in zip(NUMBER.finditer(stored), NUMBER.finditer(fresh)):
        if a.group(0) == b.group(0):
            continue
        unit = 10.0 ** -len(a.group(1) or "")     # one unit of the last printed digit
        exponent = "e" in a.group(0).lower()
        tolerance = 1.5 * unit
        if trained:
            is_db = stored[a.end():a.end() + 3].strip().startswith("dB")
            tolerance = max(tolerance, TRAINED_DB if is_db else TRAINED_REL * abs(float(a.group(0))))
        if (exponent and not trained) or abs(float(a.group(0)) - float(b.group(0))) > tolerance:
            return f"stored {a.group(0)}, now {b.group(0)} (in {stored!r})"
    return None


def stale_outputs(stored, fresh):
    """Where the stored notebook's outputs are not the fresh ones: a list of lines."""
    problems = []
    cells_s, cells_f = _code(stored), _code(fresh)
    if len(cells_s) != len(cells_f):
        return [f"{len(cells_s)} code cells stored, {len(cells_f)} now"]
    for k, (s, f) in enumerate(zip(cells_s, cells_f)):
        if _figures(s) != _figures(f):
            problems.append(f"code cell {k}: figures {_figures(s)} stored, {_figures(f)} now")
        if VARIES not in s.metadata.get("tags", []):
            why = same_text(_text(s), _text(f), trained=TRAINED in s.metadata.get("tags", []))
            if why:
                problems.append(f"code cell {k}: {why}")
    return problems


def test_notebook_is_stored_with_its_outputs():
    nb = _read()
    nbformat.validate(nb)
    assert os.path.getsize(NOTEBOOK) < MAX_BYTES
    code = _code(nb)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        "run `make notebook-outputs`: the notebook is stored executed, top to bottom"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert sum(len(_figures(c)) for c in code) >= 5
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_stored_outputs_hold_no_paths_or_timings():
    text = "".join(_text(c) for c in _code(_read()))
    for path in {REPO, os.path.dirname(REPO), os.path.expanduser("~"), "/tmp/", sys.prefix}:
        assert path not in text, path
    assert not re.search(r"\d (s|ms|seconds)\b", text), "a timing in the stored outputs"
    assert not [c for c in _code(_read()) if "execution" in c.metadata], "execution timestamps stored"


def test_a_hand_edited_output_is_stale():
    """The check itself: one stored number moved by two units of its last digit is caught."""
    stored = _read()
    edited = copy.deepcopy(stored)
    cell = next(c for c in _code(edited) if "comparison" in c.metadata.get("tags", []))
    out = next(o for o in cell.outputs if o.output_type == "stream")
    match = PSNR_LINE.search(out.text)
    value = float(match.group(4))
    out.text = out.text.replace(match.group(4), f"{value + 0.02:.2f}", 1)
    assert stale_outputs(stored, stored) == []
    assert any("now 3" in p for p in stale_outputs(edited, stored))   # stored +0.02, now the real value
    off_by_one = copy.deepcopy(stored)
    cell = next(c for c in _code(off_by_one) if "comparison" in c.metadata.get("tags", []))
    out = next(o for o in cell.outputs if o.output_type == "stream")
    out.text = out.text.replace(match.group(4), f"{value + 0.01:.2f}", 1)
    assert stale_outputs(off_by_one, stored) == []   # a rounding the other way is not staleness
    no_figure = copy.deepcopy(stored)
    for c in _code(no_figure):
        c.outputs = [o for o in c.outputs if "image/png" not in o.get("data", {})]
    assert any("figures" in p for p in stale_outputs(no_figure, stored))


def test_trained_cells_agree_within_the_training_tolerance():
    """A trained cell's PSNR may move by less than TRAINED_DB and its loss by less than
    TRAINED_REL; more is stale. Untagged cells keep the printed precision."""
    line = "epoch 2: 334 steps, train loss 0.001240, val loss 0.000560 (32.52 dB)\n"
    assert same_text(line, line.replace("32.52", "32.45"), trained=True) is None
    assert same_text(line, line.replace("32.52", "32.35"), trained=True)
    assert same_text(line, line.replace("0.001240", "0.001250"), trained=True) is None
    assert same_text(line, line.replace("0.001240", "0.001300"), trained=True)
    assert same_text(line, line.replace("32.52", "32.45"))
    trained = [c for c in _code(_read()) if TRAINED in c.metadata.get("tags", [])]
    assert any("steps" in _text(c) and "dB" in _text(c) for c in trained)


@pytest.fixture(scope="module")
def executed():
    """The notebook executed now, outputs cleared first, with a last probe cell; and the probe's text."""
    nb = _read()
    for c in _code(nb):
        c.outputs, c.execution_count = [], None
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    notebook_outputs.execute(nb)
    probe = nb.cells.pop()
    return nb, _text(probe)


@pytest.mark.slow   # executes the whole notebook
def test_notebook_runs_without_errors(executed):
    nb, _ = executed
    errors = [(i, out.ename, out.evalue) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for out in c.outputs if out.output_type == "error"]
    assert not errors
    assert not [i for i, c in enumerate(_code(nb)) if c.execution_count is None]


@pytest.mark.slow
def test_notebook_kernel_is_this_interpreter(executed):
    _, probe = executed
    assert f"sys.prefix: {sys.prefix}\n" in probe, probe
    used = re.search(r"srcnn_theano from (.*)\n", probe)
    assert used and os.path.realpath(used.group(1)) == os.path.realpath(os.path.join(REPO, "srcnn_theano"))


@pytest.mark.slow
def test_notebook_shows_comparison_and_beats_bicubic(executed):
    nb, _ = executed
    cells = [c for c in nb.cells if "comparison" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell is tagged 'comparison'"
    cell = cells[0]
    assert _figures(cell), "no comparison figure"
    match = PSNR_LINE.search(_text(cell))
    assert match, f"no PSNR line in the comparison cell: {_text(cell)!r}"
    assert float(match.group(4)) > float(match.group(3))


@pytest.mark.slow
def test_notebook_shows_loss_curve(executed):
    nb, _ = executed
    assert sum(len(_figures(c)) for c in _code(nb)) >= 5   # HR/LR, YCbCr, sub-images, loss, comparison
    assert any("val loss" in _text(c) for c in _code(nb))


@pytest.mark.slow
def test_stored_outputs_are_what_the_notebook_makes_now(executed):
    """Stored outputs cannot go stale silently: `make notebook-outputs` after a change."""
    require_data("Set5")   # the stored outputs include the Set5 table
    nb, _ = executed
    problems = stale_outputs(_read(), nb)
    assert not problems, "stored outputs are stale; run `make notebook-outputs`:\n" + "\n".join(problems)
