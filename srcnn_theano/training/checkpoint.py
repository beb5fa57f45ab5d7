"""A run folder's files: the checkpoint (:class:`TrainState` + arrays), logs and the curves plot.

Run folder
----------
``last.npz``   checkpoint: weights, optimizer state and the :class:`TrainState`
               (position, RNG state, log), written atomically after every
               epoch and when an interrupted run stops.
``best.npz``   weights (:mod:`srcnn_theano.network.weights` format) with the
               best validation PSNR, with provenance (command, data hashes, epoch).
``log.csv``, ``log.json``, ``curves.png``   one row per epoch.
``.lock``      held by the one process training in the folder (:func:`hold_run`).

The files are rewritten in place (the last complete write wins) by the
process that holds the folder; no other process writes there meanwhile.

This module imports neither Theano nor Lasagne (Matplotlib only to plot).
"""
import csv
import dataclasses
import io
import json
import os

import numpy as np

from srcnn_theano.errors import SRCNNError
from srcnn_theano.files import atomic_write_bytes, hold_folder
from srcnn_theano.training.config import TrainConfig

CHECKPOINT_FORMAT = 1
RUN_FILES = ("last.npz", "best.npz", "log.csv", "log.json", "curves.png", "example.png")
LOG_FIELDS = ("epoch", "step", "learning_rate", "train_loss", "bicubic_psnr", "srcnn_psnr",
              "bicubic_ssim", "srcnn_ssim", "seconds")


@dataclasses.dataclass
class TrainState:
    """Where a run stands: everything besides the arrays that an exact resume needs.

    Attributes
    ----------
    config : TrainConfig
    train_h5, val_dir : str
        Absolute paths of the patch file and the validation folder.
    data : dict
        Provenance of the patch file (:func:`srcnn_theano.training.data.data_provenance`).
    commands : list of str
        The command lines that started and resumed the run.
    init_weights : dict or None
        ``{"file", "sha256"}`` of the weights the run started from.
    rng_state : dict
        ``bit_generator.state`` of the minibatch-order Generator at the start
        of epoch ``epoch + 1``.
    epoch : int
        Epochs completed.
    batch : int
        Steps done into epoch ``epoch + 1`` (non-zero after a mid-epoch stop).
    step : int
        Steps done in all.
    loss_sum, loss_count : float, int
        Patch-weighted training loss of the current epoch so far.
    best_epoch : int
    best_psnr : float or None
        Best mean validation PSNR (dB) so far.
    log : list of dict
        One row per completed epoch (:data:`LOG_FIELDS`, plus per-image PSNRs).
    """

    config: TrainConfig
    train_h5: str
    val_dir: str
    data: dict
    commands: list
    init_weights: dict
    rng_state: dict
    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    best_epoch: int = 0
    best_psnr: float = None
    log: list = dataclasses.field(default_factory=list)

    def to_json(self):
        """The state as a JSON string (the config as a plain dict)."""
        return json.dumps(dict(dataclasses.asdict(self), format=CHECKPOINT_FORMAT))

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        fields.pop("format", None)
        fields["config"] = TrainConfig(**fields["config"])
        return cls(**fields)


def save_checkpoint(path, state, weights, optimizer_state):
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str
    state : TrainState
    weights : dict of str -> float32 ndarray
        As :meth:`srcnn_theano.network.model.SRCNN.get_weights`.
    optimizer_state : list of ndarray
        As :meth:`srcnn_theano.network.functions.Trainer.get_state`.
    """
    arrays = {f"w:{k}": v for k, v in weights.items()}
    arrays.update({f"opt:{i}": v for i, v in enumerate(optimizer_state)})
    buf = io.BytesIO()
    np.savez(buf, state=np.array(state.to_json()), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path):
    """Read a checkpoint: ``(state, weights, optimizer_state)`` as :func:`save_checkpoint` takes them."""
    if not os.path.isfile(path):
        raise SRCNNError(f"no checkpoint to resume from: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            text = str(z["state"])
            weights = {k[2:]: z[k] for k in z.files if k.startswith("w:")}
            opt = [z[f"opt:{i}"] for i in range(sum(k.startswith("opt:") for k in z.files))]
        fmt = json.loads(text).get("format")
        if fmt != CHECKPOINT_FORMAT:
            raise SRCNNError(f"unsupported checkpoint format {fmt!r}: {path}")
        state = TrainState.from_json(text)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise SRCNNError(f"not a valid checkpoint: {path} ({e})") from None
    return state, weights, opt


def make_run_folder(out_dir):
    """Create the run folder if needed; :class:`SRCNNError` if it cannot be written."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise SRCNNError(f"cannot create run folder {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SRCNNError(f"run folder is not writable: {out_dir}")


def hold_run(out_dir):
    """Context manager: this process alone trains in ``out_dir`` while the block runs.

    Creates the folder if needed (:func:`make_run_folder`), then locks it
    (:func:`srcnn_theano.files.hold_folder`): taken before anything is
    written there, by a new run and by a resumed one; released when the
    block ends or the process dies (``kill -9`` too). Re-entrant in one
    process. :class:`SRCNNError` naming the folder and the pid of the
    process that holds it.
    """
    make_run_folder(out_dir)
    return hold_folder(out_dir, "run folder")


def clear_run(out_dir, force):
    """Refuse to start over a run unless ``force``; then remove its files (not the data)."""
    if os.path.exists(os.path.join(out_dir, "last.npz")) and not force:
        raise SRCNNError(f"{out_dir} already holds a run: resume it (--resume {out_dir}) "
                         "or start over (--force)")
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            os.remove(path)


def write_logs(out_dir, log, config):
    """``log.csv``, ``log.json`` and ``curves.png`` for the epoch rows in ``log``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LOG_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(log)
    atomic_write_bytes(os.path.join(out_dir, "log.csv"), buf.getvalue().encode())
    text = json.dumps({"config": dataclasses.asdict(config), "epochs": log}, indent=1)
    atomic_write_bytes(os.path.join(out_dir, "log.json"), text.encode())
    atomic_write_bytes(os.path.join(out_dir, "curves.png"), plot_log(log, config))


def plot_log(log, config):
    """PNG bytes: training loss and validation PSNR against epochs, bicubic as a reference line.

    Uses Matplotlib's Agg canvas directly, leaving pyplot's backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in log]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in log], "o-", ms=3)
    ax1.set(xlabel="epoch", ylabel=f"training loss ({config.loss})", yscale="log")
    ax2.plot(epochs, [r["srcnn_psnr"] for r in log], "o-", ms=3, label=f"SRCNN {config.arch}")
    if log:
        ax2.axhline(log[0]["bicubic_psnr"], color="gray", ls="--",
                    label=f"bicubic {log[0]['bicubic_psnr']:.2f} dB")
    ax2.set(xlabel="epoch", ylabel="validation PSNR (dB)", title=f"x{config.scale}, Y channel")
    ax2.legend(loc="lower right")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
