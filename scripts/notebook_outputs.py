"""Execute the walkthrough notebook in place, so that it is stored with its outputs.

    python scripts/notebook_outputs.py [NOTEBOOK]

(``make notebook-outputs`` runs it.) The notebook is executed with nbclient,
top to bottom, in a kernel that runs *this* interpreter
(:func:`this_interpreter_kernel`: a ``python3`` kernelspec pointing at
``sys.executable``, first on ``JUPYTER_PATH``, so that a user-level
kernelspec cannot redirect it), from ``notebooks/``. The notebook's own
metadata is kept as it was, no execution timestamps are recorded and each
stream is one output per cell (nbclient's ``coalesce_streams``), so
running it twice on one machine gives the same file. ``tests/test_notebook.py``
executes it the same way and checks the stored outputs against the fresh ones.
"""
import contextlib
import copy
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "srcnn_walkthrough.ipynb")
CELL_TIMEOUT = 900  #: seconds for one cell (the training cell is the longest)


@contextlib.contextmanager
def this_interpreter_kernel():
    """A block in which the kernel named ``python3`` is this interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = os.path.join(tmp, "kernels", "python3")
        os.makedirs(spec_dir)
        with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
            json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                       "display_name": "Python 3 (ipykernel)", "language": "python"}, f)
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = tmp + (os.pathsep + old if old else "")
        try:
            yield
        finally:
            if old is None:
                del os.environ["JUPYTER_PATH"]
            else:
                os.environ["JUPYTER_PATH"] = old


def execute(nb, timeout=CELL_TIMEOUT):
    """``nb`` (an nbformat notebook) executed in place in this interpreter's kernel; returns it.

    Raises nbclient's ``CellExecutionError`` on the first cell that fails;
    the notebook's top-level metadata is left as it was.
    """
    import nbclient

    metadata = copy.deepcopy(nb.metadata)
    with this_interpreter_kernel():
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                                         record_timing=False, coalesce_streams=True,
                                         resources={"metadata": {"path": os.path.join(REPO, "notebooks")}})
        client.execute()
    nb.metadata = metadata
    return nb


def main():
    import nbformat

    from srcnn_theano.files import atomic_write_bytes

    path = sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK
    nb = execute(nbformat.read(path, as_version=4))
    text = nbformat.writes(nb)
    atomic_write_bytes(path, (text if text.endswith("\n") else text + "\n").encode())
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
