"""Two processes, one output: exactly one wins, the other exits 2 in one line; no file is replaced.

The races happen every time, not by luck: each racing process runs under
``tests/racing.py``, which stops it at a barrier between the check for an
existing output and the publication (``srcnn_theano.files:publish``), or
right after it takes a run folder's lock; the test lets them go together.
In-process tests play the other process with a hook that writes the output
just before this one publishes.
"""
import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from srcnn_theano import files, training
from srcnn_theano.errors import OutputExistsError, SRCNNError
from srcnn_theano.image.io import write_image
from srcnn_theano.network.weights import Weights, save
from srcnn_theano.patches.writer import write_h5

from conftest import ARCH_915, REPO, random_arrays

RACING = os.path.join(REPO, "tests", "racing.py")
TRAIN = os.path.join(REPO, "train.py")
GENERATE = os.path.join(REPO, "data_prep", "generate_h5.py")
PUBLISH = "srcnn_theano.files:publish"                 # the barrier: temp complete, not published
RUN_LOCK = "srcnn_theano.training.checkpoint:hold_folder"   # the barrier: run folder held


def photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def temps(folder):
    return [n for n in os.listdir(folder) if n.startswith(files.TEMP_PREFIX)]


def error_lines(stderr):
    return [ln for ln in stderr.strip().splitlines() if not ln.startswith("note:")]


class Racer:
    """A command line run in its own process, stdout and stderr to files (no pipe fills up)."""

    def __init__(self, tmp_path, name, command, barrier=None, target=None, when="before"):
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        prefix = [sys.executable] if barrier is None else \
            [sys.executable, RACING, str(barrier), target, when, "--"]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(prefix + command, cwd=REPO, stdout=out, stderr=err)
        self.pid = self.proc.pid

    def wait(self):
        self.returncode = self.proc.wait(timeout=300)
        self.stdout, self.stderr = self.out.read_text(), self.err.read_text()
        return self


def barrier_folder(tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    return barrier


def wait_ready(barrier, racers):
    """Until every racer is at the barrier; fails with the stderr of one that ended instead."""
    deadline = time.monotonic() + 240
    while len([n for n in os.listdir(barrier) if n.startswith("ready.")]) < len(racers):
        for r in racers:
            if r.proc.poll() is not None:
                r.wait()
                pytest.fail(f"a racer ended before the barrier ({r.returncode}): {r.stderr[-2000:]}")
        assert time.monotonic() < deadline, "racers never reached the barrier"
        time.sleep(0.02)


def race(tmp_path, commands, target=PUBLISH, when="before"):
    """Run ``commands`` together, all held at ``target`` until every one has reached it."""
    barrier = barrier_folder(tmp_path)
    racers = [Racer(tmp_path, f"racer{i}", c, barrier, target, when) for i, c in enumerate(commands)]
    try:
        wait_ready(barrier, racers)
        (barrier / "go").touch()
        return [r.wait() for r in racers]
    finally:
        for r in racers:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()


def winner_and_loser(racers, path):
    """The racer that exited 0 and the one that exited 2 with the one-line message about ``path``."""
    codes = sorted(r.returncode for r in racers)
    assert codes == [0, 2], "\n".join(r.stderr[-2000:] for r in racers)
    winner, loser = sorted(racers, key=lambda r: r.returncode)
    assert error_lines(loser.stderr) == \
        [f"error: {path} was written by another process meanwhile; nothing replaced"], loser.stderr
    return winner, loser


# --------------------------------------------------------------------------
# The helper: exclusive publication, with and without hard links
# --------------------------------------------------------------------------

def test_exclusive_publication_never_replaces_and_leaves_no_temp(tmp_path):
    out = tmp_path / "o.bin"
    files.atomic_write_bytes(str(out), b"first", replace=False)
    assert out.read_bytes() == b"first" and out.stat().st_nlink == 1
    with pytest.raises(OutputExistsError, match="o.bin was written by another process meanwhile; "
                                                "nothing replaced"):
        files.atomic_write_bytes(str(out), b"second", replace=False)
    assert out.read_bytes() == b"first" and temps(tmp_path) == []
    files.atomic_write_bytes(str(out), b"third", replace=True)
    assert out.read_bytes() == b"third" and temps(tmp_path) == []
    assert issubclass(OutputExistsError, SRCNNError) and OutputExistsError.exit_status == 2


def test_without_hard_links_the_exclusive_create_decides(tmp_path, monkeypatch):
    links = []

    def no_link(src, dst):
        links.append(dst)
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_link)
    out = tmp_path / "o.bin"
    files.atomic_write_bytes(str(out), b"first", replace=False)
    assert links == [str(out)]
    assert out.read_bytes() == b"first" and temps(tmp_path) == []
    assert out.stat().st_mode & 0o777 == files.new_file_mode()
    with pytest.raises(OutputExistsError):
        files.atomic_write_bytes(str(out), b"second", replace=False)
    assert out.read_bytes() == b"first" and temps(tmp_path) == []


def test_without_hard_links_a_failed_rename_leaves_no_empty_output(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "link", lambda s, d: (_ for _ in ()).throw(
        OSError(errno.EOPNOTSUPP, "Operation not supported")))

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    out = tmp_path / "o.bin"
    with pytest.raises(SRCNNError, match="cannot write .*o.bin: Input/output error"):
        files.atomic_write_bytes(str(out), b"data", replace=False)
    assert os.listdir(tmp_path) == []


def _other_process_writes_first(monkeypatch, target, content=b"the other process's"):
    """Hook: the publication of ``target`` finds its name just taken by someone else."""
    original, names = files.publish, []

    def publish(tmp, path, replace=False):
        if path == str(target) and not names:
            names.append(path)
            with open(path, "wb") as f:
                f.write(content)
        return original(tmp, path, replace)

    monkeypatch.setattr(files, "publish", publish)
    return names


@pytest.mark.parametrize("writer", ["weights", "image", "patch file", "benchmark"])
def test_every_writer_publishes_exclusively_without_force(writer, tmp_path, monkeypatch):
    from srcnn_theano.apps.benchmark import write_benchmark

    img = tmp_path / "img.png"
    Image.fromarray(photo(40, 40)).save(img)
    rows = [dict(protocol="matlab", dataset="Set5", scale=2, method=m, image=f"i{i}.png",
                 psnr=30.0 + i + k, ssim=0.9) for k, m in enumerate(("bicubic", "x")) for i in range(3)]
    out = tmp_path / "out"
    out.mkdir()
    write = {
        "weights": lambda p, force: save(p, Weights(random_arrays(ARCH_915), ARCH_915, 2),
                                         replace=force),
        "image": lambda p, force: write_image(p, photo(8, 8), replace=force),
        "patch file": lambda p, force: write_h5(p, [str(img)], 3, progress=False, force=force),
        "benchmark": lambda p, force: write_benchmark(rows, os.path.dirname(p), resamples=10,
                                                      force=force),
    }[writer]
    target = str(out / {"weights": "w.npz", "image": "a.png", "patch file": "p.h5",
                        "benchmark": "benchmark.md"}[writer])
    names = _other_process_writes_first(monkeypatch, target)
    with pytest.raises(OutputExistsError, match="written by another process meanwhile"):
        write(target, False)
    assert names == [target]
    with open(target, "rb") as f:
        assert f.read() == b"the other process's"
    assert sorted(os.listdir(out)) == [os.path.basename(target)]   # no temp, nothing else
    write(target, True)                                                # --force: replaced
    with open(target, "rb") as f:
        assert f.read() != b"the other process's"
    assert temps(out) == []


@pytest.fixture(scope="module")
def weights():
    return Weights(random_arrays(ARCH_915, std=0.05), ARCH_915, scale=2)


@pytest.mark.parametrize("writer", ["evaluate --save-dir", "figure", "upscale"])
def test_writers_of_network_outputs_publish_exclusively_without_force(writer, weights, tmp_path,
                                                                      monkeypatch):
    from srcnn_theano.apps.figure import save_comparison
    from srcnn_theano.apps.upscale import upscale_files
    from srcnn_theano.evaluation.protocol import evaluate_images
    from srcnn_theano.network.inference import Predictor

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(photo(30, 30)).save(src / name)
    out = tmp_path / "out"
    out.mkdir()
    if writer == "evaluate --save-dir":
        target, folder = out / "SRCNN" / "img.png", out / "SRCNN"
        write = lambda force: evaluate_images([("img.png", photo(30, 30))], 2, weights,  # noqa: E731
                                              save_dir=str(out), force=force)
    elif writer == "figure":
        target, folder = out / "fig.png", out
        write = lambda force: save_comparison(str(target), photo(40, 40), 2,  # noqa: E731
                                              Predictor(weights), replace=force)
    else:   # a folder of images: the first output taken stops the run
        target, folder = out / "a.png", out
        pairs = [(str(src / n), str(out / n)) for n in ("a.png", "b.png")]
        write = lambda force: upscale_files(pairs, 2, weights, progress=False,  # noqa: E731
                                            force=force)
    names = _other_process_writes_first(monkeypatch, target)
    with pytest.raises(OutputExistsError, match="written by another process meanwhile"):
        write(False)
    assert names == [str(target)] and target.read_bytes() == b"the other process's"
    assert os.listdir(folder) == ["img.png" if writer.startswith("evaluate") else "fig.png"
                                  if writer == "figure" else "a.png"]
    assert [n for _, _, fs in os.walk(tmp_path) for n in fs if n.startswith(".tmp-")] == []
    write(True)
    assert target.read_bytes() != b"the other process's" and temps(folder) == []


# --------------------------------------------------------------------------
# Two processes, one output
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights_file(weights, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("w") / "x2.npz")
    save(path, weights)
    return path


@pytest.mark.slow   # two processes load Theano
def test_two_upscales_to_one_output(weights_file, tmp_path):
    sizes = {"a.png": (12, 16), "b.png": (10, 14)}
    for name, (h, w) in sizes.items():
        Image.fromarray(photo(h, w)).save(tmp_path / name)
    out = tmp_path / "o.png"
    racers = race(tmp_path, [["-m", "srcnn_theano", "upscale", "--weights", weights_file, "--scale",
                              "2", str(tmp_path / name), "-o", str(out)] for name in sizes])
    winner, _ = winner_and_loser(racers, out)
    won = list(sizes)[racers.index(winner)]
    with Image.open(out) as im:   # the winner's image, whole
        assert im.size == (2 * sizes[won][1], 2 * sizes[won][0])
        im.load()
    assert temps(tmp_path) == []


def _patch_folder(root, name, sides):
    folder = root / name
    folder.mkdir()
    for i, side in enumerate(sides):
        Image.fromarray(photo(side, side, seed=i)).save(folder / f"{i}.png")
    return str(folder)


@pytest.mark.parametrize("force", [False, True])
def test_two_patch_files_to_one_output(tmp_path, force):
    folders = [_patch_folder(tmp_path, "small", [80]), _patch_folder(tmp_path, "large", [100])]
    counts = [16, 25]   # (side - 33) // 14 + 1 patches a side, x3
    out = tmp_path / "p.h5"
    racers = race(tmp_path, [[GENERATE, "--images", f, "--scale", "3", "--output", str(out),
                              "--workers", "1", "--quiet"] + (["--force"] if force else [])
                             for f in folders])
    with h5py.File(out, "r") as f:
        count = f["data"].shape[0]
    if force:   # the last complete write wins, whole
        assert [r.returncode for r in racers] == [0, 0], "\n".join(r.stderr for r in racers)
        assert count in counts
    else:
        winner, _ = winner_and_loser(racers, out)
        assert count == counts[racers.index(winner)]
        assert f"wrote {count} patches" in winner.stdout
    assert temps(tmp_path) == []


# --------------------------------------------------------------------------
# One training per run folder
# --------------------------------------------------------------------------

def test_a_held_folder_names_its_holder_and_is_free_after_kill_9(tmp_path):
    code = ("import sys, time\nfrom srcnn_theano.files import hold_folder\n"
            f"with hold_folder({str(tmp_path)!r}, 'run folder'):\n"
            "    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        with pytest.raises(SRCNNError, match=f"^run folder {tmp_path} is in use by another process "
                                             rf"\(pid {proc.pid}\); nothing written$"):
            with files.hold_folder(str(tmp_path), "run folder"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with files.hold_folder(str(tmp_path), "run folder"):   # at once: the kernel released it
        with files.hold_folder(str(tmp_path), "run folder"):   # re-entrant in one process
            assert (tmp_path / files.LOCK_NAME).read_text() == f"{os.getpid()}\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An 81-patch x3 file and a 60x60 validation image."""
    root = tmp_path_factory.mktemp("race-data")
    h5 = str(root / "tiny.h5")
    write_h5(h5, [os.path.join(_patch_folder(root, "train", [150]), "0.png")], 3, progress=False)
    return dict(h5=h5, val=_patch_folder(root, "val", [60]), root=root)


def _train_command(tiny, run):
    return [TRAIN, "--train", tiny["h5"], "--val", tiny["val"], "--out", run, "--preset", "fast",
            "--epochs", "1", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def one_epoch_run(tiny):
    """A run folder after one epoch of two, to resume."""
    run = str(tiny["root"] / "base-run")
    cfg = training.TrainConfig.from_preset("fast", scale=3, batch_size=16, epochs=1)
    training.train(cfg, tiny["h5"], tiny["val"], run, progress=False)
    return run


def _in_use(run, pid):
    return [f"error: run folder {run} is in use by another process (pid {pid}); nothing written"]


@pytest.mark.slow   # two trainings
def test_two_fresh_trainings_into_one_run_folder(tiny, tmp_path):
    run = str(tmp_path / "run")
    barrier = barrier_folder(tmp_path)
    first = Racer(tmp_path, "first", _train_command(tiny, run), barrier, RUN_LOCK, "after")
    try:
        wait_ready(barrier, [first])              # it holds the folder, nothing written yet
        second = Racer(tmp_path, "second", _train_command(tiny, run)).wait()
        assert second.returncode == 2, second.stderr[-2000:]
        assert error_lines(second.stderr) == _in_use(run, first.pid)
        assert os.listdir(run) == [files.LOCK_NAME]   # the second wrote nothing
        (barrier / "go").touch()
        first.wait()
    finally:
        first.proc.kill()
        first.proc.wait()
    assert first.returncode == 0, first.stderr[-2000:]
    state, _, _ = training.load_checkpoint(os.path.join(run, "last.npz"))
    assert state.epoch == 1 and len(state.commands) == 1 and temps(run) == []


def _resume_command(run):
    return [TRAIN, "--resume", run, "--epochs", "2", "--quiet"]


@pytest.mark.slow   # two trainings
def test_two_resumes_of_one_run(one_epoch_run, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(one_epoch_run, run)
    before = open(os.path.join(run, "last.npz"), "rb").read()
    barrier = barrier_folder(tmp_path)
    first = Racer(tmp_path, "first", _resume_command(run), barrier, RUN_LOCK, "after")
    try:
        wait_ready(barrier, [first])
        second = Racer(tmp_path, "second", _resume_command(run)).wait()
        assert second.returncode == 2, second.stderr[-2000:]
        assert error_lines(second.stderr) == _in_use(run, first.pid)
        assert open(os.path.join(run, "last.npz"), "rb").read() == before
        (barrier / "go").touch()
        first.wait()
    finally:
        first.proc.kill()
        first.proc.wait()
    assert first.returncode == 0, first.stderr[-2000:]
    state, _, _ = training.load_checkpoint(os.path.join(run, "last.npz"))
    assert state.epoch == 2 and len(state.commands) == 2 and temps(run) == []


@pytest.mark.slow   # three trainings
def test_kill_9_of_the_holder_then_resume(one_epoch_run, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(one_epoch_run, run)
    barrier = barrier_folder(tmp_path)
    holder = Racer(tmp_path, "holder", _resume_command(run), barrier, RUN_LOCK, "after")
    try:
        wait_ready(barrier, [holder])
        blocked = Racer(tmp_path, "blocked", _resume_command(run)).wait()
        assert blocked.returncode == 2 and error_lines(blocked.stderr) == _in_use(run, holder.pid)
    finally:
        holder.proc.send_signal(signal.SIGKILL)
        holder.proc.wait()
    assert holder.proc.returncode == -signal.SIGKILL
    resumed = Racer(tmp_path, "resumed", _resume_command(run)).wait()
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state, _, _ = training.load_checkpoint(os.path.join(run, "last.npz"))
    assert state.epoch == 2 and temps(run) == []
